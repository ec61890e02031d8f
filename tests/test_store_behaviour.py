"""The behaviour suite: every case runs against the memory store and a real Redis store."""

from __future__ import annotations

import asyncio

import pytest

from conftest import join_request
from gatekeep.errors import EntryNotFound, EventDisabled, EventNotFound, QueueFull, RateLimited
from gatekeep.model import EntryStatus, EventConfig
from gatekeep.queue import new_queue_id
from gatekeep.ratewindow import WindowLimit
from gatekeep.store.base import Store


async def make_event(store: Store, event_id: str = "ev1", **fields: object) -> EventConfig:
    config = EventConfig.from_dict({"event_id": event_id, **fields})
    await store.put_event(config)
    return config


async def join_many(store: Store, event_id: str, count: int, prefix: str = "d") -> list[str]:
    queue_ids = []
    for index in range(count):
        result = await store.join(join_request(event_id, f"{prefix}{index}"))
        queue_ids.append(result.snapshot.entry.queue_id)
    return queue_ids


async def positions(store: Store, event_id: str, queue_ids: list[str]) -> list[int | None]:
    return [(await store.touch(event_id, queue_id)).position for queue_id in queue_ids]


async def release_until(store: Store, event_id: str, seconds: float, tick_s: float = 0.05) -> int:
    admitted = 0
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        admitted += len((await store.release(event_id, 10_000)).admitted_queue_ids)
        await asyncio.sleep(tick_s)
    return admitted


async def test_event_put_get_roundtrip(store: Store) -> None:
    config = await make_event(store, release_rate=0.5, buckets=["vip", "default"], paused=True)

    assert await store.get_event("ev1") == config
    assert await store.list_event_ids() == ["ev1"]


async def test_event_create_keeps_existing(store: Store) -> None:
    await make_event(store, release_rate=3.0)

    created = await store.create_event(
        EventConfig.from_dict({"event_id": "ev1", "release_rate": 9.0})
    )

    assert created is False
    stored = await store.get_event("ev1")
    assert stored is not None
    assert stored.release_rate == 3.0


async def test_event_unknown_raises(store: Store) -> None:
    with pytest.raises(EventNotFound):
        await store.join(join_request("missing", "d1"))
    with pytest.raises(EventNotFound):
        await store.release("missing", 10)
    with pytest.raises(EventNotFound):
        await store.event_snapshot("missing")
    assert await store.get_event("missing") is None


async def test_join_creates_waiting_entry(store: Store) -> None:
    await make_event(store)

    result = await store.join(join_request("ev1", "device-a"))

    assert result.created is True
    assert result.snapshot.entry.status == EntryStatus.WAITING
    assert result.snapshot.entry.device_id == "device-a"
    assert result.snapshot.position == 1
    assert result.snapshot.event.waiting_count == 1


async def test_join_same_device_returns_same_entry(store: Store) -> None:
    await make_event(store)
    first = await store.join(join_request("ev1", "device-a"))

    second = await store.join(join_request("ev1", "device-a"))

    assert second.created is False
    assert second.snapshot.entry.queue_id == first.snapshot.entry.queue_id
    assert second.snapshot.event.waiting_count == 1


async def test_join_concurrent_same_device_one_entry(store: Store) -> None:
    await make_event(store)

    results = await asyncio.gather(
        *(store.join(join_request("ev1", "one-device")) for _ in range(200))
    )

    queue_ids = {result.snapshot.entry.queue_id for result in results}
    assert len(queue_ids) == 1
    assert sum(result.created for result in results) == 1
    assert (await store.event_snapshot("ev1")).waiting_count == 1


async def test_join_concurrent_fills_queue_exactly(store: Store) -> None:
    await make_event(store, max_queue_size=100)

    outcomes = await asyncio.gather(
        *(store.join(join_request("ev1", f"d{index}")) for index in range(500)),
        return_exceptions=True,
    )

    joined = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
    full = [outcome for outcome in outcomes if isinstance(outcome, QueueFull)]
    assert len(joined) == 100
    assert len(full) == 400
    assert (await store.event_snapshot("ev1")).waiting_count == 100


async def test_join_disabled_event_rejected(store: Store) -> None:
    await make_event(store, enabled=False)

    with pytest.raises(EventDisabled):
        await store.join(join_request("ev1", "d1"))

    assert (await store.event_snapshot("ev1")).waiting_count == 0


async def test_positions_in_arrival_order(store: Store) -> None:
    await make_event(store)
    queue_ids = await join_many(store, "ev1", 10)

    assert await positions(store, "ev1", queue_ids) == list(range(1, 11))


async def test_positions_move_up_after_leave(store: Store) -> None:
    await make_event(store)
    queue_ids = await join_many(store, "ev1", 6)
    before = await positions(store, "ev1", queue_ids)

    await store.leave("ev1", queue_ids[1])
    await store.leave("ev1", queue_ids[4])

    remaining = [queue_ids[index] for index in (0, 2, 3, 5)]
    after = await positions(store, "ev1", remaining)
    assert after == [1, 2, 3, 4]
    for queue_id, position in zip(remaining, after, strict=True):
        assert position is not None
        assert position <= before[queue_ids.index(queue_id)]


async def test_positions_move_up_after_expiry(store: Store) -> None:
    await make_event(store, heartbeat_timeout_s=1)
    queue_ids = await join_many(store, "ev1", 5)

    # Everyone but the second and fourth keeps sending heartbeats past the timeout.
    for _ in range(6):
        await asyncio.sleep(0.25)
        for index in (0, 2, 4):
            await store.touch("ev1", queue_ids[index])

    assert await positions(store, "ev1", [queue_ids[0], queue_ids[2], queue_ids[4]]) == [1, 2, 3]
    silent = await store.touch("ev1", queue_ids[1])
    assert silent.entry.status == EntryStatus.EXPIRED
    assert silent.position is None


async def test_heartbeat_gap_inside_timeout_keeps_place(store: Store) -> None:
    await make_event(store, heartbeat_timeout_s=2)
    queue_ids = await join_many(store, "ev1", 2)

    await asyncio.sleep(1.2)
    await store.touch("ev1", queue_ids[1])
    await asyncio.sleep(1.2)

    snapshot = await store.touch("ev1", queue_ids[1])
    assert snapshot.entry.status == EntryStatus.WAITING
    assert snapshot.position == 1


async def test_touch_records_heartbeat(store: Store) -> None:
    await make_event(store)
    queue_id = (await join_many(store, "ev1", 1))[0]
    joined = (await store.touch("ev1", queue_id)).entry.last_heartbeat_ms

    await asyncio.sleep(0.05)
    touched = (await store.touch("ev1", queue_id)).entry.last_heartbeat_ms

    assert touched > joined


async def test_touch_unknown_entry_raises(store: Store) -> None:
    await make_event(store)

    with pytest.raises(EntryNotFound):
        await store.touch("ev1", new_queue_id("ev1"))
    with pytest.raises(EntryNotFound):
        await store.leave("ev1", new_queue_id("ev1"))


async def test_release_admits_in_bucket_then_fifo_order(store: Store) -> None:
    await make_event(store, buckets=["vip", "member", "default"], release_rate=1000)
    plain = [
        (await store.join(join_request("ev1", f"p{index}"))).snapshot.entry.queue_id
        for index in range(3)
    ]
    member = [
        (await store.join(join_request("ev1", f"m{index}", "member"))).snapshot.entry.queue_id
        for index in range(2)
    ]
    vip = [
        (await store.join(join_request("ev1", f"v{index}", "vip"))).snapshot.entry.queue_id
        for index in range(2)
    ]

    assert await positions(store, "ev1", vip + member + plain) == list(range(1, 8))

    await asyncio.sleep(0.05)
    admitted = (await store.release("ev1", 4)).admitted_queue_ids

    assert admitted == vip + member
    assert await positions(store, "ev1", plain) == [1, 2, 3]


async def test_release_rate_accumulates_fractions(store: Store) -> None:
    await make_event(store, release_rate=20)
    await join_many(store, "ev1", 200)
    await store.release("ev1", 10_000)

    admitted = await release_until(store, "ev1", 3.0)

    assert 59 <= admitted <= 61


async def test_release_respects_capacity(store: Store) -> None:
    await make_event(store, release_rate=1000, max_capacity=5)
    await join_many(store, "ev1", 20)
    await asyncio.sleep(0.1)

    admitted = len((await store.release("ev1", 100)).admitted_queue_ids)

    assert admitted == 5
    snapshot = await store.event_snapshot("ev1")
    assert snapshot.admitted_active == 5
    assert snapshot.waiting_count == 15


async def test_leave_frees_capacity_for_next_release(store: Store) -> None:
    await make_event(store, release_rate=1000, max_capacity=2)
    queue_ids = await join_many(store, "ev1", 4)
    await asyncio.sleep(0.05)
    await store.release("ev1", 100)

    left = await store.leave("ev1", queue_ids[0])
    await asyncio.sleep(0.05)
    admitted = (await store.release("ev1", 100)).admitted_queue_ids

    assert left.entry.status == EntryStatus.LEFT
    assert admitted == [queue_ids[2]]


async def test_session_ends_at_ttl(store: Store) -> None:
    await make_event(store, release_rate=1000, max_capacity=1, session_ttl_s=1)
    queue_ids = await join_many(store, "ev1", 2)
    await asyncio.sleep(0.05)
    assert (await store.release("ev1", 100)).admitted_queue_ids == [queue_ids[0]]

    await asyncio.sleep(1.1)
    await store.touch("ev1", queue_ids[1])  # keep the waiting one alive
    result = await store.release("ev1", 100)

    assert result.admitted_queue_ids == [queue_ids[1]]
    assert (await store.touch("ev1", queue_ids[0])).entry.status == EntryStatus.EXPIRED


async def test_capacity_holds_while_leaves_expiries_and_releases_race(store: Store) -> None:
    await make_event(store, release_rate=2000, max_capacity=10, session_ttl_s=1)
    queue_ids = await join_many(store, "ev1", 400)
    admitted: set[str] = set()
    max_active = 0

    async def releaser() -> None:
        nonlocal max_active
        for _ in range(150):
            admitted.update((await store.release("ev1", 50)).admitted_queue_ids)
            max_active = max(max_active, (await store.event_snapshot("ev1")).admitted_active)
            await asyncio.sleep(0.01)

    async def leaver() -> None:
        for _ in range(150):
            for queue_id in list(admitted)[:2]:
                await store.leave("ev1", queue_id)
            await asyncio.sleep(0.01)

    async def heartbeat_waiting() -> None:
        for _ in range(15):
            for queue_id in queue_ids:
                if queue_id not in admitted:
                    await store.touch("ev1", queue_id)
            await asyncio.sleep(0.1)

    await asyncio.gather(releaser(), releaser(), leaver(), heartbeat_waiting())
    snapshot = await store.event_snapshot("ev1")

    assert max_active <= 10
    assert snapshot.admitted_active <= 10
    assert admitted <= set(queue_ids)
    assert snapshot.left_total > 0
    assert snapshot.expired_total > 0  # some sessions reached their 1 s TTL during the race
    assert len(admitted) > 10  # ended sessions freed capacity that later releases used


async def test_each_entry_admitted_once_by_racing_releases(store: Store) -> None:
    await make_event(store, release_rate=5000, max_capacity=100_000)
    await join_many(store, "ev1", 400)
    await asyncio.sleep(0.1)

    batches = await asyncio.gather(*(store.release("ev1", 37) for _ in range(30)))

    admitted = [queue_id for batch in batches for queue_id in batch.admitted_queue_ids]
    assert len(admitted) == len(set(admitted))
    assert (await store.event_snapshot("ev1")).admitted_active == len(admitted)


async def test_pause_stops_release_and_keeps_fraction(store: Store) -> None:
    await make_event(store, release_rate=2)
    await join_many(store, "ev1", 50)
    await store.release("ev1", 100)
    await asyncio.sleep(0.25)  # about half a user of credit

    await store.set_paused("ev1", True)
    credit_at_pause = (await store.event_snapshot("ev1")).release_credit
    await asyncio.sleep(1.0)
    paused_admitted = len((await store.release("ev1", 100)).admitted_queue_ids)
    credit_while_paused = (await store.event_snapshot("ev1")).release_credit
    await store.set_paused("ev1", False)
    resumed_admitted = len((await store.release("ev1", 100)).admitted_queue_ids)

    assert paused_admitted == 0
    assert 0.4 <= credit_at_pause <= 0.7
    assert credit_while_paused == pytest.approx(credit_at_pause, abs=1e-6)
    assert resumed_admitted == 0  # the paused second is not released as a burst


async def test_rate_change_settles_old_rate(store: Store) -> None:
    config = await make_event(store, release_rate=1)
    await join_many(store, "ev1", 50)
    await store.release("ev1", 100)
    await asyncio.sleep(0.5)

    await store.put_event(config.with_changes(release_rate=0.001))
    credit = (await store.event_snapshot("ev1")).release_credit

    assert 0.4 <= credit <= 0.7


async def test_put_event_keeps_queue(store: Store) -> None:
    config = await make_event(store)
    queue_ids = await join_many(store, "ev1", 3)

    await store.put_event(config.with_changes(max_capacity=7))

    assert await positions(store, "ev1", queue_ids) == [1, 2, 3]
    snapshot = await store.event_snapshot("ev1")
    assert snapshot.config.max_capacity == 7


async def test_rejoin_after_leave_goes_to_back(store: Store) -> None:
    await make_event(store)
    first = (await store.join(join_request("ev1", "device-a"))).snapshot.entry.queue_id
    await join_many(store, "ev1", 3)

    await store.leave("ev1", first)
    again = await store.join(join_request("ev1", "device-a"))

    assert again.created is True
    assert again.snapshot.entry.queue_id != first
    assert again.snapshot.position == 4


async def test_leave_twice_is_unchanged(store: Store) -> None:
    await make_event(store)
    queue_id = (await join_many(store, "ev1", 1))[0]

    first = await store.leave("ev1", queue_id)
    second = await store.leave("ev1", queue_id)

    assert first.entry.status == EntryStatus.LEFT
    assert second.entry == first.entry
    assert (await store.event_snapshot("ev1")).left_total == 1


async def test_observed_rate_follows_admissions(store: Store) -> None:
    await make_event(store, release_rate=40)
    await join_many(store, "ev1", 400)
    await store.release("ev1", 10_000)

    await release_until(store, "ev1", 2.5)
    observed = (await store.event_snapshot("ev1")).observed_rate_per_s

    assert observed is not None
    assert 32 <= observed <= 48


async def test_events_are_isolated(store: Store) -> None:
    await make_event(store, "ev-a")
    await make_event(store, "ev-b")
    queue_a = (await join_many(store, "ev-a", 2, "a"))[1]

    await join_many(store, "ev-b", 5, "b")

    assert (await store.touch("ev-a", queue_a)).position == 2
    with pytest.raises(EntryNotFound):
        await store.touch("ev-b", queue_a)


async def test_paused_event_admits_nobody_despite_credit(store: Store) -> None:
    await make_event(store, release_rate=1000, max_capacity=1000)
    await join_many(store, "ev1", 50)
    await asyncio.sleep(0.1)

    await store.set_paused("ev1", True)
    paused = await store.release("ev1", 1000)
    await store.set_paused("ev1", False)
    resumed = await store.release("ev1", 1000)

    assert paused.admitted_queue_ids == []
    assert len(resumed.admitted_queue_ids) == 50


async def test_idle_event_saves_no_burst(store: Store) -> None:
    await make_event(store, release_rate=20)
    await store.release("ev1", 1000)
    await asyncio.sleep(1.0)  # a full second of credit while nobody waits
    await store.release("ev1", 1000)

    await join_many(store, "ev1", 30)
    first = await store.release("ev1", 1000)

    assert len(first.admitted_queue_ids) == 1


# Rate limits counted inside status and heartbeat calls


def window_limit(name: str, amount: int, identifier: str) -> WindowLimit:
    return WindowLimit(name=name, amount=amount, window_ms=60_000, identifier=identifier)


async def test_touch_counts_limits_all_or_none(store: Store) -> None:
    await make_event(store)
    first, second = await join_many(store, "ev1", 2)
    ip_limit = window_limit("status.ip", 5, "ip-1")

    counted = [
        await store.touch("ev1", first, limits=[ip_limit, window_limit("status.device", 3, "a")])
        for _ in range(3)
    ]
    with pytest.raises(RateLimited) as rejected:
        await store.touch("ev1", first, limits=[ip_limit, window_limit("status.device", 3, "a")])
    other_device = await store.touch(
        "ev1", second, limits=[ip_limit, window_limit("status.device", 3, "b")]
    )

    remaining = [snapshot.limit.remaining for snapshot in counted if snapshot.limit]
    assert remaining == [2, 1, 0]  # the device limit is the tightest
    assert rejected.value.headers["RateLimit-Remaining"] == "0"
    # Up to the window's end, then a third of the next window, when 3 of 3 weigh 2.
    retry_after_s = int(rejected.value.headers["Retry-After"])
    assert 1 <= retry_after_s <= 80
    # The call that used the last one already gave the wait until the next is allowed.
    assert counted[2].limit is not None
    assert abs(counted[2].limit.reset_s - retry_after_s) <= 1
    # The rejected call did not count against the IP limit: 3 of 5 used before this call.
    assert other_device.limit is not None
    assert other_device.limit.name == "status.ip"
    assert other_device.limit.remaining == 1


async def test_touch_limits_are_per_event_key(store: Store) -> None:
    await make_event(store)
    await make_event(store, "ev2")
    in_first = (await join_many(store, "ev1", 1))[0]
    in_second = (await join_many(store, "ev2", 1))[0]
    limit = window_limit("heartbeat.device", 1, "same-identifier")

    await store.touch("ev1", in_first, limits=[limit], renew_session=True)
    second = await store.touch("ev2", in_second, limits=[limit], renew_session=True)
    with pytest.raises(RateLimited):
        await store.touch("ev1", in_first, limits=[limit], renew_session=True)

    assert second.limit is not None
    assert second.limit.remaining == 0


async def test_concurrent_touches_count_in_call_order(store: Store) -> None:
    await make_event(store)
    await make_event(store, "ev2")
    first = (await join_many(store, "ev1", 1))[0]
    other = (await join_many(store, "ev2", 1))[0]
    limit = window_limit("status.device", 3, "same-identifier")

    results = await asyncio.gather(
        *(store.touch("ev1", first, limits=[limit]) for _ in range(5)),
        store.touch("ev2", other, limits=[limit]),
        return_exceptions=True,
    )

    counted = [result for result in results[:3] if not isinstance(result, BaseException)]
    assert [snapshot.limit.remaining for snapshot in counted if snapshot.limit] == [2, 1, 0]
    assert all(isinstance(result, RateLimited) for result in results[3:5])
    other_event = results[5]
    assert not isinstance(other_event, BaseException)
    assert other_event.limit is not None
    assert other_event.limit.remaining == 2  # the other event counts under its own key


async def test_concurrent_touches_of_mixed_entries(store: Store) -> None:
    await make_event(store, release_rate=1000)
    queue_ids = await join_many(store, "ev1", 4)
    await asyncio.sleep(0.05)
    admitted = (await store.release("ev1", 1)).admitted_queue_ids

    results = await asyncio.gather(
        store.touch("ev1", queue_ids[3]),
        store.touch("ev1", queue_ids[0]),
        store.touch("ev1", new_queue_id("ev1")),
        store.touch("ev1", queue_ids[1]),
        return_exceptions=True,
    )

    assert admitted == [queue_ids[0]]
    last, first, missing, second = results
    assert not isinstance(last, BaseException)
    assert last.position == 3
    assert not isinstance(first, BaseException)
    assert first.entry.status == EntryStatus.ADMITTED
    assert first.position is None
    assert isinstance(missing, EntryNotFound)
    assert not isinstance(second, BaseException)
    assert second.position == 1


async def test_concurrent_touch_sees_earlier_purge(store: Store) -> None:
    await make_event(store, heartbeat_timeout_s=1)
    silent, middle, last = await join_many(store, "ev1", 3)
    for _ in range(6):
        await asyncio.sleep(0.25)
        await store.touch("ev1", middle)
        await store.touch("ev1", last)

    # The first call expires the silent entry. The second must see the queue without it.
    results = await asyncio.gather(store.touch("ev1", last), store.touch("ev1", middle))

    assert [snapshot.position for snapshot in results] == [2, 1]
    assert (await store.inspect_entry("ev1", silent)).entry.status == EntryStatus.EXPIRED


async def test_touch_sees_config_changes(store: Store) -> None:
    await make_event(store, release_rate=2.0)
    queue_id = (await join_many(store, "ev1", 1))[0]
    before = await store.touch("ev1", queue_id)

    await make_event(store, release_rate=7.5)
    changed = await store.touch("ev1", queue_id)
    await store.set_paused("ev1", True)
    paused = await store.touch("ev1", queue_id)

    assert before.event.config.release_rate == 2.0
    assert changed.event.config.release_rate == 7.5
    assert paused.event.config.paused is True
    assert paused.event.config.release_rate == 7.5
