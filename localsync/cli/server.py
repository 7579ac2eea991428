"""Commands of the command line's server area: ``serve`` and the ``server`` group.

``serve`` runs the server; ``server import``, ``server task create``, ``server token``
and ``server item delete`` administer a server database given by ``--db``.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import socket
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from localsync.cli.replica import parse_filter_json
from localsync.errors import ExceptionMain, LocalsyncError
from localsync.server.limits import DEFAULT_MAX_BODY_MB, MAX_BODY_ENV

DB_ENV = "LOCALSYNC_DB"
DB_HELP_CREATE = (
    "Server database: a SQLite file path (created when missing) or a postgresql:// URL."
)
DB_HELP_EXISTING = (
    "Server database: an existing SQLite file (made by 'localsync server import') "
    "or a postgresql:// URL."
)
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
DEFAULT_CREATOR = "admin@localsync"
# uvicorn exits with this status when the server fails to start
# (uvicorn.config.STARTUP_FAILURE in uvicorn 0.55).
UVICORN_STARTUP_FAILURE = 3


def db_option(*, creates: bool) -> Callable[[Any], Any]:
    """Return the ``--db`` option; ``creates`` picks the help of commands that make
    a missing SQLite file."""
    return click.option(
        "--db",
        required=True,
        envvar=DB_ENV,
        show_envvar=True,
        metavar="PATH|URL",
        help=DB_HELP_CREATE if creates else DB_HELP_EXISTING,
    )


def check_names(**names: str) -> None:
    """Raise ``Error: ...`` for an empty or blank name option."""
    for option, value in names.items():
        if not value.strip():
            raise click.ClickException(
                f"--{option} {value!r} is empty; pass a name with at least one "
                "character"
            )


@contextmanager
def admin_errors() -> Iterator[None]:
    """Turn localsync errors into ``Error: ...`` on stderr and exit status 1."""
    try:
        yield
    except ExceptionMain as exc:
        raise click.ClickException(exc.message) from exc
    except LocalsyncError as exc:
        raise click.ClickException(str(exc)) from exc


def _open(db: str) -> Any:
    from localsync.server.storage import open_storage

    return open_storage(db)


def _open_existing(db: str) -> Any:
    """Open a server database that must exist already; a missing SQLite file is an
    error, so a mistyped --db creates nothing."""
    if not db.startswith(POSTGRES_SCHEMES) and not os.path.exists(db):
        raise click.ClickException(
            f"server database {db!r} does not exist; create it with "
            "'localsync server import' or check --db"
        )
    return _open(db)


def parse_server_filter(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> dict[str, Any] | None:
    """Parse ``--filter-json`` as the replica commands do; return the query's filter.

    A whole query body is accepted as well as its filter.
    """
    parsed = parse_filter_json(ctx, param, value)
    if parsed is None:
        return None
    inner = parsed.get("filter", parsed)
    if not isinstance(inner, dict):
        raise click.BadParameter(f"its 'filter' must be a JSON object, got {value!r}")
    return inner


def _uvicorn_log_config() -> dict[str, Any]:
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["localsync"] = {
        "format": "%(asctime)s %(levelname)s %(name)s: %(message)s"
    }
    config["handlers"]["localsync"] = {
        "class": "logging.StreamHandler",
        "formatter": "localsync",
        "stream": "ext://sys.stderr",
    }
    config["loggers"]["localsync"] = {
        "handlers": ["localsync"],
        "level": "INFO",
        "propagate": False,
    }
    return config


@click.command()
@db_option(creates=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=8787,
    show_default=True,
    help="TCP port.",
)
@click.option(
    "--ssl-certfile", type=click.Path(dir_okay=False), help="TLS certificate (PEM)."
)
@click.option(
    "--ssl-keyfile", type=click.Path(dir_okay=False), help="TLS private key (PEM)."
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Number of uvicorn worker processes. SQLite takes one write at a time, so "
    "more than 1 speeds up pushes only with a postgresql:// database.",
)
@click.option(
    "--max-body-mb",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_BODY_MB,
    show_default=True,
    help="Largest request body accepted, in MiB; larger ones get HTTP 413.",
)
def serve(
    db: str,
    host: str,
    port: int,
    ssl_certfile: str | None,
    ssl_keyfile: str | None,
    workers: int,
    max_body_mb: int,
) -> None:
    """Serve the Dataloop REST subset and the sync protocol over a database.

    The TLS files, the port and the database are checked before the server
    starts; any of them failing is an error with exit status 1.

    \b
    Example:
      localsync serve --db server.db --port 8799
      localsync serve --db postgresql://localsync@127.0.0.1/localsync --workers 4
    """
    import uvicorn

    _check_tls(ssl_certfile, ssl_keyfile)
    _check_port_free(host, port)
    with admin_errors():
        # Create or check the database once, before any worker starts.
        _open(db).close()

    os.environ[DB_ENV] = db
    os.environ[MAX_BODY_ENV] = str(max_body_mb)
    try:
        uvicorn.run(
            "localsync.server.app:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            ssl_certfile=ssl_certfile,
            ssl_keyfile=ssl_keyfile,
            access_log=False,
            log_config=_uvicorn_log_config(),
        )
    except SystemExit as exc:
        # NOTE: with --workers above 1, uvicorn returns normally (status 0) when a
        # worker fails to start; only the logged error shows it.
        if exc.code == UVICORN_STARTUP_FAILURE:
            raise click.ClickException(
                "the server failed to start; see the error logged above"
            ) from exc
        raise


def _check_tls(certfile: str | None, keyfile: str | None) -> None:
    """Load the TLS certificate and key as uvicorn will, failing with ``Error: ...``."""
    if bool(certfile) != bool(keyfile):
        raise click.ClickException(
            "--ssl-certfile and --ssl-keyfile go together; pass both or neither"
        )
    if certfile is None or keyfile is None:
        return
    for option, path in (("--ssl-certfile", certfile), ("--ssl-keyfile", keyfile)):
        if not os.path.isfile(path):
            raise click.ClickException(
                f"{option} {path!r} does not exist; pass a PEM file"
            )
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(certfile, keyfile)
    except (ssl.SSLError, OSError) as exc:
        raise click.ClickException(
            f"--ssl-certfile {certfile!r} and --ssl-keyfile {keyfile!r} could not be "
            f"loaded ({exc}); pass a PEM certificate and its unencrypted private key"
        ) from exc


def _check_port_free(host: str, port: int) -> None:
    """Bind (host, port) and close it again, as uvicorn binds it (SO_REUSEADDR)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise click.ClickException(
                    f"port {port} on {host} is already in use; pick another --port"
                ) from exc
            raise click.ClickException(
                f"cannot listen on {host} port {port}: {exc}; check --host and --port"
            ) from exc


@click.group("server")
def server_group() -> None:
    """Administer a server database: import, tasks, tokens, item deletion.

    \b
    Example:
      localsync server import ./dataloop-exports --db server.db \\
          --project sheep-and-fruit --dataset exports
    """


@server_group.command("import")
@click.argument("directory")
@click.option(
    "--project", "project_name", required=True, help="Project name (created if new)."
)
@click.option(
    "--dataset", "dataset_name", required=True, help="Dataset name (created if new)."
)
@click.option(
    "--creator", default=DEFAULT_CREATOR, show_default=True, help="Creator email."
)
@db_option(creates=True)
def import_command(
    directory: str, project_name: str, dataset_name: str, creator: str, db: str
) -> None:
    """Import the Dataloop item JSON exports under DIRECTORY into one dataset.

    Re-importing the same files changes nothing; statuses set on the server stay.
    The database is created when it is missing.

    \b
    Example:
      localsync server import ./dataloop-exports --db server.db \\
          --project sheep-and-fruit --dataset exports
    """
    from localsync.exports import exported_items, read_export_records
    from localsync.statuses import iso_timestamp

    check_names(project=project_name, dataset=dataset_name)
    with admin_errors():
        # Check every file before the first write, so a bad file changes nothing.
        record_count = sum(1 for _ in read_export_records(directory))
        storage = _open(db)
        try:
            project = storage.ensure_project(project_name, creator=creator)
            dataset = storage.ensure_dataset(
                project["id"], dataset_name, creator=creator
            )
            now = iso_timestamp()
            entries = exported_items(
                read_export_records(directory),
                dataset_id=dataset["id"],
                creator=creator,
                now=now,
            )
            counts = storage.import_items(dataset["id"], entries, now=now)
        finally:
            storage.close()
    summary = {
        "project": project["id"],
        "dataset": dataset["id"],
        "files": record_count,
    }
    click.echo(json.dumps({**summary, **vars(counts)}, indent=2))


@server_group.group("task")
def task_group() -> None:
    """Create tasks.

    \b
    Example:
      localsync server task create --db server.db --project sheep-and-fruit \\
          --dataset exports --name annotate --assignee ann@example.com
    """


def _project_and_dataset(
    storage: Any, project_name: str, dataset_name: str
) -> tuple[Any, Any]:
    project = storage.project_named(project_name)
    if project is None:
        raise click.ClickException(
            f"Project {project_name!r} not found; "
            "create it with 'localsync server import'"
        )
    for dataset in storage.datasets([project["id"]]):
        if dataset["name"] == dataset_name:
            return project, dataset
    raise click.ClickException(
        f"Dataset {dataset_name!r} not found in project {project_name!r}; "
        "create it with 'localsync server import'"
    )


@task_group.command("create")
@click.option("--project", "project_name", required=True, help="Project name.")
@click.option("--dataset", "dataset_name", required=True, help="Dataset name.")
@click.option("--name", required=True, help="Task name, unique in the dataset.")
@click.option(
    "--type",
    "task_type",
    type=click.Choice(["annotation", "qa"]),
    default="annotation",
    show_default=True,
    help="Task type; it sets the default statuses: completed and discard for "
    "annotation, approved and discard for qa. A qa task needs --parent-task.",
)
@click.option(
    "--parent-task", help="Parent task name (a QA task takes its items with a status)."
)
@click.option(
    "--status", "statuses", multiple=True, help="Allowed status; repeat for more."
)
@click.option(
    "--filter-json",
    callback=parse_server_filter,
    metavar="JSON",
    help="Query filter selecting the items, as a JSON object: the filter or a "
    'whole query body with a "filter" key (default: files not hidden).',
)
@click.option(
    "--assignee", "assignees", multiple=True, help="Assignee email; repeat for more."
)
@click.option(
    "--creator", default=DEFAULT_CREATOR, show_default=True, help="Task owner email."
)
@db_option(creates=False)
def task_create(
    project_name: str,
    dataset_name: str,
    name: str,
    task_type: str,
    parent_task: str | None,
    statuses: tuple[str, ...],
    filter_json: dict[str, Any] | None,
    assignees: tuple[str, ...],
    creator: str,
    db: str,
) -> None:
    """Create a task over the items a filter selects, one assignment per assignee.

    Items are dealt to the assignments round-robin in id order.

    \b
    Example:
      localsync server task create --db server.db --project sheep-and-fruit \\
          --dataset exports --name annotate --status completed --status discard \\
          --filter-json '{"$and": [{"dir": "/Merino"}]}' --assignee ann@example.com
    """
    from localsync.server.storage import NewTask

    check_names(name=name)
    query = filter_json
    for status in statuses:
        if not status.strip():
            raise click.ClickException("--status values must be non-empty strings")
    for email in assignees:
        if "@" not in email:
            raise click.ClickException(f"--assignee {email!r} is not an email address")
    if len(set(assignees)) != len(assignees):
        raise click.ClickException("--assignee lists an email twice; give each once")

    with admin_errors():
        storage = _open_existing(db)
        try:
            project, dataset = _project_and_dataset(storage, project_name, dataset_name)
            parent_id = None
            if parent_task is not None:
                parent = storage.task_named(dataset["id"], parent_task)
                if parent is None:
                    raise click.ClickException(
                        f"Parent task {parent_task!r} not found in dataset "
                        f"{dataset_name!r}"
                    )
                parent_id = parent["id"]
            task = storage.create_task(
                NewTask(
                    project_id=project["id"],
                    dataset_id=dataset["id"],
                    name=name,
                    task_type=task_type,
                    parent_task_id=parent_id,
                    statuses=tuple(dict.fromkeys(statuses)),
                    query=query,
                    assignees=assignees,
                    creator=creator,
                )
            )
        finally:
            storage.close()
    click.echo(json.dumps(task, indent=2))


@server_group.command("token")
@click.option(
    "--email", required=True, help="The user's email, recorded on every write."
)
@click.option(
    "--project",
    "project_names",
    multiple=True,
    required=True,
    help="Project name; repeatable.",
)
@click.option(
    "--expires-in",
    type=click.IntRange(min=1),
    default=30 * 24 * 3600,
    show_default=True,
    help="Lifetime in seconds (dtlpy treats tokens within 60 s of expiry as expired).",
)
@db_option(creates=False)
def token_command(
    email: str, project_names: tuple[str, ...], expires_in: int, db: str
) -> None:
    """Print a bearer token (JWT) for EMAIL reaching the given projects.

    The token is signed with LOCALSYNC_SECRET when set, else with the secret made
    with the database, which 'localsync serve' uses too.

    \b
    Example:
      localsync server token --db server.db --email ann@example.com \\
          --project sheep-and-fruit > ann-token.txt
    """
    from localsync.server.auth import issue_token

    if "@" not in email:
        raise click.ClickException(f"--email {email!r} is not an email address")
    with admin_errors():
        storage = _open_existing(db)
        try:
            project_ids = []
            for name in project_names:
                project = storage.project_named(name)
                if project is None:
                    raise click.ClickException(
                        f"Project {name!r} not found; "
                        "create it with 'localsync server import'"
                    )
                project_ids.append(project["id"])
            secret = os.environ.get("LOCALSYNC_SECRET") or storage.meta().secret
        finally:
            storage.close()
    click.echo(
        issue_token(secret, email=email, project_ids=project_ids, expires_in=expires_in)
    )


@server_group.group("item")
def item_group() -> None:
    """Administer items.

    \b
    Example:
      localsync server item delete 64f1c0e5a1b2c3d4e5f60718 --db server.db
    """


@item_group.command("delete")
@click.argument("item_ids", nargs=-1, required=True)
@db_option(creates=False)
def item_delete(item_ids: tuple[str, ...], db: str) -> None:
    """Delete items with their annotations and statuses; replicas get tombstones.

    Nothing is deleted when any of ITEM_IDS is not found.

    \b
    Example:
      localsync server item delete 64f1c0e5a1b2c3d4e5f60718 --db server.db
    """
    with admin_errors():
        storage = _open_existing(db)
        try:
            missing = [item_id for item_id in item_ids if storage.item(item_id) is None]
            if missing:
                raise click.ClickException(
                    f"Items not found: {', '.join(missing)}; nothing was deleted"
                )
            deleted = storage.delete_items(item_ids)
        finally:
            storage.close()
    click.echo(json.dumps({"deleted": deleted}, indent=2))


@server_group.command("new-epoch")
@db_option(creates=False)
def new_epoch(db: str) -> None:
    """Give the database a new epoch, after restoring it from a copy.

    Replicas that synced with the old epoch then pull everything again and push
    their pending ops again, so none of them keeps a cursor past the restored
    data. Restart running 'localsync serve' processes afterwards.

    \b
    Example:
      localsync server new-epoch --db server.db
    """
    with admin_errors():
        storage = _open_existing(db)
        try:
            old = storage.meta().epoch
            epoch = storage.renew_epoch()
        finally:
            storage.close()
    click.echo(json.dumps({"previousEpoch": old, "epoch": epoch}, indent=2))


def register(group: click.Group) -> None:
    """Add this area's commands to the root group."""
    group.add_command(serve)
    group.add_command(server_group)
