"""The client protocol without I/O: states, how each response maps to one, and retry delays.

The browser SDK (`static/gatekeep.js`) implements the same rules, and both run the shared test
vectors in `tests/vectors/client_protocol.json`. docs/client-protocol.md describes them.
"""

from __future__ import annotations

import math
import random as random_module
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any


class State(StrEnum):
    """Client state. Every state but IDLE and JOINING comes from a service response."""

    IDLE = "idle"
    JOINING = "joining"
    WAITING = "waiting"
    ADMITTED = "admitted"
    EXPIRED = "expired"
    LEFT = "left"
    CLOSED = "closed"
    ERROR = "error"


FINAL_STATES = frozenset({State.ADMITTED, State.EXPIRED, State.LEFT, State.CLOSED, State.ERROR})

# Entry statuses known to this SDK; any other status ends the wait in ERROR with its message.
ENTRY_STATES = {
    "waiting": State.WAITING,
    "admitted": State.ADMITTED,
    "expired": State.EXPIRED,
    "left": State.LEFT,
    "closed": State.CLOSED,
    "sold_out": State.CLOSED,
}

# Error codes whose meaning is known; any other code is read from its HTTP status.
ERROR_STATES = {
    "event_disabled": State.CLOSED,
    "event_closed": State.CLOSED,
    "sold_out": State.CLOSED,
    "event_sold_out": State.CLOSED,
    "queue_entry_expired": State.EXPIRED,
    "queue_entry_left": State.LEFT,
    "queue_entry_closed": State.CLOSED,
    "queue_entry_sold_out": State.CLOSED,
    "queue_entry_not_found": State.EXPIRED,
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """Meaning of one response: move to `state`, or retry (`retry` True, `state` None)."""

    retry: bool
    state: State | None
    reason: str
    message: str | None = None
    retry_after_s: float | None = None


def interpret(
    call: str, http_status: int, body: object, retry_after_s: float | None = None
) -> Outcome:
    """Map one response to an Outcome.

    `call` is "join", "status", "heartbeat", "leave" or "stream"; `http_status` is 0 for a
    network failure; `body` is the parsed JSON or None.
    """
    if 200 <= http_status < 300 and isinstance(body, Mapping):
        return _entry_outcome(body)

    error = body.get("error") if isinstance(body, Mapping) else None
    error = error if isinstance(error, Mapping) else {}
    code = error.get("code") if isinstance(error.get("code"), str) else None
    message = error.get("message") if isinstance(error.get("message"), str) else None
    if retry_after_s is None and isinstance(error.get("retry_after_s"), int | float):
        retry_after_s = float(error["retry_after_s"])

    if http_status in (0, 408, 429) or http_status >= 500:
        reason = code or ("network_error" if http_status == 0 else f"http_{http_status}")
        return Outcome(True, None, reason, message, retry_after_s)
    if code in ERROR_STATES:
        return Outcome(False, ERROR_STATES[code], code, message)
    if http_status == 410:
        return Outcome(False, State.EXPIRED, code or "gone", message)
    if http_status == 409:
        return Outcome(False, State.CLOSED, code or "conflict", message)
    return Outcome(False, State.ERROR, code or f"http_{http_status}", message)


def _entry_outcome(body: Mapping[str, Any]) -> Outcome:
    status = body.get("status")
    state = ENTRY_STATES.get(status) if isinstance(status, str) else None
    if state is None:
        message = body.get("message")
        return Outcome(
            False,
            State.ERROR,
            f"unknown_status:{status}",
            message if isinstance(message, str) else f"the service reported status {status!r}",
        )
    if state == State.ADMITTED and not isinstance(body.get("token"), str):
        return Outcome(
            False, State.ERROR, "missing_token", "the service reported admission without a token"
        )
    return Outcome(False, state, str(status))


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter; Retry-After, when sent, is added as a floor."""

    base_s: float = 0.5
    cap_s: float = 30.0

    def delay_s(
        self,
        attempt: int,
        retry_after_s: float | None = None,
        random: Callable[[], float] = random_module.random,
    ) -> float:
        """Return the pause before retry number `attempt` (0 = first retry), in seconds."""
        ceiling_s = min(self.cap_s, self.base_s * 2.0 ** max(0, attempt))
        jitter_s = math.floor(random() * ceiling_s * 1000) / 1000
        floor_s = retry_after_s if retry_after_s is not None and retry_after_s > 0 else 0.0
        return floor_s + jitter_s


def retry_after_seconds(header: str | None, now_s: float | None = None) -> float | None:
    """Parse a Retry-After header: delta seconds or an HTTP date. None when absent or invalid."""
    if header is None or not header.strip():
        return None
    text = header.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    now = time.time() if now_s is None else now_s
    return float(max(0, math.ceil(moment.timestamp() - now)))


@dataclass(frozen=True, slots=True)
class QueueStatus:
    """Client view after a response: its state and the entry fields behind it."""

    state: State
    event_id: str
    queue_id: str | None = None
    position: int | None = None
    eta_s: float | None = None
    poll_after_ms: int | None = None
    token: str | None = None
    session_expires_at_ms: int | None = None
    event_state: str | None = None
    reason: str | None = None
    message: str | None = None
    body: Mapping[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


def status_from(event_id: str, outcome: Outcome, body: object, queue_id: str | None) -> QueueStatus:
    """Build the QueueStatus for a non-retry outcome."""
    assert outcome.state is not None
    entry: Mapping[str, Any] = body if isinstance(body, Mapping) and "error" not in body else {}
    event = entry.get("event")
    return QueueStatus(
        state=outcome.state,
        event_id=event_id,
        queue_id=entry.get("queue_id", queue_id),
        position=entry.get("position"),
        eta_s=entry.get("eta_s"),
        poll_after_ms=entry.get("poll_after_ms"),
        token=entry.get("token"),
        session_expires_at_ms=entry.get("session_expires_at_ms"),
        event_state=event.get("state") if isinstance(event, Mapping) else None,
        reason=outcome.reason,
        message=outcome.message,
        body=entry,
    )
