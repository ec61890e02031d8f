"""The waiting-room model: events, queue entries and the snapshots that the store returns.

Every time in this module is milliseconds since the Unix epoch on the store's clock
(`*_ms`), or a duration in seconds (`*_s`).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

from gatekeep.errors import InvalidInput

ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")
ID_RULE = "use 1 to 128 characters from A-Z, a-z, 0-9 and . _ : -"

MAX_BUCKETS = 16
DEFAULT_BUCKET = "default"


class EntryStatus(StrEnum):
    WAITING = "waiting"
    ADMITTED = "admitted"
    EXPIRED = "expired"
    LEFT = "left"


def check_id(field_name: str, value: object) -> str:
    """Return `value` when it is a valid event, device or user id; raise InvalidInput otherwise."""
    if not isinstance(value, str):
        raise InvalidInput(field_name, f"expected a string, got {type(value).__name__}; {ID_RULE}")
    if not ID_PATTERN.fullmatch(value):
        raise InvalidInput(field_name, f"invalid id {value[:40]!r}; {ID_RULE}")
    return value


@dataclass(frozen=True, slots=True)
class EventConfig:
    """An event (waiting room) as operators define it in the admin API or the TOML file."""

    event_id: str
    enabled: bool = True
    max_queue_size: int = 100_000
    release_rate: float = 10.0  # users admitted per second; fractions accumulate
    max_capacity: int = 1_000  # admitted sessions active at once
    session_ttl_s: float = 600.0
    heartbeat_timeout_s: float = 60.0
    buckets: tuple[str, ...] = (DEFAULT_BUCKET,)  # highest priority first
    paused: bool = False

    @property
    def default_bucket(self) -> str:
        """Bucket for joins without a priority grant: the last, lowest-priority one."""
        return self.buckets[-1]

    def bucket_rank(self, bucket: str) -> int:
        """Position of `bucket` in priority order, 0 = released first."""
        return self.buckets.index(bucket)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["buckets"] = list(self.buckets)
        return data

    def with_changes(self, **changes: Any) -> EventConfig:
        return replace(self, **changes)

    @classmethod
    def from_dict(cls, data: object, *, event_id: str | None = None) -> EventConfig:
        """Validate `data` (JSON or TOML) into an EventConfig, naming the first bad field.

        `event_id`, when given, comes from the URL: the body may omit it or must repeat it.
        """
        if not isinstance(data, dict):
            raise InvalidInput("body", "expected a JSON object with the event's fields")

        unknown = sorted(set(data) - EVENT_FIELDS)
        if unknown:
            allowed = ", ".join(sorted(EVENT_FIELDS))
            raise InvalidInput(unknown[0], f"unknown field; allowed fields are {allowed}")

        body_event_id = data.get("event_id", event_id)
        if event_id is not None and body_event_id != event_id:
            raise InvalidInput(
                "event_id", f"body says {body_event_id!r} but the URL says {event_id!r}"
            )
        if body_event_id is None:
            raise InvalidInput("event_id", "missing; give the event's id")

        defaults = cls(event_id="_")
        values: dict[str, Any] = {"event_id": check_id("event_id", body_event_id)}
        values["enabled"] = _bool(data, "enabled", defaults.enabled)
        values["paused"] = _bool(data, "paused", defaults.paused)
        values["max_queue_size"] = _int(
            data, "max_queue_size", defaults.max_queue_size, 1, 10_000_000
        )
        values["max_capacity"] = _int(data, "max_capacity", defaults.max_capacity, 1, 10_000_000)
        values["release_rate"] = _number(
            data, "release_rate", defaults.release_rate, 0.001, 100_000
        )
        values["session_ttl_s"] = _number(data, "session_ttl_s", defaults.session_ttl_s, 1, 86_400)
        values["heartbeat_timeout_s"] = _number(
            data, "heartbeat_timeout_s", defaults.heartbeat_timeout_s, 1, 86_400
        )
        values["buckets"] = _buckets(data.get("buckets", list(defaults.buckets)))
        return cls(**values)


EVENT_FIELDS = frozenset(f.name for f in EventConfig.__dataclass_fields__.values())


def _bool(data: dict[str, Any], name: str, default: bool) -> bool:
    value = data.get(name, default)
    if not isinstance(value, bool):
        raise InvalidInput(name, f"expected true or false, got {value!r}")
    return value


def _int(data: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(name, f"expected a whole number from {low} to {high}, got {value!r}")
    if not low <= value <= high:
        raise InvalidInput(
            name, f"{value} is out of range; use a whole number from {low} to {high}"
        )
    return value


def _number(data: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(name, f"expected a number from {low} to {high}, got {value!r}")
    if not low <= value <= high:
        raise InvalidInput(name, f"{value} is out of range; use a number from {low} to {high}")
    return float(value)


def _buckets(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise InvalidInput(
            "buckets", "expected a non-empty list of bucket names, highest priority first"
        )
    if len(value) > MAX_BUCKETS:
        raise InvalidInput("buckets", f"{len(value)} buckets given; use at most {MAX_BUCKETS}")
    names = tuple(check_id("buckets", name) for name in value)
    if len(set(names)) != len(names):
        raise InvalidInput("buckets", "bucket names must be unique")
    return names


@dataclass(frozen=True, slots=True)
class Entry:
    """A queue entry. `queue_id` is a bearer secret: log only `short_id`."""

    queue_id: str
    event_id: str
    device_id: str
    user_id: str | None
    bucket: str
    status: EntryStatus
    joined_at_ms: int
    last_heartbeat_ms: int
    token_id: str  # becomes the admission token's `jti`
    nonce: str
    admitted_at_ms: int | None = None
    session_expires_at_ms: int | None = None
    ended_at_ms: int | None = None

    @property
    def short_id(self) -> str:
        return short_queue_id(self.queue_id)


def short_queue_id(queue_id: str) -> str:
    """Return the first 6 characters of a queue id, the most that logs may show."""
    return queue_id[:6] + "…"


@dataclass(frozen=True, slots=True)
class EventSnapshot:
    """An event's configuration and live counters, read in one atomic store call."""

    config: EventConfig
    now_ms: int
    waiting_count: int
    admitted_active: int
    release_credit: float  # users accumulated toward the next admission, in [0, burst]
    observed_rate_per_s: float | None  # admissions per second while people waited; None = no data
    admitted_total: int = 0
    expired_total: int = 0
    left_total: int = 0

    @property
    def capacity_left(self) -> int:
        return max(0, self.config.max_capacity - self.admitted_active)


@dataclass(frozen=True, slots=True)
class EntrySnapshot:
    """An entry with its exact position (1 = next; None unless waiting) and its event's snapshot."""

    entry: Entry
    position: int | None
    event: EventSnapshot


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """Everything a join stores; ids and secrets are generated by the service, not the store."""

    queue_id: str
    event_id: str
    device_id: str
    user_id: str | None
    bucket: str
    token_id: str
    nonce: str


@dataclass(frozen=True, slots=True)
class JoinResult:
    snapshot: EntrySnapshot
    created: bool  # False when the device already had a live entry, which is returned instead


@dataclass(frozen=True, slots=True)
class ReleaseResult:
    """What one release step did for one event."""

    admitted_queue_ids: list[str] = field(default_factory=list)
    expired_waiting: int = 0
    expired_sessions: int = 0
