"""Repositories of the dtlpy-shaped API: projects, datasets, items, tasks, assignments.

Names, arguments and error texts follow dtlpy 1.126.5. A replica contains one project
and one dataset, so ``get()`` with no name or id returns that one, as a checked-out
project or dataset would be in the SDK.
"""

from __future__ import annotations

import builtins
import copy
import logging
from typing import TYPE_CHECKING, Any

from localsync.api import status_calls
from localsync.api.entities import Assignment, Dataset, Item, Project, Task
from localsync.api.errors import unsupported
from localsync.api.paged import PagedEntities
from localsync.errors import BadRequest, NotFound
from localsync.filters import Filters, FiltersOperations, FiltersResource
from localsync.store import StatusResult

if TYPE_CHECKING:
    from localsync.api.client import ReplicaApi

logger = logging.getLogger(__name__)

JSONDict = dict[str, Any]


class Repository:
    """Base of the repositories: SDK-only names raise an error naming the call.

    ``_sdk_only`` lists the public attributes of the dtlpy 1.126.5 repository of
    the same name that localsync does not offer. Other missing names, and every
    name starting with ``_`` (which ``copy``, ``pickle`` and ``hasattr`` look up),
    raise a plain ``AttributeError``.
    """

    _sdk_only: frozenset[str] = frozenset()
    _api: ReplicaApi

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes that are not defined on the class.
        if name in type(self)._sdk_only:
            raise unsupported(f"{self._call_prefix()}.{name}")
        raise AttributeError(
            f"{type(self).__name__!r} object has no attribute {name!r}"
        )

    def _call_prefix(self) -> str:
        """Return how a caller reaches this repository, such as ``dataset.items``."""
        raise NotImplementedError


def _sdk_names(text: str) -> frozenset[str]:
    return frozenset(text.split())


class Projects(Repository):
    """The replica's project, found as ``dl.projects`` finds projects."""

    _sdk_only = _sdk_names(
        "add_member checkout create delete get_system_project list_members "
        "open_in_web platform_url remove_member update update_member"
    )

    def __init__(self, api: ReplicaApi) -> None:
        self._api = api

    def _call_prefix(self) -> str:
        return f"{self._api._label}.projects"

    def get(
        self,
        project_name: str | None = None,
        project_id: str | None = None,
        checkout: bool = False,
        fetch: bool | None = None,
        log_error: bool = True,
    ) -> Project:
        """Return the project with this name or id; raise ``NotFound`` otherwise."""
        project = self._api.project_entity()
        if project_id is not None and project.id != project_id:
            raise NotFound("404", "Project not found")
        if project_name is not None and project.name != project_name:
            raise NotFound("404", "Project not found")
        return project

    def list(self) -> list[Project]:
        return [self._api.project_entity()]


class Datasets(Repository):
    """The replica's dataset, found as ``project.datasets`` finds datasets."""

    _sdk_only = _sdk_names(
        "bulk_update_ml_subset checkout clone create delete directory_tree "
        "download_annotations export merge open_in_web platform_url set_readonly "
        "split_ml_subsets sync unlock update upload_annotations"
    )

    def __init__(self, api: ReplicaApi, project: Project | None = None) -> None:
        self._api = api
        self._project = project

    def _call_prefix(self) -> str:
        if self._project is not None:
            return "project.datasets"
        return f"{self._api._label}.datasets"

    def get(
        self,
        dataset_name: str | None = None,
        dataset_id: str | None = None,
        checkout: bool = False,
        fetch: bool | None = None,
    ) -> Dataset:
        """Return the dataset with this name or id, with the SDK's errors."""
        datasets = self.list()
        if dataset_id is not None:
            for dataset in datasets:
                if dataset.id == dataset_id:
                    return dataset
            raise NotFound("404", f"Dataset not found: {dataset_id!r}")
        if dataset_name is not None:
            named = [dataset for dataset in datasets if dataset.name == dataset_name]
            if not named:
                raise NotFound("404", f"Dataset not found. Name: {dataset_name!r}")
            if len(named) > 1:
                raise BadRequest("400", "More than one dataset with same name.")
            return named[0]
        return self._api.dataset_entity()

    def list(
        self, name: str | None = None, creator: str | None = None, filters: Any = None
    ) -> list[Dataset]:
        """Return the replica's dataset, if it matches ``name`` and the project."""
        dataset = self._api.dataset_entity()
        if self._project is not None and self._project.id != dataset.project_id:
            return []
        if name is not None and dataset.name != name:
            return []
        if creator is not None and dataset.creator != creator:
            return []
        return [dataset]


class Items(Repository):
    """Items of the replica's dataset: get, list and bulk status updates."""

    _sdk_only = _sdk_names(
        "clone datasets delete download get_all_items make_dir move_items "
        "open_in_web platform_url set_items_entity task_scores update upload"
    )

    def __init__(self, api: ReplicaApi, dataset: Dataset | None = None) -> None:
        self._api = api
        self._dataset = dataset

    def _call_prefix(self) -> str:
        if self._dataset is not None:
            return "dataset.items"
        return f"{self._api._label}.items"

    @property
    def dataset(self) -> Dataset:
        return self._dataset or self._api.dataset_entity()

    def _build(self, document: JSONDict) -> Item:
        return Item(document, self._api, dataset=self._dataset)

    def get(
        self,
        filepath: str | None = None,
        item_id: str | None = None,
        fetch: bool | None = None,
        is_dir: bool = False,
    ) -> Item:
        """Return an item by id, or by its full remote path, with the SDK's errors."""
        if item_id is not None:
            item = self._build(self._api.store.get_item(item_id))
            if filepath is not None and item.filename != filepath:
                logger.warning(
                    "items.get: filepath %r differs from the item's filename %r",
                    filepath,
                    item.filename,
                )
            return item
        if filepath is None:
            raise BadRequest(
                "400", 'Must choose by at least one. "filename" or "item_id"'
            )

        filters = Filters()
        filters.pop(field="hidden")
        if is_dir:
            filters.add(field="type", values="dir")
        filters.recursive = False
        filters.add(field="filename", values=filepath)
        pages = self.list(filters=filters)
        if not pages.items:
            raise NotFound("404", f'Item not found. filepath= "{filepath}"')
        if len(pages.items) > 1:
            raise NotFound(
                "404",
                f'More than one item found. Please "get" by id. filepath: "{filepath}"',
            )
        found: Item = pages.items[0]
        return found

    def list(
        self,
        filters: Filters | None = None,
        page_offset: int | None = None,
        page_size: int | None = None,
    ) -> PagedEntities:
        """Run a query and return its pages, the first one fetched already.

        Without ``filters`` the default filter (files that are not hidden) is used.
        The given ``Filters`` object is copied, so paging leaves it unchanged.
        """
        filters = _item_filters(filters)
        return self._pages(filters, page_offset=page_offset, page_size=page_size)

    def _pages(
        self,
        filters: Filters,
        *,
        page_offset: int | None = None,
        page_size: int | None = None,
        task_id: str | None = None,
    ) -> PagedEntities:
        if page_size is not None:
            filters.page_size = page_size
        if page_offset is not None:
            filters.page = page_offset
        store = self._api.store
        pages = PagedEntities(
            filters=filters,
            query=store.query,
            build=self._build,
            page_offset=filters.page,
            page_size=filters.page_size,
            ids=store.matching_item_ids,
            task_id=task_id,
        )
        pages.get_page()
        return pages

    def update_status(
        self,
        status: Any,
        items: Any = None,
        item_ids: str | builtins.list[str] | None = None,
        filters: Filters | None = None,
        dataset: Dataset | None = None,
        clear: bool = False,
    ) -> StatusResult:
        """Set (or with ``clear``, remove) the status of many items in one call.

        ``filters`` wins over ``items``, which wins over ``item_ids``, and a warning
        names the arguments left unused. ``items`` may
        be pages of any length (``task.get_items()`` pages use their task), a list,
        or one item. With no task implied, each item's task is picked with the SDK's
        rule and the items are journaled in one store call per task. Unlike the SDK,
        ``item_ids`` works, because the replica has the items. Items missing or not in
        their task are skipped and counted; the given item objects are refreshed.
        """
        if items is None and item_ids is None and filters is None:
            raise BadRequest("400", "Must provide either items, item_ids or filters")
        _warn_ignored_targets(items=items, item_ids=item_ids, filters=filters)
        if dataset is not None and dataset.id != self.dataset.id:
            raise BadRequest(
                "400",
                f"Dataset {dataset.id!r} is not the replica's dataset "
                f"{self.dataset.id!r}",
            )

        objects: list[Item] = []
        task_id = None
        if filters is not None:
            body = _item_filters(filters).prepare()
            ids = list(self._api.store.matching_item_ids(body))
        elif isinstance(items, PagedEntities):
            ids, task_id = list(items.item_ids()), items.task_id
            objects = list(items.items)
        elif items is not None:
            objects = [items] if isinstance(items, Item) else list(items)
            wrong = [item for item in objects if not isinstance(item, Item)]
            if wrong:
                raise BadRequest(
                    "400",
                    f"items must be Item objects or pages of items, got {wrong[0]!r}",
                )
            ids = [item.id for item in objects]
        else:
            ids = status_calls.item_id_list(item_ids or [])

        result = status_calls.update_many(
            self._api, status, ids, task_id=task_id, clear=clear
        )
        status_calls.refresh_items(self._api, objects)
        return result


def _warn_ignored_targets(*, items: Any, item_ids: Any, filters: Any) -> None:
    """Log a warning naming the arguments that ``update_status`` does not use.

    The SDK silently takes ``filters`` over ``items`` over ``item_ids``; localsync
    keeps that order and logs which of the given arguments it ignored.
    """
    if filters is not None:
        used = "filters"
        given = {"items": items, "item_ids": item_ids}
    elif items is not None:
        used = "items"
        given = {"item_ids": item_ids}
    else:
        return
    ignored = [name for name, value in given.items() if value is not None]
    if ignored:
        logger.warning(
            "items.update_status: %s ignored because %s was given; pass only one "
            "of filters, items or item_ids",
            " and ".join(ignored),
            used,
        )


def _item_filters(filters: Filters | None) -> Filters:
    """Return a copy of an item query's filters, or the default filters."""
    if filters is None:
        return Filters()
    if not isinstance(filters, Filters):
        raise BadRequest("400", f"Unknown filters type: {type(filters)!r}")
    if filters.resource == FiltersResource.ANNOTATION:
        raise unsupported("items.list(filters=Filters(resource=ANNOTATION))")
    if filters.resource != FiltersResource.ITEM:
        raise BadRequest(
            "400",
            "Filters resource must to be FiltersResource.ITEM. "
            f"Got: {filters.resource!r}",
        )
    return copy.deepcopy(filters)


class Tasks(Repository):
    """Tasks of the replica's dataset."""

    _sdk_only = _sdk_names(
        "add_items assignments create create_consensus_task create_honeypot_task "
        "create_labeling_task create_qa_task create_qualification_task delete "
        "open_in_web platform_url query remove_items task_scores update"
    )

    def __init__(self, api: ReplicaApi, dataset: Dataset | None = None) -> None:
        self._api = api
        self._dataset = dataset

    def _call_prefix(self) -> str:
        if self._dataset is not None:
            return "dataset.tasks"
        return f"{self._api._label}.tasks"

    @property
    def dataset(self) -> Dataset:
        return self._dataset or self._api.dataset_entity()

    def _build(self, document: JSONDict) -> Task:
        return Task(document, self._api)

    def get(self, task_name: str | None = None, task_id: str | None = None) -> Task:
        """Return a task by id or name, with the SDK's errors."""
        if task_id is not None:
            return self._build(self._api.store.get_task(task_id))
        if task_name is None:
            raise BadRequest(
                "400", "Must provide either Annotation task name or Annotation task id"
            )
        named = [task for task in self.list() if task.name == task_name]
        if not named:
            raise NotFound("404", "Annotation task not found")
        if len(named) > 1:
            raise NotFound(
                "404",
                f"More than one Annotation task exist with the same name: {task_name}",
            )
        return named[0]

    def list(
        self,
        project_ids: Any = None,
        status: str | None = None,
        task_name: str | None = None,
        pages_size: int | None = None,
        page_offset: int | None = None,
        recipe: Any = None,
        creator: str | None = None,
        assignments: Any = None,
        min_date: Any = None,
        max_date: Any = None,
        filters: Filters | None = None,
    ) -> list[Task]:
        """Return the dataset's tasks, by name, optionally only those matching."""
        tasks = [self._build(document) for document in self._api.store.tasks()]
        dataset_id = self.dataset.id
        tasks = [task for task in tasks if task.dataset_id in (None, "", dataset_id)]
        if task_name is not None:
            tasks = [task for task in tasks if task.name == task_name]
        if status is not None:
            tasks = [task for task in tasks if task.status == status]
        if creator is not None:
            tasks = [task for task in tasks if task.creator == creator]
        return tasks

    def get_items(
        self,
        task_id: str | None = None,
        task_name: str | None = None,
        dataset: Dataset | None = None,
        filters: Filters | None = None,
        get_consensus_items: bool = False,
        task: Task | None = None,
    ) -> PagedEntities:
        """Return a task's items as pages: ``filters`` plus ``refs.id $in [task id]``.

        Without ``filters`` the query starts from ``Filters(use_defaults=False)``;
        a consensus assignment's items are left out unless ``get_consensus_items``.
        """
        if task is None and task_id is None and task_name is None:
            raise BadRequest("400", "Please provide either task_id or task_name")
        if task is None:
            task = (
                self.get(task_id=task_id) if task_id else self.get(task_name=task_name)
            )
        filters = (
            Filters(use_defaults=False) if filters is None else copy.deepcopy(filters)
        )
        filters.add(
            field="metadata.system.refs.id",
            values=[task.id],
            operator=FiltersOperations.IN,
        )
        consensus = (task.metadata.get("system") or {}).get("consensusAssignmentId")
        if consensus and not get_consensus_items:
            filters.add(
                field="metadata.system.refs.id",
                values=consensus,
                operator=FiltersOperations.NOT_EQUAL,
            )
        items = (dataset or self.dataset).items
        return items._pages(filters, task_id=task.id)

    def set_status(
        self, status: str, operation: str, task_id: str, item_ids: builtins.list[str]
    ) -> StatusResult:
        """Set (``"create"``) or clear (``"delete"``) items' status in a task.

        Items missing or not in the task are skipped and counted in the result.
        """
        clear = status_calls.clears(operation)
        ids = status_calls.item_id_list(item_ids)
        return status_calls.update_many(
            self._api, status, ids, task_id=task_id, clear=clear
        )


class Assignments(Repository):
    """Assignments of the replica's dataset, or of one task."""

    _sdk_only = _sdk_names(
        "create open_in_web platform_url project_id reassign redistribute task update"
    )

    def __init__(
        self, api: ReplicaApi, dataset: Dataset | None = None, task: Task | None = None
    ) -> None:
        self._api = api
        self._dataset = dataset
        self._task = task

    def _call_prefix(self) -> str:
        if self._task is not None:
            return "task.assignments"
        if self._dataset is not None:
            return "dataset.assignments"
        return f"{self._api._label}.assignments"

    @property
    def dataset(self) -> Dataset:
        return self._dataset or self._api.dataset_entity()

    def _build(self, document: JSONDict) -> Assignment:
        return Assignment(document, self._api)

    def get(
        self, assignment_name: str | None = None, assignment_id: str | None = None
    ) -> Assignment:
        """Return an assignment by id or name, with the SDK's errors."""
        if assignment_id is not None:
            return self._build(self._api.store.get_assignment(assignment_id))
        if assignment_name is None:
            raise BadRequest(
                "400", "Must provide either assignment name or assignment id"
            )
        named = [a for a in self.list() if a.name == assignment_name]
        if not named:
            raise NotFound("404", "Assignment not found")
        if len(named) > 1:
            raise NotFound(
                "404",
                f"More than one assignment exist with the same name: {assignment_name}",
            )
        return named[0]

    def list(
        self,
        project_ids: Any = None,
        status: str | None = None,
        assignment_name: str | None = None,
        assignee_id: str | None = None,
        pages_size: int | None = None,
        page_offset: int | None = None,
        task_id: str | None = None,
    ) -> list[Assignment]:
        """Return the assignments of ``task_id`` (or of this repository's task)."""
        if task_id is None and self._task is not None:
            task_id = self._task.id
        documents = self._api.store.assignments(task_id)
        assignments = [self._build(document) for document in documents]
        if assignment_name is not None:
            assignments = [a for a in assignments if a.name == assignment_name]
        if assignee_id is not None:
            assignments = [a for a in assignments if a.annotator == assignee_id]
        if status is not None:
            assignments = [a for a in assignments if a.status == status]
        return assignments

    def get_items(
        self,
        assignment: Assignment | None = None,
        assignment_id: str | None = None,
        assignment_name: str | None = None,
        dataset: Dataset | None = None,
        filters: Filters | None = None,
    ) -> PagedEntities:
        """Return an assignment's items as pages: ``filters`` and ``refs.id $in [id]``.

        The pages remember the assignment's task, which bulk status calls use.
        """
        if assignment is None and assignment_id is None and assignment_name is None:
            raise BadRequest(
                "400",
                "Please provide either assignment,  assignment_id or assignment_name",
            )
        if assignment is None:
            assignment = self.get(
                assignment_id=assignment_id, assignment_name=assignment_name
            )
        filters = (
            Filters(use_defaults=False) if filters is None else copy.deepcopy(filters)
        )
        filters.add(
            field="metadata.system.refs.id",
            values=[assignment.id],
            operator=FiltersOperations.IN,
        )
        items = (dataset or self.dataset).items
        return items._pages(filters, task_id=assignment.task_id)

    def set_status(
        self, status: str, operation: str, item_id: str, assignment_id: str
    ) -> StatusResult:
        """Set or clear one item's status through an assignment, in its task's register.

        Raises ``NotFound`` naming the task when the item is not in it.
        """
        clear = status_calls.clears(operation)
        item = self._api.dataset_entity().items.get(item_id=item_id)
        return status_calls.update_item_status(
            self._api, item, status, clear=clear, assignment_id=assignment_id
        )
