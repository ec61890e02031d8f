"""The sliding-window counter that both stores use for status and heartbeat limits."""

from __future__ import annotations

from gatekeep.ratewindow import (
    WindowCount,
    WindowLimit,
    WindowOutcome,
    count_window,
    tightest,
    window_headers,
)

LIMIT = WindowLimit(name="status.device", amount=3, window_ms=60_000, identifier="x")


def count_calls(stored: WindowCount | None, now_ms: int, calls: int) -> list[WindowOutcome]:
    outcomes = []
    for _ in range(calls):
        outcome, counted = count_window(LIMIT, stored, now_ms)
        outcomes.append(outcome)
        if outcome.allowed:
            stored = counted
    return outcomes


def test_allows_amount_then_rejects_into_next_window() -> None:
    outcomes = count_calls(None, now_ms=120_000 + 20_000, calls=4)

    assert [outcome.allowed for outcome in outcomes] == [True, True, True, False]
    assert [outcome.remaining for outcome in outcomes] == [2, 1, 0, 0]
    assert [outcome.reset_s for outcome in outcomes[:2]] == [40, 40]  # the window's end
    # The window ends 40 s later, and its 3 calls then weigh 2 after another third of a minute.
    assert outcomes[3].reset_s == 60
    # The call that used the last one gives the same wait, not the window's end.
    assert outcomes[2].reset_s == 60


def test_previous_window_counts_by_its_overlap() -> None:
    # Window 2 starts at 120 s; at 150 s half of window 1 still overlaps the sliding window.
    stored = WindowCount(window=1, current=4, previous=0)

    outcomes = count_calls(stored, now_ms=150_000, calls=2)

    assert outcomes[0].allowed and outcomes[0].remaining == 0  # 4 * 0.5 + 1 = 3
    assert not outcomes[1].allowed
    # Room for one more once the previous window's share drops from 2 to 1: 15 s later.
    assert outcomes[1].reset_s == 15


def test_windows_older_than_the_previous_one_are_forgotten() -> None:
    stored = WindowCount(window=0, current=3, previous=3)

    outcome, counted = count_window(LIMIT, stored, now_ms=180_000)

    assert outcome.allowed and outcome.remaining == 2
    assert counted == WindowCount(window=3, current=1, previous=0)


def test_rejected_call_leaves_counters_unchanged() -> None:
    stored = WindowCount(window=2, current=3, previous=0)

    outcome, counted = count_window(LIMIT, stored, now_ms=130_000)

    assert not outcome.allowed
    assert counted == stored


def test_tightest_prefers_a_refusal_then_fewest_left() -> None:
    roomy = WindowOutcome("status.ip", 100, 50, 10, True)
    tight = WindowOutcome("status.device", 3, 1, 30, True)
    rejected = WindowOutcome("status.ip", 100, 0, 5, False)

    assert tightest([roomy, tight]) == tight
    assert tightest([tight, rejected]) == rejected
    assert tightest([]) is None


def test_headers_carry_retry_after_only_when_rejected() -> None:
    allowed = window_headers(WindowOutcome("status.device", 3, 1, 30, True))
    rejected = window_headers(WindowOutcome("status.device", 3, 0, 12, False))

    assert allowed == {"RateLimit-Limit": "3", "RateLimit-Remaining": "1", "RateLimit-Reset": "30"}
    assert rejected["Retry-After"] == "12"
    assert rejected["RateLimit-Remaining"] == "0"


def test_retry_after_is_enough_to_be_allowed() -> None:
    # Reject at 140 s, then call again after the advertised wait: the call is allowed.
    stored = WindowCount(window=2, current=3, previous=2)
    rejected, _ = count_window(LIMIT, stored, now_ms=140_000)

    retried, _ = count_window(LIMIT, stored, now_ms=140_000 + rejected.reset_s * 1000)
    too_early, _ = count_window(LIMIT, stored, now_ms=140_000 + rejected.reset_s * 1000 - 2000)

    assert not rejected.allowed
    assert retried.allowed
    assert not too_early.allowed


def test_last_allowed_call_reset_is_next_allowed() -> None:
    limit = WindowLimit(name="status.device", amount=5, window_ms=60_000, identifier="x")
    # 4 calls in the previous window: at 130 s they weigh 4 * 50/60, about 3.3.
    stored = WindowCount(window=2, current=0, previous=4)
    last, counted = count_window(limit, stored, now_ms=130_000)

    next_at_reset, _ = count_window(limit, counted, now_ms=130_000 + last.reset_s * 1000)
    next_too_early, _ = count_window(limit, counted, now_ms=130_000 + last.reset_s * 1000 - 2000)

    assert last.allowed and last.remaining == 0
    # Room for a sixth call once the previous share drops from 3.3 to 3: 5 s later, not at
    # the window's end 50 s later.
    assert last.reset_s == 5
    assert next_at_reset.allowed
    assert not next_too_early.allowed
