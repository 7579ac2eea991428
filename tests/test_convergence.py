"""Replicas converge: a Hypothesis state machine runs several replicas of one dataset
with skewed clocks, offline periods, random sync orders through a fault proxy and
online REST writes. A last sync round runs without faults. After it, every replica
and the server hold the same value in every register. That value is the one a
last-write-wins oracle computes from the writes and the HLCs the server recorded,
and every op ended in exactly one final state.

Clock skew is injected the way the code measures it. ``clock_offset_ms`` is what a
replica adds to its clock when it stamps an op, and a sync stores the offset it
measures with the remote's ``now_ms``. A replica whose clock moved by ``skew_ms``
since its last sync stamps with ``measured + skew_ms`` and measures with a clock
that reads ``skew_ms`` off, which is what a machine with a wrong clock does.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import localsync as dl
from localsync.errors import SyncError
from localsync.hlc import wall_clock_ms
from localsync.server.auth import issue_token
from localsync.server.storage import NewTask
from localsync.sync import SyncEngine
from localsync.sync.apply import ITEM_DELETED
from localsync.sync.remote import LocalsyncRemote
from tests.proxy import (
    Fault,
    FaultProxy,
    FaultScript,
    RandomFaults,
    every_request_fault,
)
from tests.reliability_report import Tally
from tests.sync_support import (
    STATUSES,
    USER,
    World,
    fast_retry,
    make_world,
    size,
)

ITEMS = size("CONVERGENCE_ITEMS", 60, 200)
REPLICAS = size("CONVERGENCE_REPLICAS", 3, 4)
EXAMPLES = size("CONVERGENCE_EXAMPLES", 15, 100)
STEPS = size("CONVERGENCE_STEPS", 20, 50)
MAX_DELETED_ITEMS = 2
HOUR_MS = 3_600_000
CUSTOM_TASK = "quality"
CUSTOM_STATUSES = ("needs-review", "blurry", "sharp")
ONLINE_USER = "online@example.com"
FINAL_STATES = {"applied", "superseded", "rejected"}

# A sync's fault plan: the share of requests and of connections that get a fault,
# and the seed of the proxy's choices. Its sizes: ops per push, changes per pull
# page, and whether it only pushes (as watch mode does after a journal write).
FaultPlan = tuple[float, float, int]
FAULTS = st.tuples(
    st.sampled_from([0.1, 0.3, 0.5, 0.7]),
    st.sampled_from([0.0, 0.0, 0.2]),
    st.integers(0, 2**32 - 1),
)
SIZES = st.tuples(st.integers(1, 40), st.integers(5, 200), st.booleans())
# Half the item picks come from a few hot items, so writes meet on the same
# registers and conflicts are common.
ITEM_INDEX = st.one_of(st.integers(0, 5), st.integers(0, ITEMS - 1))

tally = Tally("convergence")

Key = tuple[str, str]


@pytest.fixture(scope="module", autouse=True)
def write_report() -> Iterator[None]:
    yield
    tally.flush()


@dataclass
class Peer:
    """One replica of the machine, and the clock error it currently has."""

    name: str
    api: dl.Replica
    skew_ms: int
    measured_ms: int = 0
    offline_steps: int = 0

    @property
    def store(self) -> Any:
        return self.api.store

    def stamp_with_skew(self) -> None:
        self.store.set_setting("clock_offset_ms", self.measured_ms + self.skew_ms)

    def remote(self) -> LocalsyncRemote:
        url, token = self.store.setting("remote_url"), self.store.setting("token")
        assert url is not None and token is not None
        return LocalsyncRemote(
            url,
            token,
            retry=fast_retry(max_attempts=4),
            timeout=5,
            now_ms=lambda: wall_clock_ms() + self.skew_ms,
        )

    def sync(self, *, batch_size: int, page_limit: int, push_only: bool) -> None:
        """Sync (or only push), then stamp later ops with the skewed clock again.

        Raises ``SyncError`` when the sync could not finish.
        """
        self.store.set_setting("clock_offset_ms", self.measured_ms)
        try:
            with self.remote() as remote:
                engine = SyncEngine(
                    self.store, remote, batch_size=batch_size, page_limit=page_limit
                )
                if push_only:
                    engine.push()
                else:
                    engine.sync()
        finally:
            self.measured_ms = int(self.store.setting("clock_offset_ms") or 0)
            self.stamp_with_skew()


class Convergence(RuleBasedStateMachine):
    """Random status ops, online writes, deletions, clock jumps, offline periods and
    faulty syncs; the check after the last sync round is in ``teardown``."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="convergence-"))
        self.world: World | None = None
        self.proxy: FaultProxy | None = None
        self.http: httpx.Client | None = None
        self.peers: list[Peer] = []
        self.op_ids: set[str] = set()
        self.rest_writes: list[tuple[str, str, str | None]] = []
        self.deleted: set[str] = set()

    # Setup

    @initialize(
        skews=st.lists(
            st.integers(-HOUR_MS, HOUR_MS), min_size=REPLICAS, max_size=REPLICAS
        )
    )
    def start(self, skews: list[int]) -> None:
        world = self.world = make_world(self.tmp, ITEMS)
        custom = world.storage.create_task(
            NewTask(
                project_id=world.project["id"],
                dataset_id=world.dataset["id"],
                name=CUSTOM_TASK,
                statuses=CUSTOM_STATUSES,
                assignees=(USER,),
            )
        )
        self.tasks = {world.task["id"]: STATUSES, custom["id"]: CUSTOM_STATUSES}
        self.task_ids = sorted(self.tasks)
        self.proxy = FaultProxy(world.runner.port).start()
        online_token = issue_token(
            world.storage.meta().secret,
            email=ONLINE_USER,
            project_ids=[world.project["id"]],
        )
        self.http = httpx.Client(
            base_url=f"{world.url}/api/v1",
            headers={"Authorization": f"Bearer {online_token}"},
            timeout=30,
        )
        for number, skew in enumerate(skews):
            name = f"replica-{number}.db"
            world.clone(name, url=self.proxy.url).close()
            peer = Peer(name, dl.Replica(self.tmp / name), skew)
            peer.stamp_with_skew()
            self.peers.append(peer)
        tally.add("histories")
        tally.add("replicas", len(self.peers))

    def teardown(self) -> None:
        try:
            if self.world is not None and self.peers:
                self.final_round()
                self.check_converged()
        finally:
            for peer in self.peers:
                peer.api.close()
            if self.http is not None:
                self.http.close()
            if self.proxy is not None:
                tally.add_all(self.proxy.counts(), prefix="fault:")
                tally.add("requests", len(self.proxy.requests))
                self.proxy.stop()
            if self.world is not None:
                self.world.runner.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    # Helpers

    def item(self, index: int) -> str:
        assert self.world is not None
        return self.world.item_ids[index % len(self.world.item_ids)]

    def journal(self, peer: Peer, result: Any) -> None:
        self.op_ids.update(result.op_ids)
        tally.add("ops", len(result.op_ids))

    # Local writes

    @rule(
        peer=st.integers(0, REPLICAS - 1),
        task=st.integers(0, 1),
        status=st.integers(0, 2),
        items=st.lists(ITEM_INDEX, min_size=1, max_size=8),
    )
    def set_statuses(self, peer: int, task: int, status: int, items: list[int]) -> None:
        task_id = self.task_ids[task]
        result = self.peers[peer].store.set_status(
            [self.item(index) for index in items],
            task_id=task_id,
            status=self.tasks[task_id][status],
            creator=USER,
        )
        self.journal(self.peers[peer], result)

    @rule(
        peer=st.integers(0, REPLICAS - 1),
        task=st.integers(0, 1),
        items=st.lists(ITEM_INDEX, min_size=1, max_size=5),
    )
    def clear_statuses(self, peer: int, task: int, items: list[int]) -> None:
        api = self.peers[peer].api
        task_entity = api.tasks.get(task_id=self.task_ids[task])
        result = task_entity.set_status(
            "", "delete", [self.item(index) for index in items]
        )
        self.journal(self.peers[peer], result)

    @rule(
        peer=st.integers(0, REPLICAS - 1),
        task=st.integers(0, 1),
        status=st.one_of(st.none(), st.integers(0, 2)),
        low=st.integers(0, ITEMS - 1),
        width=st.integers(1, ITEMS),
    )
    def bulk_by_filter(
        self, peer: int, task: int, status: int | None, low: int, width: int
    ) -> None:
        """Set or clear a status on a range of items, through the dtlpy-shaped API."""
        api = self.peers[peer].api
        task_id = self.task_ids[task]
        filters = dl.Filters(
            field="metadata.user.index",
            values=low,
            operator=dl.FiltersOperations.GREATER_THAN_OR_EQUAL,
        )
        filters.add(
            field="metadata.user.index",
            values=low + width,
            operator=dl.FiltersOperations.LESS_THAN,
        )
        pages = api.tasks.get(task_id=task_id).get_items(filters=filters)
        value = "" if status is None else self.tasks[task_id][status]
        result = api.datasets.get(dataset_id=api.store.dataset_id).items.update_status(
            value, items=pages, clear=status is None
        )
        self.journal(self.peers[peer], result)
        tally.add("bulk_calls")

    # The server side

    @rule(
        task=st.integers(0, 1),
        status=st.one_of(st.none(), st.integers(0, 2)),
        items=st.lists(ITEM_INDEX, min_size=1, max_size=6),
    )
    def rest_write(self, task: int, status: int | None, items: list[int]) -> None:
        """Write statuses as an online SDK user does, through the task endpoint."""
        assert self.http is not None
        task_id = self.task_ids[task]
        # dtlpy sends a status with a delete too; the server clears whatever it is.
        value = None if status is None else self.tasks[task_id][status]
        payload = {"operation": "delete", "status": "completed"}
        if value is not None:
            payload = {"operation": "create", "status": value}
        response = self.http.post(
            f"/assignments/items/tasks/{task_id}/status",
            json={
                "itemIds": [self.item(index) for index in items],
                "statusPayload": payload,
            },
        )
        assert response.status_code == 200, response.text
        written = response.json()
        assert set(written) == {self.item(index) for index in items} - self.deleted
        for item_id in written:
            self.rest_writes.append((item_id, task_id, value))
        tally.add("rest_writes", len(written))

    @rule(task=st.integers(0, 1), status=st.integers(0, 2), item=ITEM_INDEX)
    def rest_assignment_write(self, task: int, status: int, item: int) -> None:
        """Set one item's status through its assignment, as ``dtlpy`` can."""
        assert self.http is not None and self.world is not None
        task_id = self.task_ids[task]
        [assignment] = self.world.storage.assignments(
            [self.world.project["id"]], task_id=task_id
        )
        item_id = self.item(item)
        response = self.http.post(
            f"/assignments/{assignment['id']}/items/{item_id}/status",
            json={"operation": "create", "status": self.tasks[task_id][status]},
        )
        if item_id in self.deleted:
            assert response.status_code == 404, response.text
            return
        assert response.status_code == 200, response.text
        self.rest_writes.append((item_id, task_id, self.tasks[task_id][status]))
        tally.add("rest_writes")

    @precondition(lambda self: len(self.deleted) < MAX_DELETED_ITEMS)
    @rule(item=ITEM_INDEX)
    def delete_item(self, item: int) -> None:
        """Delete an item on the server; pending ops on it must be quarantined."""
        assert self.world is not None
        item_id = self.item(item)
        if item_id not in self.deleted:
            self.world.storage.delete_items([item_id])
            self.deleted.add(item_id)
            tally.add("items_deleted")

    # Clocks, connectivity and syncs

    @rule(peer=st.integers(0, REPLICAS - 1), skew=st.integers(-HOUR_MS, HOUR_MS))
    def jump_clock(self, peer: int, skew: int) -> None:
        self.peers[peer].skew_ms = skew
        self.peers[peer].stamp_with_skew()
        tally.add("clock_jumps")

    @rule(peer=st.integers(0, REPLICAS - 1), steps=st.integers(1, 8))
    def go_offline(self, peer: int, steps: int) -> None:
        """Take a replica offline for ``steps`` steps; its syncs are skipped."""
        if self.peers[peer].offline_steps == 0:
            tally.add("offline_periods")
        self.peers[peer].offline_steps = steps

    @invariant()
    def count_step(self) -> None:
        # Runs after every step, so an offline period ends after its steps.
        for peer in self.peers:
            peer.offline_steps = max(0, peer.offline_steps - 1)
        if self.peers:
            tally.add("steps")

    @rule(peer=st.integers(0, REPLICAS - 1), faults=FAULTS, sizes=SIZES)
    def sync(self, peer: int, faults: FaultPlan, sizes: tuple[int, int, bool]) -> None:
        """Sync one replica through the proxy, with random faults."""
        self.sync_peers([peer], faults, sizes)

    @rule(order=st.permutations(range(REPLICAS)), faults=FAULTS, sizes=SIZES)
    def sync_all(
        self, order: list[int], faults: FaultPlan, sizes: tuple[int, int, bool]
    ) -> None:
        """Sync every replica in a random order, all with the same fault rates."""
        self.sync_peers(order, faults, sizes)

    def sync_peers(
        self, order: list[int], faults: FaultPlan, sizes: tuple[int, int, bool]
    ) -> None:
        assert self.proxy is not None
        rate, connection_rate, seed = faults
        batch_size, page_limit, push_only = sizes
        self.proxy.chooser = RandomFaults(
            rate,
            faults=every_request_fault(),
            seed=seed,
            connection_rate=connection_rate,
        )
        try:
            for index in order:
                self.sync_peer(self.peers[index], batch_size, page_limit, push_only)
        finally:
            self.proxy.chooser = None

    def sync_peer(
        self, peer: Peer, batch_size: int, page_limit: int, push_only: bool
    ) -> None:
        if peer.offline_steps:
            tally.add("syncs_skipped_offline")
            return
        try:
            peer.sync(batch_size=batch_size, page_limit=page_limit, push_only=push_only)
            tally.add("syncs")
        except SyncError:
            # The faults outlasted the retries: the sync stopped part way, as a
            # sync on a bad network does. The next one has to pick up from there.
            tally.add("syncs_given_up")

    # The final check

    def final_round(self) -> None:
        """Sync every replica twice without faults, so each pulls every push."""
        for _ in range(2):
            for peer in self.peers:
                peer.sync(batch_size=1000, page_limit=1000, push_only=False)

    def check_converged(self) -> None:
        assert self.world is not None
        server = self.server_registers()
        history = self.server_history()
        keys = [
            (item_id, task_id)
            for item_id in self.world.item_ids
            if item_id not in self.deleted
            for task_id in self.task_ids
        ]
        for peer in self.peers:
            self.check_replica(peer, server, keys)
        self.check_oracle(server, history, keys)
        self.check_each_op_once(history)
        tally.add("ops_lost", 0)

    def check_replica(
        self, peer: Peer, server: dict[Key, tuple[str | None, str]], keys: list[Key]
    ) -> None:
        view = local_view(peer)
        assert set(item for item, _ in view) == {item for item, _ in keys}, peer.name
        for key in keys:
            expected = server.get(key, (None, ""))[0]
            assert view.get(key) == expected, (peer.name, key)
        known = dict(
            ((item, task), (status, hlc))
            for item, task, status, hlc in peer.store.conn.execute(
                "SELECT item_id, task_id, status, hlc FROM remote_registers"
            )
        )
        assert known == server, peer.name

    def check_oracle(
        self,
        server: dict[Key, tuple[str | None, str]],
        history: list[dict[str, Any]],
        keys: list[Key],
    ) -> None:
        """Compare the server with LWW over every write, by the HLCs it recorded."""
        recorded = {row["op_id"]: row for row in history if row["op_id"]}
        writes: dict[Key, list[tuple[str, str | None]]] = {}
        for peer in self.peers:
            for op_id, item_id, task_id, status in peer.store.conn.execute(
                "SELECT op_id, item_id, task_id, status FROM journal"
            ):
                if item_id in self.deleted:
                    continue
                row = recorded[op_id]
                writes.setdefault((item_id, task_id), []).append((row["hlc"], status))
        rest_rows = [row for row in history if row["source"] == "rest"]
        assert [
            (row["item_id"], row["task_id"], row["status"]) for row in rest_rows
        ] == self.rest_writes
        for row in rest_rows:
            if row["item_id"] not in self.deleted:
                key = (row["item_id"], row["task_id"])
                writes.setdefault(key, []).append((row["hlc"], row["status"]))

        for key in keys:
            if key not in writes:
                assert key not in server, key
                continue
            hlc, status = max(writes[key])
            assert server[key] == (status, hlc), key
        tally.add("registers_checked", len(keys) * len(self.peers))

    def check_each_op_once(self, history: list[dict[str, Any]]) -> None:
        """Every op journaled is in one final state, and on the server at most once."""
        assert self.world is not None
        replica_rows = [row for row in history if row["source"] == "replica"]
        per_op = Counter(row["op_id"] for row in replica_rows)
        assert all(count == 1 for count in per_op.values()), per_op.most_common(3)
        outcome = {row["op_id"]: row["outcome"] for row in replica_rows}

        journaled: set[str] = set()
        pushed = 0
        for peer in self.peers:
            rows = peer.store.conn.execute(
                "SELECT j.op_id, j.item_id, j.state, j.reason, j.result IS NOT NULL,"
                " c.op_id IS NOT NULL FROM journal AS j"
                " LEFT JOIN conflicts AS c ON c.op_id = j.op_id"
            ).fetchall()
            for op_id, item_id, state, reason, was_pushed, has_conflict in rows:
                journaled.add(op_id)
                assert state in FINAL_STATES, (peer.name, op_id, state)
                assert has_conflict == (state == "superseded"), (peer.name, op_id)
                if was_pushed:
                    pushed += 1
                    assert outcome[op_id] == state, (peer.name, op_id)
                else:
                    # Quarantined on the replica when it pulled the item's tombstone.
                    assert state == "rejected", op_id
                    assert reason == ITEM_DELETED, op_id
                    assert item_id in self.deleted, op_id
                    assert op_id not in outcome, op_id
                tally.add(f"op_{state}")
        assert journaled == self.op_ids
        assert set(outcome) <= journaled
        assert self.world.server_count("SELECT COUNT(*) FROM pushed_ops") == pushed

    def server_registers(self) -> dict[Key, tuple[str | None, str]]:
        assert self.world is not None
        with sqlite3.connect(self.world.runner.db_path) as conn:
            rows = conn.execute(
                "SELECT item_id, task_id, status, hlc FROM registers"
            ).fetchall()
        return {(item, task): (status, hlc) for item, task, status, hlc in rows}

    def server_history(self) -> list[dict[str, Any]]:
        assert self.world is not None
        with sqlite3.connect(self.world.runner.db_path) as conn:
            conn.row_factory = sqlite3.Row
            rows = conn.execute("SELECT * FROM register_history ORDER BY id").fetchall()
        return [dict(row) for row in rows]


def local_view(peer: Peer) -> dict[Key, str | None]:
    """Return each task ref's status as the replica's items show it."""
    rows = peer.store.conn.execute(
        "SELECT items.id, json_extract(r.value, '$.id'),"
        " json_extract(r.value, '$.metadata.status')"
        " FROM items, json_each(items.json, '$.metadata.system.refs') AS r"
        " WHERE json_extract(r.value, '$.type') = 'task'"
    ).fetchall()
    return {(item, task): status for item, task, status in rows}


# Each history starts a server and clones its replicas (about 2 s), so shrinking a
# failure would take many minutes: it runs only with LOCALSYNC_CONVERGENCE_SHRINK=1.
# A failure still prints every step of the history that failed.
PHASES = [Phase.explicit, Phase.reuse, Phase.generate]
if os.environ.get("LOCALSYNC_CONVERGENCE_SHRINK") == "1":
    PHASES.append(Phase.shrink)

Convergence.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    phases=PHASES,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
test_replicas_converge = Convergence.TestCase


def test_fault_script_applies_faults_in_order(tmp_path: Path) -> None:
    """The proxy's scripted chooser: one fault per matching request, in order."""
    world = make_world(tmp_path, 5)
    proxy = FaultProxy(world.runner.port).start()
    try:
        script = FaultScript(
            [Fault.answer(503, retry_after="0"), Fault.cut_after_response_start()],
            path="/api/v1/sync/pull",
            on_accept=[Fault.reset_on_accept()],
        )
        proxy.chooser = script
        replica = world.clone(url=proxy.url)
        [op_id] = replica.set_status(
            world.item_ids[:1],
            task_id=world.task["id"],
            status="completed",
            creator=USER,
        ).op_ids
        with (
            replica,
            LocalsyncRemote(proxy.url, world.token, retry=fast_retry()) as remote,
        ):
            SyncEngine(replica, remote).push()

        assert script.done
        assert [event.label for event in proxy.events] == [
            "reset_on_accept",
            "status_503",
            "cut_after_response_start",
        ]
        assert proxy.counts() == {
            "reset_on_accept": 1,
            "status_503": 1,
            "cut_after_response_start": 1,
        }
        [push] = [info for info in proxy.requests if info.path == "/api/v1/sync/push"]
        assert op_id.encode() in push.body
    finally:
        proxy.stop()
        world.runner.close()
