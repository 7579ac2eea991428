"""The replica store: one SQLite file with a dataset, its tasks and the journal."""

from localsync.store.connection import SCHEMA_VERSION, connect, write_transaction
from localsync.store.importer import ImportResult, create_task, import_exports
from localsync.store.journal import StatusResult
from localsync.store.replica import Replica, new_entity_id

__all__ = [
    "SCHEMA_VERSION",
    "ImportResult",
    "Replica",
    "StatusResult",
    "connect",
    "create_task",
    "import_exports",
    "new_entity_id",
    "write_transaction",
]
