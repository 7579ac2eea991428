"""The scenarios' descriptions and targets, and checking a figure against them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Target:
    """A limit on one value of a figure: its median time, ratio or peak memory.

    ``at_items`` restricts the target to figures of exactly that many items.
    """

    value: str  # "seconds", "ratio" or "peak_mb"
    limit: float
    text: str
    at_items: int | None = None

    def applies(self, figure: dict[str, Any]) -> bool:
        return self.at_items is None or figure.get("items") == self.at_items


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    measured: str
    reference: str
    targets: tuple[Target, ...] = field(default_factory=tuple)


def figure_value(figure: dict[str, Any], value: str) -> float | None:
    if value == "seconds":
        return figure["localsync"]["median"]
    if value == "ratio":
        return figure.get("ratio")
    return figure.get(value)


def check_targets(scenario: Scenario, figure: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the value of each target that applies, whether it is met, and by how much.

    ``margin`` is limit / value for targets that are upper bounds, so above 1 means
    met with room and below 1 means missed by that factor.
    """
    checks = []
    for target in scenario.targets:
        if not target.applies(figure):
            continue
        value = figure_value(figure, target.value)
        if value is None:
            continue
        checks.append(
            {
                "target": target.text,
                "value": value,
                "limit": target.limit,
                "met": value <= target.limit,
                "margin": target.limit / value if value else None,
            }
        )
    return checks


QUERY_RATIO = Target("ratio", 1.3, "at most 1.3 x hand-written SQL")

SCENARIOS: dict[str, Scenario] = {
    scenario.key: scenario
    for scenario in (
        Scenario(
            "status_bulk",
            "Bulk status update",
            "`Replica.set_status(item_ids, task_id=..., status=...)`: one call for "
            "min(dataset size, 100,000) randomly chosen items of one task, journaled "
            "and applied in one transaction (WAL, synchronous=FULL)",
            "plain `sqlite3` floor: `executemany` of the same journal rows plus "
            "`json_set` of the same ref fields and `annotationStatus` on fixed ref "
            "positions, in item id order and one transaction, with the same SQLite "
            "settings and op ids",
            (
                Target("seconds", 2.0, "under 2 s for 100,000 items", 100_000),
                Target("ratio", 1.5, "at most 1.5 x the floor"),
            ),
        ),
        Scenario(
            "query_dir_annotated",
            "Query: folder and annotated",
            "`Replica.query` of `Filters` with `dir` = one batch folder and "
            "`annotated` = true plus the default filter: first page (1,000) and total",
            "hand-written SQL on the generated `dir` and `annotated` columns: "
            "page and count",
            (Target("seconds", 0.050, "under 50 ms"), QUERY_RATIO),
        ),
        Scenario(
            "query_score_count",
            "Query: count of metadata.user.score > 50",
            "`Replica.compile(body)` and its `count_sql`, the total that "
            "`Replica.query` computes, with the index of "
            "`dql.create_path_index(conn, 'metadata.user.score')`",
            "hand-written `SELECT count(*)` on `json_extract(json, "
            "'$.metadata.user.score') > 50`",
            (Target("seconds", 1.0, "under 1 s"), QUERY_RATIO),
        ),
        Scenario(
            "query_score_range",
            "Query: metadata.user range",
            "`Replica.query` of 20 <= `metadata.user.score` <= 29: first page and "
            "total",
            "hand-written SQL with `BETWEEN 20 AND 29` on the same expression",
            (QUERY_RATIO,),
        ),
        Scenario(
            "query_refs_match",
            "Query: $match on refs by task and status",
            "`Replica.query` of `metadata.system.refs` `$match` {id: task, "
            "metadata.status: 'discard'}: first page and total",
            "hand-written SQL: `EXISTS` over `json_each` of the refs",
            (QUERY_RATIO,),
        ),
        Scenario(
            "query_label_join",
            "Query: join on annotation label",
            "`Replica.query` of a `Filters.add_join(field='label', "
            "values='Poll Dorset')`: first page and total",
            "hand-written SQL: `id IN (SELECT item_id FROM annotations WHERE "
            "label = ?)`",
            (QUERY_RATIO,),
        ),
        Scenario(
            "sync_vs_update_status",
            "Status changes reaching the server: localsync against update_status",
            "offline `Replica.set_status` of every file item of a server dataset, then "
            "one `SyncEngine.sync()` (push in batches of 1,000, then pull), in the "
            "benchmark process, against `localsync serve` in a child process",
            "dtlpy 1.126.5 `dataset.items.update_status(status, items=page)` for each "
            "listed page of at most 1,000 items (one request per item, 6 threads on "
            "2 cores), against the same server; listing the items is not timed",
            (Target("ratio", 1 / 50, "at least 50 x faster than update_status"),),
        ),
        Scenario(
            "sync_vs_task_set_status",
            "Status changes reaching the server: localsync against task.set_status",
            "the same localsync runs as in the row above",
            "dtlpy 1.126.5 `task.set_status(status, 'create', item_ids)`: one request "
            "for all ids; fetching the task is not timed",
            (Target("ratio", 1.0, "faster than task.set_status"),),
        ),
        Scenario(
            "clone",
            "Clone",
            "`localsync clone URL --project ... --dataset ... --store NEW` in a child "
            "process: wall time, and peak RSS from `os.wait4`",
            "none",
            (Target("peak_mb", 300, "peak RSS under 300 MB"),),
        ),
        Scenario(
            "sync_noop",
            "No-op sync",
            "`SyncEngine.sync()` of a replica with nothing to push or pull (in "
            "process); `localsync sync` through the CLI is listed as `command`",
            "none",
        ),
        Scenario(
            "watch_push",
            "Push latency of sync --watch",
            "time from a committed `Replica.set_status` of one item, in the "
            "benchmark process, to `GET /items/{id}` on the server showing it, "
            "while `localsync sync --watch` runs on the replica (it waits 0.2 s "
            "for writes to settle)",
            "none",
        ),
        Scenario(
            "demo",
            "Demo end to end",
            "`localsync demo --workdir NEW --format json` in a child process",
            "none",
        ),
    )
}
