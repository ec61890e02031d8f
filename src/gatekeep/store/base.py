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

from gatekeep.model import (
    EntrySnapshot,
    EventConfig,
    EventSnapshot,
    JoinRequest,
    JoinResult,
    ReleaseResult,
)


class Store(ABC):
    """Async interface to the queue state of every event."""

    name: str = "store"

    @abstractmethod
    async def ping(self) -> None:
        """Check that the store answers; raise StoreUnavailable when it does not."""

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
    async def touch(self, event_id: str, queue_id: str) -> EntrySnapshot:
        """Return the entry and, when it is waiting, record the call as its heartbeat.

        Returns ended entries too; the caller decides how to answer. Raises EntryNotFound.
        """

    @abstractmethod
    async def leave(self, event_id: str, queue_id: str) -> EntrySnapshot:
        """End a waiting entry or an admitted session with status `left`, freeing its place.

        Leaving an ended entry changes nothing and returns it. Raises EntryNotFound.
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
        """
