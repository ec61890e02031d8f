"""Server-side records of issued admission tokens, as the stores keep and return them.

The store keeps one record per token id (`jti`) until the token can no longer verify: its
`exp` plus the verification leeway. A record names the entry the token was issued for, and
stores when an origin consumed it or an admin revoked it. Every time is milliseconds on the
store's clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gatekeep.model import EntryStatus


class TokenState(StrEnum):
    """The state of a token id in the store. Every state but `active` makes a token inactive."""

    ACTIVE = "active"
    UNKNOWN = "unknown"  # no record: never issued by this store, or past its expiry
    REVOKED = "revoked"  # an admin revoked it; its session was ended at the same time
    EXPIRED = "expired"  # its admitted session reached its end
    SESSION_ENDED = "session_ended"  # the visitor left, or the entry is gone
    CONSUMED = "consumed"  # an origin consumed it


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """One issued token: the entry it was issued for, and its consumption and revocation."""

    jti: str
    event_id: str
    queue_id: str
    device_id: str
    expires_at_ms: int  # the record is dropped at this time: the token's exp plus the leeway
    issued_at_ms: int
    consumed_at_ms: int | None = None
    revoked_at_ms: int | None = None


@dataclass(frozen=True, slots=True)
class TokenLookup:
    """A record, the state it gives the token now, and the store time of the lookup.

    `record` is None exactly when `state` is `unknown`. After `consume_token`, `active`
    means that this call consumed the token.
    """

    state: TokenState
    record: TokenRecord | None
    now_ms: int


@dataclass(frozen=True, slots=True)
class RevokeResult:
    """Counts of one revocation: token records marked revoked and admitted sessions ended."""

    revoked_tokens: int = 0
    ended_sessions: int = 0

    def __add__(self, other: RevokeResult) -> RevokeResult:
        return RevokeResult(
            self.revoked_tokens + other.revoked_tokens,
            self.ended_sessions + other.ended_sessions,
        )


def token_state(
    record: TokenRecord | None, entry_status: EntryStatus | None, entry_token_id: str | None
) -> TokenState:
    """Return the state of a token from its record and its entry, checked in this order.

    Unknown, revoked, expired (session end), session ended (left or gone), consumed, active.
    `entry_status` is None when the entry no longer exists. Both stores use this rule, and
    the Redis scripts repeat it in `token_state` of token_common.lua.
    """
    if record is None:
        return TokenState.UNKNOWN
    if record.revoked_at_ms is not None:
        return TokenState.REVOKED
    if entry_status == EntryStatus.EXPIRED and entry_token_id == record.jti:
        return TokenState.EXPIRED
    if entry_status != EntryStatus.ADMITTED or entry_token_id != record.jti:
        return TokenState.SESSION_ENDED
    if record.consumed_at_ms is not None:
        return TokenState.CONSUMED
    return TokenState.ACTIVE
