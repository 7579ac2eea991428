"""localsync: Dataloop-style item statuses that keep working offline.

``import localsync as dl`` offers the dtlpy 1.126.5 calls for projects, datasets,
items, tasks, assignments, ``Filters`` and item statuses, on the replica file
named by the ``LOCALSYNC_STORE`` environment variable (default
``./.localsync/replica.db``), opened on first use. ``localsync.Replica(path)``
gives the same attributes on another replica file. Other dtlpy attributes raise
``localsync.errors.NotSupportedError`` naming the call.
"""

__version__ = "0.1.0"

from localsync import errors
from localsync import errors as exceptions
from localsync.api import (
    Assignment,
    Dataset,
    Item,
    ItemAction,
    PagedEntities,
    Project,
    ReplicaApi,
    Task,
    default_store_path,
)
from localsync.api.errors import unsupported as _unsupported
from localsync.filters import (
    FILTERS_KNOWN_FIELDS_ANNOTATED,
    FILTERS_KNOWN_FIELDS_CREATED_AT,
    FILTERS_KNOWN_FIELDS_DIR,
    FILTERS_KNOWN_FIELDS_FILENAME,
    FILTERS_KNOWN_FIELDS_HIDDEN,
    FILTERS_KNOWN_FIELDS_LABEL,
    FILTERS_KNOWN_FIELDS_NAME,
    FILTERS_KNOWN_FIELDS_TYPE,
    FILTERS_KNOWN_FIELDS_UPDATED_AT,
    FILTERS_METHOD_AND,
    FILTERS_METHOD_OR,
    FILTERS_OPERATIONS_AND,
    FILTERS_OPERATIONS_EQUAL,
    FILTERS_OPERATIONS_EXISTS,
    FILTERS_OPERATIONS_GREATER_THAN,
    FILTERS_OPERATIONS_IN,
    FILTERS_OPERATIONS_LESS_THAN,
    FILTERS_OPERATIONS_NOT_EQUAL,
    FILTERS_OPERATIONS_OR,
    FILTERS_ORDERBY_DIRECTION_ASCENDING,
    FILTERS_ORDERBY_DIRECTION_DESCENDING,
    FILTERS_RESOURCE_ANNOTATION,
    FILTERS_RESOURCE_DATASET,
    FILTERS_RESOURCE_EXECUTION,
    FILTERS_RESOURCE_ITEM,
    FILTERS_RESOURCE_MODEL,
    FILTERS_RESOURCE_ONTOLOGY,
    FILTERS_RESOURCE_PACKAGE,
    FILTERS_RESOURCE_RECIPE,
    FILTERS_RESOURCE_SERVICE,
    FILTERS_RESOURCE_TRIGGER,
    FILTERS_RESOURCE_WEBHOOK,
    Filters,
    FiltersKnownFields,
    FiltersMethod,
    FiltersOperations,
    FiltersOrderByDirection,
    FiltersResource,
)
from localsync.statuses import (
    ITEM_STATUS_APPROVED,
    ITEM_STATUS_COMPLETED,
    ITEM_STATUS_DISCARDED,
    ItemStatus,
)
from localsync.store import StatusResult, import_exports

# The API handle class; the store's own Replica stays in localsync.store.
Replica = ReplicaApi

_default = ReplicaApi(label="dl")
projects = _default.projects
datasets = _default.datasets
items = _default.items
tasks = _default.tasks
assignments = _default.assignments
token_expired = _default.token_expired
login = _default.login
login_token = _default.login_token
setenv = _default.setenv
add_environment = _default.add_environment

__all__ = [
    "Assignment",
    "Dataset",
    "FILTERS_KNOWN_FIELDS_ANNOTATED",
    "FILTERS_KNOWN_FIELDS_CREATED_AT",
    "FILTERS_KNOWN_FIELDS_DIR",
    "FILTERS_KNOWN_FIELDS_FILENAME",
    "FILTERS_KNOWN_FIELDS_HIDDEN",
    "FILTERS_KNOWN_FIELDS_LABEL",
    "FILTERS_KNOWN_FIELDS_NAME",
    "FILTERS_KNOWN_FIELDS_TYPE",
    "FILTERS_KNOWN_FIELDS_UPDATED_AT",
    "FILTERS_METHOD_AND",
    "FILTERS_METHOD_OR",
    "FILTERS_OPERATIONS_AND",
    "FILTERS_OPERATIONS_EQUAL",
    "FILTERS_OPERATIONS_EXISTS",
    "FILTERS_OPERATIONS_GREATER_THAN",
    "FILTERS_OPERATIONS_IN",
    "FILTERS_OPERATIONS_LESS_THAN",
    "FILTERS_OPERATIONS_NOT_EQUAL",
    "FILTERS_OPERATIONS_OR",
    "FILTERS_ORDERBY_DIRECTION_ASCENDING",
    "FILTERS_ORDERBY_DIRECTION_DESCENDING",
    "FILTERS_RESOURCE_ANNOTATION",
    "FILTERS_RESOURCE_DATASET",
    "FILTERS_RESOURCE_EXECUTION",
    "FILTERS_RESOURCE_ITEM",
    "FILTERS_RESOURCE_MODEL",
    "FILTERS_RESOURCE_ONTOLOGY",
    "FILTERS_RESOURCE_PACKAGE",
    "FILTERS_RESOURCE_RECIPE",
    "FILTERS_RESOURCE_SERVICE",
    "FILTERS_RESOURCE_TRIGGER",
    "FILTERS_RESOURCE_WEBHOOK",
    "Filters",
    "FiltersKnownFields",
    "FiltersMethod",
    "FiltersOperations",
    "FiltersOrderByDirection",
    "FiltersResource",
    "ITEM_STATUS_APPROVED",
    "ITEM_STATUS_COMPLETED",
    "ITEM_STATUS_DISCARDED",
    "Item",
    "ItemAction",
    "ItemStatus",
    "PagedEntities",
    "Project",
    "Replica",
    "ReplicaApi",
    "StatusResult",
    "Task",
    "__version__",
    "add_environment",
    "assignments",
    "close",
    "datasets",
    "default_store_path",
    "errors",
    "exceptions",
    "import_exports",
    "items",
    "login",
    "login_token",
    "projects",
    "setenv",
    "tasks",
    "token_expired",
]


def close() -> None:
    """Close the default replica file; the next call opens it again."""
    _default.close()


def __getattr__(name: str) -> object:
    # Reached only for names this module does not define: dtlpy's other calls.
    if name.startswith("_"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    raise _unsupported(f"dl.{name}")
