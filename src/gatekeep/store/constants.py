"""Tuning values shared by every store, each with the reason for its size."""

from __future__ import annotations

import math

# Ended entries stay readable this long so a client that polls late learns `left` or `expired`
# (410) instead of a bare 404.
ENTRY_RETENTION_S = 3600

# A status or heartbeat call that creates no key refreshes the event keys' TTLs only once they
# have run down by this much, so a busy event pays for the refresh about once a second instead
# of on every poll. It is far below ENTRY_RETENTION_S, the margin every TTL includes.
TTL_REFRESH_SLACK_S = 1.0

# Expired entries purged per store call, which bounds the work of one atomic step. The release
# loop calls every event several times a second, so a larger backlog drains within a few ticks.
PURGE_BATCH = 1000

# Sequence numbers inside a bucket stay below this, so `bucket_rank * SEQ_SPAN + seq` is an
# exact integer in a float64 sorted-set score for up to 16 buckets (16e12 < 2**53).
SEQ_SPAN = 1_000_000_000_000

# Release credit never exceeds this many seconds of the configured rate (and never less than
# one user), so an idle or capacity-blocked event releases at most one second's worth at once.
RELEASE_BURST_S = 1.0

# Time constant of the observed release rate: an exponentially weighted average of admissions
# per second over the time when someone was waiting and the event was not paused.
OBSERVED_RATE_TAU_S = 30.0

# The observed rate is reported only after this much waiting time has been measured.
OBSERVED_RATE_MIN_WINDOW_S = 2.0


def release_burst(release_rate: float) -> float:
    """Return the cap on accumulated release credit, in users."""
    return max(1.0, release_rate * RELEASE_BURST_S)


def retry_after_for_full_queue(release_rate: float) -> int:
    """Return seconds a rejected joiner should wait: about one release interval, 1 to 60 s."""
    return max(1, min(60, math.ceil(1.0 / release_rate)))


# A Redis list of failed webhook messages expires this long after its newest record, so an
# event whose failures stopped does not keep them forever.
WEBHOOK_FAILURE_RETENTION_S = 7 * 86_400


# The admission log, the fairness publication and the controller state of an event are kept
# this long after their last write (Redis key TTL). They are evidence for disputes and
# chargebacks after a sale, which commonly surface within weeks, so they outlive the queue
# keys by far. Export the log before this runs out to keep it longer.
AUDIT_RETENTION_S = 30 * 86_400
