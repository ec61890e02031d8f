"""Server-side token operations: record issued tokens, consume, introspect and revoke them.

Consume and introspect verify the token first, with the keyring's keys and the leeway of
`GATEKEEP_TOKEN_LEEWAY_S`, and then ask the store for its record. The store reads and
changes a record in one atomic step, so two concurrent consumes of one token cannot both
succeed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from gatekeep import metrics
from gatekeep.errors import EventNotFound, TokenRejected
from gatekeep.model import ID_PATTERN
from gatekeep.queue import EntryView, QueueService
from gatekeep.ratewindow import WindowLimit
from gatekeep.store.base import Store
from gatekeep.tokens.records import RevokeResult, TokenLookup, TokenState
from gatekeep.tokens.signer import TokenSigner
from gatekeep.verify import MAX_TOKEN_BYTES, TokenInvalid, b64url_decode_strict, verify_token

logger = logging.getLogger(__name__)

# Tokens this process remembers as recorded, so later polls of an admitted entry skip the
# store call. One row is two short strings and an int, roughly 200 bytes (estimate).
RECORDED_CACHE_SIZE = 50_000

_MESSAGES = {
    TokenState.UNKNOWN: "the store has no record of this token",
    TokenState.REVOKED: "the token was revoked",
    TokenState.EXPIRED: "the admitted session of this token has expired",
    TokenState.SESSION_ENDED: "the admitted session of this token has ended",
    TokenState.CONSUMED: "the token was already consumed",
}


class TokenService:
    """Record, consume, introspect and revoke admission tokens for every event of one store."""

    def __init__(self, store: Store, signer: TokenSigner, *, leeway_s: float) -> None:
        self.store = store
        self.signer = signer
        self.leeway_s = leeway_s
        self._recorded: OrderedDict[tuple[str, int], None] = OrderedDict()

        # Sorted keys and fixed separators give every process the same bytes, so the ETag
        # is the same behind any load balancer.
        document = signer.keyring.jwks()
        self.jwks_body = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
        self.jwks_etag = '"' + hashlib.sha256(self.jwks_body).hexdigest()[:32] + '"'

    @property
    def leeway_ms(self) -> int:
        return round(self.leeway_s * 1000)

    async def record_issued(self, view: EntryView) -> None:
        """Record the token of an admitted entry's view before the client receives it."""
        if view.token is None:
            return
        entry = view.snapshot.entry
        assert entry.session_expires_at_ms is not None
        expires_at_ms = (entry.session_expires_at_ms // 1000) * 1000 + self.leeway_ms
        cache_key = (entry.token_id, expires_at_ms)
        if cache_key in self._recorded:
            return

        result = await self.store.record_token(
            entry.event_id, entry.queue_id, entry.token_id, expires_at_ms
        )
        # None means the session ended between the status read and this call. The client
        # still gets the token, and introspection reports the ended session.
        if result is not None and result[1]:
            metrics.TOKENS_ISSUED.labels(entry.event_id).inc()
        self._recorded[cache_key] = None
        if len(self._recorded) > RECORDED_CACHE_SIZE:
            self._recorded.popitem(last=False)

    def verify(self, token: str, device_id: str | None = None) -> dict[str, Any]:
        """Verify `token` with this service's keys and leeway; raise TokenInvalid."""
        return verify_token(
            token,
            self.signer.keyring,
            event_id=_unverified_event_id(token),
            device_id=device_id,
            leeway_s=self.leeway_s,
        )

    async def introspect(self, token: str, device_id: str | None = None) -> dict[str, Any]:
        """Return an RFC 7662 style response: `active`, then the claims or the `reason`.

        Inactive responses carry no claims, as RFC 7662 section 2.2 advises.
        """
        try:
            claims = self.verify(token, device_id)
        except TokenInvalid as error:
            metrics.TOKENS_REJECTED.labels("introspect", error.reason).inc()
            return {"active": False, "reason": error.reason}

        lookup = await self.store.lookup_token(
            claims["event_id"],
            claims["jti"],
            device_id=claims["device_id"],
            leeway_ms=self.leeway_ms,
        )
        if lookup.state != TokenState.ACTIVE:
            metrics.TOKENS_REJECTED.labels("introspect", lookup.state.value).inc()
            return {"active": False, "reason": lookup.state.value}

        metrics.TOKENS_VERIFIED.labels("introspect").inc()
        return {"active": True, **claims}

    async def consume(self, token: str, device_id: str | None = None) -> dict[str, Any]:
        """Verify and consume `token`; raise TokenRejected unless this call consumed it."""
        try:
            claims = self.verify(token, device_id)
        except TokenInvalid as error:
            metrics.TOKENS_REJECTED.labels("consume", error.reason).inc()
            raise TokenRejected(error.reason, f"the token is invalid: {error.message}") from None

        lookup = await self._consume(claims["event_id"], claims["jti"], claims["device_id"])
        return {"consumed": True, "consumed_at_ms": _consumed_at_ms(lookup), "claims": claims}

    async def consume_jti(self, event_id: str, jti: str, device_id: str | None) -> dict[str, Any]:
        """Consume a token that the caller verified itself, by its event and jti."""
        lookup = await self._consume(event_id, jti, device_id)
        return {
            "consumed": True,
            "consumed_at_ms": _consumed_at_ms(lookup),
            "event_id": event_id,
            "jti": jti,
        }

    async def _consume(self, event_id: str, jti: str, device_id: str | None) -> TokenLookup:
        lookup = await self.store.consume_token(
            event_id, jti, device_id=device_id, leeway_ms=self.leeway_ms
        )
        if lookup.state != TokenState.ACTIVE:
            metrics.TOKENS_REJECTED.labels("consume", lookup.state.value).inc()
            raise TokenRejected(lookup.state.value, _MESSAGES[lookup.state])

        metrics.TOKENS_VERIFIED.labels("consume").inc()
        logger.info("token.consumed event_id=%s jti=%s", event_id, jti)
        return lookup

    async def revoke(
        self, *, event_id: str | None, jti: str | None, device_id: str | None
    ) -> RevokeResult:
        """Revoke one token, a device's tokens or an event's tokens; see Store.revoke_tokens.

        Without `event_id`, every event is searched; a jti is unique, so that search stops
        at the first event that has it.
        """
        if event_id is not None:
            if await self.store.get_event(event_id) is None:
                raise EventNotFound(event_id)
            event_ids = [event_id]
        else:
            event_ids = await self.store.list_event_ids()

        total = RevokeResult()
        for current in event_ids:
            try:
                result = await self.store.revoke_tokens(current, jti=jti, device_id=device_id)
            except EventNotFound:
                continue  # deleted since it was listed
            total += result
            if jti is not None and result.revoked_tokens:
                break

        scope = "event"
        if jti is not None:
            scope = "jti"
        elif device_id is not None:
            scope = "device"
        metrics.TOKENS_REVOKED.labels(scope).inc(total.revoked_tokens)
        logger.info(
            "token.revoked scope=%s event_id=%s device_id=%s jti=%s revoked_tokens=%s "
            "ended_sessions=%s",
            scope,
            event_id,
            device_id,
            jti,
            total.revoked_tokens,
            total.ended_sessions,
        )
        return total


class RecordingQueueService(QueueService):
    """The queue service that records every token it hands out before returning it."""

    def __init__(
        self, store: Store, signer: TokenSigner, grant_secret: str | None, tokens: TokenService
    ) -> None:
        super().__init__(store, signer, grant_secret)
        self.tokens = tokens

    async def join(
        self,
        event_id: str,
        device_id: str,
        user_id: str | None,
        priority_grant: str | None,
        *,
        priority_code: str | None = None,
    ) -> EntryView:
        view = await super().join(
            event_id, device_id, user_id, priority_grant, priority_code=priority_code
        )
        await self.tokens.record_issued(view)
        return view

    async def status(self, queue_id: str, limits: Sequence[WindowLimit] = ()) -> EntryView:
        view = await super().status(queue_id, limits)
        await self.tokens.record_issued(view)
        return view

    async def heartbeat(self, queue_id: str, limits: Sequence[WindowLimit] = ()) -> EntryView:
        view = await super().heartbeat(queue_id, limits)
        await self.tokens.record_issued(view)
        return view


def _unverified_event_id(token: str) -> str:
    """Return the `event_id` claim read without verification, or '' when there is none.

    Verification then requires the token's `aud` and `event_id` to equal it, so the value
    only selects which event the server checks against.
    """
    if len(token) > MAX_TOKEN_BYTES:
        return ""  # the verifier rejects it before parsing
    segments = token.split(".")
    if len(segments) != 3:
        return ""
    payload = b64url_decode_strict(segments[1])
    if payload is None:
        return ""
    try:
        claims = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return ""
    event_id = claims.get("event_id") if isinstance(claims, dict) else None
    if not isinstance(event_id, str) or not ID_PATTERN.fullmatch(event_id):
        return ""
    return event_id


def _consumed_at_ms(lookup: TokenLookup) -> int | None:
    return lookup.record.consumed_at_ms if lookup.record else None
