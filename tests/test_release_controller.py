"""The release controller on both stores: schedule, fair opening, modes, stock, log, sessions."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from gatekeep.errors import EventClosed, JoinsRejected, NoStock, SoldOut
from gatekeep.fairness import check_admission_log, commitment_of, verify_publication
from gatekeep.model import EntryStatus, ReleasePhase, format_utc_ms
from gatekeep.store.base import Store
from test_store_behaviour import join_request, make_event


async def join_many(
    store: Store, event_id: str, count: int, prefix: str = "d", at_once: int = 1
) -> list[tuple[str, str]]:
    """Join `count` devices, `at_once` concurrently; return (queue_id, ticket_id).

    With `at_once` above 1 the list is in request order, which may differ from join order.
    """
    joined: list[tuple[str, str]] = []
    for first in range(0, count, at_once):
        results = await asyncio.gather(
            *(
                store.join(join_request(event_id, f"{prefix}{index}"))
                for index in range(first, min(first + at_once, count))
            )
        )
        joined += [(r.snapshot.entry.queue_id, r.snapshot.entry.ticket_id) for r in results]
    return joined


async def opens_in(store: Store, seconds: float) -> str:
    return format_utc_ms(await store.now_ms() + round(seconds * 1000)) or ""


async def release_until_opened(store: Store, event_id: str, timeout_s: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        result = await store.release(event_id, 10_000)
        if "opened" in result.transitions:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"event {event_id} did not open within {timeout_s} s")


async def read_log(store: Store, event_id: str) -> list[dict[str, object]]:
    lines = await store.admission_log(event_id, 0, 100_000)
    return [orjson.loads(line) for line in lines]


def logged_tickets(records: list[dict[str, object]]) -> list[str]:
    tickets: list[str] = []
    for record in records:
        value = record["tickets"]
        assert isinstance(value, list)
        tickets += value
    return tickets


# Fair opening


async def test_opening_1000_matches_seed(store: Store) -> None:
    await make_event(
        store, opens_at=await opens_in(store, 6), release_rate=100_000, max_capacity=100_000
    )
    before = await store.release_state("ev1")
    joined = await join_many(store, "ev1", 1000, at_once=50)
    still_scheduled = await store.release_state("ev1")
    assert still_scheduled.phase == ReleasePhase.SCHEDULED, "joins took longer than the lead"
    assert before.commitment is not None

    await release_until_opened(store, "ev1")

    state = await store.release_state("ev1", with_publication=True)
    publication = state.publication
    assert publication is not None
    assert verify_publication(publication, before.commitment) == []
    assert publication["commitment"] == commitment_of(publication["seed"])
    published = [item["ticket_id"] for item in publication["tickets"]]
    assert sorted(published) == sorted(ticket for _, ticket in joined)
    assert published != [ticket for _, ticket in joined]

    while (await store.event_snapshot("ev1")).waiting_count > 0:
        await store.release("ev1", 10_000)
        await asyncio.sleep(0.02)
    assert logged_tickets(await read_log(store, "ev1")) == published


async def test_prequeue_hides_position(store: Store) -> None:
    await make_event(store, opens_at=await opens_in(store, 30))

    result = await store.join(join_request("ev1", "d1"))
    await store.release("ev1", 100)

    assert result.snapshot.entry.status == EntryStatus.WAITING
    assert (await store.touch("ev1", result.snapshot.entry.queue_id)).entry.admitted_at_ms is None
    assert (await store.release_state("ev1")).phase == ReleasePhase.SCHEDULED


async def test_fifo_after_opening(store: Store) -> None:
    await make_event(
        store, opens_at=await opens_in(store, 1.5), release_rate=0.001, max_capacity=100
    )
    early = await join_many(store, "ev1", 5, prefix="early")
    await release_until_opened(store, "ev1")
    late = await join_many(store, "ev1", 5, prefix="late")

    await store.release_now("ev1", 10)

    state = await store.release_state("ev1", with_publication=True)
    assert state.publication is not None
    published = [item["ticket_id"] for item in state.publication["tickets"]]
    assert sorted(published) == sorted(ticket for _, ticket in early)
    assert logged_tickets(await read_log(store, "ev1")) == published + [t for _, t in late]


async def test_buckets_order_prequeue(store: Store) -> None:
    await make_event(
        store, opens_at=await opens_in(store, 1.5), buckets=["vip", "default"], release_rate=0.001
    )
    plain = [await store.join(join_request("ev1", f"p{i}")) for i in range(4)]
    vip = [await store.join(join_request("ev1", f"v{i}", bucket="vip")) for i in range(2)]
    await release_until_opened(store, "ev1")

    await store.release_now("ev1", 6)

    tickets = logged_tickets(await read_log(store, "ev1"))
    assert set(tickets[:2]) == {r.snapshot.entry.ticket_id for r in vip}
    assert set(tickets[2:]) == {r.snapshot.entry.ticket_id for r in plain}


# Closing


async def test_closing_ends_waiting(store: Store) -> None:
    await make_event(store, closes_at=await opens_in(store, 1.0), release_rate=0.001)
    first = await store.join(join_request("ev1", "d1"))
    second = await store.join(join_request("ev1", "d2"))
    await asyncio.sleep(1.1)

    touched = await store.touch("ev1", first.snapshot.entry.queue_id)
    result = await store.release("ev1", 100)

    assert touched.entry.status == EntryStatus.CLOSED
    assert "closed" in result.transitions
    assert (await store.touch("ev1", second.snapshot.entry.queue_id)).entry.status == "closed"
    with pytest.raises(EventClosed):
        await store.join(join_request("ev1", "d3"))
    assert "closed" not in (await store.release("ev1", 100)).transitions


# Modes


async def test_mode_random_draws_among_waiting(store: Store) -> None:
    await make_event(store, mode="random", release_rate=0.001, max_capacity=1000)
    joined = await join_many(store, "ev1", 200)
    await release_until_opened(store, "ev1", timeout_s=5)

    result = await store.release_now("ev1", 50)

    admitted = result.admitted_queue_ids
    assert len(admitted) == 50
    assert len(set(admitted)) == 50
    assert admitted != [queue_id for queue_id, _ in joined[:50]]
    assert logged_tickets(await read_log(store, "ev1")) == [
        (await store.touch("ev1", queue_id)).entry.ticket_id for queue_id in admitted
    ]


async def test_mode_random_keeps_bucket_priority(store: Store) -> None:
    await make_event(
        store, mode="random", buckets=["vip", "default"], release_rate=0.001, max_capacity=100
    )
    await join_many(store, "ev1", 20)
    vip = [await store.join(join_request("ev1", f"v{i}", bucket="vip")) for i in range(5)]
    await release_until_opened(store, "ev1", timeout_s=5)

    result = await store.release_now("ev1", 5)

    assert set(result.admitted_queue_ids) == {r.snapshot.entry.queue_id for r in vip}


async def test_mode_passthrough_admits_at_once(store: Store) -> None:
    await make_event(store, mode="passthrough", release_rate=0.001, max_capacity=3)
    await release_until_opened(store, "ev1", timeout_s=5)

    joins = [await store.join(join_request("ev1", f"d{i}")) for i in range(4)]

    statuses = [join.snapshot.entry.status for join in joins]
    assert statuses == ["admitted", "admitted", "admitted", "waiting"]
    await store.leave("ev1", joins[0].snapshot.entry.queue_id)
    result = await store.release("ev1", 100)
    assert result.admitted_queue_ids == [joins[3].snapshot.entry.queue_id]


async def test_mode_reject_rejects_new_joins(store: Store) -> None:
    config = await make_event(store, release_rate=0.001)
    existing = await store.join(join_request("ev1", "d1"))
    await store.put_event(config.with_changes(mode="reject"))

    with pytest.raises(JoinsRejected):
        await store.join(join_request("ev1", "d2"))
    again = await store.join(join_request("ev1", "d1"))
    assert again.snapshot.entry.queue_id == existing.snapshot.entry.queue_id

    await store.put_event(config)
    assert (await store.join(join_request("ev1", "d2"))).created


async def test_mode_switch_live_to_fifo(store: Store) -> None:
    config = await make_event(store, mode="random", release_rate=0.001, max_capacity=100)
    joined = await join_many(store, "ev1", 30)
    await release_until_opened(store, "ev1", timeout_s=5)
    await store.put_event(config.with_changes(mode="fifo"))

    first = (await store.release_now("ev1", 10)).admitted_queue_ids

    assert first == [queue_id for queue_id, _ in joined[:10]]


# Stock


async def test_stock_zero_mid_queue(store: Store) -> None:
    await make_event(store, stock=2, release_rate=20, max_capacity=100)
    joined = await join_many(store, "ev1", 6)
    await release_until_opened(store, "ev1", timeout_s=5)
    await store.release_now("ev1", 2)

    assert await store.adjust_stock("ev1", decrement=1) == 1
    assert await store.adjust_stock("ev1", decrement=5) == 0
    result = await store.release("ev1", 100)

    assert "sold_out" in result.transitions
    assert result.admitted_queue_ids == []
    for queue_id, _ in joined[2:]:
        assert (await store.touch("ev1", queue_id)).entry.status == EntryStatus.SOLD_OUT
    with pytest.raises(SoldOut):
        await store.join(join_request("ev1", "late"))
    assert (await store.release_state("ev1")).phase == ReleasePhase.SOLD_OUT

    assert await store.adjust_stock("ev1", remaining=3) == 3
    assert (await store.join(join_request("ev1", "restocked"))).created


async def test_stock_new_value_resets(store: Store) -> None:
    config = await make_event(store, stock=10)
    assert await store.adjust_stock("ev1", decrement=4) == 6

    await store.put_event(config.with_changes(release_rate=3.0))
    assert (await store.release_state("ev1")).stock_remaining == 6

    await store.put_event(config.with_changes(stock=50))
    assert (await store.release_state("ev1")).stock_remaining == 50


async def test_stock_missing_raises(store: Store) -> None:
    await make_event(store)

    with pytest.raises(NoStock):
        await store.adjust_stock("ev1", decrement=1)


# Live control


async def test_rate_capacity_change_midrun(store: Store) -> None:
    config = await make_event(store, release_rate=20, max_capacity=1000)
    await join_many(store, "ev1", 300)
    await release_until_opened(store, "ev1", timeout_s=5)

    fast = await release_for(store, "ev1", 1.0)
    await store.put_event(config.with_changes(release_rate=4.0))
    slow = await release_for(store, "ev1", 2.0)
    active = (await store.event_snapshot("ev1")).admitted_active
    await store.put_event(config.with_changes(release_rate=100.0, max_capacity=active))
    capped = await release_for(store, "ev1", 0.5)

    assert 12 <= fast <= 28
    assert 4 <= slow <= 12
    assert capped == 0


async def release_for(store: Store, event_id: str, seconds: float) -> int:
    admitted = 0
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        admitted += len((await store.release(event_id, 10_000)).admitted_queue_ids)
        await asyncio.sleep(0.05)
    return admitted


async def test_pause_resume_fractional_credit(store: Store) -> None:
    await make_event(store, release_rate=0.5, max_capacity=100)
    await join_many(store, "ev1", 5)
    await release_until_opened(store, "ev1", timeout_s=5)
    await asyncio.sleep(1.2)

    paused = await store.set_paused("ev1", True)
    credit_at_pause = (await store.event_snapshot("ev1")).release_credit
    await asyncio.sleep(1.5)
    credit_while_paused = (await store.event_snapshot("ev1")).release_credit
    await store.set_paused("ev1", False)
    credit_at_resume = (await store.event_snapshot("ev1")).release_credit
    admitted_at_resume = len((await store.release("ev1", 100)).admitted_queue_ids)

    assert paused.paused
    assert 0.4 <= credit_at_pause < 1.0
    assert credit_while_paused == pytest.approx(credit_at_pause)
    assert credit_at_resume == pytest.approx(credit_at_pause, abs=0.05)
    assert admitted_at_resume == 0


async def test_release_now_respects_capacity(store: Store) -> None:
    await make_event(store, release_rate=0.001, max_capacity=2, paused=True)
    await join_many(store, "ev1", 5)
    await release_until_opened(store, "ev1", timeout_s=5)

    result = await store.release_now("ev1", 4)

    assert len(result.admitted_queue_ids) == 2
    assert (await store.event_snapshot("ev1")).waiting_count == 3
    records = await read_log(store, "ev1")
    assert [record["kind"] for record in records] == ["manual"]


async def test_release_now_before_opening(store: Store) -> None:
    await make_event(store, opens_at=await opens_in(store, 30))
    await join_many(store, "ev1", 3)

    result = await store.release_now("ev1", 3)

    assert result.admitted_queue_ids == []


# Sessions


async def test_heartbeat_renews_session(store: Store) -> None:
    await make_event(store, session_ttl_s=2, max_session_s=3, release_rate=0.001)
    joined = await store.join(join_request("ev1", "d1"))
    queue_id = joined.snapshot.entry.queue_id
    await release_until_opened(store, "ev1", timeout_s=5)
    admitted = (await store.release_now("ev1", 1)).admitted_queue_ids
    assert admitted == [queue_id]
    first = (await store.touch("ev1", queue_id)).entry
    await asyncio.sleep(0.6)

    read_only = (await store.touch("ev1", queue_id)).entry
    renewed = (await store.touch("ev1", queue_id, renew_session=True)).entry
    await asyncio.sleep(0.6)
    capped = (await store.touch("ev1", queue_id, renew_session=True)).entry

    assert first.session_expires_at_ms is not None and first.admitted_at_ms is not None
    assert read_only.session_expires_at_ms == first.session_expires_at_ms
    assert renewed.session_expires_at_ms is not None
    assert renewed.session_expires_at_ms > first.session_expires_at_ms
    assert capped.session_expires_at_ms == first.admitted_at_ms + 3000


async def test_heartbeat_without_max_session(store: Store) -> None:
    await make_event(store, release_rate=0.001)
    joined = await store.join(join_request("ev1", "d1"))
    queue_id = joined.snapshot.entry.queue_id
    await release_until_opened(store, "ev1", timeout_s=5)
    await store.release_now("ev1", 1)
    first = (await store.touch("ev1", queue_id)).entry
    await asyncio.sleep(0.3)

    again = (await store.touch("ev1", queue_id, renew_session=True)).entry

    assert again.session_expires_at_ms == first.session_expires_at_ms


# Admission log


async def test_log_detects_edit_and_gap(store: Store) -> None:
    await make_event(store, release_rate=0.001, max_capacity=100)
    await join_many(store, "ev1", 6)
    await release_until_opened(store, "ev1", timeout_s=5)
    for _ in range(3):
        await store.release_now("ev1", 2)
    records = await read_log(store, "ev1")
    assert [record["n"] for record in records] == [1, 2, 3]
    assert check_admission_log(records) == []

    edited = [dict(record) for record in records]
    edited[1]["tickets"] = ["f" * 24, *edited[1]["tickets"][1:]]  # type: ignore[index]
    problems = check_admission_log(edited)
    assert len(problems) == 1
    assert problems[0].startswith("record 2 (line 2) was changed")

    missing = [records[0], records[2]]
    problems = check_admission_log(missing)
    assert problems == ["record 2 is missing before record 3"]


async def test_log_rehashed_edit_breaks_chain(store: Store) -> None:
    from gatekeep.fairness import admission_record

    await make_event(store, release_rate=0.001, max_capacity=100)
    await join_many(store, "ev1", 4)
    await release_until_opened(store, "ev1", timeout_s=5)
    await store.release_now("ev1", 2)
    await store.release_now("ev1", 2)
    records = await read_log(store, "ev1")

    forged = admission_record(
        str(records[0]["event_id"]), 1, int(str(records[0]["at_ms"])), "tick", "0" * 64, ["a" * 24]
    )
    problems = check_admission_log([forged, records[1]])

    assert problems == [
        "record 2 (line 2) does not chain to record 1: record 1 was changed or replaced"
    ]


async def test_reset_keeps_admission_log(store: Store) -> None:
    await make_event(store, release_rate=0.001, max_capacity=100)
    await join_many(store, "ev1", 2)
    await release_until_opened(store, "ev1", timeout_s=5)
    await store.release_now("ev1", 2)
    commitment = (await store.release_state("ev1")).commitment

    await store.reset_event("ev1")
    await join_many(store, "ev1", 1, prefix="after")
    await store.release_now("ev1", 1)

    state = await store.release_state("ev1")
    records = await read_log(store, "ev1")
    assert state.commitment == commitment
    assert state.admission_log_length == 2
    assert check_admission_log(records) == []
