"""The waiting-room model: events, queue entries and the snapshots that the store returns.

Every time in this module is milliseconds since the Unix epoch on the store's clock
(`*_ms`), or a duration in seconds (`*_s`).
"""

from __future__ import annotations

import math
import re
import secrets
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import orjson

from gatekeep.errors import InvalidInput
from gatekeep.ratewindow import WindowOutcome

ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")
ID_RULE = "use 1 to 128 characters from A-Z, a-z, 0-9 and . _ : -"

MAX_BUCKETS = 16
MAX_URL_LENGTH = 2048
DEFAULT_BUCKET = "default"

# Webhook kinds an event may send, in the order EventConfig.webhooks keeps them.
WEBHOOK_KINDS = ("admitted", "opened", "closed", "paused", "resumed", "sold_out")


class EntryStatus(StrEnum):
    WAITING = "waiting"
    ADMITTED = "admitted"
    EXPIRED = "expired"
    LEFT = "left"
    CLOSED = "closed"  # the event reached `closes_at` while the entry waited
    SOLD_OUT = "sold_out"  # the event's stock reached zero while the entry waited


class QueueMode(StrEnum):
    """Queueing mode: the rule by which the release step picks whom to admit; switchable live."""

    FIFO = "fifo"  # queue order: bucket, then arrival (the pre-queue in its revealed order)
    RANDOM = "random"  # each admission draws uniformly among the best bucket's waiting entries
    PASSTHROUGH = "passthrough"  # admit at once up to capacity, ignoring the release rate
    REJECT = "reject"  # joins are rejected; entries already waiting keep their place


def check_id(field_name: str, value: object) -> str:
    """Return `value` when it is a valid event, device or user id; raise InvalidInput otherwise."""
    if not isinstance(value, str):
        raise InvalidInput(field_name, f"expected a string, got {type(value).__name__}; {ID_RULE}")
    if len(value) > 128:
        raise InvalidInput(field_name, f"the id is {len(value)} characters long; {ID_RULE}")
    if not ID_PATTERN.fullmatch(value):
        raise InvalidInput(field_name, f"invalid id {value[:40]!r}; {ID_RULE}")
    return value


def shown(value: object) -> str:
    """Render a rejected value the way the client wrote it (JSON), cut to 60 characters."""
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
    # Absolute http(s) URL of the protected origin; the hosted page sends admitted users there.
    return_url: str | None = None
    # (kind, URL) pairs in WEBHOOK_KINDS order; to_dict and from_dict use a kind -> URL table.
    webhooks: tuple[tuple[str, str], ...] = ()
    # ("kind.dimension", "N/period") pairs, such as ("join.ip", "60/minute"), sorted; they
    # override the service-wide rate limits for this event. to_dict and from_dict use a table.
    rate_limits: tuple[tuple[str, str], ...] = ()
    # Opening and closing times, ms on the store clock; None = open from creation, never
    # closes. The API and TOML use ISO 8601 UTC strings named `opens_at` and `closes_at`.
    opens_at_ms: int | None = None
    closes_at_ms: int | None = None
    mode: QueueMode = QueueMode.FIFO
    stock: int | None = None  # remaining quantity when set; a new value resets the remainder
    # Maximum length of an admitted session that heartbeats renew; None = no renewal.
    max_session_s: float | None = None

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
        data["webhooks"] = dict(self.webhooks)
        data["rate_limits"] = dict(self.rate_limits)
        data["opens_at"] = format_utc_ms(data.pop("opens_at_ms"))
        data["closes_at"] = format_utc_ms(data.pop("closes_at_ms"))
        data["mode"] = str(self.mode)
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
        values["return_url"] = _return_url(data.get("return_url"))
        values["webhooks"] = _webhooks(data.get("webhooks", {}))
        values["rate_limits"] = _rate_limits(data.get("rate_limits", {}))
        values.update(_release_controls(data, values["session_ttl_s"]))
        return cls(**values)


# Fields of the API and TOML form: the schedule travels as ISO strings, not as ms.
EVENT_FIELDS = frozenset(
    {f.name for f in EventConfig.__dataclass_fields__.values()} - {"opens_at_ms", "closes_at_ms"}
) | {"opens_at", "closes_at"}

MAX_STOCK = 1_000_000_000
MAX_SESSION_S = 7 * 86_400


def format_utc_ms(value_ms: int | None) -> str | None:
    """Format epoch ms as ISO 8601 UTC with milliseconds, such as 2026-05-01T18:00:00.000Z."""
    if value_ms is None:
        return None
    moment = datetime.fromtimestamp(value_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value_ms % 1000:03d}Z"


def parse_utc_ms(name: str, value: object) -> int | None:
    """Parse an ISO 8601 time with a UTC offset (a string, or a TOML datetime) into epoch ms."""
    if value is None:
        return None
    moment: datetime
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and len(value) <= 40:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise InvalidInput(
                name, f"invalid time {value!r}; use ISO 8601 UTC such as 2026-05-01T18:00:00Z"
            ) from None
    else:
        raise InvalidInput(name, "expected an ISO 8601 UTC time such as 2026-05-01T18:00:00Z")
    if moment.tzinfo is None:
        raise InvalidInput(name, "the time has no UTC offset; add Z, as in 2026-05-01T18:00:00Z")
    return round(moment.timestamp() * 1000)


def _release_controls(data: dict[str, Any], session_ttl_s: float) -> dict[str, Any]:
    """Validate the schedule, mode, stock and session-renewal fields."""
    values: dict[str, Any] = {
        "opens_at_ms": parse_utc_ms("opens_at", data.get("opens_at")),
        "closes_at_ms": parse_utc_ms("closes_at", data.get("closes_at")),
    }
    opens_at_ms, closes_at_ms = values["opens_at_ms"], values["closes_at_ms"]
    if opens_at_ms is not None and closes_at_ms is not None and closes_at_ms <= opens_at_ms:
        raise InvalidInput("closes_at", "must be later than opens_at; move one of them")

    mode = data.get("mode", QueueMode.FIFO.value)
    if mode not in {m.value for m in QueueMode}:
        modes = ", ".join(m.value for m in QueueMode)
        raise InvalidInput("mode", f"unknown mode {str(mode)[:40]!r}; use one of {modes}")
    values["mode"] = QueueMode(mode)

    values["stock"] = None
    if data.get("stock") is not None:
        values["stock"] = _int(data, "stock", 0, 0, MAX_STOCK)

    values["max_session_s"] = None
    if data.get("max_session_s") is not None:
        values["max_session_s"] = _number(
            data, "max_session_s", session_ttl_s, session_ttl_s, MAX_SESSION_S
        )
    return values


def _bool(data: dict[str, Any], name: str, default: bool) -> bool:
    value = data.get(name, default)
    if not isinstance(value, bool):
        raise InvalidInput(name, f"expected true or false, got {shown(value)}")
    return value


def _int(data: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(
            name, f"expected a whole number from {low} to {high}, got {shown(value)}"
        )
    if not low <= value <= high:
        raise InvalidInput(
            name, f"{value} is out of range; use a whole number from {low} to {high}"
        )
    return value


def _number(data: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(name, f"expected a number from {low} to {high}, got {shown(value)}")
    if not low <= value <= high:
        raise InvalidInput(name, f"{value} is out of range; use a number from {low} to {high}")
    return float(value)


def _return_url(value: object) -> str | None:
    """Validate the origin URL that the hosted page redirects admitted users to."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_URL_LENGTH:
        raise InvalidInput(
            "return_url",
            f"expected an absolute http(s) URL of at most {MAX_URL_LENGTH} characters",
        )
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(
            "return_url", f"{value[:80]!r} is not an absolute http(s) URL; use https://host/path"
        )
    if parts.username is not None or parts.password is not None:
        raise InvalidInput("return_url", "must not contain credentials (user:password@)")
    return value


def _webhooks(value: object) -> tuple[tuple[str, str], ...]:
    """Validate a table of webhook kind -> http(s) URL into pairs in WEBHOOK_KINDS order."""
    kinds = ", ".join(WEBHOOK_KINDS)
    if not isinstance(value, dict):
        raise InvalidInput("webhooks", f"expected a table of kind -> URL, with kinds from {kinds}")

    for kind in value:
        if kind not in WEBHOOK_KINDS:
            raise InvalidInput(f"webhooks.{kind}", f"unknown webhook kind; use one of {kinds}")

    pairs: list[tuple[str, str]] = []
    for kind in WEBHOOK_KINDS:
        url = value.get(kind)
        if url is None:
            continue
        name = f"webhooks.{kind}"
        if not isinstance(url, str) or len(url) > MAX_URL_LENGTH:
            raise InvalidInput(
                name, f"expected an absolute http(s) URL of at most {MAX_URL_LENGTH} characters"
            )
        try:
            parts = urlsplit(url)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname)
            parts.port  # noqa: B018 - raises ValueError for a port out of range
        except ValueError:
            valid = False
        if not valid:
            # The URL may carry a secret, so the message does not repeat it.
            raise InvalidInput(name, "not an absolute http(s) URL; use https://host/path")
        if parts.fragment:
            raise InvalidInput(name, "remove the #fragment: it is never sent to the receiver")
        pairs.append((kind, url))
    return tuple(pairs)


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
    # Public random id of the entry, shown in the fairness list and the admission log. It is
    # not a secret and grants nothing; the queue id stays the only bearer secret.
    ticket_id: str = ""

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
    # The tightest rate limit a status or heartbeat call was counted against, if any.
    limit: WindowOutcome | None = None


@dataclass(frozen=True, slots=True)
class WatchedEntry:
    """One entry as a stream sees it: its status, position while waiting, and the entry once
    it stopped waiting (admitted or ended), so an admitted one can be given its token.

    `status` is None when no entry has the queue id (never existed or purged after retention).
    """

    queue_id: str
    status: EntryStatus | None
    position: int | None = None
    entry: Entry | None = None


@dataclass(frozen=True, slots=True)
class WatchResult:
    """The entries one process streams for an event, read in one atomic store call."""

    event: EventSnapshot
    entries: list[WatchedEntry]


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
    # A priority code redeemed by this join (see gatekeep.priority); the store checks it and
    # counts one use only when the join creates an entry.
    priority_code_id: str | None = None
    priority_code_hash: str | None = None
    ticket_id: str = field(default_factory=lambda: new_ticket_id())


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
    # Changes of the event's release phase made by this step, in order, from RELEASE_TRANSITIONS.
    transitions: list[str] = field(default_factory=list)


# What a release step may report as changed: the pre-queue was ordered and the event opened,
# `closes_at` passed, or the stock reached zero.
RELEASE_TRANSITIONS = ("opened", "closed", "sold_out")


def new_ticket_id() -> str:
    """Return a new public ticket id: 96 random bits as 24 lowercase hex digits."""
    return secrets.token_hex(12)


class ReleasePhase(StrEnum):
    """Where an event stands in its schedule, as clients and operators see it."""

    SCHEDULED = "scheduled"  # before `opens_at`: joins enter the pre-queue
    OPEN = "open"
    CLOSED = "closed"  # after `closes_at`
    SOLD_OUT = "sold_out"  # the stock reached zero


@dataclass(frozen=True, slots=True)
class ReleaseState:
    """The release controller's state of one event, read from the store in one call."""

    event_id: str
    now_ms: int
    phase: ReleasePhase
    opened_at_ms: int | None
    stock_remaining: int | None
    admission_log_length: int
    commitment: str | None  # SHA-256 of the fairness seed, hex
    publication: dict[str, Any] | None = None  # see fairness.build_publication; after opening


@dataclass(frozen=True, slots=True)
class WebhookFailure:
    """A webhook message that was given up on after its last delivery attempt."""

    event_id: str
    delivery_id: str  # the `Gatekeep-Delivery` header every attempt of the message carried
    kind: str
    url: str  # scheme, host and port plus a hash of the URL: never its path, query or userinfo
    attempts: int
    reason: str
    created_at_ms: int  # when the message was emitted, on the emitting process's clock
    failed_at_ms: int = 0  # set by the store from its clock when it records the failure

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rate_limits(value: object) -> tuple[tuple[str, str], ...]:
    # Imported here because gatekeep.ratelimit imports this module.
    from gatekeep.ratelimit import parse_rate_limit_table

    return parse_rate_limit_table("rate_limits", value)
