"""The store interface: every atomic queue operation the service layer needs.

Two implementations exist: `RedisStore` (production, shared by many processes) and
`MemoryStore` (embedded, one process). `tests/test_store_behaviour.py` runs the same cases
against both, and that suite decides what correct means.

Rules every implementation follows:

- Each method is atomic: no other operation on the same event interleaves with it.
- Times come from the store's clock (Redis `TIME`, or the process clock for the memory store),
  never from the caller, so all processes sharing a store decide on one clock.
- Before reading positions or counts, a method purges waiting entries whose last heartbeat is
  older than `heartbeat_timeout_s` and admitted sessions past their expiry (at most
  `PURGE_BATCH` of each per call), so a position never counts someone who has expired.
- Ended entries (`left`, `expired`) stay readable for `ENTRY_RETENTION_S`, then vanish.
- Methods never raise driver errors: an unreachable or slow store raises `StoreUnavailable`
  with the driver error as `__cause__`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from gatekeep.model import (
    EntrySnapshot,
    EventConfig,
    EventSnapshot,
    JoinRequest,
    JoinResult,
    ReleaseResult,
    ReleaseState,
    WatchResult,
    WebhookFailure,
)
from gatekeep.tokens.records import RevokeResult, TokenLookup, TokenRecord

if TYPE_CHECKING:
    from collections.abc import Sequence

    from limits.aio.storage import Storage

    from gatekeep.priority import PriorityCode
    from gatekeep.ratewindow import WindowLimit
    from gatekeep.stats import EventStats


class Store(ABC):
    """Async interface to the queue state of every event."""

    name: str = "store"

    @abstractmethod
    async def ping(self) -> None:
        """Check that the store responds; raise StoreUnavailable when it does not."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections; the store is unusable afterwards."""

    @abstractmethod
    async def now_ms(self) -> int:
        """Return the store clock in milliseconds since the Unix epoch."""

    # Events

    @abstractmethod
    async def put_event(self, config: EventConfig) -> EventConfig:
        """Create the event or replace its configuration, keeping its queue and sessions.

        The release credit is settled at the old rate (or kept, when the old config was paused)
        before the new configuration applies, so a rate change or pause never loses or invents
        a fraction of a user.
        """

    @abstractmethod
    async def create_event(self, config: EventConfig) -> bool:
        """Create the event when no event has its id; return False and change nothing otherwise."""

    @abstractmethod
    async def get_event(self, event_id: str) -> EventConfig | None:
        """Return the stored configuration, or None."""

    @abstractmethod
    async def list_event_ids(self) -> list[str]:
        """Return every event id, sorted."""

    @abstractmethod
    async def set_paused(self, event_id: str, paused: bool) -> EventConfig:
        """Pause or resume releases, settling the credit as `put_event` does.

        Raises EventNotFound.
        """

    @abstractmethod
    async def event_snapshot(self, event_id: str) -> EventSnapshot:
        """Return the event's configuration and live counters. Raises EventNotFound."""

    # Queue entries

    @abstractmethod
    async def join(self, request: JoinRequest) -> JoinResult:
        """Add a waiting entry, or return the device's live entry (waiting or admitted).

        Entries are ordered by bucket rank (lower first), then by a per-event sequence number
        taken at join, so the order inside a bucket is arrival order.
        Raises EventNotFound, EventDisabled (`enabled` false) or QueueFull (`max_queue_size`
        entries waiting); none of them stores anything.
        """

    @abstractmethod
    async def touch(
        self,
        event_id: str,
        queue_id: str,
        *,
        renew_session: bool = False,
        limits: Sequence[WindowLimit] = (),
    ) -> EntrySnapshot:
        """Count the call against `limits`, return the entry and, when it is waiting, record
        the call as its heartbeat.

        The call is counted against every limit or, when one of them is exhausted, against
        none, and then nothing else changes and RateLimited is raised (see `ratewindow`). The
        snapshot's `limit` is the tightest of the limits.

        A waiting entry of an event that closed or sold out ends with status `closed` or
        `sold_out` instead. With `renew_session`, an admitted session of an event with
        `max_session_s` is extended to now + `session_ttl_s`, capped at admitted_at +
        `max_session_s`; it never shrinks. Returns ended entries too, and the caller decides the
        response. Raises EntryNotFound.
        """

    @abstractmethod
    async def leave(self, event_id: str, queue_id: str) -> EntrySnapshot:
        """End a waiting entry or an admitted session with status `left`, freeing its place.

        Leaving an ended entry changes nothing and returns it. Raises EntryNotFound.
        """

    @abstractmethod
    async def watch(self, event_id: str, queue_ids: list[str]) -> WatchResult:
        """Return the status and position of each of `queue_ids`, in order, and the event.

        Records the call as the heartbeat of every one of them that is waiting: an open
        stream is a sign of life. One call covers every entry a process streams for the
        event, so the cost per tick does not grow with the number of calls. Unknown ids come
        back with status None. Raises EventNotFound.
        """

    # Release

    @abstractmethod
    async def release(self, event_id: str, max_batch: int) -> ReleaseResult:
        """Run one release step for the event and return who was admitted.

        Credit grows by `release_rate` per second of store time since the last step (not while
        paused) and is capped at `release_burst(rate)`. The step admits
        min(floor(credit), capacity left, waiting count, max_batch) entries in queue order,
        subtracts them from the credit and starts each session for `session_ttl_s`. When the
        step admitted everyone waiting or filled the capacity, the credit is capped at 1.0.
        Raises EventNotFound.

        The release controller adds to this: nobody is admitted before `opens_at`, and the
        first step after it orders the pre-queue by the fairness seed (`gatekeep.fairness`)
        and reports "opened". After `closes_at`, or once the stock is zero, the step admits
        nobody, ends up to PURGE_BATCH waiting entries with status `closed` or `sold_out`, and
        reports "closed" or "sold_out" once. `random` mode draws each admission at random
        among the best bucket's entries; `passthrough` ignores the credit. Every step that
        admits someone appends one record to the event's admission log in the same atomic
        step.
        """

    @abstractmethod
    async def release_now(self, event_id: str, count: int) -> ReleaseResult:
        """Run a release step that admits `count` entries now, whatever the credit or pause.

        Never admits beyond the free capacity or before the event opened, nor after it closed
        or sold out. The credit is left as it was. Raises EventNotFound.
        """

    # Release controller

    @abstractmethod
    async def adjust_stock(
        self, event_id: str, *, decrement: int | None = None, remaining: int | None = None
    ) -> int:
        """Decrement the remaining stock (stopping at zero) or set it; return what remains.

        Give exactly one of `decrement` and `remaining`. Raises EventNotFound, or NoStock
        when the event has no `stock` field.
        """

    @abstractmethod
    async def release_state(self, event_id: str, *, with_publication: bool = False) -> ReleaseState:
        """Return the controller's state, creating the event's fairness seed if it has none.

        Raises EventNotFound.
        """

    @abstractmethod
    async def admission_log(self, event_id: str, start: int, count: int) -> list[str]:
        """Return up to `count` admission log records (JSON text) from index `start` (0-based)."""

    # Admission-token records. The token state rule is `gatekeep.tokens.records.token_state`.

    @abstractmethod
    async def record_token(
        self, event_id: str, queue_id: str, jti: str, expires_at_ms: int
    ) -> tuple[TokenRecord, bool] | None:
        """Record the token `jti` of an admitted entry until `expires_at_ms` (store clock).

        Returns the record and whether this call created it, or None when the entry is not
        admitted with this token id. A repeated call changes nothing, except that a later
        `expires_at_ms` extends the record. Raises EntryNotFound.
        """

    @abstractmethod
    async def lookup_token(
        self, event_id: str, jti: str, *, device_id: str | None = None, leeway_ms: int = 0
    ) -> TokenLookup:
        """Return the record of `jti` and the state it gives the token now.

        Records past their expiry count as unknown, and so does an unknown event. A token
        without a record is adopted when `device_id`'s live entry is admitted with token id
        `jti`: it is recorded until the session's end plus `leeway_ms`. That covers tokens
        issued by a path that does not call record_token.
        """

    @abstractmethod
    async def consume_token(
        self, event_id: str, jti: str, *, device_id: str | None = None, leeway_ms: int = 0
    ) -> TokenLookup:
        """Mark an active token consumed, atomically: of concurrent calls, at most one wins.

        Returns state `active` to the call that consumed it; any other state says why not.
        Adopts a token without a record as lookup_token does.
        """

    @abstractmethod
    async def revoke_tokens(
        self, event_id: str, *, jti: str | None = None, device_id: str | None = None
    ) -> RevokeResult:
        """Revoke one token (`jti`), a device's tokens (`device_id`) or, with neither, all.

        Ends each admitted session a revoked token stands for with status `left`, freeing its
        capacity in the same atomic step. By device or event, also ends admitted sessions
        whose token was never recorded. Raises EventNotFound.
        """

    # Webhooks

    @abstractmethod
    async def record_webhook_failure(self, failure: WebhookFailure, keep: int) -> WebhookFailure:
        """Store a failed webhook message for its event, keeping only the newest `keep` records.

        Sets `failed_at_ms` from the store clock and returns the stored record. Does not check
        that the event exists.
        """

    @abstractmethod
    async def webhook_failures(self, event_id: str) -> list[WebhookFailure]:
        """Return the event's recorded webhook failures, newest first; [] when there are none."""

    # Operations (admin API)

    @abstractmethod
    async def delete_event(self, event_id: str) -> tuple[int, int]:
        """Delete the event with its configuration and every key or record it has.

        Returns (waiting entries, admitted sessions) it dropped. Raises EventNotFound.
        """

    @abstractmethod
    async def reset_event(self, event_id: str) -> tuple[int, int]:
        """Drop every entry, session, device link, counter and wait sample of the event.

        The configuration and priority codes stay. Old queue ids then raise EntryNotFound.
        Returns (waiting entries, admitted sessions) it dropped. Raises EventNotFound.
        """

    @abstractmethod
    async def record_waits(self, event_id: str, queue_ids: list[str]) -> list[int]:
        """Record the wait (admitted_at_ms - joined_at_ms) of just-admitted entries.

        Keeps the newest `stats.WAIT_SAMPLES_MAX` samples. Returns the waits in ms; ids that
        are gone or were never admitted are skipped. Raises EventNotFound.
        """

    @abstractmethod
    async def event_stats(self, event_id: str) -> EventStats:
        """Return the event snapshot, waiting count per bucket and recent wait samples.

        Raises EventNotFound.
        """

    @abstractmethod
    async def inspect_entry(self, event_id: str, queue_id: str) -> EntrySnapshot:
        """Return one entry without recording a heartbeat. Raises EntryNotFound."""

    @abstractmethod
    async def put_priority_codes(self, event_id: str, codes: list[PriorityCode]) -> None:
        """Store new priority codes. Raises EventNotFound, or InvalidInput for a bad bucket."""

    @abstractmethod
    async def list_priority_codes(self, event_id: str) -> list[PriorityCode]:
        """Return the event's priority codes, oldest first. Raises EventNotFound."""

    @abstractmethod
    async def get_priority_code(self, event_id: str, code_id: str) -> PriorityCode | None:
        """Return one priority code, or None."""

    @abstractmethod
    async def disable_priority_code(self, event_id: str, code_id: str) -> PriorityCode:
        """Disable a priority code. Raises EventNotFound, or CodeNotFound."""

    def rate_limit_storage(self) -> Storage:
        """Return a `limits` async storage whose counters every process of this store shares."""
        raise NotImplementedError(f"{type(self).__name__} has no rate-limit storage")
