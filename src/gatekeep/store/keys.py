"""Redis key names of the Redis store.

Every key of one event has the form `gk:{EVENT_ID}:...`, so the event id is the Redis Cluster
hash tag and one Lua script may touch all of an event's keys. Event ids never contain braces
(see `model.ID_PATTERN`), so the tag is always the whole id.
"""

from __future__ import annotations

from dataclasses import dataclass

# Set of every event id. It is configuration, so it has no expiry. It lives in its own hash
# slot, so no event script touches it.
EVENTS_KEY = "gk:events"


@dataclass(frozen=True, slots=True)
class EventKeys:
    """The keys of one event, in the order every Lua script receives them as KEYS[1..8]."""

    config: str  # HASH of EventConfig fields, without expiry
    state: str  # HASH credit, last_ms, seq, obs_count, obs_time_s, *_total counters
    waiting: str  # ZSET queue_id -> bucket_rank * SEQ_SPAN + seq
    heartbeats: str  # ZSET queue_id -> last heartbeat ms, waiting entries only
    admitted: str  # ZSET queue_id -> session expiry ms, active sessions only
    entries: str  # HASH queue_id -> entry JSON
    devices: str  # HASH device_id -> queue_id of the device's live entry
    retired: str  # ZSET queue_id -> purge-at ms of ended entries

    def as_list(self) -> list[str]:
        """Return the keys in KEYS order for a script call."""
        return [
            self.config,
            self.state,
            self.waiting,
            self.heartbeats,
            self.admitted,
            self.entries,
            self.devices,
            self.retired,
        ]


def event_keys(event_id: str) -> EventKeys:
    """Build the keys of one event; all of them hash to the slot of `event_id`."""
    prefix = f"gk:{{{event_id}}}:"
    return EventKeys(
        config=prefix + "config",
        state=prefix + "state",
        waiting=prefix + "waiting",
        heartbeats=prefix + "heartbeats",
        admitted=prefix + "admitted",
        entries=prefix + "entries",
        devices=prefix + "devices",
        retired=prefix + "retired",
    )


def wait_samples_key(event_id: str) -> str:
    """Return the LIST of recent waits (ms, newest first) of one event, in its hash slot."""
    return f"gk:{{{event_id}}}:waits"


def priority_codes_key(event_id: str) -> str:
    """Return the HASH of one event's priority codes (code_id -> code JSON), in its hash slot."""
    return f"gk:{{{event_id}}}:priority_codes"


def rate_limit_key(event_id: str, name: str, identifier: str) -> str:
    """Return the STRING of one rate limit's counters (`name` such as status.device) for one
    caller `identifier` (a hash, never a queue id), in the event's hash slot."""
    return f"gk:{{{event_id}}}:limit:{name}:{identifier}"


def event_key_pattern(event_id: str) -> str:
    """Return the SCAN pattern matching every key of one event; ids hold no glob characters."""
    return f"gk:{{{event_id}}}:*"


@dataclass(frozen=True, slots=True)
class TokenKeys:
    """The admission-token keys of one event; token scripts receive them after the event keys."""

    tokens: str  # HASH jti -> token record JSON
    token_expiry: str  # ZSET jti -> ms at which the record is dropped

    def as_list(self) -> list[str]:
        return [self.tokens, self.token_expiry]


def token_keys(event_id: str) -> TokenKeys:
    """Build the admission-token keys of one event, in the slot of `event_id`."""
    prefix = f"gk:{{{event_id}}}:"
    return TokenKeys(tokens=prefix + "tokens", token_expiry=prefix + "token_expiry")


def webhook_failures_key(event_id: str) -> str:
    """Return the LIST of one event's failed webhook messages (JSON, newest first)."""
    return f"gk:{{{event_id}}}:webhook_failures"


def control_keys(event_id: str) -> list[str]:
    """Return the release controller's keys of one event, which control.lua finds by suffix.

    `control` (HASH: phase, fairness seed, stock, log head), `admissions` (LIST: the
    hash-chained admission log) and `fairness` (STRING: the publication made at opening).
    """
    prefix = f"gk:{{{event_id}}}:"
    return [prefix + "control", prefix + "admissions", prefix + "fairness"]
