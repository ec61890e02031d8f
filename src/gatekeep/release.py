"""The release loop: every tick, one atomic release step per event.

Each service process runs this loop. The release step itself is atomic in the store and keeps
its credit there, on the store's clock, so any number of processes may run it at once: the
event-wide rate and capacity hold, and nobody is admitted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from gatekeep import metrics
from gatekeep.errors import EventNotFound, StoreUnavailable
from gatekeep.model import EventConfig, ReleaseResult
from gatekeep.store.base import Store
from gatekeep.webhooks import WebhookDispatcher

logger = logging.getLogger(__name__)

EVENT_LIST_REFRESH_S = 1.0
GAUGE_REFRESH_S = 1.0
OUTAGE_BACKOFF_MAX_S = 2.0
STOP_TIMEOUT_S = 5.0


class ReleaseLoop:
    """Background task that admits waiting users for every event in the store."""

    def __init__(
        self,
        store: Store,
        tick_ms: int,
        max_batch: int,
        webhooks: WebhookDispatcher | None = None,
        configured_events: tuple[EventConfig, ...] = (),
    ) -> None:
        self.store = store
        self.configured_events = configured_events
        self.webhooks = webhooks
        self.tick_s = tick_ms / 1000
        self.max_batch = max_batch
        self._task: asyncio.Task[None] | None = None
        self._event_ids: list[str] = []
        self._event_ids_read_at = 0.0
        self._gauges_set_at = 0.0
        self._outage_errors = 0
        self._stopping = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gatekeep-release-loop")
        logger.info(
            "release.start tick_ms=%s max_batch=%s", round(self.tick_s * 1000), self.max_batch
        )

    def refresh_events(self) -> None:
        """Read the event list again on the next tick, so a new event starts releasing at once."""
        self._event_ids_read_at = 0.0

    async def stop(self) -> None:
        """Stop after the step in progress, waiting at most STOP_TIMEOUT_S for it."""
        if self._task is None:
            return
        self._stopping.set()
        self._task.cancel()
        done, _ = await asyncio.wait({self._task}, timeout=STOP_TIMEOUT_S)
        if not done:
            logger.warning("release.stop_timed_out timeout_s=%s", STOP_TIMEOUT_S)
        elif not self._task.cancelled() and self._task.exception() is not None:
            logger.error("release.stopped_with_error error=%s", self._task.exception())
        self._task = None
        logger.info("release.stop")

    async def _run(self) -> None:
        # The loop ends on the stop flag, not only on cancellation: a store client may turn a
        # cancellation that races its own timeout into a timeout error, which is caught below.
        delay_s = self.tick_s
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                await self.tick()
            except StoreUnavailable as error:
                delay_s = self._on_outage(error, delay_s)
            except Exception:
                # A bug in one tick must not stop admissions for good; it is logged with its
                # stack and the loop goes on.
                logger.exception("release.tick_failed")
                delay_s = self.tick_s
            else:
                if self._outage_errors:
                    logger.info("release.store_recovered failed_ticks=%s", self._outage_errors)
                    self._outage_errors = 0
                delay_s = self.tick_s
            pause_s = max(0.0, delay_s - (time.monotonic() - started))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=pause_s)

    def _on_outage(self, error: StoreUnavailable, delay_s: float) -> float:
        """Log the first failure of an outage and every 50th, then back off up to 2 s."""
        self._outage_errors += 1
        if self._outage_errors == 1 or self._outage_errors % 50 == 0:
            logger.warning(
                "release.store_unavailable failed_ticks=%s error=%s",
                self._outage_errors,
                error.__cause__ or error,
            )
        return min(OUTAGE_BACKOFF_MAX_S, delay_s * 2)

    async def tick(self) -> int:
        """Run one release step for every event; return how many users were admitted."""
        now = time.monotonic()
        if now - self._event_ids_read_at >= EVENT_LIST_REFRESH_S:
            self._event_ids = await self.store.list_event_ids()
            self._event_ids_read_at = now
            await self._restore_configured_events()
        refresh_gauges = now - self._gauges_set_at >= GAUGE_REFRESH_S
        if refresh_gauges:
            self._gauges_set_at = now

        admitted_count = 0
        for event_id in self._event_ids:
            try:
                admitted_count += await self._release_event(event_id, refresh_gauges)
            except EventNotFound:
                self._event_ids_read_at = 0.0
        return admitted_count

    async def _restore_configured_events(self) -> None:
        """Create events of the events file that vanished from the store, e.g. an emptied Redis."""
        for config in self.configured_events:
            if config.event_id in self._event_ids:
                continue
            if await self.store.create_event(config):
                logger.warning(
                    "event.recreated event_id=%s reason=missing from the store; created again "
                    "from the events file",
                    config.event_id,
                )
            self._event_ids.append(config.event_id)

    async def _release_event(self, event_id: str, refresh_gauges: bool) -> int:
        with metrics.store_timer("release"):
            result = await self.store.release(event_id, self.max_batch)

        admitted = len(result.admitted_queue_ids)
        if admitted:
            metrics.ADMISSIONS.labels(event_id).inc(admitted)
            logger.debug("release.admitted event_id=%s count=%s", event_id, admitted)
            await self._record_waits(event_id, result.admitted_queue_ids)
        self._emit_webhooks(event_id, result)
        expired = result.expired_waiting + result.expired_sessions
        if expired:
            metrics.EXPIRATIONS.labels(event_id, "waiting").inc(result.expired_waiting)
            metrics.EXPIRATIONS.labels(event_id, "session").inc(result.expired_sessions)

        if refresh_gauges:
            stats = await self.store.event_stats(event_id)
            snapshot = stats.snapshot
            for bucket, waiting in stats.waiting_by_bucket.items():
                metrics.WAITING_BY_BUCKET.labels(event_id, bucket).set(waiting)
            metrics.RELEASE_RATE.labels(event_id).set(snapshot.config.release_rate)
            metrics.WAITING.labels(event_id).set(snapshot.waiting_count)
            metrics.ADMITTED_ACTIVE.labels(event_id).set(snapshot.admitted_active)
            metrics.OBSERVED_RATE.labels(event_id).set(snapshot.observed_rate_per_s or 0.0)
        return admitted

    async def _record_waits(self, event_id: str, queue_ids: list[str]) -> None:
        """Store the waits of a step's admissions for the stats and observe the histogram."""
        with metrics.store_timer("record_waits"):
            waits_ms = await self.store.record_waits(event_id, queue_ids)
        for wait_ms in waits_ms:
            metrics.WAIT_TIME.labels(event_id).observe(wait_ms / 1000)

    def _emit_webhooks(self, event_id: str, result: ReleaseResult) -> None:
        """Queue the step's webhooks; emit only appends to a queue, so the loop never waits."""
        if self.webhooks is not None:
            self.webhooks.emit_release(event_id, result)
