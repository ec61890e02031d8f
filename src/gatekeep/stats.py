"""Per-event statistics for operators: counts by bucket, totals, and wait-time percentiles."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gatekeep.model import EventSnapshot

# Recent waits (join to admission) kept per event for the median and p90.
WAIT_SAMPLES_MAX = 1000


@dataclass(frozen=True, slots=True)
class EventStats:
    """An event snapshot with the waiting count of each bucket and recent wait samples."""

    snapshot: EventSnapshot
    waiting_by_bucket: dict[str, int]
    wait_samples_ms: list[int]  # newest first, at most WAIT_SAMPLES_MAX

    def to_dict(self) -> dict[str, Any]:
        snapshot = self.snapshot
        observed = snapshot.observed_rate_per_s
        return {
            "event_id": snapshot.config.event_id,
            "paused": snapshot.config.paused,
            "enabled": snapshot.config.enabled,
            "waiting": snapshot.waiting_count,
            "waiting_by_bucket": self.waiting_by_bucket,
            "admitted_active": snapshot.admitted_active,
            "max_capacity": snapshot.config.max_capacity,
            "released_total": snapshot.admitted_total,
            "expired_total": snapshot.expired_total,
            "left_total": snapshot.left_total,
            "release_rate": snapshot.config.release_rate,
            "observed_release_rate": None if observed is None else round(observed, 3),
            "wait_samples": len(self.wait_samples_ms),
            "wait_median_s": _percentile_s(self.wait_samples_ms, 0.5),
            "wait_p90_s": _percentile_s(self.wait_samples_ms, 0.9),
        }


def _percentile_s(samples_ms: list[int], fraction: float) -> float | None:
    """Return the nearest-rank percentile in seconds, or None without samples."""
    if not samples_ms:
        return None
    ordered = sorted(samples_ms)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return round(ordered[rank - 1] / 1000, 3)
