"""Commands of the command line's server area: ``serve`` and the ``server`` group.

``serve`` runs the server; ``server import``, ``server task create``, ``server token``
and ``server item delete`` administer a server database given by ``--db``.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from localsync.errors import ExceptionMain, LocalsyncError

DB_HELP = (
    "Server database: a SQLite file path (created when missing) or a postgresql:// URL."
)
DEFAULT_CREATOR = "admin@localsync"


def db_option(function: Any) -> Any:
    return click.option("--db", required=True, envvar="LOCALSYNC_DB", help=DB_HELP)(
        function
    )


def check_names(**names: str) -> None:
    """Raise ``Error: ...`` for an empty or blank name option."""
    for option, value in names.items():
        if not value.strip():
            raise click.ClickException(
                f"--{option} {value!r} is empty; pass a name with at least one character"
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
@db_option
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
    help="Processes.",
)
def serve(
    db: str,
    host: str,
    port: int,
    ssl_certfile: str | None,
    ssl_keyfile: str | None,
    workers: int,
) -> None:
    """Serve the Dataloop REST subset and the sync protocol over a database."""
    import uvicorn

    if bool(ssl_certfile) != bool(ssl_keyfile):
        raise click.ClickException(
            "--ssl-certfile and --ssl-keyfile go together; pass both or neither"
        )
    for option, path in (
        ("--ssl-certfile", ssl_certfile),
        ("--ssl-keyfile", ssl_keyfile),
    ):
        if path and not os.path.isfile(path):
            raise click.ClickException(
                f"{option} {path!r} does not exist; pass a PEM file"
            )
    with admin_errors():
        # Create or check the database once, before any worker starts.
        _open(db).close()

    os.environ["LOCALSYNC_DB"] = db
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


@click.group("server")
def server_group() -> None:
    """Administer a server database: import, tasks, tokens, item deletion."""


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
@db_option
def import_command(
    directory: str, project_name: str, dataset_name: str, creator: str, db: str
) -> None:
    """Import the Dataloop item JSON exports under DIRECTORY into one dataset.

    Re-importing the same files changes nothing; statuses set on the server stay.
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
    """Create tasks."""


def _parse_filter(filter_json: str | None) -> dict[str, Any] | None:
    if filter_json is None:
        return None
    try:
        parsed = json.loads(filter_json)
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"--filter-json is not valid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise click.ClickException(
            f"--filter-json must be a JSON object such as "
            f'\'{{"$and": [{{"dir": "/a"}}]}}\', got {filter_json!r}'
        )
    # Accept a whole query body as well as its filter.
    inner = parsed.get("filter", parsed)
    if not isinstance(inner, dict):
        raise click.ClickException("--filter-json: 'filter' must be a JSON object")
    return inner


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
)
@click.option(
    "--parent-task", help="Parent task name (a QA task takes its items with a status)."
)
@click.option(
    "--status", "statuses", multiple=True, help="Allowed status; repeat for more."
)
@click.option(
    "--filter-json",
    help="Query filter selecting the items (default: files not hidden).",
)
@click.option(
    "--assignee", "assignees", multiple=True, help="Assignee email; repeat for more."
)
@click.option(
    "--creator", default=DEFAULT_CREATOR, show_default=True, help="Task owner email."
)
@db_option
def task_create(
    project_name: str,
    dataset_name: str,
    name: str,
    task_type: str,
    parent_task: str | None,
    statuses: tuple[str, ...],
    filter_json: str | None,
    assignees: tuple[str, ...],
    creator: str,
    db: str,
) -> None:
    """Create a task over the items a filter selects, one assignment per assignee.

    Items are dealt to the assignments round-robin in id order.
    """
    from localsync.server.storage import NewTask

    check_names(name=name)
    query = _parse_filter(filter_json)
    for status in statuses:
        if not status.strip():
            raise click.ClickException("--status values must be non-empty strings")
    for email in assignees:
        if "@" not in email:
            raise click.ClickException(f"--assignee {email!r} is not an email address")
    if len(set(assignees)) != len(assignees):
        raise click.ClickException("--assignee lists an email twice; give each once")

    with admin_errors():
        storage = _open(db)
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
@db_option
def token_command(
    email: str, project_names: tuple[str, ...], expires_in: int, db: str
) -> None:
    """Print a bearer token (JWT) for EMAIL reaching the given projects."""
    from localsync.server.auth import issue_token

    if "@" not in email:
        raise click.ClickException(f"--email {email!r} is not an email address")
    with admin_errors():
        storage = _open(db)
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
    """Administer items."""


@item_group.command("delete")
@click.argument("item_ids", nargs=-1, required=True)
@db_option
def item_delete(item_ids: tuple[str, ...], db: str) -> None:
    """Delete items with their annotations and statuses; replicas get tombstones."""
    with admin_errors():
        storage = _open(db)
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


def register(group: click.Group) -> None:
    """Add this area's commands to the root group."""
    group.add_command(serve)
    group.add_command(server_group)
