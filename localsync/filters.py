"""The SDK's ``Filters`` query builder and the JSON query bodies it prepares.

``Filters.prepare()`` returns, call for call, what ``dtlpy.Filters.prepare()`` returns
in dtlpy 1.126.5, key order and that SDK's quirks included, so code written for
``dl.Filters`` sends the same query bodies when it runs on localsync.
"""

from __future__ import annotations

import copy
import logging
import posixpath
from collections.abc import Callable
from enum import Enum
from typing import Any

from localsync.errors import BadRequest, InvalidQuery

logger = logging.getLogger(__name__)

JSONDict = dict[str, Any]

# The enums mix in str like the SDK's instead of using StrEnum, so str() and
# format() of a member give "FiltersMethod.OR", as in the SDK's error messages.


class FiltersKnownFields(str, Enum):  # noqa: UP042
    DIR = "dir"
    ANNOTATED = "annotated"
    FILENAME = "filename"
    CREATED_AT = "createdAt"
    UPDATED_AT = "updatedAt"
    LABEL = "label"
    NAME = "name"
    HIDDEN = "hidden"
    TYPE = "type"


class FiltersResource(str, Enum):  # noqa: UP042
    ITEM = "items"
    ANNOTATION = "annotations"
    EXECUTION = "executions"
    PACKAGE = "packages"
    DPK = "dpks"
    APP = "apps"
    SERVICE = "services"
    TRIGGER = "triggers"
    MODEL = "models"
    WEBHOOK = "webhooks"
    RECIPE = "recipe"
    DATASET = "datasets"
    ONTOLOGY = "ontology"
    TASK = "tasks"
    PIPELINE = "pipeline"
    PIPELINE_EXECUTION = "pipelineState"
    COMPOSITION = "composition"
    FEATURE = "feature_vectors"
    FEATURE_SET = "feature_sets"
    ORGANIZATIONS = "organizations"
    DRIVERS = "drivers"
    SETTINGS = "setting"
    RESOURCE_EXECUTION = "resourceExecution"
    METRICS = "metrics"
    SERVICE_DRIVER = "serviceDrivers"
    COMPUTE = "compute"


class FiltersOperations(str, Enum):  # noqa: UP042
    """Condition operators. Operator ``op`` gives ``{field: {"$op": value}}``."""

    OR = "or"
    AND = "and"
    IN = "in"
    NOT_EQUAL = "ne"
    EQUAL = "eq"
    GREATER_THAN = "gt"
    LESS_THAN = "lt"
    EXISTS = "exists"
    MATCH = "match"
    NIN = "nin"
    GREATER_THAN_OR_EQUAL = "gte"
    LESS_THAN_OR_EQUAL = "lte"


class FiltersMethod(str, Enum):  # noqa: UP042
    """The list a condition joins: ``$or`` or ``$and``."""

    OR = "or"
    AND = "and"


class FiltersOrderByDirection(str, Enum):  # noqa: UP042
    DESCENDING = "descending"
    ASCENDING = "ascending"


# Module-level aliases, the same set that ``dtlpy`` exports at its top level.
KnownFields = FiltersKnownFields

FILTERS_KNOWN_FIELDS_DIR = FiltersKnownFields.DIR
FILTERS_KNOWN_FIELDS_ANNOTATED = FiltersKnownFields.ANNOTATED
FILTERS_KNOWN_FIELDS_FILENAME = FiltersKnownFields.FILENAME
FILTERS_KNOWN_FIELDS_CREATED_AT = FiltersKnownFields.CREATED_AT
FILTERS_KNOWN_FIELDS_UPDATED_AT = FiltersKnownFields.UPDATED_AT
FILTERS_KNOWN_FIELDS_LABEL = FiltersKnownFields.LABEL
FILTERS_KNOWN_FIELDS_NAME = FiltersKnownFields.NAME
FILTERS_KNOWN_FIELDS_HIDDEN = FiltersKnownFields.HIDDEN
FILTERS_KNOWN_FIELDS_TYPE = FiltersKnownFields.TYPE

FILTERS_RESOURCE_ITEM = FiltersResource.ITEM
FILTERS_RESOURCE_ANNOTATION = FiltersResource.ANNOTATION
FILTERS_RESOURCE_EXECUTION = FiltersResource.EXECUTION
FILTERS_RESOURCE_PACKAGE = FiltersResource.PACKAGE
FILTERS_RESOURCE_SERVICE = FiltersResource.SERVICE
FILTERS_RESOURCE_TRIGGER = FiltersResource.TRIGGER
FILTERS_RESOURCE_MODEL = FiltersResource.MODEL
FILTERS_RESOURCE_WEBHOOK = FiltersResource.WEBHOOK
FILTERS_RESOURCE_RECIPE = FiltersResource.RECIPE
FILTERS_RESOURCE_DATASET = FiltersResource.DATASET
FILTERS_RESOURCE_ONTOLOGY = FiltersResource.ONTOLOGY

FILTERS_OPERATIONS_OR = FiltersOperations.OR
FILTERS_OPERATIONS_AND = FiltersOperations.AND
FILTERS_OPERATIONS_IN = FiltersOperations.IN
FILTERS_OPERATIONS_NOT_EQUAL = FiltersOperations.NOT_EQUAL
FILTERS_OPERATIONS_EQUAL = FiltersOperations.EQUAL
FILTERS_OPERATIONS_GREATER_THAN = FiltersOperations.GREATER_THAN
FILTERS_OPERATIONS_LESS_THAN = FiltersOperations.LESS_THAN
FILTERS_OPERATIONS_EXISTS = FiltersOperations.EXISTS

FILTERS_METHOD_OR = FiltersMethod.OR
FILTERS_METHOD_AND = FiltersMethod.AND

FILTERS_ORDERBY_DIRECTION_DESCENDING = FiltersOrderByDirection.DESCENDING
FILTERS_ORDERBY_DIRECTION_ASCENDING = FiltersOrderByDirection.ASCENDING

#: Annotation types of the platform, in the order of dtlpy's ``AnnotationType``.
ANNOTATION_TYPES: tuple[str, ...] = tuple(
    "box cube cube_3d class comparison ellipse note point segment polyline pose binary"
    " subtitle text_mark gis ref_semantic_3d polyline_3d text ref_image".split()
)

DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 1000

# Executions and pipeline executions page by 100 at most. App packages (dpks) start
# at 100 but may be raised to the general maximum.
_SMALL_PAGE_SIZE = 100
_SMALL_DEFAULT_RESOURCES = (
    FiltersResource.EXECUTION,
    FiltersResource.PIPELINE_EXECUTION,
    FiltersResource.DPK,
)
_SMALL_MAX_RESOURCES = (FiltersResource.EXECUTION, FiltersResource.PIPELINE_EXECUTION)

_REFS_METADATA_FIELD = "metadata.system.refs.metadata"


class SingleFilter:
    """One condition: a field, its value and an optional operator."""

    def __init__(self, field: Any, values: Any, operator: Any = None) -> None:
        self.field = field
        self.values = values
        self.operator = operator

    def prepare(self, recursive: bool = False) -> JSONDict:
        """Return the condition as ``{field: value}`` or ``{field: {"$op": value}}``.

        With ``recursive``, a ``filename`` folder becomes ``folder/**`` so that it
        matches the whole subtree. A list value is rewritten in place, as the SDK
        does, so the stored condition keeps the rewritten paths afterwards.
        """
        values = self.values
        if recursive and self.field == "filename":
            if isinstance(values, str):
                values = folder_pattern(values)
            elif isinstance(values, list):
                for index, path in enumerate(values):
                    values[index] = folder_pattern(path)

        if self.operator is None:
            return {self.field: values}
        operator = self.operator
        if isinstance(operator, FiltersOperations):
            operator = operator.value
        return {self.field: {f"${operator}": values}}


def folder_pattern(path: str) -> str:
    """Return the pattern for everything under ``path`` if it names a folder.

    A path that ends with ``*`` or has a file extension is returned as given, so
    ``/a`` and ``/a/`` become ``/a/**`` while ``/a/b.jpg`` and ``/a/*`` stay.
    """
    # NOTE: like the SDK, a non-string element of a filename list raises
    # AttributeError here, when the filter is prepared.
    if path.endswith("*") or posixpath.splitext(path)[1]:
        return path
    if path.endswith("/"):
        return path + "**"
    return path + "/**"


def _resource_name(resource: Any) -> str:
    if isinstance(resource, FiltersResource):
        return resource.value
    return f"{resource}"


def _join_on(resource: str) -> JSONDict:
    # "forigen" (sic) is the key name the SDK sends, so it must stay.
    if resource == FiltersResource.ITEM:
        return {"resource": "annotations", "local": "itemId", "forigen": "id"}
    return {"resource": "items", "local": "id", "forigen": "itemId"}


def _fill_custom_body(
    custom: Any, resource: str, page: Any, page_size: Any, join: Any
) -> Any:
    """Complete a custom filter in place with the SDK's rules and return the body."""
    body = custom if "filter" in custom else {"filter": custom}
    if "resource" not in body:
        body["resource"] = resource
    if "page" not in body:
        body["page"] = page
    if "pageSize" not in body:
        body["pageSize"] = page_size

    if join is not None and "join" not in body:
        body["join"] = join
    if "join" in body and "on" not in body["join"]:
        body["join"]["on"] = _join_on(resource)
    return body


def custom_body(
    filter_json: JSONDict,
    *,
    resource: FiltersResource | str = FiltersResource.ITEM,
    page: int = 0,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> JSONDict:
    """Build a query body from a custom filter as ``Filters(custom_filter=...)`` does.

    A JSON object without a ``filter`` key is taken as the filter itself and wrapped
    in ``{"filter": ...}``. Then ``resource``, ``page`` and ``pageSize`` are added
    only where missing, and a ``join`` without ``on`` gets the join keys of
    ``resource``. No default conditions and no sort are added, and ``filter_json``
    is left unchanged. Raises :class:`InvalidQuery` when the body, its ``filter``
    or its ``join`` is not a JSON object.
    """
    if not isinstance(filter_json, dict):
        raise InvalidQuery(
            f"Invalid custom filter {filter_json!r}: expected a JSON object, "
            'such as {"filter": {"$and": [{"dir": "/a"}]}}.'
        )
    for key in ("filter", "join"):
        if key in filter_json and not isinstance(filter_json[key], dict):
            raise InvalidQuery(
                f"Invalid custom filter: {key!r} must be a JSON object, "
                f"got {filter_json[key]!r}."
            )

    try:
        body = copy.deepcopy(filter_json)
    except RecursionError as exc:
        raise InvalidQuery(
            "Invalid custom filter: it is nested too deeply to copy; nest fewer "
            "$and, $or or $match levels"
        ) from exc
    filled: JSONDict = _fill_custom_body(
        body, _resource_name(resource), page, page_size, join=None
    )
    return filled


class Filters:
    """A query on one resource: conditions under ``$and`` and ``$or``, sort, paging.

    Items, annotations, services and packages start with the SDK's default
    conditions unless ``use_defaults`` is false. Attribute names follow
    ``dtlpy.Filters``, so code that sets ``page``, ``page_size``, ``method``,
    ``recursive``, ``sort``, ``join``, ``context`` or ``custom_filter`` works the same.
    """

    def __init__(
        self,
        field: Any = None,
        values: Any = None,
        operator: FiltersOperations | str | None = None,
        method: FiltersMethod | str | None = None,
        custom_filter: Any = None,
        resource: FiltersResource | str = FiltersResource.ITEM,
        use_defaults: bool = True,
        context: Any = None,
        page_size: int | None = None,
    ) -> None:
        if page_size is None:
            small = resource in _SMALL_DEFAULT_RESOURCES
            page_size = _SMALL_PAGE_SIZE if small else DEFAULT_PAGE_SIZE

        self.or_filter_list: list[SingleFilter] = []
        self.and_filter_list: list[SingleFilter] = []
        self._unique_fields: list[str] = []
        self.custom_filter: Any = custom_filter
        self.known_operators = ["or", "and", "in", "ne", "eq", "gt", "lt", "exists"]
        self._resource: Any = resource
        self.page: int = 0
        self.page_size: int = page_size
        self.method: FiltersMethod | str = FiltersMethod.AND
        self.sort: dict[str, Any] = {}
        self.join: JSONDict | None = None
        self.recursive: bool = True

        # The value of the ``user_query`` request header that item listing sends.
        self._user_query = "true"
        self._clear_references()
        self._system_space: bool | None = None

        self._use_defaults = use_defaults
        self._add_defaults()
        self.context: Any = context

        if field is not None:
            self.add(field=field, values=values, operator=operator, method=method)

    def __deepcopy__(self, memo: dict[int, Any]) -> Filters:
        # Callers copy filters before changing them. A custom filter nested past
        # Python's recursion limit would fail that copy with a RecursionError.
        copied = type(self).__new__(type(self))
        memo[id(self)] = copied
        try:
            state = copy.deepcopy(self.__dict__, memo)
        except RecursionError as exc:
            raise InvalidQuery(
                "Invalid custom filter: it is nested too deeply to copy; nest fewer "
                "$and, $or or $match levels"
            ) from exc
        copied.__dict__.update(state)
        return copied

    @property
    def resource(self) -> str:
        """Name of the resource queried, such as ``"items"``."""
        return _resource_name(self._resource)

    @resource.setter
    def resource(self, resource: FiltersResource | str) -> None:
        self._resource = resource
        self.reset()
        self._add_defaults()

    @property
    def system_space(self) -> bool | None:
        """Value of ``systemSpace`` in the body, left out while ``None``."""
        return self._system_space

    @system_space.setter
    def system_space(self, value: bool | None) -> None:
        self._system_space = value

    def reset(self) -> None:
        """Drop every condition, the sort, join, custom filter and references.

        Paging goes back to page 0 with 1000 per page. ``context``, ``system_space``
        and ``use_defaults`` are kept, and default conditions are not added back.
        """
        self.or_filter_list = []
        self.and_filter_list = []
        self._unique_fields = []
        self.custom_filter = None
        self.page = 0
        self.page_size = DEFAULT_PAGE_SIZE
        self.method = FiltersMethod.AND
        self.sort = {}
        self.join = None
        self.recursive = True
        self._clear_references()

    def _clear_references(self) -> None:
        self._ref_task = False
        self._ref_assignment = False
        self._ref_op: str | None = None
        self._ref_assignment_id: Any = None
        self._ref_task_id: Any = None

    def add(
        self,
        field: Any,
        values: Any,
        operator: FiltersOperations | str | None = None,
        method: FiltersMethod | str | None = None,
    ) -> None:
        """Add a condition on ``field`` to the ``$and`` or the ``$or`` list.

        ``method`` defaults to ``self.method``. On the ``$and`` list, a field that
        the defaults made unique (``hidden`` and ``type`` for items) replaces its
        earlier conditions, while conditions on other fields accumulate. Raises
        :class:`BadRequest` for a method other than ``"or"`` and ``"and"``.
        """
        if method is None:
            method = self.method
        if not isinstance(field, str):
            raise BadRequest(
                "400", f"Filter field must be a string such as 'dir', got {field!r}"
            )
        if _REFS_METADATA_FIELD in field and self.resource == FiltersResource.ITEM:
            logger.warning(
                "Conditions on %r can be met by different refs of one item, so the "
                "results may be wrong. Use operator MATCH on 'metadata.system.refs' "
                "to test the fields of one ref together.",
                field,
            )

        condition = SingleFilter(field=field, values=values, operator=operator)
        if method == FiltersMethod.OR:
            self.or_filter_list.append(condition)
        elif method == FiltersMethod.AND:
            if field in self._unique_fields:
                others = [c for c in self.and_filter_list if c.field != field]
                self.and_filter_list[:] = others
            self.and_filter_list.append(condition)
        else:
            raise BadRequest(
                "400", f"Unknown method {method}, please select from: or/and"
            )

    def has_field(self, field: Any) -> bool:
        """Return whether a condition in either list is on ``field``."""
        conditions = self.or_filter_list + self.and_filter_list
        return any(condition.field == field for condition in conditions)

    def pop(self, field: Any) -> None:
        """Remove the conditions on ``field`` from both lists, with the SDK's skip.

        The SDK removes entries while iterating over the list, so a condition right
        after a removed one stays. This does the same.
        """
        _remove_skipping_next(self.or_filter_list, lambda c: c.field == field)
        _remove_skipping_next(self.and_filter_list, lambda c: c.field == field)

    def pop_join(self, field: Any) -> None:
        """Remove the join's ``$and`` conditions on ``field``, with the skip of ``pop``.

        Raises ``KeyError`` if the join has no ``$and`` list, as the SDK does.
        """
        if self.join is not None:
            conditions = self.join["filter"]["$and"]
            _remove_skipping_next(conditions, lambda c: field in c)

    def add_join(
        self,
        field: Any,
        values: Any,
        operator: FiltersOperations | str | None = None,
        method: FiltersMethod | str = FiltersMethod.AND,
    ) -> None:
        """Add a condition on the joined resource: annotations of items, or the reverse.

        The condition goes under ``"$" + method`` of the join filter. Joins exist for
        items and annotations only, other resources raise :class:`BadRequest`.
        """
        if self.resource not in (FiltersResource.ITEM, FiltersResource.ANNOTATION):
            raise BadRequest("400", f"Cannot join to {self.resource} filters")

        if self.join is None:
            self.join = {}
        if "on" not in self.join:
            self.join["on"] = _join_on(self.resource)
        if "filter" not in self.join:
            self.join["filter"] = {}

        # The SDK concatenates without checking, so "$" + "xor" is accepted as is.
        key = "$" + method
        condition = SingleFilter(field=field, values=values, operator=operator)
        self.join["filter"].setdefault(key, []).append(condition.prepare())

    def sort_by(
        self,
        field: str,
        value: FiltersOrderByDirection | str = FiltersOrderByDirection.ASCENDING,
    ) -> None:
        """Sort by ``field`` after the fields already sorted by.

        Raises :class:`BadRequest` unless ``value`` is ascending or descending.
        """
        directions = (
            FiltersOrderByDirection.ASCENDING,
            FiltersOrderByDirection.DESCENDING,
        )
        if value not in directions:
            raise BadRequest("400", "Sort can be by ascending or descending order only")
        if isinstance(value, FiltersOrderByDirection):
            value = value.value
        self.sort[field] = value

    def set_references(
        self,
        operation: str,
        *,
        task_ids: str | list[str] | None = None,
        assignment_ids: str | list[str] | None = None,
    ) -> None:
        """Make ``prepare()`` send ``references``, as adding items to a task does.

        The body gets ``{"operation": operation, "refs": [...]}`` with a ref per task
        id, then one per assignment id, and ``prepare(operation=...)`` is ignored.
        """
        self._ref_op = operation
        if task_ids is not None:
            self._ref_task = True
            self._ref_task_id = task_ids
        if assignment_ids is not None:
            self._ref_assignment = True
            self._ref_assignment_id = assignment_ids

    def prepare(
        self,
        operation: str | None = None,
        update: JSONDict | None = None,
        query_only: bool = False,
        system_update: JSONDict | None = None,
        system_metadata: bool = False,
    ) -> JSONDict:
        """Return the JSON body of a query request.

        Keys come in the SDK's order: ``filter``, ``sort``, ``page``, ``pageSize``,
        ``resource``, ``join``, then ``references``, ``update`` or ``delete``, then
        ``context`` and ``systemSpace``. ``query_only`` leaves out the sort, the
        paging and ``resource``. ``operation="update"`` puts ``update`` under
        ``metadata.user``, and ``system_update`` under ``metadata.system`` when
        ``system_metadata`` is true. ``operation="delete"`` adds ``"delete": true``
        and drops the sort, and for items the paging. Any other operation raises
        :class:`BadRequest`. Unless ``query_only`` is set, a page size above the
        maximum is lowered to it, on this object too, with a warning.

        The body shares ``sort``, ``join``, ``context`` and list values with this
        object, as the SDK's does. A custom filter is completed in place and
        returned without default conditions, sort, operation, references or context.
        """
        if self.custom_filter is not None:
            body: JSONDict = _fill_custom_body(
                self.custom_filter, self.resource, self.page, self.page_size, self.join
            )
            return body

        body = {"filter": self._build_filter()}
        if not query_only:
            self._add_paging(body)
        if self.join is not None:
            body["join"] = self.join

        if self._ref_assignment or self._ref_task:
            body["references"] = {"operation": self._ref_op, "refs": self._refs()}
        elif operation is not None:
            self._add_operation(body, operation, update, system_update, system_metadata)

        if self.context is not None:
            body["context"] = self.context
        if self._system_space is not None:
            body["systemSpace"] = self._system_space
        return body

    def _add_defaults(self) -> None:
        if not self._use_defaults:
            return
        resource = self.resource
        if resource == FiltersResource.ITEM:
            self._unique_fields = ["type", "hidden"]
            self.add(field="hidden", values=False, method=FiltersMethod.AND)
            self.add(field="type", values="file", method=FiltersMethod.AND)
        elif resource in (FiltersResource.SERVICE, FiltersResource.PACKAGE):
            # Leave out the platform's global services and packages.
            self._unique_fields = ["global"]
            self.add(
                field="global",
                values=True,
                operator=FiltersOperations.NOT_EQUAL,
                method=FiltersMethod.AND,
            )
        elif resource == FiltersResource.ANNOTATION:
            self._unique_fields = ["type"]
            types = [name for name in ANNOTATION_TYPES if name != "note"]
            self.add(
                field="type",
                values=types,
                operator=FiltersOperations.IN,
                method=FiltersMethod.AND,
            )

    def _build_filter(self) -> JSONDict:
        recursive = self.recursive and self.resource == FiltersResource.ITEM
        query: JSONDict = {}
        if len(self.or_filter_list) > 0:
            query["$or"] = [c.prepare(recursive=recursive) for c in self.or_filter_list]
        if len(self.and_filter_list) > 0:
            query["$and"] = [
                c.prepare(recursive=recursive) for c in self.and_filter_list
            ]
        return query

    def _add_paging(self, body: JSONDict) -> None:
        if len(self.sort) > 0:
            body["sort"] = self.sort
        self._clip_page_size()
        body["page"] = self.page
        body["pageSize"] = self.page_size
        body["resource"] = self.resource

    def _clip_page_size(self) -> None:
        small = self.resource in _SMALL_MAX_RESOURCES
        max_page_size = _SMALL_PAGE_SIZE if small else MAX_PAGE_SIZE
        if isinstance(self.page_size, bool) or not isinstance(self.page_size, int):
            raise BadRequest(
                "400", f"page_size must be an integer, got {self.page_size!r}"
            )
        if self.page_size > max_page_size:
            logger.warning(
                "Page size %s is above the maximum of %s for %s, so %s is used.",
                self.page_size,
                max_page_size,
                self.resource,
                max_page_size,
            )
            self.page_size = max_page_size

    def _refs(self) -> list[JSONDict]:
        # Single ids are stored back as one-element lists, as the SDK does.
        refs: list[JSONDict] = []
        if self._ref_task:
            if not isinstance(self._ref_task_id, list):
                self._ref_task_id = [self._ref_task_id]
            refs += [{"type": "task", "id": i} for i in self._ref_task_id]
        if self._ref_assignment:
            if not isinstance(self._ref_assignment_id, list):
                self._ref_assignment_id = [self._ref_assignment_id]
            refs += [{"type": "assignment", "id": i} for i in self._ref_assignment_id]
        return refs

    def _add_operation(
        self,
        body: JSONDict,
        operation: str,
        update: JSONDict | None,
        system_update: JSONDict | None,
        system_metadata: bool,
    ) -> None:
        if operation == "update":
            changes: JSONDict = {"metadata": {"user": update}} if update else {}
            body["update"] = changes
            if system_metadata and system_update:
                body["systemSpace"] = True
                changes.setdefault("metadata", {})["system"] = system_update
        elif operation == "delete":
            body["delete"] = True
            body.pop("sort", None)
            if self.resource == FiltersResource.ITEM:
                body.pop("page", None)
                body.pop("pageSize", None)
        else:
            raise BadRequest("400", f"Unknown operation: {operation}")


def _remove_skipping_next(entries: list[Any], matches: Callable[[Any], bool]) -> None:
    """Remove matching entries with the SDK's loop, which skips some of them.

    The loop removes from the list it iterates over. After a removal the next entry
    moves into the index the loop has passed, so that entry is never tested, and
    ``list.remove`` drops the first entry equal to the match, not always the match.
    """
    for entry in entries:
        if matches(entry):
            entries.remove(entry)
