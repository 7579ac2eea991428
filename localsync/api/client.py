"""The API handle: the dtlpy-shaped calls bound to one replica file.

``import localsync as dl`` gives a handle on the replica named by the
``LOCALSYNC_STORE`` environment variable (default ``./.localsync/replica.db``);
``localsync.Replica(path)`` gives one on another file. The file is opened on first
use. Session calls (``login``, ``login_token``, ``setenv``, ``add_environment``,
``token_expired``) never block and never touch the network.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from localsync.api import tokens
from localsync.api.entities import Dataset, Project
from localsync.api.errors import unsupported
from localsync.api.repositories import Assignments, Datasets, Items, Projects, Tasks
from localsync.errors import BadRequest, NotFound
from localsync.store import Replica as Store

logger = logging.getLogger(__name__)

STORE_ENV = "LOCALSYNC_STORE"
DEFAULT_STORE = Path(".localsync") / "replica.db"
# The creator of status ops when the stored token carries no email.
OFFLINE_USER = "local@localsync"


def default_store_path() -> Path:
    """Return ``$LOCALSYNC_STORE``, or ``./.localsync/replica.db`` when it is unset."""
    return Path(os.environ.get(STORE_ENV) or DEFAULT_STORE)


class ReplicaApi:
    """The dtlpy-shaped API on one replica file.

    ``path=None`` follows ``LOCALSYNC_STORE`` (default ``./.localsync/replica.db``)
    at every use and reopens when it changes. Attributes: ``projects``,
    ``datasets``, ``items``, ``tasks``, ``assignments`` (the last three on the
    replica's dataset) and the session calls. Other dtlpy attributes raise
    ``NotSupportedError`` naming the call.
    """

    def __init__(
        self, path: str | Path | None = None, *, label: str = "replica"
    ) -> None:
        self._fixed_path = Path(path) if path is not None else None
        self._label = label
        self._store: Store | None = None
        self._lock = threading.Lock()
        self.projects = Projects(self)
        self.datasets = Datasets(self)
        self.items = Items(self)
        self.tasks = Tasks(self)
        self.assignments = Assignments(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise unsupported(f"{self._label}.{name}")

    def __enter__(self) -> ReplicaApi:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def path(self) -> Path:
        """The replica file this handle reads and writes."""
        return (
            self._fixed_path if self._fixed_path is not None else default_store_path()
        )

    @property
    def store(self) -> Store:
        """The open replica, opened on first use; raises ``StoreError`` if unusable."""
        path = self.path
        with self._lock:
            if self._store is not None and self._store.path != path:
                self._store.close()
                self._store = None
            if self._store is None:
                self._store = Store(path)
            return self._store

    def close(self) -> None:
        """Close the replica file; the next call opens it again."""
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    def project_entity(self) -> Project:
        document = self.store.project()
        if document is None:
            raise NotFound("404", "Project not found")
        return Project(document, self)

    def dataset_entity(self) -> Dataset:
        document = self.store.dataset()
        if document is None:
            raise NotFound(
                "404",
                f"Replica {str(self.path)!r} holds no dataset; fill it with "
                "'localsync import' or 'localsync clone'",
            )
        return Dataset(document, self)

    def current_user(self) -> str:
        """Return the email of the stored token, the creator of new status ops."""
        return tokens.token_email(self.store.setting("token")) or OFFLINE_USER

    # Session calls

    def token_expired(self, t: float = tokens.EXPIRY_MARGIN_S) -> bool:
        """Return whether the stored token is missing or expires within ``t`` seconds.

        The token's ``exp`` claim is read without verifying its signature.
        """
        return tokens.is_expired(self.store.setting("token"), t)

    def login(self, *args: Any, **kwargs: Any) -> bool:
        """Return ``False`` at once: there is no interactive login offline.

        Status calls work without a token; store one for the next sync with
        ``login_token(token)`` or ``localsync login``.
        """
        logger.warning(
            "%s.login() opens no browser in localsync; statuses are journaled "
            "offline, and login_token(token) stores the token for the next sync",
            self._label,
        )
        return False

    def login_token(self, token: str) -> None:
        """Store a JWT in the replica (setting ``token``) for the next sync."""
        if tokens.token_claims(token) is None:
            raise BadRequest(
                "400",
                "Invalid token: expected a JWT of three base64url parts with a JSON "
                "payload; copy the whole token from the platform",
            )
        from localsync.sync.clone import check_same_user

        check_same_user(self.store, tokens.token_email(token))
        self.store.set_setting("token", token)

    def add_environment(
        self,
        environment: str,
        audience: str | None = None,
        client_id: str | None = None,
        auth0_url: str | None = None,
        verify_ssl: bool = True,
        token: str | None = None,
        refresh_token: str | None = None,
        alias: str | None = None,
        use_ssl_context: bool = False,
        gate_url: str | None = None,
        url: str | None = None,
        login_domain: str | None = None,
    ) -> None:
        """Record an environment (setting ``environments``); a token is stored too."""
        environments = self._environments()
        if alias is not None:
            environments = {
                key: value
                for key, value in environments.items()
                if value.get("alias") != alias
            }
        environments[environment] = {
            "alias": alias,
            "gate_url": gate_url,
            "url": url,
            "verify_ssl": verify_ssl,
            "audience": audience,
            "client_id": client_id,
            "auth0_url": auth0_url,
            "use_ssl_context": use_ssl_context,
            "login_domain": login_domain,
        }
        self.store.set_setting("environments", json.dumps(environments))
        if token is not None:
            self.login_token(token)

    def setenv(self, env: str) -> None:
        """Record the environment in use (setting ``environment``), alias resolved.

        An environment URL is recorded as given; the sync engine reads its remote
        from the ``remote_url`` setting, which this leaves unchanged.
        """
        if not isinstance(env, str) or not env:
            raise BadRequest("400", f"Environment {env!r} must be a non-empty string")
        for url, environment in self._environments().items():
            if environment.get("alias") == env:
                env = url
                break
        self.store.set_setting("environment", env)

    def _environments(self) -> dict[str, dict[str, Any]]:
        raw = self.store.setting("environments")
        value = json.loads(raw) if raw else {}
        return value if isinstance(value, dict) else {}
