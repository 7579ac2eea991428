"""Pages of query results, paged the way dtlpy's ``PagedEntities`` pages them.

Keyset paging serves an item query that starts at ``page_offset`` 0 with no custom
filter and no sort on a field other than ``id`` or ``createdAt``. Its query is
sorted by ``id``, and each next page adds ``{"id": {"$gt": last_id}}`` while the
request keeps ``page: 0``. Every other query uses offset paging. Iterating starts
again from the first page, as in dtlpy 1.126.5.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterator
from typing import Any

from localsync.filters import Filters, FiltersOperations, FiltersOrderByDirection

logger = logging.getLogger(__name__)

JSONDict = dict[str, Any]
# Runs one query body and returns the page's JSON documents and the total count.
QueryFunction = Callable[[JSONDict], tuple[list[JSONDict], int]]

_KEYSET_RESOURCES = ("items", "annotations", "featureVectors")
_KEYSET_SORT_FIELDS = ("id", "createdAt")


class PagedEntities:
    """Pages of entities of one query; iterate for pages, ``all()`` for entities.

    ``items`` is the current page, ``items_count`` the match count the last query
    returned (it shrinks while keyset paging, as the SDK's does), and
    ``has_next_page`` whether another page follows. ``task_id`` is the task these
    items came from (``task.get_items()``, ``assignment.get_items()``), which a bulk
    status call then uses instead of picking a task per item.
    """

    def __init__(
        self,
        *,
        filters: Filters,
        query: QueryFunction,
        build: Callable[[JSONDict], Any],
        page_offset: int = 0,
        page_size: int = 1000,
        ids: Callable[[JSONDict], Iterator[str]] | None = None,
        task_id: str | None = None,
    ) -> None:
        self.filters = filters
        self.page_offset = page_offset
        self.page_size = page_size
        self.has_next_page = False
        self.total_pages_count = 0
        self.items_count = 0
        self.use_id_based_paging = False
        self.last_seen_id: str | None = None
        self.items: list[Any] = []
        self.task_id = task_id
        self._query = query
        self._build = build
        self._ids = ids

    def __repr__(self) -> str:
        return (
            f"PagedEntities(page_offset={self.page_offset}, "
            f"page_size={self.page_size}, items_count={self.items_count}, "
            f"has_next_page={self.has_next_page})"
        )

    def __len__(self) -> int:
        return self.items_count

    def __getitem__(self, page: int) -> list[Any]:
        if page != self.page_offset:
            self.go_to_page(page)
        return self.items

    def __iter__(self) -> Iterator[list[Any]]:
        self.last_seen_id = None
        self.page_offset = 0
        self.use_id_based_paging = self._keyset_allowed()
        self.has_next_page = True
        self.page_size = self.page_size or 100

        self.get_page()
        if self.items:
            yield self.items
        while self.has_next_page:
            if not self.use_id_based_paging:
                self._move_page_offset(1)
            self.get_page()
            if not self.items:
                break
            yield self.items

    def __reversed__(self) -> Iterator[list[Any]]:
        self.use_id_based_paging = False
        self.page_offset = self.total_pages_count - 1
        while True:
            self.get_page()
            yield self.items
            if self.page_offset <= 0:
                break
            self._move_page_offset(-1)

    def all(self) -> Iterator[Any]:
        """Yield every entity of every page, starting again from the first page."""
        for page in self:
            yield from page

    def item_ids(self) -> Iterator[str]:
        """Yield the id of every match on every page, in id order, building no entity.

        Bulk status calls use this: it runs the filter once, unpaged.
        """
        if self._ids is None:
            for entity in self.all():
                yield entity.id
            return
        yield from self._ids(self._unpaged_body())

    def get_page(
        self, page_offset: int | None = None, page_size: int | None = None
    ) -> None:
        self.items = self.return_page(page_offset=page_offset, page_size=page_size)

    def next_page(self) -> None:
        if not self.use_id_based_paging:
            self._move_page_offset(1)
        self.get_page()

    def prev_page(self) -> None:
        if self.use_id_based_paging:
            raise NotImplementedError(
                "prev_page is not supported for keyset pagination."
            )
        self._move_page_offset(-1)
        self.get_page()

    def go_to_page(self, page: int = 0) -> None:
        if page == 0:
            self.last_seen_id = None
        self.page_offset = page
        self.get_page()

    def return_page(
        self, page_offset: int | None = None, page_size: int | None = None
    ) -> list[Any]:
        """Run the query for one page and return its entities.

        Unlike the SDK, a malformed query raises ``InvalidQuery`` here instead of
        giving an empty page, so a wrong filter is never mistaken for no matches.
        """
        if page_size is not None:
            self.page_size = page_size
        if page_offset is not None:
            self.page_offset = page_offset
        self.filters.page_size = self.page_size
        self.filters.page = self.page_offset
        self.use_id_based_paging = self._keyset_allowed()

        body = self._page_body()
        documents, total = self._query(body)
        self._record_counts(body, len(documents), total)
        entities = [self._build(document) for document in documents]

        if self.use_id_based_paging:
            self.last_seen_id = entities[-1].id if entities else None
        return entities

    def _keyset_allowed(self) -> bool:
        if self.page_offset != 0 or self.filters.custom_filter is not None:
            return False
        if self.filters.resource not in _KEYSET_RESOURCES:
            return False
        sort = self.filters.prepare().get("sort") or {}
        return not sort or next(iter(sort)) in _KEYSET_SORT_FIELDS

    def _page_body(self) -> JSONDict:
        request = copy.deepcopy(self.filters)
        if not self.use_id_based_paging:
            return request.prepare()

        sort = request.prepare().get("sort") or {}
        order = next(iter(sort.values()), FiltersOrderByDirection.ASCENDING)
        descending = order == FiltersOrderByDirection.DESCENDING
        request.sort_by(field="id", value=order)
        request.page = 0
        if self.last_seen_id:
            operator = (
                FiltersOperations.LESS_THAN
                if descending
                else FiltersOperations.GREATER_THAN
            )
            request.add(
                field="id", values=self.last_seen_id, operator=operator, method="and"
            )
        return request.prepare()

    def _record_counts(self, body: JSONDict, count: int, total: int) -> None:
        page = int(body.get("page") or 0)
        size = int(body.get("pageSize") or self.page_size or 0)
        self.items_count = total
        self.has_next_page = total > page * size + count and count > 0
        self.total_pages_count = math.ceil(total / size) if size else 0

    def _move_page_offset(self, offset: int) -> None:
        self.page_offset += offset
        custom = self.filters.custom_filter
        if isinstance(custom, dict) and "page" in custom:
            custom["page"] = self.page_offset

    def _unpaged_body(self) -> JSONDict:
        return copy.deepcopy(self.filters).prepare()
