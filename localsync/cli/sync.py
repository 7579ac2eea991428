"""Commands of the sync area: clone, login, sync, conflicts, retry, revert, drop,
history.

Every command takes ``--store PATH`` (env ``LOCALSYNC_STORE``). Exit status: 0 when
the command finished, 1 when it could not (``Error: ...`` on stderr), 2 for usage
errors, and 3 when ``sync`` finished but the remote rejected ops.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import click

from localsync.cli.replica import counted, store_option, user_errors
from localsync.errors import LocalsyncError, SyncError
from localsync.store import Replica
from localsync.sync import conflicts as ops
from localsync.sync.apply import PullCounts
from localsync.sync.clone import clone, open_remote, store_token
from localsync.sync.engine import SyncEngine, SyncReport
from localsync.sync.push import pending_count
from localsync.sync.remote import DEFAULT_MAX_BATCH, DEFAULT_TIMEOUT, PullPage
from localsync.sync.retry import RetryPolicy
from localsync.sync.watch import DEFAULT_INTERVAL, Watcher, WatchStats

logger = logging.getLogger(__name__)

TOKEN_ENV = "LOCALSYNC_TOKEN"
EXIT_REJECTED = 3


def register(group: click.Group) -> None:
    """Add this area's commands to the root group."""
    for command in (
        clone_command,
        login_command,
        sync_command,
        conflicts_command,
        retry_command,
        revert_command,
        drop_command,
        history_command,
    ):
        group.add_command(command)


# Shared options


def text_format_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--format",
        "output_format",
        type=click.Choice(("text", "json")),
        default="text",
        show_default=True,
        help="Output format: lines for people, or one JSON document.",
    )(function)


def retry_options(function: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--max-attempts",
            type=click.IntRange(min=1),
            default=8,
            show_default=True,
            help="Attempts per request before giving up on an unreachable remote.",
        ),
        click.option(
            "--max-wait",
            type=click.FloatRange(min=0),
            default=30.0,
            show_default=True,
            help="Maximum wait between two attempts, in seconds.",
        ),
        click.option(
            "--timeout",
            type=click.FloatRange(min=0.1),
            default=DEFAULT_TIMEOUT,
            show_default=True,
            help="Timeout of each HTTP request, in seconds.",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def echo_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [
        max([len(column), *(len(line[i]) for line in cells)])
        for i, column in enumerate(columns)
    ]
    click.echo(
        "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()
    )
    for line in cells:
        click.echo(
            "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        )


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


@contextmanager
def open_replica(store_path: Path) -> Iterator[Replica]:
    with user_errors(), Replica(store_path) as replica:
        yield replica


def _ensure_logging() -> None:
    """Log warnings and errors to stderr in long-running modes, with a time stamp.

    ``-v`` sets up logging at INFO (or DEBUG) before this runs, and then this
    changes nothing.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.WARNING,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )


# clone and login


@click.command("clone")
@click.argument("url")
@click.option("--project", required=True, help="Name of the project on the remote.")
@click.option("--dataset", required=True, help="Name of the dataset to clone.")
@click.option(
    "--token",
    required=True,
    envvar=TOKEN_ENV,
    show_envvar=True,
    help="Bearer token (a JWT) issued by the remote.",
)
@store_option
@click.option(
    "--page-size",
    type=click.IntRange(1, 5000),
    default=1000,
    show_default=True,
    help="Changes per pull request.",
)
@retry_options
def clone_command(
    url: str,
    project: str,
    dataset: str,
    token: str,
    store_path: Path,
    page_size: int,
    max_attempts: int,
    max_wait: float,
    timeout: float,
) -> None:
    """Clone a dataset of a remote into a new replica file.

    URL is http[s]://HOST:PORT, optionally followed by /api/v1. Cloning again into
    the same file resumes or refreshes the clone. A progress bar shows on stderr
    when stderr is a terminal.

    \b
    Example:
      localsync clone http://127.0.0.1:8787 --project sheep-and-fruit \\
          --dataset exports --token "$TOKEN" --store ann.db
    """
    policy = RetryPolicy(max_attempts=max_attempts, max_wait=max_wait)
    show_progress = sys.stderr.isatty()
    with user_errors(), _clone_progress(show_progress) as (on_start, on_page):
        report = clone(
            store_path,
            url,
            token=token,
            project=project,
            dataset=dataset,
            retry=policy,
            timeout=timeout,
            page_limit=page_size,
            on_start=on_start,
            on_page=on_page,
        )
    click.echo(
        f"Cloned dataset {dataset!r} of project {project!r} into {str(store_path)!r}: "
        f"{counted(report.pull.items, 'item')}, "
        f"{counted(report.pull.changes, 'change')} in "
        f"{counted(report.pull.pages, 'page')}."
    )


StartCallback = Callable[[dict[str, Any]], None]
PageCallback = Callable[[PullPage, PullCounts], None]


@contextmanager
def _clone_progress(
    enabled: bool,
) -> Iterator[tuple[StartCallback | None, PageCallback | None]]:
    """Yield the clone's progress callbacks: a bar on stderr, or none when disabled.

    Off a terminal, click prints only the bar's label and no progress, so the
    clone command disables the bar there.
    """
    if not enabled:
        yield None, None
        return
    bars: list[Any] = []

    def on_start(dataset: dict[str, Any]) -> None:
        total = dataset.get("itemsCount")
        bar = click.progressbar(
            length=total if isinstance(total, int) and total > 0 else None,
            iterable=None if isinstance(total, int) and total > 0 else iter(()),
            label="Cloning items",
            file=sys.stderr,
            show_pos=True,
        )
        bar.__enter__()
        bars.append(bar)

    def on_page(page: PullPage, counts: PullCounts) -> None:
        if bars:
            bars[0].update(counts.items)

    try:
        yield on_start, on_page
    finally:
        for bar in bars:
            bar.__exit__(None, None, None)


@click.command("login")
@click.option(
    "--token",
    required=True,
    envvar=TOKEN_ENV,
    show_envvar=True,
    help="New bearer token (a JWT) issued by the remote.",
)
@store_option
def login_command(token: str, store_path: Path) -> None:
    """Replace the token the replica sends to its remote.

    The token is checked for its JWT shape here and by the remote at the next sync.

    \b
    Example:
      localsync login --token "$(cat new-token.txt)" --store ann.db
    """
    with open_replica(store_path) as replica, user_errors():
        email = store_token(replica, token)
    click.echo(
        f"Token replaced in {str(store_path)!r}"
        + (f" (user {email})." if email else ".")
    )


# sync


@click.command("sync")
@store_option
@click.option(
    "--dry-run",
    is_flag=True,
    help="List what a push would send and which ops would lose, from the "
    "replica alone; nothing is sent.",
)
@click.option(
    "--watch",
    is_flag=True,
    help="Keep running: push soon after any journal write, pull every "
    "--interval seconds, until SIGINT or SIGTERM.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=None,
    help=f"Seconds between syncs (default {DEFAULT_INTERVAL:.0f} with --watch); "
    "without --watch, repeat a plain sync this often.",
)
@text_format_option
@click.option(
    "--batch-size",
    type=click.IntRange(1, DEFAULT_MAX_BATCH),
    default=DEFAULT_MAX_BATCH,
    show_default=True,
    help="Ops per push request.",
)
@click.option(
    "--page-size",
    type=click.IntRange(1, 5000),
    default=1000,
    show_default=True,
    help="Changes per pull request.",
)
@retry_options
def sync_command(
    store_path: Path,
    dry_run: bool,
    watch: bool,
    interval: float | None,
    output_format: str,
    batch_size: int,
    page_size: int,
    max_attempts: int,
    max_wait: float,
    timeout: float,
) -> None:
    """Push pending ops, pull remote changes, and push ops written meanwhile.

    Exit status 0 when the sync finished (conflicts are normal), 1 when it could not
    finish, 3 when the remote rejected ops (see 'localsync conflicts').

    \b
    Example:
      localsync sync --store ann.db
      localsync sync --dry-run --format json
      localsync sync --watch --interval 30
    """
    if dry_run and (watch or interval is not None):
        raise click.UsageError(
            "--dry-run sends nothing, so it cannot be combined with "
            "--watch or --interval"
        )
    if dry_run:
        with open_replica(store_path) as replica:
            _echo_dry_run(replica, output_format)
        return

    stop = threading.Event()
    policy = RetryPolicy(max_attempts=max_attempts, max_wait=max_wait, stop=stop)
    options = {"batch_size": batch_size, "page_limit": page_size}
    with open_replica(store_path) as replica:

        def make_remote() -> Any:
            return open_remote(replica, retry=policy, timeout=timeout)

        if watch:
            _ensure_logging()
            with _stop_on_signals(stop) as received, user_errors():
                make_remote().close()  # fail now on a replica without a remote
                stats = Watcher(
                    replica,
                    make_remote,
                    interval=interval or DEFAULT_INTERVAL,
                    stop=stop,
                    engine_options=options,
                    on_report=lambda kind, report: _echo_report(
                        report, output_format, kind
                    ),
                ).run()
            if received:
                _echo_watch_summary(stats, received[0], output_format)
            return
        if interval is not None:
            _ensure_logging()
            with _stop_on_signals(stop):
                _repeat_sync(
                    replica, make_remote, options, interval, stop, output_format
                )
            return
        with user_errors(), make_remote() as remote, _noting_pending_ops(replica):
            report = SyncEngine(replica, remote, **options).sync()
        _echo_report(report, output_format)
        if report.rejected:
            sys.exit(EXIT_REJECTED)


@contextmanager
def _noting_pending_ops(replica: Replica) -> Iterator[None]:
    """Add to a failed sync's error how many pending ops stay in the journal."""
    try:
        yield
    except SyncError as exc:
        pending = pending_count(replica)
        if pending:
            exc.add_note(
                f"the {counted(pending, 'pending op')} "
                f"{'is' if pending == 1 else 'are'} kept in the journal for the "
                "next sync"
            )
        raise


def _repeat_sync(
    replica: Replica,
    make_remote: Callable[[], Any],
    options: dict[str, int],
    interval: float,
    stop: threading.Event,
    output_format: str,
) -> None:
    finished = False
    while not stop.is_set():
        try:
            with make_remote() as remote:
                _echo_report(
                    SyncEngine(replica, remote, **options).sync(), output_format
                )
            finished = True
        except LocalsyncError as exc:
            finished = False
            logger.warning("sync failed: %s; next attempt in %.1f s", exc, interval)
        stop.wait(interval)
    if not finished:
        sys.exit(1)


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[list[str]]:
    """Set ``stop`` on SIGINT or SIGTERM; a second signal interrupts at once.

    Yields the list that the names of the received signals are appended to.
    """
    previous: dict[int, Any] = {}
    received: list[str] = []

    def handle(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        name = signal.Signals(signum).name
        received.append(name)
        logger.info("received %s; stopping after the current request", name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handle)
    try:
        yield received
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _echo_report(report: SyncReport, output_format: str, kind: str = "sync") -> None:
    if output_format == "json":
        click.echo(json.dumps({"kind": kind, **report.to_json()}, ensure_ascii=False))
        return
    push, pull = report.push, report.pull
    lines = [
        f"Pushed {counted(push.pushed, 'op')}: {push.applied} applied, "
        f"{push.superseded} superseded, "
        f"{push.rejected} rejected."
    ]
    if kind == "sync" or pull.changes:
        lines.append(
            f"Pulled {counted(pull.changes, 'change')} in "
            f"{counted(pull.pages, 'page')}"
            + (
                f"; {counted(pull.rejected, 'pending op')} quarantined because "
                "their item or task was deleted."
                if pull.rejected
                else "."
            )
        )
    if report.conflicts:
        lines.append(
            f"{counted(report.conflicts, 'new conflict')}; list them with "
            "'localsync conflicts'."
        )
    if report.epoch_changed:
        lines.append(
            "The remote's database changed (new epoch): the replica was "
            f"fetched again; {counted(report.reasserted, 'applied op')} written "
            "again."
        )
    if report.new_replica_id:
        lines.append(
            "The remote holds other ops under this replica's id (a restored or "
            f"copied file): now replica {report.new_replica_id}."
        )
    if report.rejected:
        lines.append(
            f"{counted(report.rejected, 'op')} rejected; see 'localsync conflicts'."
        )
    if report.pending:
        lines.append(f"{counted(report.pending, 'op')} still pending.")
    for line in lines:
        click.echo(line)


def _echo_watch_summary(
    stats: WatchStats, signal_name: str, output_format: str
) -> None:
    if output_format == "json":
        summary = {
            "kind": "stopped",
            "signal": signal_name,
            "syncs": stats.syncs,
            "pushes": stats.pushes,
            "opsPushed": stats.ops_pushed,
            "pending": stats.pending,
            "failures": stats.failures,
        }
        click.echo(json.dumps(summary))
        return
    click.echo(f"Watch stopped by {signal_name}: {stats.describe()}.")


def _echo_dry_run(replica: Replica, output_format: str) -> None:
    planned = ops.plan_push(replica)
    losing = [plan for plan in planned if plan.verdict == "loses"]
    if output_format == "json":
        echo_json(
            {
                "wouldPush": len(planned),
                "wouldLose": len(losing),
                "remote": replica.setting("remote_url"),
                "cursor": int(replica.setting("cursor") or 0),
                "ops": [plan.to_json() for plan in planned],
            }
        )
        return
    click.echo(
        f"Would push {counted(len(planned), 'op')} to "
        f"{replica.setting('remote_url')} ({len(losing)} would lose against the "
        "remote values as of the last pull)."
    )
    if planned:
        echo_table(
            [
                {
                    **plan.op,
                    "remoteStatus": plan.remote.status if plan.remote else None,
                    "verdict": plan.verdict,
                }
                for plan in planned
            ],
            ("opId", "seq", "itemId", "taskId", "status", "remoteStatus", "verdict"),
        )


# conflicts, retry, revert, drop, history


@click.command("conflicts")
@store_option
@text_format_option
def conflicts_command(store_path: Path, output_format: str) -> None:
    """List local ops that lost to newer writes, and ops the remote rejected.

    \b
    Example:
      localsync conflicts --store ann.db
      localsync conflicts --format json
    """
    with open_replica(store_path) as replica:
        conflicts = ops.list_conflicts(replica)
        rejected = ops.rejected_ops(replica)
    if output_format == "json":
        echo_json({"conflicts": conflicts, "rejected": rejected})
        return
    if conflicts:
        click.echo(
            f"{counted(len(conflicts), 'conflict')} (local ops that lost to a newer "
            "write):"
        )
        echo_table(
            [
                {
                    "opId": c["opId"],
                    "itemId": c["itemId"],
                    "taskId": c["taskId"],
                    "local": c["local"]["status"],
                    "winner": c["winner"]["status"],
                    "winnerBy": c["winner"]["creator"],
                    "source": c["winner"]["source"],
                    "retried": ",".join(c["followedBy"]) or None,
                }
                for c in conflicts
            ],
            (
                "opId",
                "itemId",
                "taskId",
                "local",
                "winner",
                "winnerBy",
                "source",
                "retried",
            ),
        )
    else:
        click.echo("No conflicts: no local op lost to a newer write.")
    if rejected:
        click.echo(f"{counted(len(rejected), 'rejected op')} (quarantined):")
        echo_table(rejected, ("opId", "itemId", "taskId", "status", "reason"))
    else:
        click.echo("No rejected ops.")


@click.command("retry")
@click.argument("op_id")
@store_option
def retry_command(op_id: str, store_path: Path) -> None:
    """Write a rejected or superseded op's value again, as a new op.

    OP_ID is the op id, or 6 or more of its first or last characters, as
    'localsync conflicts' lists it.

    \b
    Example:
      localsync retry e29835ab --store ann.db
      localsync sync --store ann.db
    """
    with open_replica(store_path) as replica, user_errors():
        result = ops.retry_op(replica, op_id, creator=replica.setting("user_email"))
    click.echo(
        f"Journaled op {result.op_ids[0]} setting {result.status!r} again; "
        "run 'localsync sync' to push it."
    )


@click.command("revert")
@click.argument("op_id")
@store_option
def revert_command(op_id: str, store_path: Path) -> None:
    """Undo an applied or pending op with a new op restoring the value before it.

    OP_ID is the op id, or 6 or more of its first or last characters, as
    'localsync log' lists it.

    \b
    Example:
      localsync revert e29835ab --store ann.db
    """
    with open_replica(store_path) as replica, user_errors():
        result, previous = ops.revert_op(
            replica, op_id, creator=replica.setting("user_email")
        )
    restored = (
        "no status (cleared)"
        if previous is None or previous.status is None
        else (repr(previous.status))
    )
    click.echo(
        f"Journaled op {result.op_ids[0]} restoring {restored}; run 'localsync sync' "
        "to push it."
    )


@click.command("drop")
@click.argument("op_id")
@store_option
def drop_command(op_id: str, store_path: Path) -> None:
    """Discard a pending or rejected op; the item then shows the value without it.

    OP_ID is the op id, or 6 or more of its first or last characters, as
    'localsync log' lists it.

    \b
    Example:
      localsync drop e29835ab --store ann.db
    """
    with open_replica(store_path) as replica, user_errors():
        op = ops.drop_op(replica, op_id)
    click.echo(
        f"Dropped op {op['op_id']} ({op['state']}, status {op['status']!r} on item "
        f"{op['item_id']})."
    )


@click.command("history")
@click.argument("item_id")
@store_option
@text_format_option
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Timeout of the request for the remote's history, in seconds.",
)
def history_command(
    item_id: str, store_path: Path, output_format: str, timeout: float
) -> None:
    """Show every known write of an item's statuses, local and remote.

    \b
    Example:
      localsync history 64f1c0e5a1b2c3d4e5f60718 --store ann.db
    """
    with open_replica(store_path) as replica, user_errors():
        try:
            remote = None
            if replica.setting("remote_url") is not None:
                policy = RetryPolicy(max_attempts=2, max_wait=1.0)
                remote = open_remote(replica, retry=policy, timeout=timeout)
            entries, note = ops.item_history(replica, item_id, remote)
        except SyncError as exc:
            # The journal is still worth showing when the remote fails to respond.
            logger.warning("remote history unavailable: %s", exc)
            entries, _ = ops.item_history(replica, item_id, None)
            note = f"the remote's history is unavailable ({exc}); showing the journal"
        finally:
            if remote is not None:
                remote.close()
    if output_format == "json":
        echo_json({"itemId": item_id, "note": note, "writes": entries})
        return
    if note:
        click.echo(f"Note: {note}.", err=True)
    if not entries:
        click.echo(f"No known writes of item {item_id}.")
        return
    click.echo(f"{counted(len(entries), 'write')} of item {item_id}, oldest first:")
    for entry in entries:
        entry["time"] = _hlc_time(entry.get("hlc"))
    echo_table(
        entries,
        (
            "time",
            "taskId",
            "status",
            "creator",
            "source",
            "opId",
            "localState",
            "outcome",
            "reason",
        ),
    )


def _hlc_time(hlc: str | None) -> str | None:
    if not hlc:
        return None
    try:
        wall_ms = int(hlc.split("-", 1)[0])
    except ValueError:
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(wall_ms / 1000)) + (
        f".{wall_ms % 1000:03d}Z"
    )
