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
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from limits.aio.storage import MemoryStorage, Storage

from gatekeep.errors import (
    EntryNotFound,
    EventClosed,
    EventDisabled,
    EventNotFound,
    InvalidInput,
    JoinsRejected,
    NoStock,
    PriorityCodeNotFound,
    QueueFull,
    RateLimited,
    SoldOut,
)
from gatekeep.fairness import (
    GENESIS_HASH,
    PreQueueEntry,
    admission_record,
    build_publication,
    fair_order,
    new_seed,
    prequeue_scores,
    stored_ticket_id,
)
from gatekeep.model import (
    Entry,
    EntrySnapshot,
    EntryStatus,
    EventConfig,
    EventSnapshot,
    JoinRequest,
    JoinResult,
    QueueMode,
    ReleasePhase,
    ReleaseResult,
    ReleaseState,
    WatchedEntry,
    WatchResult,
    WebhookFailure,
)
from gatekeep.priority import PRIORITY_CODE_MESSAGES, PriorityCode
from gatekeep.ratewindow import (
    WindowCount,
    WindowLimit,
    WindowOutcome,
    count_window,
    tightest,
    window_headers,
)
from gatekeep.stats import WAIT_SAMPLES_MAX, EventStats
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
from gatekeep.tokens.records import (
    RevokeResult,
    TokenLookup,
    TokenRecord,
    TokenState,
    token_state,
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
    # Admission-token records by jti, and (expiry ms, jti) rows to drop them in expiry order.
    tokens: dict[str, TokenRecord] = field(default_factory=dict)
    token_heap: list[tuple[int, str]] = field(default_factory=list)
    control: _ControlState = field(default_factory=lambda: _ControlState())


@dataclass
class _ControlState:
    """The release controller's state of one event: the Redis store's `control` hash, the
    admission log and the fairness publication."""

    seed_hex: str = ""
    commitment: str = ""
    opened_at_ms: int | None = None  # set when the pre-queue was frozen and ordered
    opened_unreported: bool = False  # opened by a join; the next release step reports it
    stock_config: int | None = None  # the `stock` value last applied
    stock_left: int | None = None
    closed: bool = False  # the "closed" transition was reported
    sold_out: bool = False  # the "sold_out" transition was reported
    log: list[str] = field(default_factory=list)  # admission log records, JSON text
    log_head: str = GENESIS_HASH
    publication: dict[str, Any] | None = None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# The rate-limit counters are swept of expired ones once they reach this many.
LIMIT_WINDOWS_SWEEP_SIZE = 100_000


class MemoryStore(Store):
    name = "memory"

    def __init__(self) -> None:
        self._events: dict[str, _EventState] = {}
        self._webhook_failures: dict[str, deque[WebhookFailure]] = {}
        # event id -> code_id -> code, and event id -> recent waits in ms, newest first.
        self._priority_codes: dict[str, dict[str, PriorityCode]] = {}
        self._wait_samples: dict[str, deque[int]] = {}
        # (event id, limit name, caller identifier) -> (counters, expiry ms) of status and
        # heartbeat rate limits.
        self._limit_windows: dict[tuple[str, str, str], tuple[WindowCount, int]] = {}
        self._limit_sweep_size = LIMIT_WINDOWS_SWEEP_SIZE

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
        code = self._redeemable_code(request)
        config = state.config
        if not config.enabled:
            raise EventDisabled(request.event_id)

        now_ms = _now_ms()
        _purge(state, now_ms)
        control = _sync_control(state)
        _open_if_due(state, now_ms)
        if _is_closed(config, now_ms):
            raise EventClosed(request.event_id)
        if _is_sold_out(control):
            raise SoldOut(request.event_id)

        live_queue_id = state.devices.get(request.device_id)
        if live_queue_id is not None:
            return JoinResult(snapshot=_entry_snapshot(state, live_queue_id, now_ms), created=False)
        if config.mode == QueueMode.REJECT:
            raise JoinsRejected(request.event_id)

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
            ticket_id=request.ticket_id,
        )
        state.entries[entry.queue_id] = entry
        state.devices[entry.device_id] = entry.queue_id
        state.scores[entry.queue_id] = score
        state.heartbeats[entry.queue_id] = now_ms
        bisect.insort(state.waiting, (score, entry.queue_id))
        if (
            config.mode == QueueMode.PASSTHROUGH
            and not config.paused
            and control.opened_at_ms is not None
        ):
            capacity_left = max(0, config.max_capacity - len(state.admitted))
            picked = _take_in_order(state, min(capacity_left, PURGE_BATCH))
            state.admitted_total += len(_admit(state, picked, now_ms, "join"))
        if code is not None:
            self._priority_codes[request.event_id][code.code_id] = replace(code, uses=code.uses + 1)
        return JoinResult(snapshot=_entry_snapshot(state, entry.queue_id, now_ms), created=True)

    async def touch(
        self,
        event_id: str,
        queue_id: str,
        *,
        renew_session: bool = False,
        limits: Sequence[WindowLimit] = (),
    ) -> EntrySnapshot:
        state = self._state_for_entry(event_id)
        now_ms = _now_ms()
        limit = self._count_limits(event_id, limits, now_ms)
        _purge(state, now_ms)
        _sync_control(state)

        entry = state.entries.get(queue_id)
        if entry is None:
            raise EntryNotFound()
        ending = _ending_status(state, now_ms)
        if entry.status == EntryStatus.WAITING and ending is not None:
            _end(state, entry, ending, now_ms)
        elif entry.status == EntryStatus.WAITING:
            state.entries[queue_id] = replace(entry, last_heartbeat_ms=now_ms)
            state.heartbeats[queue_id] = now_ms
            state.heartbeats.move_to_end(queue_id)
        elif entry.status == EntryStatus.ADMITTED and renew_session:
            _renew_session(state, entry, now_ms)
        return replace(_entry_snapshot(state, queue_id, now_ms), limit=limit)

    def _count_limits(
        self, event_id: str, limits: Sequence[WindowLimit], now_ms: int
    ) -> WindowOutcome | None:
        """Count a call against all of `limits` or, when one is exhausted, none; see ratewindow."""
        if not limits:
            return None
        if len(self._limit_windows) >= self._limit_sweep_size:
            self._limit_windows = {
                key: value for key, value in self._limit_windows.items() if value[1] > now_ms
            }
            # Counters that are all still live double the size of the next sweep, so sweeps
            # stay rare whatever the number of callers.
            self._limit_sweep_size = max(LIMIT_WINDOWS_SWEEP_SIZE, 2 * len(self._limit_windows))

        outcomes: list[WindowOutcome] = []
        counts: list[tuple[tuple[str, str, str], WindowCount, int]] = []
        for limit in limits:
            key = (event_id, limit.name, limit.identifier)
            stored = self._limit_windows.get(key)
            live = stored[0] if stored is not None and stored[1] > now_ms else None
            outcome, counted = count_window(limit, live, now_ms)
            outcomes.append(outcome)
            counts.append((key, counted, now_ms + 2 * limit.window_ms))

        chosen = tightest(outcomes)
        if chosen is not None and not chosen.allowed:
            raise RateLimited(chosen.name, window_headers(chosen))
        for key, counted, expires_at_ms in counts:
            self._limit_windows[key] = (counted, expires_at_ms)
        return chosen

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

    async def watch(self, event_id: str, queue_ids: list[str]) -> WatchResult:
        state = self._state(event_id)
        now_ms = _now_ms()
        _purge(state, now_ms)

        watched: list[WatchedEntry] = []
        for queue_id in queue_ids:
            entry = state.entries.get(queue_id)
            if entry is None:
                watched.append(WatchedEntry(queue_id=queue_id, status=None))
                continue
            if entry.status != EntryStatus.WAITING:
                watched.append(WatchedEntry(queue_id=queue_id, status=entry.status, entry=entry))
                continue

            state.heartbeats[queue_id] = now_ms
            state.heartbeats.move_to_end(queue_id)
            state.entries[queue_id] = replace(entry, last_heartbeat_ms=now_ms)
            position = bisect.bisect_left(state.waiting, (state.scores[queue_id], queue_id)) + 1
            watched.append(
                WatchedEntry(queue_id=queue_id, status=EntryStatus.WAITING, position=position)
            )
        return WatchResult(event=_snapshot(state, now_ms), entries=watched)

    # Admission-token records

    async def record_token(
        self, event_id: str, queue_id: str, jti: str, expires_at_ms: int
    ) -> tuple[TokenRecord, bool] | None:
        state = self._state_for_entry(event_id)
        now_ms = _now_ms()
        _purge(state, now_ms)
        _purge_tokens(state, now_ms)

        entry = state.entries.get(queue_id)
        if entry is None:
            raise EntryNotFound()
        if entry.status != EntryStatus.ADMITTED or entry.token_id != jti:
            return None

        record = _live_token(state, jti, now_ms)
        if record is None:
            record = TokenRecord(
                jti=jti,
                event_id=event_id,
                queue_id=queue_id,
                device_id=entry.device_id,
                expires_at_ms=expires_at_ms,
                issued_at_ms=now_ms,
            )
            _save_token(state, record)
            return record, True
        if expires_at_ms > record.expires_at_ms:
            record = replace(record, expires_at_ms=expires_at_ms)
            _save_token(state, record)
        return record, False

    async def lookup_token(
        self, event_id: str, jti: str, *, device_id: str | None = None, leeway_ms: int = 0
    ) -> TokenLookup:
        now_ms = _now_ms()
        state = self._events.get(event_id)
        if state is None:
            return TokenLookup(TokenState.UNKNOWN, None, now_ms)
        _purge(state, now_ms)
        _purge_tokens(state, now_ms)

        record = _live_token(state, jti, now_ms)
        if record is None and device_id is not None:
            record = _adopt_token(state, event_id, jti, device_id, leeway_ms, now_ms)
        return TokenLookup(_token_state(state, record), record, now_ms)

    async def consume_token(
        self, event_id: str, jti: str, *, device_id: str | None = None, leeway_ms: int = 0
    ) -> TokenLookup:
        lookup = await self.lookup_token(event_id, jti, device_id=device_id, leeway_ms=leeway_ms)
        if lookup.state != TokenState.ACTIVE or lookup.record is None:
            return lookup

        # No await since the lookup's store read, so no other call interleaved with it.
        consumed = replace(lookup.record, consumed_at_ms=lookup.now_ms)
        _save_token(self._events[event_id], consumed)
        return TokenLookup(TokenState.ACTIVE, consumed, lookup.now_ms)

    async def revoke_tokens(
        self, event_id: str, *, jti: str | None = None, device_id: str | None = None
    ) -> RevokeResult:
        state = self._state(event_id)
        now_ms = _now_ms()
        _purge(state, now_ms)
        _purge_tokens(state, now_ms)

        if jti is not None:
            record = _live_token(state, jti, now_ms)
            return _revoke_token(state, record, now_ms) if record else RevokeResult()

        result = RevokeResult()
        for record in list(state.tokens.values()):
            if record.expires_at_ms > now_ms and device_id in (None, record.device_id):
                result += _revoke_token(state, record, now_ms)

        # Sessions whose token was never recorded end too.
        if device_id is None:
            live_queue_ids = list(state.admitted)
        else:
            live_queue_id = state.devices.get(device_id)
            live_queue_ids = [live_queue_id] if live_queue_id else []
        for queue_id in live_queue_ids:
            result += RevokeResult(ended_sessions=_end_session(state, queue_id, now_ms))
        return result

    # Release

    async def release(self, event_id: str, max_batch: int) -> ReleaseResult:
        return self._release_step(event_id, max_batch, None)

    async def release_now(self, event_id: str, count: int) -> ReleaseResult:
        return self._release_step(event_id, count, count)

    def _release_step(
        self, event_id: str, max_batch: int, manual_count: int | None
    ) -> ReleaseResult:
        """Mirror of release.lua; the memory store opens in the same step as the freeze."""
        state = self._state(event_id)
        now_ms = _now_ms()
        expired_waiting, expired_sessions = _purge(state, now_ms)
        control = _sync_control(state)
        _open_if_due(state, now_ms)
        transitions: list[str] = []
        if control.opened_unreported:
            control.opened_unreported = False
            transitions.append("opened")

        waiting_before = len(state.waiting)
        dt_s = _settle(state, now_ms)
        config = state.config
        closed = _is_closed(config, now_ms)
        sold_out = _is_sold_out(control)
        if closed and not control.closed:
            transitions.append("closed")
        if sold_out and not control.sold_out:
            transitions.append("sold_out")
        control.closed, control.sold_out = closed, sold_out
        ending = _ending_status(state, now_ms)
        if ending is not None:
            _end_waiting(state, ending, now_ms)

        capacity_left = max(0, config.max_capacity - len(state.admitted))
        kind = "tick"
        if manual_count is not None:
            kind = "manual"
            count = min(manual_count, capacity_left, waiting_before, max_batch)
        elif config.paused:
            # A pause stops admission at once, even with credit saved from before it.
            count = 0
        elif config.mode == QueueMode.PASSTHROUGH:
            count = min(capacity_left, waiting_before, max_batch)
        else:
            count = min(math.floor(state.credit + 1e-9), capacity_left, waiting_before, max_batch)
        scheduled = _is_scheduled(state, now_ms)
        if ending is not None or scheduled:
            count = 0
        if scheduled:
            # Credit starts at opening: time before it earns nothing.
            state.credit = 0.0
        count = max(0, count)

        if config.mode == QueueMode.RANDOM:
            picked = _take_at_random(state, count)
        else:
            picked = _take_in_order(state, count)
        admitted_ids = _admit(state, picked, now_ms, kind)
        admitted = len(admitted_ids)

        # Only admissions paid by credit use it up: passthrough and manual releases do not.
        if kind == "tick" and config.mode != QueueMode.PASSTHROUGH:
            state.credit -= admitted
        if count in (waiting_before, capacity_left):
            # Nothing more can be released now, so credit stops at one user: an idle or full
            # event never saves up a burst beyond the configured rate.
            state.credit = min(state.credit, 1.0)
        state.admitted_total += admitted
        if waiting_before > 0 and not config.paused:
            decay = math.exp(-dt_s / OBSERVED_RATE_TAU_S)
            state.obs_count = state.obs_count * decay + admitted
            state.obs_time_s = state.obs_time_s * decay + dt_s

        return ReleaseResult(
            admitted_queue_ids=admitted_ids,
            expired_waiting=expired_waiting,
            expired_sessions=expired_sessions,
            transitions=transitions,
        )

    # Release controller

    async def adjust_stock(
        self, event_id: str, *, decrement: int | None = None, remaining: int | None = None
    ) -> int:
        state = self._state(event_id)
        control = _sync_control(state)
        if control.stock_left is None:
            raise NoStock(event_id)
        if decrement is not None:
            control.stock_left = max(0, control.stock_left - decrement)
        else:
            control.stock_left = remaining if remaining is not None else 0
        return control.stock_left

    async def release_state(self, event_id: str, *, with_publication: bool = False) -> ReleaseState:
        state = self._state(event_id)
        now_ms = _now_ms()
        control = _sync_control(state)
        if _is_closed(state.config, now_ms):
            phase = ReleasePhase.CLOSED
        elif _is_sold_out(control):
            phase = ReleasePhase.SOLD_OUT
        elif _is_scheduled(state, now_ms):
            phase = ReleasePhase.SCHEDULED
        else:
            phase = ReleasePhase.OPEN
        return ReleaseState(
            event_id=event_id,
            now_ms=now_ms,
            phase=phase,
            opened_at_ms=control.opened_at_ms,
            stock_remaining=control.stock_left,
            admission_log_length=len(control.log),
            commitment=control.commitment,
            publication=control.publication if with_publication else None,
        )

    async def admission_log(self, event_id: str, start: int, count: int) -> list[str]:
        control = _sync_control(self._state(event_id))
        return control.log[start : start + count]

    # Webhooks

    async def record_webhook_failure(self, failure: WebhookFailure, keep: int) -> WebhookFailure:
        stored = replace(failure, failed_at_ms=_now_ms())
        records = self._webhook_failures.get(failure.event_id)
        if records is None or records.maxlen != keep:
            # Newest first: keep the first `keep` of the old records.
            records = deque(list(records or ())[:keep], maxlen=keep)
            self._webhook_failures[failure.event_id] = records
        records.appendleft(stored)
        return stored

    async def webhook_failures(self, event_id: str) -> list[WebhookFailure]:
        return list(self._webhook_failures.get(event_id, ()))

    # Operations (admin API)

    async def delete_event(self, event_id: str) -> tuple[int, int]:
        state = self._state(event_id)
        dropped = (len(state.waiting), len(state.admitted))
        # Every per-event table of this store is a dict keyed by event id, including those
        # other features add, so one sweep removes all of the event's records.
        for table in vars(self).values():
            if isinstance(table, dict):
                table.pop(event_id, None)
        return dropped

    async def reset_event(self, event_id: str) -> tuple[int, int]:
        state = self._state(event_id)
        dropped = (len(state.waiting), len(state.admitted))
        # The release controller's state, admission log and fairness publication are audit
        # evidence, so they survive a reset, as the Redis store's control keys do.
        self._events[event_id] = _EventState(
            config=state.config, last_ms=_now_ms(), control=state.control
        )
        self._wait_samples.pop(event_id, None)
        return dropped

    async def record_waits(self, event_id: str, queue_ids: list[str]) -> list[int]:
        state = self._state(event_id)
        waits_ms: list[int] = []
        for queue_id in queue_ids:
            entry = state.entries.get(queue_id)
            if entry is not None and entry.admitted_at_ms is not None:
                waits_ms.append(max(0, entry.admitted_at_ms - entry.joined_at_ms))
        samples = self._wait_samples.setdefault(event_id, deque(maxlen=WAIT_SAMPLES_MAX))
        samples.extendleft(waits_ms)
        return waits_ms

    async def event_stats(self, event_id: str) -> EventStats:
        state = self._state(event_id)
        now_ms = _now_ms()
        _purge(state, now_ms)
        by_bucket = dict.fromkeys(state.config.buckets, 0)
        for score, _ in state.waiting:
            by_bucket[state.config.buckets[score // SEQ_SPAN]] += 1
        return EventStats(
            snapshot=_snapshot(state, now_ms),
            waiting_by_bucket=by_bucket,
            wait_samples_ms=list(self._wait_samples.get(event_id, ())),
        )

    async def inspect_entry(self, event_id: str, queue_id: str) -> EntrySnapshot:
        state = self._state_for_entry(event_id)
        now_ms = _now_ms()
        _purge(state, now_ms)
        if queue_id not in state.entries:
            raise EntryNotFound()
        return _entry_snapshot(state, queue_id, now_ms)

    async def put_priority_codes(self, event_id: str, codes: list[PriorityCode]) -> None:
        state = self._state(event_id)
        for code in codes:
            if code.bucket not in state.config.buckets:
                raise InvalidInput("bucket", f"event {event_id!r} has no bucket {code.bucket!r}")
        table = self._priority_codes.setdefault(event_id, {})
        for code in codes:
            table[code.code_id] = code

    async def list_priority_codes(self, event_id: str) -> list[PriorityCode]:
        self._state(event_id)
        codes = self._priority_codes.get(event_id, {}).values()
        return sorted(codes, key=lambda code: (code.created_at_ms, code.code_id))

    async def get_priority_code(self, event_id: str, code_id: str) -> PriorityCode | None:
        return self._priority_codes.get(event_id, {}).get(code_id)

    async def disable_priority_code(self, event_id: str, code_id: str) -> PriorityCode:
        self._state(event_id)
        code = self._priority_codes.get(event_id, {}).get(code_id)
        if code is None:
            raise PriorityCodeNotFound(code_id)
        disabled = replace(code, disabled=True)
        self._priority_codes[event_id][code_id] = disabled
        return disabled

    def rate_limit_storage(self) -> Storage:
        return MemoryStorage()

    def _redeemable_code(self, request: JoinRequest) -> PriorityCode | None:
        """Return the join's priority code when it may be redeemed; raise InvalidInput if not."""
        if request.priority_code_id is None:
            return None
        code = self._priority_codes.get(request.event_id, {}).get(request.priority_code_id)
        if code is None or code.code_hash != request.priority_code_hash:
            raise InvalidInput("priority_code", PRIORITY_CODE_MESSAGES["priority_code_invalid"])
        if code.disabled:
            raise InvalidInput("priority_code", PRIORITY_CODE_MESSAGES["priority_code_disabled"])
        if not code.available:
            raise InvalidInput("priority_code", PRIORITY_CODE_MESSAGES["priority_code_used"])
        return code

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


def _purge_tokens(state: _EventState, now_ms: int) -> None:
    """Drop at most PURGE_BATCH token records whose expiry has passed."""
    heap = state.token_heap
    dropped = 0
    while heap and heap[0][0] <= now_ms and dropped < PURGE_BATCH:
        expires_ms, jti = heapq.heappop(heap)
        record = state.tokens.get(jti)
        if record is not None and record.expires_at_ms == expires_ms:
            del state.tokens[jti]
            dropped += 1


def _live_token(state: _EventState, jti: str, now_ms: int) -> TokenRecord | None:
    record = state.tokens.get(jti)
    if record is None or record.expires_at_ms <= now_ms:
        return None
    return record


def _save_token(state: _EventState, record: TokenRecord) -> None:
    previous = state.tokens.get(record.jti)
    state.tokens[record.jti] = record
    if previous is None or previous.expires_at_ms != record.expires_at_ms:
        heapq.heappush(state.token_heap, (record.expires_at_ms, record.jti))


def _adopt_token(
    state: _EventState, event_id: str, jti: str, device_id: str, leeway_ms: int, now_ms: int
) -> TokenRecord | None:
    """Record `jti` from the device's live entry when it is admitted with that token id."""
    queue_id = state.devices.get(device_id)
    entry = state.entries.get(queue_id) if queue_id else None
    if entry is None or entry.status != EntryStatus.ADMITTED or entry.token_id != jti:
        return None
    assert entry.session_expires_at_ms is not None
    record = TokenRecord(
        jti=jti,
        event_id=event_id,
        queue_id=entry.queue_id,
        device_id=device_id,
        expires_at_ms=entry.session_expires_at_ms + leeway_ms,
        issued_at_ms=now_ms,
    )
    _save_token(state, record)
    return record


def _token_state(state: _EventState, record: TokenRecord | None) -> TokenState:
    entry = state.entries.get(record.queue_id) if record else None
    return token_state(record, entry.status if entry else None, entry.token_id if entry else None)


def _end_session(state: _EventState, queue_id: str, now_ms: int) -> int:
    """End an admitted session with status `left`; return 1 if one ended, else 0."""
    entry = state.entries.get(queue_id)
    if entry is None or entry.status != EntryStatus.ADMITTED:
        return 0
    _end(state, entry, EntryStatus.LEFT, now_ms)
    state.left_total += 1
    return 1


def _revoke_token(state: _EventState, record: TokenRecord, now_ms: int) -> RevokeResult:
    """Mark a record revoked and end the session it stands for, unless it has ended already."""
    revoked = 0
    if record.revoked_at_ms is None:
        _save_token(state, replace(record, revoked_at_ms=now_ms))
        revoked = 1

    # An entry with another token id is a later admission of the same device and stays.
    entry = state.entries.get(record.queue_id)
    ended = 0
    if entry is not None and entry.token_id == record.jti:
        ended = _end_session(state, record.queue_id, now_ms)
    return RevokeResult(revoked_tokens=revoked, ended_sessions=ended)


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


# Release controller: mirrors of control.lua


def _sync_control(state: _EventState) -> _ControlState:
    """Return the event's controller state, applying a new `stock` value and drawing the seed."""
    control = state.control
    if control.stock_config != state.config.stock:
        control.stock_config = state.config.stock
        control.stock_left = state.config.stock
    if not control.seed_hex:
        control.seed_hex, control.commitment = new_seed()
    return control


def _is_closed(config: EventConfig, now_ms: int) -> bool:
    return config.closes_at_ms is not None and now_ms >= config.closes_at_ms


def _is_sold_out(control: _ControlState) -> bool:
    return control.stock_left is not None and control.stock_left <= 0


def _is_scheduled(state: _EventState, now_ms: int) -> bool:
    opens_at_ms = state.config.opens_at_ms
    return state.control.opened_at_ms is None and opens_at_ms is not None and now_ms < opens_at_ms


def _ending_status(state: _EventState, now_ms: int) -> EntryStatus | None:
    """Return the status that waiting entries end with now (closed or sold out), or None."""
    if _is_closed(state.config, now_ms):
        return EntryStatus.CLOSED
    if _is_sold_out(state.control):
        return EntryStatus.SOLD_OUT
    return None


def _open_if_due(state: _EventState, now_ms: int) -> None:
    """Once `opens_at` has passed, order the pre-queue by the fairness seed and open.

    Every entry waiting at that moment is in the pre-queue. Its new scores stay below the
    sequence number of any later join, so later joins queue behind it.
    """
    control = state.control
    if control.opened_at_ms is not None or _is_scheduled(state, now_ms):
        return

    prequeue = [
        PreQueueEntry(
            ticket_id=state.entries[queue_id].ticket_id or stored_ticket_id(queue_id),
            bucket_rank=score // SEQ_SPAN,
            queue_id=queue_id,
        )
        for score, queue_id in state.waiting
    ]
    ordered = fair_order(control.seed_hex, prequeue)
    scores = prequeue_scores(ordered)
    state.waiting = sorted(
        (score, entry.queue_id) for score, entry in zip(scores, ordered, strict=True)
    )
    state.scores = {queue_id: score for score, queue_id in state.waiting}
    control.publication = build_publication(
        event_id=state.config.event_id,
        seed_hex=control.seed_hex,
        frozen_at_ms=now_ms,
        buckets=state.config.buckets,
        ordered=ordered,
    )
    control.opened_at_ms = now_ms
    control.opened_unreported = True


def _take_in_order(state: _EventState, count: int) -> list[str]:
    """Remove the first `count` waiting ids from the waiting list and return them."""
    taken = [queue_id for _, queue_id in state.waiting[:count]]
    del state.waiting[:count]
    return taken


def _take_at_random(state: _EventState, count: int) -> list[str]:
    """Remove `count` waiting ids, each drawn uniformly among the best bucket's entries."""
    taken: list[str] = []
    for _ in range(count):
        if not state.waiting:
            break
        rank = state.waiting[0][0] // SEQ_SPAN
        size = bisect.bisect_left(state.waiting, ((rank + 1) * SEQ_SPAN, ""))
        _, queue_id = state.waiting.pop(secrets.randbelow(size))
        taken.append(queue_id)
    return taken


def _admit(state: _EventState, queue_ids: list[str], now_ms: int, kind: str) -> list[str]:
    """Start a session for each of `queue_ids`, already off the waiting list, and log them."""
    if not queue_ids:
        return []
    session_expires_at_ms = now_ms + round(state.config.session_ttl_s * 1000)
    tickets: list[str] = []
    for queue_id in queue_ids:
        del state.scores[queue_id]
        del state.heartbeats[queue_id]
        state.admitted[queue_id] = session_expires_at_ms
        heapq.heappush(state.session_heap, (session_expires_at_ms, queue_id))
        entry = replace(
            state.entries[queue_id],
            status=EntryStatus.ADMITTED,
            admitted_at_ms=now_ms,
            session_expires_at_ms=session_expires_at_ms,
        )
        state.entries[queue_id] = entry
        tickets.append(entry.ticket_id or stored_ticket_id(queue_id))

    control = state.control
    record = admission_record(
        state.config.event_id, len(control.log) + 1, now_ms, kind, control.log_head, tickets
    )
    control.log.append(orjson.dumps(record).decode())
    control.log_head = record["hash"]
    return queue_ids


def _end_waiting(state: _EventState, status: EntryStatus, now_ms: int) -> None:
    """End up to PURGE_BATCH waiting entries with `status`, as control.lua's end_waiting does."""
    for _, queue_id in state.waiting[:PURGE_BATCH]:
        _end(state, state.entries[queue_id], status, now_ms)


def _renew_session(state: _EventState, entry: Entry, now_ms: int) -> None:
    """Extend an admitted session by `session_ttl_s` from now, up to `max_session_s` in all."""
    config = state.config
    if config.max_session_s is None or entry.admitted_at_ms is None:
        return
    renewed_ms = min(
        now_ms + round(config.session_ttl_s * 1000),
        entry.admitted_at_ms + round(config.max_session_s * 1000),
    )
    if renewed_ms <= state.admitted[entry.queue_id]:
        return
    state.admitted[entry.queue_id] = renewed_ms
    heapq.heappush(state.session_heap, (renewed_ms, entry.queue_id))
    state.entries[entry.queue_id] = replace(entry, session_expires_at_ms=renewed_ms)
