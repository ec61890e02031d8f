"""The queue service: joins, status polls, heartbeats and leaves, on top of a Store.

HTTP handlers call this layer; it validates ids, mints queue ids, resolves the priority bucket,
and turns store snapshots into what a client sees (position, ETA, poll interval, token).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

import jwt

from gatekeep.errors import EntryEnded, EventNotFound, InvalidInput
from gatekeep.model import (
    EntrySnapshot,
    EntryStatus,
    EventSnapshot,
    JoinRequest,
    check_id,
    short_queue_id,
)
from gatekeep.priority import CODE_PATTERN, PRIORITY_CODE_MESSAGES, code_id_of, hash_code
from gatekeep.store.base import Store

if TYPE_CHECKING:
    from collections.abc import Sequence

    from gatekeep.ratewindow import WindowLimit
    from gatekeep.tokens import TokenSigner

logger = logging.getLogger(__name__)

# 16 random bytes in base64url (128 bits), a dot, then the event id, so a status call finds the
# event's keys in one store round trip.
QUEUE_ID_PATTERN = re.compile(
    r"(?P<secret>[A-Za-z0-9_-]{22})\.(?P<event_id>[A-Za-z0-9._:-]{1,128})"
)

POLL_MIN_MS = 1000
POLL_MAX_MS = 30_000
POLL_MS_PER_POSITION = 20
POLL_JITTER = 0.2  # each interval is scaled by a random factor in [1 - 0.2, 1 + 0.2]
ADMITTED_POLL_MS = 15_000


def new_queue_id(event_id: str) -> str:
    return f"{secrets.token_urlsafe(16)}.{event_id}"


def event_id_of(queue_id: str) -> str:
    """Return the event id inside a queue id; raise InvalidInput for a malformed one."""
    match = QUEUE_ID_PATTERN.fullmatch(queue_id)
    if match is None:
        raise InvalidInput("queue_id", "invalid queue id; use the queue_id returned by join")
    return match["event_id"]


@dataclass(frozen=True, slots=True)
class EntryView:
    """The client's view of its entry: snapshot, ETA, poll interval and token."""

    snapshot: EntrySnapshot
    eta_s: float | None
    poll_after_ms: int | None
    token: str | None
    created: bool = False
    # Seconds until the event opens while it is scheduled; the pre-queue has no position yet,
    # because the opening draws its order.
    opens_in_s: float | None = None


def estimate_wait_s(position: int, event: EventSnapshot) -> float | None:
    """Estimate seconds until admission of the entry at `position`; None while paused.

    The first `capacity_left` users need only release credit, which grows at the configured
    rate. Users beyond them wait for sessions to end, so they move at the observed release
    rate, or, before any is observed, at the slower of the configured rate and the rate at
    which full-length sessions free capacity.
    """
    config = event.config
    if config.paused:
        return None

    rate = config.release_rate
    credit = event.release_credit
    capacity_left = event.capacity_left
    if position <= capacity_left:
        return max(0.0, (position - credit) / rate)

    turnover_rate = config.max_capacity / config.session_ttl_s
    service_rate = event.observed_rate_per_s or min(rate, turnover_rate)
    head_s = max(0.0, (capacity_left - credit) / rate)
    return head_s + (position - capacity_left) / max(service_rate, 1e-6)


def poll_interval_ms(
    position: int | None, status: EntryStatus, heartbeat_timeout_s: float
) -> int | None:
    """Return a jittered poll interval that grows with position and never risks expiry.

    The interval stays below a third of the heartbeat timeout, so a client that obeys it
    keeps its place even when one poll is lost.
    """
    if status == EntryStatus.ADMITTED:
        base_ms = ADMITTED_POLL_MS
    elif status == EntryStatus.WAITING and position is not None:
        base_ms = min(POLL_MAX_MS, POLL_MIN_MS + POLL_MS_PER_POSITION * (position - 1))
    else:
        return None

    jittered_ms = base_ms * random.uniform(1 - POLL_JITTER, 1 + POLL_JITTER)
    ceiling_ms = heartbeat_timeout_s * 1000 / 3
    return max(100, int(min(jittered_ms, ceiling_ms)))


def seconds_until_opening(event: EventSnapshot) -> float | None:
    """Return seconds until `opens_at` on the store clock, or None once it has passed."""
    opens_at_ms = event.config.opens_at_ms
    if opens_at_ms is None or event.now_ms >= opens_at_ms:
        return None
    return (opens_at_ms - event.now_ms) / 1000


def scheduled_poll_ms(opens_in_s: float, heartbeat_timeout_s: float) -> int:
    """Return a jittered poll interval for a pre-queue entry: no later than the opening.

    Like `poll_interval_ms`, it stays below a third of the heartbeat timeout.
    """
    base_ms = min(POLL_MAX_MS, max(POLL_MIN_MS, opens_in_s * 1000))
    jittered_ms = base_ms * random.uniform(1 - POLL_JITTER, 1)
    return max(100, int(min(jittered_ms, heartbeat_timeout_s * 1000 / 3)))


class QueueService:
    """Client-facing queue operations for every event in one store."""

    def __init__(self, store: Store, signer: TokenSigner, grant_secret: str | None = None) -> None:
        self.store = store
        self.signer = signer
        self.grant_secret = grant_secret

    async def join(
        self,
        event_id: str,
        device_id: str,
        user_id: str | None,
        priority_grant: str | None,
        *,
        priority_code: str | None = None,
    ) -> EntryView:
        event_id = check_id("event_id", event_id)
        device_id = check_id("device_id", device_id)
        if user_id is not None:
            user_id = check_id("user_id", user_id)

        config = await self.store.get_event(event_id)
        if config is None:
            raise EventNotFound(event_id)
        bucket = config.default_bucket
        if priority_grant is not None:
            bucket = self._bucket_from_grant(priority_grant, event_id, device_id, config.buckets)
        code_id: str | None = None
        code_hash: str | None = None
        if priority_code is not None:
            if priority_grant is not None:
                raise InvalidInput(
                    "priority_code", "send priority_code or priority_grant, not both"
                )
            bucket, code_id, code_hash = await self._bucket_from_code(event_id, priority_code)

        request = JoinRequest(
            queue_id=new_queue_id(event_id),
            event_id=event_id,
            device_id=device_id,
            user_id=user_id,
            bucket=bucket,
            token_id=secrets.token_urlsafe(16),
            nonce=secrets.token_urlsafe(12),
            priority_code_id=code_id,
            priority_code_hash=code_hash,
        )
        result = await self.store.join(request)

        entry = result.snapshot.entry
        logger.info(
            "queue.join event_id=%s queue_id=%s bucket=%s created=%s position=%s",
            event_id,
            entry.short_id,
            entry.bucket,
            result.created,
            result.snapshot.position,
        )
        view = self._view(result.snapshot)
        return dataclasses.replace(view, created=result.created)

    async def status(self, queue_id: str, limits: Sequence[WindowLimit] = ()) -> EntryView:
        """Return the entry and count the call as a heartbeat; an expired entry raises 410.

        The store counts the call against `limits` first and raises RateLimited when one is
        exhausted.
        """
        snapshot = await self.store.touch(event_id_of(queue_id), queue_id, limits=limits)
        if snapshot.entry.status == EntryStatus.EXPIRED:
            raise EntryEnded(EntryStatus.EXPIRED)
        return self._view(snapshot)

    async def heartbeat(self, queue_id: str, limits: Sequence[WindowLimit] = ()) -> EntryView:
        """Keep a live entry alive and renew an admitted session (up to `max_session_s`).

        A renewed session has a later `session_expires_at_ms`, so the view carries a new token
        with the later `exp`. An entry that left or expired raises 410.
        """
        snapshot = await self.store.touch(
            event_id_of(queue_id), queue_id, renew_session=True, limits=limits
        )
        if snapshot.entry.status in (EntryStatus.EXPIRED, EntryStatus.LEFT):
            raise EntryEnded(snapshot.entry.status)
        return self._view(snapshot)

    async def leave(self, queue_id: str) -> EntryView:
        snapshot = await self.store.leave(event_id_of(queue_id), queue_id)
        logger.info(
            "queue.leave event_id=%s queue_id=%s status=%s",
            snapshot.entry.event_id,
            short_queue_id(queue_id),
            snapshot.entry.status,
        )
        return self._view(snapshot)

    async def event_state(self, event_id: str) -> EventSnapshot:
        return await self.store.event_snapshot(check_id("event_id", event_id))

    def _view(self, snapshot: EntrySnapshot) -> EntryView:
        entry = snapshot.entry
        eta_s: float | None = None
        if entry.status == EntryStatus.WAITING and snapshot.position is not None:
            eta_s = estimate_wait_s(snapshot.position, snapshot.event)
        elif entry.status == EntryStatus.ADMITTED:
            eta_s = 0.0

        token = self.signer.issue(entry) if entry.status == EntryStatus.ADMITTED else None
        poll_ms = poll_interval_ms(
            snapshot.position, entry.status, snapshot.event.config.heartbeat_timeout_s
        )
        opens_in_s = seconds_until_opening(snapshot.event)
        if opens_in_s is not None and entry.status == EntryStatus.WAITING:
            # A pre-queue position would only be join order, which the opening discards.
            snapshot = dataclasses.replace(snapshot, position=None)
            eta_s = None
            poll_ms = scheduled_poll_ms(opens_in_s, snapshot.event.config.heartbeat_timeout_s)
        return EntryView(
            snapshot=snapshot,
            eta_s=eta_s,
            poll_after_ms=poll_ms,
            token=token,
            opens_in_s=opens_in_s,
        )

    async def _bucket_from_code(self, event_id: str, code: str) -> tuple[str, str, str]:
        """Return (bucket, code_id, code hash) of a redeemable priority code.

        The store checks the code again, and counts its use, in the atomic join itself.
        """
        if not CODE_PATTERN.fullmatch(code):
            raise InvalidInput("priority_code", PRIORITY_CODE_MESSAGES["priority_code_invalid"])
        code_id = code_id_of(code)
        code_hash = hash_code(code)
        stored = await self.store.get_priority_code(event_id, code_id)
        if stored is None or stored.code_hash != code_hash:
            raise InvalidInput("priority_code", PRIORITY_CODE_MESSAGES["priority_code_invalid"])
        return stored.bucket, code_id, code_hash

    def _bucket_from_grant(
        self, grant: str, event_id: str, device_id: str, buckets: tuple[str, ...]
    ) -> str:
        """Verify an origin-signed priority grant (HS256 JWT) and return its bucket.

        Claims: `event_id` and `bucket` (required), `exp` (required), `device_id` (optional;
        when present it must match the joining device).
        """
        if self.grant_secret is None:
            raise InvalidInput(
                "priority_grant", "priority grants are not enabled; set GATEKEEP_GRANT_SECRET"
            )
        if not isinstance(grant, str) or len(grant) > 2048:
            raise InvalidInput(
                "priority_grant", "expected a signed grant string of at most 2048 characters"
            )
        try:
            claims = jwt.decode(
                grant,
                self.grant_secret,
                algorithms=["HS256"],
                options={"require": ["exp", "event_id", "bucket"]},
            )
        except jwt.PyJWTError as error:
            raise InvalidInput("priority_grant", f"invalid grant: {error}") from error

        if claims["event_id"] != event_id:
            raise InvalidInput("priority_grant", "the grant is for another event")
        if "device_id" in claims and claims["device_id"] != device_id:
            raise InvalidInput("priority_grant", "the grant is bound to another device")
        bucket = claims["bucket"]
        if not isinstance(bucket, str) or bucket not in buckets:
            raise InvalidInput(
                "priority_grant",
                f"the grant names bucket {str(bucket)[:40]!r}, which this event does not have",
            )
        return bucket
