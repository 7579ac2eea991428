"""localsync: Dataloop-style item statuses that keep working offline."""

__version__ = "0.1.0"
