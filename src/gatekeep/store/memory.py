"""The embedded store: the whole queue state in this process's memory.

A real implementation with the same behaviour as the Redis store, for `gatekeep serve` without
a Redis URL. State is lost when the process stops and is invisible to other processes, so the
service refuses to run more than one worker on it. Methods contain no `await` between reading
and writing state, so each one is atomic on the event loop without a lock.
"""

from __future__ import annotations

import bisect
import heapq
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace

from gatekeep.errors import EntryNotFound, EventDisabled, EventNotFound, InvalidInput, QueueFull
from gatekeep.model import (
    Entry,
    EntrySnapshot,
    EntryStatus,
    EventConfig,
    EventSnapshot,
    JoinRequest,
    JoinResult,
    ReleaseResult,
)
from gatekeep.store.base import Store
from gatekeep.store.constants import (
    ENTRY_RETENTION_S,
    OBSERVED_RATE_MIN_WINDOW_S,
    OBSERVED_RATE_TAU_S,
    PURGE_BATCH,
    SEQ_SPAN,
    release_burst,
    retry_after_for_full_queue,
)


@dataclass
class _EventState:
    """Everything the store keeps for one event."""

    config: EventConfig
    last_ms: int
    credit: float = 0.0
    seq: int = 0
    obs_count: float = 0.0
    obs_time_s: float = 0.0
    admitted_total: int = 0
    expired_total: int = 0
    left_total: int = 0
    waiting: list[tuple[int, str]] = field(default_factory=list)  # sorted (score, queue_id)
    scores: dict[str, int] = field(default_factory=dict)  # queue_id -> score, waiting only
    entries: dict[str, Entry] = field(default_factory=dict)
    devices: dict[str, str] = field(default_factory=dict)  # device_id -> live queue_id
    # Waiting queue ids, oldest heartbeat first: a heartbeat moves its entry to the end.
    heartbeats: OrderedDict[str, int] = field(default_factory=OrderedDict)
    admitted: dict[str, int] = field(default_factory=dict)  # queue_id -> session expiry ms
    # (expiry ms, queue_id) of admitted sessions; rows that no longer match `admitted` are stale.
    session_heap: list[tuple[int, str]] = field(default_factory=list)
    # Ended queue ids -> purge-at ms, in insertion order, which is purge order.
    retired: OrderedDict[str, int] = field(default_factory=OrderedDict)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class MemoryStore(Store):
    name = "memory"

    def __init__(self) -> None:
        self._events: dict[str, _EventState] = {}

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._events.clear()

    async def now_ms(self) -> int:
        return _now_ms()

    # Events

    async def put_event(self, config: EventConfig) -> EventConfig:
        now_ms = _now_ms()
        state = self._events.get(config.event_id)
        if state is None:
            self._events[config.event_id] = _EventState(config=config, last_ms=now_ms)
            return config

        _settle(state, now_ms)
        state.config = config
        state.credit = min(state.credit, release_burst(config.release_rate))
        return config

    async def create_event(self, config: EventConfig) -> bool:
        if config.event_id in self._events:
            return False
        self._events[config.event_id] = _EventState(config=config, last_ms=_now_ms())
        return True

    async def get_event(self, event_id: str) -> EventConfig | None:
        state = self._events.get(event_id)
        return state.config if state else None

    async def list_event_ids(self) -> list[str]:
        return sorted(self._events)

    async def set_paused(self, event_id: str, paused: bool) -> EventConfig:
        state = self._state(event_id)
        _settle(state, _now_ms())
        state.config = state.config.with_changes(paused=paused)
        return state.config

    async def event_snapshot(self, event_id: str) -> EventSnapshot:
        state = self._state(event_id)
        now_ms = _now_ms()
        _purge(state, now_ms)
        return _snapshot(state, now_ms)

    # Queue entries

    async def join(self, request: JoinRequest) -> JoinResult:
        state = self._state(request.event_id)
        config = state.config
        if not config.enabled:
            raise EventDisabled(request.event_id)

        now_ms = _now_ms()
        _purge(state, now_ms)

        live_queue_id = state.devices.get(request.device_id)
        if live_queue_id is not None:
            return JoinResult(snapshot=_entry_snapshot(state, live_queue_id, now_ms), created=False)

        if len(state.waiting) >= config.max_queue_size:
            raise QueueFull(request.event_id, retry_after_for_full_queue(config.release_rate))

        if request.bucket not in config.buckets:
            raise InvalidInput(
                "bucket", f"event {request.event_id!r} has no bucket {request.bucket!r}"
            )
        state.seq += 1
        score = config.bucket_rank(request.bucket) * SEQ_SPAN + state.seq
        entry = Entry(
            queue_id=request.queue_id,
            event_id=request.event_id,
            device_id=request.device_id,
            user_id=request.user_id,
            bucket=request.bucket,
            status=EntryStatus.WAITING,
            joined_at_ms=now_ms,
            last_heartbeat_ms=now_ms,
            token_id=request.token_id,
            nonce=request.nonce,
        )
        state.entries[entry.queue_id] = entry
        state.devices[entry.device_id] = entry.queue_id
        state.scores[entry.queue_id] = score
        state.heartbeats[entry.queue_id] = now_ms
        bisect.insort(state.waiting, (score, entry.queue_id))
        return JoinResult(snapshot=_entry_snapshot(state, entry.queue_id, now_ms), created=True)

    async def touch(self, event_id: str, queue_id: str) -> EntrySnapshot:
        state = self._state_for_entry(event_id)
        now_ms = _now_ms()
        _purge(state, now_ms)

        entry = state.entries.get(queue_id)
        if entry is None:
            raise EntryNotFound()
        if entry.status == EntryStatus.WAITING:
            state.entries[queue_id] = replace(entry, last_heartbeat_ms=now_ms)
            state.heartbeats[queue_id] = now_ms
            state.heartbeats.move_to_end(queue_id)
        return _entry_snapshot(state, queue_id, now_ms)

    async def leave(self, event_id: str, queue_id: str) -> EntrySnapshot:
        state = self._state_for_entry(event_id)
        now_ms = _now_ms()
        _purge(state, now_ms)

        entry = state.entries.get(queue_id)
        if entry is None:
            raise EntryNotFound()
        if entry.status in (EntryStatus.WAITING, EntryStatus.ADMITTED):
            _end(state, entry, EntryStatus.LEFT, now_ms)
            state.left_total += 1
        return _entry_snapshot(state, queue_id, now_ms)

    # Release

    async def release(self, event_id: str, max_batch: int) -> ReleaseResult:
        state = self._state(event_id)
        now_ms = _now_ms()
        expired_waiting, expired_sessions = _purge(state, now_ms)

        waiting_before = len(state.waiting)
        dt_s = _settle(state, now_ms)
        config = state.config
        capacity_left = max(0, config.max_capacity - len(state.admitted))
        count = min(math.floor(state.credit + 1e-9), capacity_left, waiting_before, max_batch)
        if config.paused:
            # A pause stops admission at once, even with credit saved from before it.
            count = 0
        count = max(0, count)

        session_expires_at_ms = now_ms + round(config.session_ttl_s * 1000)
        admitted_ids: list[str] = []
        for _, queue_id in state.waiting[:count]:
            del state.scores[queue_id]
            del state.heartbeats[queue_id]
            state.admitted[queue_id] = session_expires_at_ms
            heapq.heappush(state.session_heap, (session_expires_at_ms, queue_id))
            state.entries[queue_id] = replace(
                state.entries[queue_id],
                status=EntryStatus.ADMITTED,
                admitted_at_ms=now_ms,
                session_expires_at_ms=session_expires_at_ms,
            )
            admitted_ids.append(queue_id)
        del state.waiting[:count]

        state.credit -= count
        if count in (waiting_before, capacity_left):
            # Nothing more can be released now, so credit stops at one user: an idle or full
            # event never saves up a burst beyond the configured rate.
            state.credit = min(state.credit, 1.0)
        state.admitted_total += count
        if waiting_before > 0 and not config.paused:
            decay = math.exp(-dt_s / OBSERVED_RATE_TAU_S)
            state.obs_count = state.obs_count * decay + count
            state.obs_time_s = state.obs_time_s * decay + dt_s

        return ReleaseResult(
            admitted_queue_ids=admitted_ids,
            expired_waiting=expired_waiting,
            expired_sessions=expired_sessions,
        )

    # Helpers

    def _state(self, event_id: str) -> _EventState:
        state = self._events.get(event_id)
        if state is None:
            raise EventNotFound(event_id)
        return state

    def _state_for_entry(self, event_id: str) -> _EventState:
        """Find the event a queue id names; an unknown event means an unknown entry."""
        state = self._events.get(event_id)
        if state is None:
            raise EntryNotFound()
        return state


def _settle(state: _EventState, now_ms: int) -> float:
    """Add the credit earned since the last settlement; return the seconds that passed."""
    dt_s = max(0, now_ms - state.last_ms) / 1000
    config = state.config
    if not config.paused:
        earned = state.credit + dt_s * config.release_rate
        state.credit = min(earned, release_burst(config.release_rate))
    state.last_ms = now_ms
    return dt_s


def _credit_now(state: _EventState, now_ms: int) -> float:
    """Return the credit a settlement at `now_ms` would give, without writing it."""
    config = state.config
    if config.paused:
        return state.credit
    dt_s = max(0, now_ms - state.last_ms) / 1000
    return min(state.credit + dt_s * config.release_rate, release_burst(config.release_rate))


def _end(state: _EventState, entry: Entry, status: EntryStatus, now_ms: int) -> None:
    """Move a live entry to an ended status and free its place or capacity."""
    queue_id = entry.queue_id
    score = state.scores.pop(queue_id, None)
    if score is not None:
        index = bisect.bisect_left(state.waiting, (score, queue_id))
        del state.waiting[index]
        del state.heartbeats[queue_id]
    state.admitted.pop(queue_id, None)
    if state.devices.get(entry.device_id) == queue_id:
        del state.devices[entry.device_id]

    state.entries[queue_id] = replace(entry, status=status, ended_at_ms=now_ms)
    state.retired[queue_id] = now_ms + ENTRY_RETENTION_S * 1000


def _purge(state: _EventState, now_ms: int) -> tuple[int, int]:
    """Expire silent waiting entries and ended sessions; drop retired entries that are due.

    Returns (waiting entries expired, sessions expired).
    """
    cutoff_ms = now_ms - round(state.config.heartbeat_timeout_s * 1000)
    silent: list[str] = []
    for queue_id, heartbeat_ms in state.heartbeats.items():
        if heartbeat_ms >= cutoff_ms or len(silent) == PURGE_BATCH:
            break
        silent.append(queue_id)
    for queue_id in silent:
        _end(state, state.entries[queue_id], EntryStatus.EXPIRED, now_ms)

    ended: list[str] = []
    heap = state.session_heap
    while heap and heap[0][0] <= now_ms and len(ended) < PURGE_BATCH:
        expires_ms, queue_id = heapq.heappop(heap)
        if state.admitted.get(queue_id) == expires_ms:
            ended.append(queue_id)
            _end(state, state.entries[queue_id], EntryStatus.EXPIRED, now_ms)
    state.expired_total += len(silent) + len(ended)

    due: list[str] = []
    for queue_id, purge_ms in state.retired.items():
        if purge_ms > now_ms or len(due) == PURGE_BATCH:
            break
        due.append(queue_id)
    for queue_id in due:
        del state.retired[queue_id]
        del state.entries[queue_id]
    return len(silent), len(ended)


def _snapshot(state: _EventState, now_ms: int) -> EventSnapshot:
    observed: float | None = None
    if state.obs_time_s >= OBSERVED_RATE_MIN_WINDOW_S:
        observed = state.obs_count / state.obs_time_s
    return EventSnapshot(
        config=state.config,
        now_ms=now_ms,
        waiting_count=len(state.waiting),
        admitted_active=len(state.admitted),
        release_credit=_credit_now(state, now_ms),
        observed_rate_per_s=observed,
        admitted_total=state.admitted_total,
        expired_total=state.expired_total,
        left_total=state.left_total,
    )


def _entry_snapshot(state: _EventState, queue_id: str, now_ms: int) -> EntrySnapshot:
    entry = state.entries[queue_id]
    position: int | None = None
    if entry.status == EntryStatus.WAITING:
        position = bisect.bisect_left(state.waiting, (state.scores[queue_id], queue_id)) + 1
    return EntrySnapshot(entry=entry, position=position, event=_snapshot(state, now_ms))
