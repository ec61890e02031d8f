"""Exceptions of the client SDK.

QueueClientError
├── QueueEnded             the wait ended without admission; see `status`
│   ├── EntryExpired       the place expired (or was purged): join again for a new one
│   ├── EntryLeft          this place left the queue
│   └── EventClosed        the event is closed or sold out
├── QueueRequestRejected   the service rejected a request (bad input, unknown event, ...)
├── ServiceUnavailable     the service stayed unreachable through every allowed retry
└── WaitTimedOut           wait() reached its timeout while still waiting
"""

from __future__ import annotations

from gatekeep.client._protocol import QueueStatus, State


class QueueClientError(Exception):
    """Base class of every SDK error."""


class QueueEnded(QueueClientError):
    """Raised by wait() when the entry reached a final state other than admitted."""

    def __init__(self, status: QueueStatus) -> None:
        detail = f": {status.message}" if status.message else ""
        super().__init__(f"the wait ended as {status.state.value} ({status.reason}){detail}")
        self.status = status


class EntryExpired(QueueEnded):
    """Raised when the place expired, for example after heartbeats stopped for too long."""


class EntryLeft(QueueEnded):
    """Raised when the place left the queue."""


class EventClosed(QueueEnded):
    """Raised when the event closed or sold out before admission."""


class QueueRequestRejected(QueueClientError):
    """Raised when the service rejects a request with an error that retrying cannot fix."""

    def __init__(self, status: QueueStatus) -> None:
        super().__init__(f"the service rejected the request ({status.reason}): {status.message}")
        self.status = status


class ServiceUnavailable(QueueClientError):
    """Raised when the service stayed unreachable or overloaded through every retry."""

    def __init__(self, attempts: int, reason: str, message: str | None) -> None:
        detail = f": {message}" if message else ""
        super().__init__(f"the service was unavailable for {attempts} attempts ({reason}){detail}")
        self.attempts = attempts
        self.reason = reason


class WaitTimedOut(QueueClientError):
    """Raised when wait() reaches its timeout; the place is kept and can be waited on again."""

    def __init__(self, status: QueueStatus, timeout_s: float) -> None:
        super().__init__(f"still {status.state.value} after {timeout_s} s")
        self.status = status


def raise_for_final(status: QueueStatus) -> None:
    """Raise the exception of a final state other than admitted; do nothing otherwise."""
    if status.state == State.EXPIRED:
        raise EntryExpired(status)
    if status.state == State.LEFT:
        raise EntryLeft(status)
    if status.state == State.CLOSED:
        raise EventClosed(status)
    if status.state == State.ERROR:
        raise QueueRequestRejected(status)
