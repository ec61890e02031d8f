"""Errors that Gatekeep raises, each mapped to one HTTP status and one stable `code`.

    GatekeepError
    ├── InvalidInput      400 invalid_input: a request field is missing, malformed or out of range
    │   └── BodyTooLarge  400 body_too_large: the request body is over the size limit
    ├── Unauthorized      401 unauthorized: no admin key was sent
    ├── Forbidden         403 forbidden: the admin key is not one of the configured keys
    ├── EventNotFound     404 event_not_found: no event has this id
    ├── EntryNotFound     404 queue_entry_not_found: no entry has this id (or it was purged)
    ├── EventDisabled     409 event_disabled: the event exists but does not take joins
    ├── EventClosed       409 event_closed: the event's `closes_at` has passed
    ├── SoldOut           409 sold_out: the event's stock reached zero
    ├── JoinsRejected     409 joins_rejected: the event is in `reject` mode (maintenance)
    ├── NoStock           409 no_stock: a stock change for an event without `stock`
    ├── EntryEnded        410 queue_entry_expired / queue_entry_left: the entry has ended
    ├── TokenRejected     409 token_<reason>: an admission token cannot be consumed
    ├── PriorityCodeNotFound 404 priority_code_not_found: no priority code has this id
    ├── QueueFull         429 queue_full: the waiting list is at `max_queue_size`
    ├── RateLimited       429 rate_limited: a rate limit is exhausted; see `Retry-After`
    └── StoreUnavailable  503 store_unavailable: the store did not answer; retry after a pause

Clients switch on `code`; the message is for people and may change.
"""

from __future__ import annotations


class GatekeepError(Exception):
    """Base class: an error with an HTTP status, a stable code and optional response headers."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class InvalidInput(GatekeepError):
    """Raised when a request field is missing, malformed or out of range; `field` names it."""

    status_code = 400
    code = "invalid_input"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = message  # the message without the field name in front


class BodyTooLarge(InvalidInput):
    """Raised when a request body is over the configured limit; a 400 like other bad input."""

    code = "body_too_large"


class Unauthorized(GatekeepError):
    """Raised when an admin call carries no bearer key."""

    status_code = 401
    code = "unauthorized"


class Forbidden(GatekeepError):
    """Raised when an admin call carries a bearer key that matches no configured key."""

    status_code = 403
    code = "forbidden"


class EventNotFound(GatekeepError):
    """Raised when no event has the requested id."""

    status_code = 404
    code = "event_not_found"

    def __init__(self, event_id: str) -> None:
        super().__init__(f"no event with event_id {event_id!r}; check the id or create the event")
        self.event_id = event_id


class EntryNotFound(GatekeepError):
    """Raised when no queue entry has the requested id, including entries purged after retention."""

    status_code = 404
    code = "queue_entry_not_found"

    def __init__(self) -> None:
        super().__init__("no queue entry with this queue_id; join the event again")


class EventDisabled(GatekeepError):
    """Raised when a join reaches an event whose `enabled` field is false."""

    status_code = 409
    code = "event_disabled"

    def __init__(self, event_id: str) -> None:
        super().__init__(f"event {event_id!r} is closed and does not accept joins")
        self.event_id = event_id


class EventClosed(GatekeepError):
    """Raised when a join reaches an event whose `closes_at` has passed."""

    status_code = 409
    code = "event_closed"

    def __init__(self, event_id: str) -> None:
        super().__init__(f"event {event_id!r} has closed and does not accept joins")
        self.event_id = event_id


class SoldOut(GatekeepError):
    """Raised when a join reaches an event whose stock is zero."""

    status_code = 409
    code = "sold_out"

    def __init__(self, event_id: str) -> None:
        super().__init__(f"event {event_id!r} is sold out and does not accept joins")
        self.event_id = event_id


class JoinsRejected(GatekeepError):
    """Raised when a join reaches an event in `reject` mode, which operators use for maintenance."""

    status_code = 409
    code = "joins_rejected"

    def __init__(self, event_id: str) -> None:
        super().__init__(
            f"event {event_id!r} is not accepting new joins right now (maintenance); "
            "try again later"
        )
        self.event_id = event_id


class NoStock(GatekeepError):
    """Raised when a stock change names an event that has no `stock` field."""

    status_code = 409
    code = "no_stock"

    def __init__(self, event_id: str) -> None:
        super().__init__(
            f"event {event_id!r} has no stock; set the event's `stock` field before changing it"
        )
        self.event_id = event_id


class EntryEnded(GatekeepError):
    """Raised when a call needs a live entry but the entry expired or left."""

    status_code = 410

    def __init__(self, status: str) -> None:
        if status == "left":
            message = "this queue entry left the queue; join the event again for a new place"
        else:
            message = "this queue entry expired; join the event again for a new place"
        super().__init__(message)
        self.code = f"queue_entry_{status}"
        self.status = status


class TokenRejected(GatekeepError):
    """Raised when a token cannot be consumed; `reason` is a verifier or token-state reason.

    The code is `token_` plus the reason, such as `token_consumed` or `token_bad_signature`.
    """

    status_code = 409

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = f"token_{reason}"
        self.reason = reason


class QueueFull(GatekeepError):
    """Raised when a join finds `max_queue_size` entries already waiting."""

    status_code = 429
    code = "queue_full"

    def __init__(self, event_id: str, retry_after_s: int) -> None:
        super().__init__(
            f"the queue of event {event_id!r} is full; try again in {retry_after_s} s",
            headers={"Retry-After": str(retry_after_s)},
        )


class StoreUnavailable(GatekeepError):
    """Raised when the store cannot be reached or timed out; the original error is the cause."""

    status_code = 503
    code = "store_unavailable"

    def __init__(self, operation: str, retry_after_s: int = 2) -> None:
        super().__init__(
            f"the queue store is unavailable; retry in {retry_after_s} s",
            headers={"Retry-After": str(retry_after_s)},
        )
        self.operation = operation


class PriorityCodeNotFound(GatekeepError):
    """Raised when an admin call names a priority code that the event does not have."""

    status_code = 404
    code = "priority_code_not_found"

    def __init__(self, code_id: str) -> None:
        super().__init__(f"no priority code with code_id {code_id!r}; list the event's codes")


class RateLimited(GatekeepError):
    """Raised when a caller is over one of its rate limits; `Retry-After` says when to retry."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, name: str, headers: dict[str, str]) -> None:
        self.limit_name = name
        super().__init__(
            f"too many requests ({name} limit); retry in {headers['Retry-After']} s",
            headers=headers,
        )
