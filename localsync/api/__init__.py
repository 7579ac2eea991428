"""The dtlpy-shaped offline API: entities, repositories, pages and status calls."""

from localsync.api.client import (
    DEFAULT_STORE,
    STORE_ENV,
    ReplicaApi,
    default_store_path,
)
from localsync.api.entities import Assignment, Dataset, Item, ItemAction, Project, Task
from localsync.api.errors import UnsupportedAttributeError
from localsync.api.paged import PagedEntities
from localsync.api.status_calls import BulkStatusResult

__all__ = [
    "DEFAULT_STORE",
    "STORE_ENV",
    "Assignment",
    "BulkStatusResult",
    "Dataset",
    "Item",
    "ItemAction",
    "PagedEntities",
    "Project",
    "ReplicaApi",
    "Task",
    "UnsupportedAttributeError",
    "default_store_path",
]
