"""The sync engine: push pending ops, pull remote changes, resolve conflicts by HLC."""

from localsync.sync.clone import clone, open_remote, store_token
from localsync.sync.engine import SyncEngine, SyncReport
from localsync.sync.remote import LocalsyncRemote, Remote, api_base_url
from localsync.sync.retry import RemoteUnavailable, RetryPolicy
from localsync.sync.watch import Watcher

__all__ = [
    "LocalsyncRemote",
    "Remote",
    "RemoteUnavailable",
    "RetryPolicy",
    "SyncEngine",
    "SyncReport",
    "Watcher",
    "api_base_url",
    "clone",
    "open_remote",
    "store_token",
]
