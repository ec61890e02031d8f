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
from gatekeep.store.base import Store

logger = logging.getLogger(__name__)

EVENT_LIST_REFRESH_S = 1.0
GAUGE_REFRESH_S = 1.0
OUTAGE_BACKOFF_MAX_S = 2.0


class ReleaseLoop:
    """Background task that admits waiting users for every event in the store."""

    def __init__(self, store: Store, tick_ms: int, max_batch: int) -> None:
        self.store = store
        self.tick_s = tick_ms / 1000
        self.max_batch = max_batch
        self._task: asyncio.Task[None] | None = None
        self._event_ids: list[str] = []
        self._event_ids_read_at = 0.0
        self._gauges_set_at = 0.0
        self._outage_errors = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gatekeep-release-loop")
        logger.info(
            "release.start tick_ms=%s max_batch=%s", round(self.tick_s * 1000), self.max_batch
        )

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        logger.info("release.stop")

    async def _run(self) -> None:
        delay_s = self.tick_s
        while True:
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
            await asyncio.sleep(max(0.0, delay_s - (time.monotonic() - started)))

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

    async def _release_event(self, event_id: str, refresh_gauges: bool) -> int:
        with metrics.store_timer("release"):
            result = await self.store.release(event_id, self.max_batch)

        admitted = len(result.admitted_queue_ids)
        if admitted:
            metrics.ADMISSIONS.labels(event_id).inc(admitted)
            logger.debug("release.admitted event_id=%s count=%s", event_id, admitted)
        expired = result.expired_waiting + result.expired_sessions
        if expired:
            metrics.EXPIRATIONS.labels(event_id, "waiting").inc(result.expired_waiting)
            metrics.EXPIRATIONS.labels(event_id, "session").inc(result.expired_sessions)

        if refresh_gauges:
            snapshot = await self.store.event_snapshot(event_id)
            metrics.WAITING.labels(event_id).set(snapshot.waiting_count)
            metrics.ADMITTED_ACTIVE.labels(event_id).set(snapshot.admitted_active)
            metrics.OBSERVED_RATE.labels(event_id).set(snapshot.observed_rate_per_s or 0.0)
        return admitted
