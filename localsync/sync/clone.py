"""Creating a replica from a remote, and reconnecting a replica to its remote."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from localsync.errors import BadRequest, SyncError
from localsync.store import Replica
from localsync.sync.apply import PullCounts
from localsync.sync.engine import SyncEngine, SyncReport
from localsync.sync.pull import DEFAULT_PAGE_LIMIT
from localsync.sync.remote import (
    DEFAULT_TIMEOUT,
    JSON,
    LocalsyncRemote,
    PullPage,
    Remote,
    RemoteRejected,
    api_base_url,
    token_email,
)
from localsync.sync.retry import RemoteUnavailable, RetryPolicy

logger = logging.getLogger(__name__)

# The remote's and the retry policy's errors end with the fix for a replica that
# exists. A clone that failed has no replica to log in to or to sync yet, so clone()
# replaces those hints with these.
SYNC_LOGIN_HINT = "run 'localsync login'"
CLONE_TOKEN_HINT = (
    "pass a valid token with --token (or LOCALSYNC_TOKEN); the server's "
    "administrator issues one with 'localsync server token --db DB --email EMAIL "
    "--project PROJECT'"
)
SYNC_AGAIN_HINT = "run the sync again"
CLONE_AGAIN_HINT = "run the clone again"


def open_remote(
    replica: Replica,
    *,
    retry: RetryPolicy | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> LocalsyncRemote:
    """Return a client for the replica's stored remote URL and token."""
    url, token = replica.setting("remote_url"), replica.setting("token")
    if url is None:
        raise SyncError(
            f"Replica {str(replica.path)!r} has no remote; it was not made by "
            "'localsync clone', so it can only be used offline"
        )
    if not token:
        raise SyncError(
            f"Replica {str(replica.path)!r} has no token; run "
            "'localsync login --token TOKEN'"
        )
    return LocalsyncRemote(url, token, retry=retry, timeout=timeout)


def check_same_user(replica: Replica, email: str | None) -> None:
    """Raise ``BadRequest`` when ``email`` is not the user the replica belongs to.

    A replica's journal contains its user's ops, and the server binds its replica id
    to that user, so another user's token would only author those ops anew.
    """
    owner = replica.setting("user_email")
    if owner and email and owner != email:
        raise BadRequest(
            "400",
            f"Replica {str(replica.path)!r} belongs to {owner}, and the token is "
            f"for {email}; clone into a new file for {email}, or use a token "
            f"for {owner}",
        )


def store_token(replica: Replica, token: str) -> str | None:
    """Replace the replica's token; return the user email the token names."""
    email = token_email(token)
    check_same_user(replica, email)
    with replica.transaction():
        replica.set_setting("token", token)
        if email:
            replica.set_setting("user_email", email)
    return email


def clone(
    store: str | Path,
    url: str,
    *,
    token: str,
    project: str,
    dataset: str,
    retry: RetryPolicy | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    page_limit: int = DEFAULT_PAGE_LIMIT,
    on_start: Callable[[JSON], None] | None = None,
    on_page: Callable[[PullPage, PullCounts], None] | None = None,
) -> SyncReport:
    """Clone a dataset of a remote into the replica file ``store``.

    Cloning again into the same file resumes (or refreshes) the clone; a file that
    contains another dataset or another remote is left unchanged and raises
    ``BadRequest``. ``on_start`` gets the dataset JSON before the first page.
    """
    base_url = api_base_url(url)
    email = token_email(token)
    path = Path(store)
    if path.exists():
        with Replica(path) as existing:
            _check_same_dataset(
                existing, base_url, dataset_name=dataset, dataset_id=None
            )
            check_same_user(existing, email)

    with (
        _clone_hints(),
        LocalsyncRemote(base_url, token, retry=retry, timeout=timeout) as remote,
    ):
        project_json = remote.project_by_name(project)
        dataset_json = _dataset_by_name(remote, project_json["id"], project, dataset)
        with Replica(path, create=True) as replica:
            _check_same_dataset(
                replica, base_url, dataset_name=dataset, dataset_id=dataset_json["id"]
            )
            with replica.transaction():
                replica.set_setting("remote_url", base_url)
                replica.set_setting("token", token)
                replica.set_setting("user_email", email)
                replica.put_project(project_json)
                replica.put_dataset(dataset_json, project_id=project_json["id"])
            if on_start is not None:
                on_start(dataset_json)
            engine = SyncEngine(replica, remote, page_limit=page_limit)
            report = engine.pull(on_page=on_page)
    logger.info(
        "cloned dataset %s (%s) into %s: %d changes",
        dataset,
        dataset_json["id"],
        path,
        report.pull.changes,
    )
    return report


def _dataset_by_name(
    remote: Remote, project_id: str, project: str, dataset: str
) -> JSON:
    """Return the dataset's JSON; a missing dataset's error names its project."""
    try:
        return remote.dataset_by_name(project_id, dataset)
    except RemoteRejected as exc:
        if exc.status_code != 404:
            raise
        raise RemoteRejected(
            f"Dataset {dataset!r} not found in project {project!r} on {remote.url}; "
            "check the name given to --dataset",
            404,
        ) from exc


@contextmanager
def _clone_hints() -> Iterator[None]:
    """Re-raise a rejected token or an unreachable remote with the fix for a clone."""
    try:
        yield
    except RemoteRejected as exc:
        if exc.status_code != 401:
            raise
        message = _replace_hint(str(exc), SYNC_LOGIN_HINT, CLONE_TOKEN_HINT)
        raise RemoteRejected(message, exc.status_code) from exc
    except RemoteUnavailable as exc:
        message = _replace_hint(str(exc), SYNC_AGAIN_HINT, CLONE_AGAIN_HINT)
        raise RemoteUnavailable(message) from exc


def _replace_hint(message: str, old: str, new: str) -> str:
    if old in message:
        return message.replace(old, new)
    return f"{message}; {new}"


def _check_same_dataset(
    replica: Replica, base_url: str, *, dataset_name: str, dataset_id: str | None
) -> None:
    held = replica.dataset()
    if held is not None:
        other_name = held.get("name") != dataset_name
        other_id = dataset_id is not None and held.get("id") != dataset_id
        if other_name or other_id:
            raise BadRequest(
                "400",
                f"Replica {str(replica.path)!r} already holds dataset "
                f"{held.get('name')!r} "
                f"({held.get('id')}); clone {dataset_name!r} into another --store path",
            )
    remote_url = replica.setting("remote_url")
    if remote_url is not None and remote_url != base_url:
        raise BadRequest(
            "400",
            f"Replica {str(replica.path)!r} syncs with {remote_url}, not "
            f"{base_url}; clone "
            "into another --store path",
        )
