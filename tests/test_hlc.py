"""Hybrid logical clock: order, string form, send and receive rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from localsync.hlc import MAX_COUNTER, Clock, Timestamp, new_node_id

nodes = st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)
timestamps = st.builds(
    Timestamp,
    wall_ms=st.integers(min_value=0, max_value=10**15 - 1),
    counter=st.integers(min_value=0, max_value=MAX_COUNTER),
    node=nodes,
)


@given(timestamps, timestamps)
def test_string_order_matches_tuple_order(a: Timestamp, b: Timestamp) -> None:
    assert (str(a) < str(b)) == (a < b)
    assert (str(a) == str(b)) == (a == b)


@given(timestamps)
def test_string_form_round_trips(stamp: Timestamp) -> None:
    text = str(stamp)
    assert len(text) == 15 + 1 + 6 + 1 + 32
    assert Timestamp.parse(text) == stamp


@given(
    st.lists(st.integers(min_value=-5_000, max_value=5_000), min_size=1, max_size=60)
)
def test_send_is_strictly_monotonic(jumps: list[int]) -> None:
    """Even a clock that jumps backwards issues increasing timestamps."""
    now = [1_700_000_000_000]

    def reading() -> int:
        return now[0]

    clock = Clock(new_node_id(), now_ms=reading)
    previous = clock.send()
    for jump in jumps:
        now[0] += jump
        current = clock.send()
        assert current > previous
        previous = current


@given(timestamps, st.integers(min_value=0, max_value=10**13))
def test_send_after_receive_sorts_after_remote(
    remote: Timestamp, local_now: int
) -> None:
    clock = Clock(new_node_id(), now_ms=lambda: local_now)
    clock.receive(remote)
    assert clock.send() > remote


@given(st.lists(timestamps, min_size=1, max_size=20))
def test_receive_merges_maximum(seen: list[Timestamp]) -> None:
    clock = Clock(new_node_id(), now_ms=lambda: 0)
    for stamp in seen:
        clock.receive(stamp)
    latest = max(seen)
    assert (clock.last.wall_ms, clock.last.counter) == (latest.wall_ms, latest.counter)


def test_offset_corrects_wall_time() -> None:
    clock = Clock(new_node_id(), offset_ms=-3_600_000, now_ms=lambda: 10_000_000)
    assert clock.send().wall_ms == 10_000_000 - 3_600_000


def test_counter_overflow_moves_wall_on() -> None:
    node = new_node_id()
    clock = Clock(node, last=Timestamp(5, MAX_COUNTER, node), now_ms=lambda: 0)
    stamp = clock.send()
    assert (stamp.wall_ms, stamp.counter) == (6, 0)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1-2-3",
        "001796396132501-000000-XYZ",
        42,
        "001796396132501-0000001-" + "a" * 32,
    ],
)
def test_parse_rejects_malformed(text: object) -> None:
    with pytest.raises(ValueError, match="invalid HLC"):
        Timestamp.parse(text)  # type: ignore[arg-type]


def test_clock_rejects_malformed_node() -> None:
    with pytest.raises(ValueError, match="HLC node 'server'"):
        Clock("server")


def test_clock_stamps_equal_parsed_form() -> None:
    clock = Clock(new_node_id(), now_ms=lambda: 1_733_400_000_000)
    stamps = [clock.send() for _ in range(3)]

    assert [Timestamp.parse(str(stamp)) for stamp in stamps] == stamps
    assert [stamp.counter for stamp in stamps] == [0, 1, 2]


@given(
    start=st.integers(min_value=0, max_value=10**12),
    counter=st.integers(min_value=0, max_value=MAX_COUNTER),
    ahead=st.integers(min_value=-5, max_value=5),
    count=st.integers(min_value=0, max_value=40),
)
def test_send_many_equals_repeated_send(
    start: int, counter: int, ahead: int, count: int
) -> None:
    node = "c" * 32
    last = Timestamp(start, counter, node)
    now = start + ahead
    batched = Clock(node, last=last, now_ms=lambda: now)
    single = Clock(node, last=last, now_ms=lambda: now)

    stamps = batched.send_many(count)

    assert stamps == [str(single.send()) for _ in range(count)]
    assert batched.last == single.last
