"""Sliding-window counters that the store counts inside a status or heartbeat call.

A status poll or heartbeat is the busiest call of the service, so its rate limits are counted
by the same atomic store call that reads the entry. That is one round trip in all, where the
`limits` library needs two per limit. The algorithm is the sliding-window counter that `limits` also
uses: the count of the current fixed window plus the previous window's count, weighted by the
share of the previous window that still overlaps the sliding one.

`count_window` is the reference. The embedded store calls it, and the Redis store's
`touch.lua` repeats the same arithmetic in the same order, so both stores give the same result.
Rejected calls count against no limit, and a call is counted against all its limits or none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WindowLimit:
    """One limit of one call: at most `amount` calls per `window_ms` for `identifier`."""

    name: str  # KIND.DIMENSION, such as status.device
    amount: int
    window_ms: int
    identifier: str  # a hash of the event and the counted id; never a queue id itself


@dataclass(frozen=True, slots=True)
class WindowCount:
    """The stored counters of one limit: a window's index, its count and the count before it."""

    window: int
    current: int
    previous: int


@dataclass(frozen=True, slots=True)
class WindowOutcome:
    """The outcome of counting one call against one limit: allowed or not, the calls left, and
    the seconds until a retry may succeed or the window resets."""

    name: str
    amount: int
    remaining: int
    reset_s: int
    allowed: bool


def count_window(
    limit: WindowLimit, stored: WindowCount | None, now_ms: int
) -> tuple[WindowOutcome, WindowCount]:
    """Weigh one call against `limit`; return the outcome and the counters if it is counted.

    For a rejected call, `reset_s` is the seconds until the weighted count leaves room for one
    more call, if no call is counted meanwhile. For an allowed call that leaves calls, it is
    the seconds until the current window ends. For an allowed call that leaves none, it is the
    seconds until the next call would be allowed, which is the wait a rejection right after
    it would give.
    """
    window = now_ms // limit.window_ms
    left_ms = limit.window_ms - (now_ms - window * limit.window_ms)
    current = 0
    previous = 0
    if stored is not None and stored.window == window:
        current, previous = stored.current, stored.previous
    elif stored is not None and stored.window == window - 1:
        previous = stored.current

    weighted = previous * left_ms / limit.window_ms + current
    if weighted + 1 <= limit.amount:
        remaining = math.floor(limit.amount - weighted - 1)
        reset_ms: float = left_ms
        if remaining == 0:
            reset_ms = _wait_ms(limit, current + 1, previous, left_ms)
        outcome = WindowOutcome(limit.name, limit.amount, remaining, _ceil_s(reset_ms), True)
        return outcome, WindowCount(window, current + 1, previous)

    wait_ms = _wait_ms(limit, current, previous, left_ms)
    outcome = WindowOutcome(limit.name, limit.amount, 0, _ceil_s(wait_ms), False)
    return outcome, WindowCount(window, current, previous)


def _wait_ms(limit: WindowLimit, current: int, previous: int, left_ms: int) -> float:
    """Return the ms until counts of `current` and `previous` leave room for one more call.

    Within this window only the previous window's share shrinks. When the current count alone
    leaves no room, room comes in the next window, as that count's share shrinks.
    """
    room = limit.amount - 1 - current
    if room >= 0:
        return left_ms - room * limit.window_ms / previous
    if current > 0:
        return left_ms + limit.window_ms * (1 - (limit.amount - 1) / current)
    return left_ms + limit.window_ms  # an amount below 1 never leaves room


def tightest(outcomes: list[WindowOutcome]) -> WindowOutcome | None:
    """Return the first rejected outcome, else the one with the fewest calls left."""
    rejected = [outcome for outcome in outcomes if not outcome.allowed]
    if rejected:
        return rejected[0]
    return min(outcomes, key=lambda outcome: outcome.remaining, default=None)


def window_headers(outcome: WindowOutcome) -> dict[str, str]:
    """Return the `RateLimit-*` headers of an outcome, with `Retry-After` when it was rejected."""
    headers = {
        "RateLimit-Limit": str(outcome.amount),
        "RateLimit-Remaining": str(max(0, outcome.remaining)),
        "RateLimit-Reset": str(outcome.reset_s),
    }
    if not outcome.allowed:
        headers["Retry-After"] = headers["RateLimit-Reset"]
    return headers


def _ceil_s(duration_ms: float) -> int:
    return max(1, math.ceil(duration_ms / 1000))
