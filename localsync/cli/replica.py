"""Commands of the replica area: import, task, items, status, tasks, log, info.

Every command takes ``--store PATH`` (env ``LOCALSYNC_STORE``, default
``./.localsync/replica.db``) and prints JSON; commands that print records also take
``--format csv|table``. Library errors become ``Error: ...`` on stderr and exit 1.
"""

from __future__ import annotations

import csv
import functools
import json
import sqlite3
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from localsync.api import DEFAULT_STORE, STORE_ENV, ReplicaApi, status_calls, tokens
from localsync.api.entities import Item, Task
from localsync.errors import ExceptionMain, LocalsyncError, NotFound
from localsync.filters import Filters, FiltersOperations, custom_body
from localsync.store import SCHEMA_VERSION, StatusResult, create_task, import_exports
from localsync.store.journal import OP_STATES
from localsync.tasks import TASK_TYPES

JSONDict = dict[str, Any]
FORMATS = ("json", "csv", "table")
# Bulk calls over at least this many items show a progress bar when stderr is a
# terminal.
PROGRESS_MIN_ITEMS = 1000


def register(group: click.Group) -> None:
    """Add this area's commands to the root group."""
    for command in (
        import_command,
        task_group,
        items_command,
        status_group,
        tasks_command,
        log_command,
        info_command,
    ):
        group.add_command(command)


# Shared options and helpers


def store_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--store",
        "store_path",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar=STORE_ENV,
        default=str(DEFAULT_STORE),
        show_default=True,
        show_envvar=True,
        help="Replica file to read and write.",
    )(function)


def format_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--format",
        "output_format",
        type=click.Choice(FORMATS),
        default="json",
        show_default=True,
        help="Output format: a JSON array, CSV with a header, or an aligned table.",
    )(function)


def parse_filter_json(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> JSONDict | None:
    """Parse ``--filter-json``: a JSON object, else a usage error naming the problem."""
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON ({exc}): {_shorten(value)}") from exc
    except RecursionError as exc:
        raise click.BadParameter(
            f"JSON nested too deeply to read: {_shorten(value)}"
        ) from exc
    if not isinstance(parsed, dict):
        raise click.BadParameter(
            f"expected a JSON object such as "
            f'\'{{"filter": {{"$and": [{{"dir": "/a"}}]}}}}\', got {_shorten(value)}'
        )
    return parsed


def _shorten(value: str, limit: int = 200) -> str:
    """Return ``repr(value)``, cut to ``limit`` characters, for error messages."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(value):,} characters)"


def filter_json_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--filter-json",
        callback=parse_filter_json,
        metavar="JSON",
        help="Query as a JSON object, taken as the SDK takes a custom filter: "
        'wrapped in {"filter": ...} when it has no "filter" key, with no '
        "default conditions added.",
    )(function)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn localsync errors into ``Error: ...`` on stderr and exit status 1."""
    try:
        yield
    except ExceptionMain as exc:
        raise click.ClickException(_with_notes(exc.message, exc)) from exc
    except LocalsyncError as exc:
        raise click.ClickException(_with_notes(str(exc), exc)) from exc
    except sqlite3.DatabaseError as exc:
        raise click.ClickException(_database_error(exc)) from exc


def _database_error(exc: sqlite3.DatabaseError) -> str:
    """Return the message for an SQLite error on the replica file.

    The failed command rolled back its transaction, so the replica is as the last
    completed command left it.
    """
    text = str(exc)
    if "full" in text:
        advice = "free disk space and run the command again"
    elif "malformed" in text or "not a database" in text:
        advice = (
            "the replica file is damaged; 'localsync log' may still read its "
            "journal, then restore the file from a backup or clone again"
        )
    else:
        advice = "check the replica file and run the command again"
    return f"SQLite failed on the replica file: {text}; {advice}"


def _with_notes(message: str, exc: BaseException) -> str:
    notes = getattr(exc, "__notes__", None) or []
    return "; ".join([message, *notes])


def with_api(function: Callable[..., Any]) -> Callable[..., Any]:
    """Open the replica of ``--store`` as ``api`` for the command, and close it."""

    @functools.wraps(function)
    def wrapper(store_path: Path, **kwargs: Any) -> Any:
        with user_errors(), ReplicaApi(store_path) as api:
            return function(api, **kwargs)

    return wrapper


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """Return ``count`` with the noun in singular or plural: ``1 op``, ``2 ops``."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {plural or noun + 's'}"


def echo_records(
    records: Iterable[JSONDict], columns: Sequence[str], output_format: str
) -> None:
    """Print records as a JSON array (streamed), CSV, or an aligned table."""
    if output_format == "json":
        _echo_json_array(records)
    elif output_format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        for record in records:
            writer.writerow([_cell(record.get(column)) for column in columns])
    else:
        _echo_table(list(records), columns)


def _echo_json_array(records: Iterable[JSONDict]) -> None:
    first = True
    sys.stdout.write("[")
    for record in records:
        sys.stdout.write("\n" if first else ",\n")
        sys.stdout.write(json.dumps(record, ensure_ascii=False))
        first = False
    sys.stdout.write("\n]\n" if not first else "]\n")
    sys.stdout.flush()


def _echo_table(records: list[JSONDict], columns: Sequence[str]) -> None:
    rows = [[_cell(record.get(column)) for column in columns] for record in records]
    widths = [len(column) for column in columns]
    for row in rows:
        widths = [
            max(width, len(cell)) for width, cell in zip(widths, row, strict=True)
        ]
    click.echo(
        "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()
    )
    click.echo("  ".join("-" * width for width in widths))
    for row in rows:
        click.echo(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        )


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def _iso_ms(value: int | None) -> str | None:
    if value is None:
        return None
    return datetime.fromtimestamp(value / 1000, UTC).isoformat(timespec="milliseconds")


def _task_by_name(
    api: ReplicaApi, name: str | None, *, role: str = "Task"
) -> Task | None:
    """Return the dataset's task named ``name``, or raise an error naming the fix.

    The API keeps the SDK's bare ``NotFound('404', 'Annotation task not found')``;
    the command line names the task and the command that lists the tasks.
    """
    if name is None:
        return None
    dataset = api.dataset_entity()
    try:
        return dataset.tasks.get(task_name=name)
    except NotFound as exc:
        raise click.ClickException(
            f"{role} {name!r} not found in this replica; list the tasks with "
            "'localsync tasks'"
        ) from exc


def _task_refs_condition(task_id: str) -> JSONDict:
    return {"metadata.system.refs.id": {"$in": [task_id]}}


def _with_task_condition(body: JSONDict, task_id: str) -> JSONDict:
    """Return the body with the task's refs condition ANDed to its filter."""
    query = body["filter"]
    condition = _task_refs_condition(task_id)
    if set(query) <= {"$and", "$or"}:
        query = {**query, "$and": [*(query.get("$and") or []), condition]}
    else:
        query = {"$and": [query, condition]}
    return {**body, "filter": query}


# import and task create


@click.command("import")
@click.argument(
    "directory", type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option(
    "--project", required=True, metavar="NAME", help="Project name the replica records."
)
@click.option(
    "--dataset", required=True, metavar="NAME", help="Dataset name the replica records."
)
@store_option
def import_command(
    directory: Path, project: str, dataset: str, store_path: Path
) -> None:
    """Load Dataloop item exports (JSON files under DIRECTORY) into a replica.

    The replica file is created when missing and gets no remote. Importing the same
    files again keeps the statuses items already have.

    \b
    Example:
      localsync import ./dataloop-exports --project demo --dataset fruit
    """
    with user_errors():
        result = import_exports(
            directory, store=store_path, project=project, dataset=dataset
        )
    echo_json({"store": str(store_path), **result.to_json()})


@click.group("task")
def task_group() -> None:
    """Create tasks in a replica that has no remote.

    \b
    Example:
      localsync task create --name review --assignee ann@example.com
    """


@task_group.command("create")
@click.option(
    "--name", required=True, metavar="NAME", help="Task name, unique in the dataset."
)
@click.option(
    "--type",
    "task_type",
    type=click.Choice(TASK_TYPES),
    default="annotation",
    show_default=True,
    help="Task type; it sets the default statuses: completed and discard for "
    "annotation, approved and discard for qa.",
)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    metavar="STATUS",
    help="A status the task offers (repeat); replaces the defaults of its type.",
)
@click.option(
    "--assignee",
    "assignees",
    multiple=True,
    metavar="EMAIL",
    help="An annotator (repeat); items are dealt round-robin to one assignment each.",
)
@filter_json_option
@click.option(
    "--parent-task",
    metavar="NAME",
    help="For a QA task: take the items that have a status there.",
)
@store_option
@with_api
def task_create_command(
    api: ReplicaApi,
    name: str,
    task_type: str,
    statuses: tuple[str, ...],
    assignees: tuple[str, ...],
    filter_json: JSONDict | None,
    parent_task: str | None,
) -> None:
    """Create a task over the items a filter selects (default: files not hidden).

    \b
    Example:
      localsync task create --name review --status completed --status approved \\
          --status discard --assignee ann@example.com
    """
    _task_by_name(api, parent_task, role="Parent task")
    query = None if filter_json is None else custom_body(filter_json)["filter"]
    plan = create_task(
        api.store,
        name=name,
        task_type=task_type,
        statuses=statuses,
        assignees=assignees,
        filter=query,
        parent_task=parent_task,
    )
    task = Task(plan.task, api)
    echo_json(
        {
            "id": task.id,
            "name": task.name,
            "type": task.task_type,
            "allowedStatuses": task.allowed_statuses,
            "items": len(plan.item_assignment),
            "assignments": [
                {
                    "id": a["id"],
                    "name": a["name"],
                    "annotator": a["annotator"],
                    "items": a.get("totalItems", 0),
                }
                for a in plan.assignments
            ],
        }
    )


# items


@click.command("items")
@filter_json_option
@click.option(
    "--task", "task_name", metavar="NAME", help="Only items of this task (by name)."
)
@click.option(
    "--limit", type=click.IntRange(min=0), help="Print at most this many items."
)
@click.option(
    "--page-size",
    type=click.IntRange(1, 1000),
    default=1000,
    show_default=True,
    help="Items read per query page.",
)
@format_option
@store_option
@with_api
def items_command(
    api: ReplicaApi,
    filter_json: JSONDict | None,
    task_name: str | None,
    limit: int | None,
    page_size: int,
    output_format: str,
) -> None:
    """Print the items a query selects, with their statuses.

    Without --filter-json the default filter applies (files that are not hidden).
    JSON output is an array of the items' platform JSON over all pages. The csv
    and table formats print the id, the filename and the status in each task.

    \b
    Example:
      localsync items --filter-json '{"filter": {"$and": [{"dir": "/Merino"}]}}'
      localsync items --task review --format table --limit 20
    """
    dataset = api.dataset_entity()
    task = _task_by_name(api, task_name)
    filters = _items_filters(filter_json, task, page_size)
    tasks = {t.id: t.name for t in dataset.tasks.list()}
    if task is not None:
        tasks = {task.id: task.name}

    pages = dataset.items.list(filters=filters)
    records = _limited((item.to_json() for item in pages.all()), limit)
    if output_format == "json":
        echo_records(records, [], output_format)
        return
    columns = ["id", "filename", *(str(name) for name in tasks.values())]
    echo_records(
        (_status_row(record, tasks) for record in records), columns, output_format
    )


def _items_filters(
    filter_json: JSONDict | None, task: Task | None, page_size: int
) -> Filters:
    if filter_json is not None:
        body = custom_body(filter_json, page_size=page_size)
        if task is not None:
            body = _with_task_condition(body, task.id)
        return Filters(custom_filter=body)
    filters = Filters(page_size=page_size)
    if task is not None:
        filters.add("metadata.system.refs.id", [task.id], operator=FiltersOperations.IN)
    return filters


def _limited(records: Iterator[JSONDict], limit: int | None) -> Iterator[JSONDict]:
    for count, record in enumerate(records):
        if limit is not None and count >= limit:
            return
        yield record


def _status_row(item: JSONDict, tasks: dict[str, str | None]) -> JSONDict:
    row: JSONDict = {"id": item.get("id"), "filename": item.get("filename")}
    refs = ((item.get("metadata") or {}).get("system") or {}).get("refs") or []
    for task_id, name in tasks.items():
        statuses = [
            (ref.get("metadata") or {}).get("status")
            for ref in refs
            if isinstance(ref, dict) and ref.get("id") == task_id
        ]
        row[str(name)] = statuses[0] if statuses else None
    return row


# status set / clear


@click.group("status")
def status_group() -> None:
    """Set or clear item statuses; each change is journaled for the next sync.

    \b
    Example:
      localsync status set completed --all --task review
      localsync status clear --item 64f1c0e5a1b2c3d4e5f60718 --task review
    """


def status_target_options(function: Callable[..., Any]) -> Callable[..., Any]:
    options: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
        click.option(
            "--item",
            "item_ids",
            multiple=True,
            metavar="ID",
            help="An item id (repeat for several).",
        ),
        filter_json_option,
        click.option(
            "--all",
            "all_items",
            is_flag=True,
            help="Every item of the task (needs --task).",
        ),
        click.option(
            "--task",
            "task_name",
            metavar="NAME",
            help="Task (by name) whose status to change; without it each item's task "
            "is picked as the SDK picks it (one or two refs).",
        ),
        click.option(
            "--format",
            "output_format",
            type=click.Choice(["json", "text"]),
            default="json",
            show_default=True,
            help="json prints the result with every op and item id; text prints "
            "one line of counts.",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@status_group.command("set")
@click.argument("status")
@status_target_options
@store_option
@with_api
def status_set_command(api: ReplicaApi, status: str, **targets: Any) -> None:
    """Set STATUS on items of a task, and print the result with its op ids.

    STATUS must be one of the task's statuses (completed, approved, discard or a
    custom one). A single --item not in the task is an error; in bulk, such items
    are skipped and counted.

    \b
    Example:
      localsync status set completed --item 64f1c0e5a1b2c3d4e5f60718 --task review
      localsync status set approved --all --task review
      localsync status set discard --filter-json '{"$and": [{"dir": "/Merino"}]}'
    """
    _run_status_call(api, status, clear=False, **targets)


@status_group.command("clear")
@status_target_options
@store_option
@with_api
def status_clear_command(api: ReplicaApi, **targets: Any) -> None:
    """Clear the status of items in a task (the items stay in the task).

    \b
    Example:
      localsync status clear --item 64f1c0e5a1b2c3d4e5f60718 --task review
      localsync status clear --all --task review
    """
    _run_status_call(api, None, clear=True, **targets)


def _run_status_call(
    api: ReplicaApi,
    status: str | None,
    *,
    clear: bool,
    item_ids: tuple[str, ...],
    filter_json: JSONDict | None,
    all_items: bool,
    task_name: str | None,
    output_format: str,
) -> None:
    chosen = [bool(item_ids), filter_json is not None, all_items]
    if sum(chosen) != 1:
        raise click.UsageError(
            "Choose the items with exactly one of --item, --filter-json or --all."
        )
    if all_items and task_name is None:
        raise click.UsageError(
            "--all needs --task NAME: it means every item of that task."
        )

    task = _task_by_name(api, task_name)
    task_id = task.id if task is not None else None
    if len(item_ids) == 1:
        item = _item_by_id(api, item_ids[0])
        result = item.update_status(status or "", clear=clear, task_id=task_id)
    else:
        ids = _target_ids(api, item_ids, filter_json, task)
        result = _bulk_with_progress(api, status, ids, task_id=task_id, clear=clear)
    if output_format == "text":
        click.echo(_status_line(result.to_json()))
    else:
        echo_json(result.to_json())
    if result.skipped:
        click.echo(
            f"Warning: {counted(len(result.skipped), 'item')} skipped; see "
            "skippedItems.",
            err=True,
        )


def _status_line(result: JSONDict) -> str:
    """Return a status call's counts as one line, without its ids."""
    value = result["status"] if result["status"] is not None else "cleared"
    ops = len(result["opIds"])
    return (
        f"{value}: {counted(ops, 'op')} journaled ({result['changed']} changed, "
        f"{result['reasserted']} re-asserted, {result['skipped']} skipped)."
    )


def _item_by_id(api: ReplicaApi, item_id: str) -> Item:
    try:
        return api.dataset_entity().items.get(item_id=item_id)
    except NotFound as exc:
        exc.add_note("list the items with 'localsync items'")
        raise


def _target_ids(
    api: ReplicaApi,
    item_ids: tuple[str, ...],
    filter_json: JSONDict | None,
    task: Task | None,
) -> list[str]:
    if item_ids:
        return list(item_ids)
    if filter_json is not None:
        return list(api.store.matching_item_ids(custom_body(filter_json)))
    assert task is not None
    return list(task.get_items().item_ids())


def _bulk_with_progress(
    api: ReplicaApi,
    status: str | None,
    ids: list[str],
    *,
    task_id: str | None,
    clear: bool,
) -> StatusResult:
    if len(ids) < PROGRESS_MIN_ITEMS or not sys.stderr.isatty():
        return status_calls.update_many(api, status, ids, task_id=task_id, clear=clear)
    with click.progressbar(
        length=len(ids), label="Journaling statuses", file=sys.stderr
    ) as bar:
        return status_calls.update_many(
            api, status, ids, task_id=task_id, clear=clear, progress=bar.update
        )


# tasks, log, info


@click.command("tasks")
@format_option
@store_option
@with_api
def tasks_command(api: ReplicaApi, output_format: str) -> None:
    """Print the dataset's tasks with their allowed statuses and counts per status.

    \b
    Example:
      localsync tasks --format table
    """
    records = [_task_record(task) for task in api.dataset_entity().tasks.list()]
    columns = [
        "id",
        "name",
        "type",
        "allowedStatuses",
        "items",
        "statusCounts",
        "noStatus",
    ]
    echo_records(records, columns, output_format)


def _task_record(task: Task) -> JSONDict:
    counts = task.status_counts()
    no_status = counts.pop(None, 0)
    return {
        "id": task.id,
        "name": task.name,
        "type": task.task_type,
        "allowedStatuses": task.allowed_statuses,
        "items": no_status + sum(counts.values()),
        "statusCounts": {
            str(status): count for status, count in sorted(counts.items())
        },
        "noStatus": no_status,
        "assignments": [
            {"id": a.id, "name": a.name, "annotator": a.annotator}
            for a in task.assignments.list()
        ],
    }


@click.command("log")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Print at most this many ops.",
)
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(OP_STATES),
    help="Only ops in this state (repeat for several).",
)
@format_option
@store_option
@with_api
def log_command(
    api: ReplicaApi, limit: int, states: tuple[str, ...], output_format: str
) -> None:
    """Print the journal, newest op first, with each op's state.

    \b
    Example:
      localsync log --limit 20 --state pending --format table
    """
    ops = api.store.journal(states=states or None, limit=limit)
    names = {task["id"]: task.get("name") for task in api.store.tasks()}
    records = [_op_record(op, names) for op in ops]
    columns = [
        "seq",
        "opId",
        "itemId",
        "taskName",
        "status",
        "state",
        "creator",
        "createdAt",
        "hlc",
        "reason",
    ]
    echo_records(records, columns, output_format)


def _op_record(op: JSONDict, task_names: dict[str, Any]) -> JSONDict:
    result = op.get("result")
    return {
        "opId": op["op_id"],
        "seq": op["seq"],
        "replicaId": op["replica_id"],
        "itemId": op["item_id"],
        "taskId": op["task_id"],
        "taskName": task_names.get(op["task_id"]),
        "status": op["status"],
        "hlc": op["hlc"],
        "creator": op["creator"],
        "state": op["state"],
        "reason": op["reason"],
        "originOpId": op["origin_op_id"],
        "createdAt": _iso_ms(op["created_at"]),
        "pushedAt": _iso_ms(op["pushed_at"]),
        "result": json.loads(result) if result else None,
    }


@click.command("info")
@store_option
@with_api
def info_command(api: ReplicaApi) -> None:
    """Print the replica's file, dataset, remote, pending ops, clock and token.

    The token itself is never printed, only its user and expiry.

    \b
    Example:
      localsync info --store ./.localsync/replica.db
    """
    store = api.store
    echo_json(
        {
            "store": str(store.path.resolve()),
            "schemaVersion": SCHEMA_VERSION,
            "replicaId": store.replica_id,
            "project": _name_and_id(store.project()),
            "dataset": _name_and_id(store.dataset()),
            "items": store.conn.execute("SELECT COUNT(*) FROM items").fetchone()[0],
            "tasks": len(store.tasks()),
            "remoteUrl": store.setting("remote_url"),
            "pendingOps": _ops_in_state(store, "pending"),
            "opsByState": {state: _ops_in_state(store, state) for state in OP_STATES},
            "lastSyncAt": _iso_from_ms(store.setting("last_sync_at")),
            "clockOffsetMs": int(store.setting("clock_offset_ms") or 0),
            "token": _token_info(store.setting("token")),
        }
    )


def _iso_from_ms(milliseconds: str | None) -> str | None:
    """Format a stored ms-since-epoch setting as an ISO 8601 UTC time."""
    if milliseconds is None:
        return None
    moment = datetime.fromtimestamp(int(milliseconds) / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds")


def _name_and_id(document: JSONDict | None) -> JSONDict | None:
    return (
        None
        if document is None
        else {"id": document["id"], "name": document.get("name")}
    )


def _ops_in_state(store: Any, state: str) -> int:
    row = store.conn.execute("SELECT COUNT(*) FROM journal WHERE state = ?", (state,))
    return int(row.fetchone()[0])


def _token_info(token: str | None) -> JSONDict:
    expires = tokens.token_expires_at(token)
    return {
        "present": bool(token),
        "email": tokens.token_email(token),
        "expiresAt": expires.isoformat() if expires else None,
        "expired": tokens.is_expired(token),
    }
