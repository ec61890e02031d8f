"""Signed webhooks: the payload signature, its check, and the background dispatcher.

A webhook is a JSON POST to a URL that the event's `webhooks` table names for its kind. The
body is signed with HMAC-SHA256 over `"<unix seconds>." + body` using GATEKEEP_WEBHOOK_SECRET,
sent as `Gatekeep-Signature: t=<unix seconds>,v1=<hex digest>`. A receiver recomputes the
digest with `verify_signature` (or the few lines it contains) and rejects a timestamp outside
its tolerance window, which stops replays of an old request.

Delivery is at-least-once and in-process: `emit` only appends to a bounded in-memory queue, so
it never blocks the release loop, and a message still queued or waiting for a retry when the
process stops is lost. Every attempt of one message carries the same `Gatekeep-Delivery` id,
which receivers use to drop duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from gatekeep import metrics
from gatekeep.errors import StoreUnavailable
from gatekeep.model import WEBHOOK_KINDS, EventConfig, ReleaseResult, WebhookFailure
from gatekeep.store.base import Store

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "Gatekeep-Signature"
DELIVERY_HEADER = "Gatekeep-Delivery"
KIND_HEADER = "Gatekeep-Webhook-Kind"
SIGNATURE_SCHEME = "v1"

# A receiver should accept a timestamp at most this far from its own clock. Five minutes
# absorbs clock skew between hosts while keeping the replay window short.
DEFAULT_TOLERANCE_S = 300

# Failure records kept per event. The store keeps the newest and drops older ones.
FAILURES_KEPT = 50

# How long a read event configuration is reused before the dispatcher reads it again, so a
# changed URL applies within about a second without a store call per message.
CONFIG_CACHE_S = 1.0

# Requests in flight at once per process. A receiver that hangs occupies a slot for at most the
# request timeout, so other events keep being served.
DELIVERY_CONCURRENCY = 16

# Statuses worth retrying: request timeout, too early, too many requests, and every 5xx.
# Any other non-2xx status means the receiver rejected this request, and retrying cannot help.
RETRYABLE_STATUSES = frozenset({408, 425, 429})

# A repeated warning (queue full, secret missing) is logged the first time and every Nth time.
REPEAT_LOG_EVERY = 100

USER_AGENT = "gatekeep-webhooks/1"


class WebhookSignatureError(ValueError):
    """Raised by verify_signature when a signature header is malformed, stale or wrong."""


def sign_payload(secret: str, timestamp_s: int, body: bytes) -> str:
    """Return the `Gatekeep-Signature` header value for `body` sent at `timestamp_s`."""
    signed = f"{timestamp_s}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp_s},{SIGNATURE_SCHEME}={digest}"


def verify_signature(
    secret: str,
    header: str,
    body: bytes,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    *,
    now_s: float | None = None,
) -> int:
    """Check a `Gatekeep-Signature` header against the raw request body; return its timestamp.

    Raises WebhookSignatureError when the header is malformed, when its timestamp is more
    than `tolerance_s` seconds from `now_s` (default: this host's clock), or when no `v1`
    digest matches. Pass the body bytes exactly as received, before any JSON parsing.
    """
    timestamp_s: int | None = None
    digests: list[str] = []
    for item in header.split(","):
        name, separator, value = item.strip().partition("=")
        if not separator:
            raise WebhookSignatureError(f"malformed signature header item {item[:20]!r}")
        if name == "t":
            if not value.isdigit():
                raise WebhookSignatureError("the signature timestamp t= is not a whole number")
            timestamp_s = int(value)
        elif name == SIGNATURE_SCHEME:
            digests.append(value)
    if timestamp_s is None:
        raise WebhookSignatureError("the signature header has no timestamp t=")
    if not digests:
        raise WebhookSignatureError(f"the signature header has no {SIGNATURE_SCHEME}= digest")

    current_s = time.time() if now_s is None else now_s
    age_s = current_s - timestamp_s
    if abs(age_s) > tolerance_s:
        raise WebhookSignatureError(
            f"the signature timestamp is {age_s:.0f} s from now, outside the tolerance of "
            f"{tolerance_s} s; reject it as a possible replay"
        )

    expected = sign_payload(secret, timestamp_s, body).rpartition("=")[2]
    if not any(hmac.compare_digest(expected, digest) for digest in digests):
        raise WebhookSignatureError("no signature digest matches the body and the secret")
    return timestamp_s


def url_label(url: str) -> str:
    """Return a loggable name for a webhook URL: scheme, host and port plus a short hash.

    The path, query and userinfo may hold credentials, so they are never shown. The first 8
    hex digits of the URL's SHA-256 tell two URLs on one host apart.
    """
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        port = ""
    digest = hashlib.sha256(url.encode()).hexdigest()[:8]
    return f"{parts.scheme}://{host}{port} #{digest}"


def backoff_delay_s(attempt: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Return the pause after failed attempt number `attempt` (1-based), with full jitter.

    The pause is uniform in [0, min(max_s, base_s * 2 ** (attempt - 1))], so many failing
    messages spread their retries instead of arriving at the receiver together.
    """
    ceiling_s = min(max_s, base_s * 2 ** (attempt - 1))
    return rng.uniform(0.0, ceiling_s)


@dataclass
class WebhookMessage:
    """One message to send: the same body and delivery id on every attempt."""

    delivery_id: str
    event_id: str
    kind: str
    body: bytes
    created_at_ms: int
    attempts: int = 0


@dataclass(frozen=True)
class AttemptResult:
    delivered: bool
    retryable: bool
    reason: str


class WebhookDispatcher:
    """Background delivery of webhook messages, started and stopped with the app.

    `emit` is synchronous and never waits. At most `max_pending` messages are queued or
    waiting for a retry at once; a message emitted beyond that is dropped, counted and logged.
    """

    def __init__(
        self,
        store: Store,
        secret: str | None,
        *,
        timeout_s: float = 5.0,
        max_attempts: int = 8,
        backoff_s: float = 1.0,
        backoff_max_s: float = 60.0,
        max_pending: int = 10_000,
        failures_kept: int = FAILURES_KEPT,
        concurrency: int = DELIVERY_CONCURRENCY,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.store = store
        self._secret = secret
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.max_pending = max_pending
        self.failures_kept = failures_kept
        self.concurrency = concurrency
        self._transport = transport
        self._rng = random.Random()

        self._ready: asyncio.Queue[WebhookMessage] = asyncio.Queue()
        self._pending = 0  # messages accepted and not yet finished, retries included
        self._retry_timers: set[asyncio.TimerHandle] = set()
        self._configs: dict[str, tuple[float, EventConfig | None]] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None
        self._dropped = 0
        self._skipped = 0

    @property
    def pending(self) -> int:
        """Messages accepted and not yet delivered or given up, retries included."""
        return self._pending

    def start(self) -> None:
        # httpx logs every request with its full URL at INFO, and a webhook URL may carry
        # credentials in its query or path. Only its warnings and errors are kept.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        # Proxy variables and .netrc are ignored (trust_env=False), so nothing from the
        # environment adds credentials to, or reroutes, a signed request.
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout_s),
            follow_redirects=False,
            trust_env=False,
            headers={"User-Agent": USER_AGENT},
            limits=httpx.Limits(max_connections=self.concurrency),
            transport=self._transport,
        )
        self._workers = [
            asyncio.create_task(self._work(), name=f"gatekeep-webhook-{index}")
            for index in range(self.concurrency)
        ]
        logger.info(
            "webhooks.start signing=%s timeout_s=%s max_attempts=%s max_pending=%s",
            "on" if self._secret else "off",
            self.timeout_s,
            self.max_attempts,
            self.max_pending,
        )

    async def stop(self) -> None:
        """Cancel the workers and the scheduled retries; undelivered messages are lost."""
        for timer in self._retry_timers:
            timer.cancel()
        self._retry_timers.clear()
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self._workers = []
        if self._client is not None:
            await self._client.aclose()
            self._client = None

        lost = self._pending
        self._pending = 0
        self._ready = asyncio.Queue()
        logger.info("webhooks.stop lost=%s dropped_total=%s", lost, self._dropped)

    def emit(self, event_id: str, kind: str, data: dict[str, Any]) -> None:
        """Queue a webhook of `kind` for the event, if it has a URL for that kind.

        Never waits and never raises for a full queue. `data` must hold no secrets: it is
        sent to the receiver as the payload's `data` object.
        """
        if kind not in WEBHOOK_KINDS:
            raise ValueError(f"unknown webhook kind {kind!r}; use one of {WEBHOOK_KINDS}")
        cached = self._configs.get(event_id)
        if cached is not None and time.monotonic() - cached[0] < CONFIG_CACHE_S:
            config = cached[1]
            if config is None or _target_url(config, kind) is None:
                return

        if not self._workers or self._pending >= self.max_pending:
            self._drop(event_id, kind)
            return

        created_at_ms = time.time_ns() // 1_000_000
        delivery_id = uuid.uuid4().hex
        payload = {
            "id": delivery_id,
            "kind": kind,
            "event_id": event_id,
            "created_at_ms": created_at_ms,
            "data": data,
        }
        message = WebhookMessage(
            delivery_id=delivery_id,
            event_id=event_id,
            kind=kind,
            body=orjson.dumps(payload),
            created_at_ms=created_at_ms,
        )
        self._pending += 1
        self._ready.put_nowait(message)

    def emit_release(self, event_id: str, result: ReleaseResult) -> None:
        """Queue the webhooks of one release step: its admitted batch and its transitions.

        Each admission happens in exactly one step of one process, so each batch is emitted
        once. The payload carries the count only, because queue ids are bearer secrets.
        """
        admitted = len(result.admitted_queue_ids)
        if admitted:
            self.emit(event_id, "admitted", {"count": admitted})

        # The store reports "opened", "closed" and "sold_out" in the step that made the change.
        for kind in result.transitions:
            if kind in WEBHOOK_KINDS:
                self.emit(event_id, kind, {})

    def _drop(self, event_id: str, kind: str) -> None:
        self._dropped += 1
        metrics.WEBHOOK_DELIVERIES.labels(event_id, kind, "dropped").inc()
        if self._dropped == 1 or self._dropped % REPEAT_LOG_EVERY == 0:
            logger.warning(
                "webhooks.dropped event_id=%s kind=%s dropped_total=%s pending=%s "
                "reason=the queue is full or the dispatcher is stopped",
                event_id,
                kind,
                self._dropped,
                self._pending,
            )

    async def _work(self) -> None:
        while True:
            message = await self._ready.get()
            try:
                finished = await self._handle(message)
            except Exception:
                # A bug must not stop delivery for good, so the message ends here and the
                # stack goes to the log.
                logger.exception(
                    "webhooks.handle_failed event_id=%s kind=%s delivery_id=%s",
                    message.event_id,
                    message.kind,
                    message.delivery_id,
                )
                finished = True
            if finished:
                self._pending -= 1

    async def _handle(self, message: WebhookMessage) -> bool:
        """Make one attempt; return False when a retry was scheduled, True when finished."""
        try:
            config = await self._event_config(message.event_id)
        except StoreUnavailable:
            config = None
            url: str | None = None
            result = AttemptResult(False, True, "the store was unavailable to read the URL")
        else:
            url = None if config is None else _target_url(config, message.kind)
            if url is None:
                # The URL was removed after the message was queued, so nothing is sent.
                return True
            if self._secret is None:
                self._skip(message)
                return True
            result = await self._attempt(message, url)

        message.attempts += 1
        if result.delivered:
            metrics.WEBHOOK_DELIVERIES.labels(message.event_id, message.kind, "delivered").inc()
            logger.debug(
                "webhooks.delivered event_id=%s kind=%s delivery_id=%s attempts=%s",
                message.event_id,
                message.kind,
                message.delivery_id,
                message.attempts,
            )
            return True

        label = url_label(url) if url is not None else "unknown"
        if result.retryable and message.attempts < self.max_attempts:
            delay_s = backoff_delay_s(
                message.attempts, self.backoff_s, self.backoff_max_s, self._rng
            )
            metrics.WEBHOOK_RETRIES.labels(message.event_id, message.kind).inc()
            logger.info(
                "webhooks.retry event_id=%s kind=%s delivery_id=%s url=%s attempt=%s "
                "remaining=%s delay_s=%.2f reason=%s",
                message.event_id,
                message.kind,
                message.delivery_id,
                label,
                message.attempts,
                self.max_attempts - message.attempts,
                delay_s,
                result.reason,
            )
            self._schedule_retry(message, delay_s)
            return False

        await self._give_up(message, label, result.reason)
        return True

    def _skip(self, message: WebhookMessage) -> None:
        self._skipped += 1
        metrics.WEBHOOK_DELIVERIES.labels(message.event_id, message.kind, "skipped").inc()
        if self._skipped == 1 or self._skipped % REPEAT_LOG_EVERY == 0:
            logger.warning(
                "webhooks.skipped event_id=%s kind=%s skipped_total=%s "
                "reason=GATEKEEP_WEBHOOK_SECRET is not set, so payloads cannot be signed",
                message.event_id,
                message.kind,
                self._skipped,
            )

    def _schedule_retry(self, message: WebhookMessage, delay_s: float) -> None:
        loop = asyncio.get_running_loop()

        def requeue() -> None:
            self._retry_timers.discard(timer)
            self._ready.put_nowait(message)

        timer = loop.call_later(delay_s, requeue)
        self._retry_timers.add(timer)

    async def _attempt(self, message: WebhookMessage, url: str) -> AttemptResult:
        """POST the message once, signed with the current time; classify the outcome."""
        assert self._client is not None and self._secret is not None
        timestamp_s = int(time.time())
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign_payload(self._secret, timestamp_s, message.body),
            DELIVERY_HEADER: message.delivery_id,
            KIND_HEADER: message.kind,
        }
        try:
            # httpx's timeout bounds each phase; this one bounds the whole request, so a
            # receiver that trickles its response still releases the slot in time.
            async with asyncio.timeout(self.timeout_s):
                request = self._client.stream("POST", url, content=message.body, headers=headers)
                async with request as response:
                    status = response.status_code
        except (TimeoutError, httpx.TimeoutException):
            return AttemptResult(False, True, f"timed out after {self.timeout_s} s")
        except httpx.HTTPError as error:
            # Only the error type is kept, because httpx error messages may contain the URL.
            return AttemptResult(False, True, f"request failed: {type(error).__name__}")

        if 200 <= status < 300:
            return AttemptResult(True, False, f"HTTP {status}")
        if status >= 500 or status in RETRYABLE_STATUSES:
            return AttemptResult(False, True, f"HTTP {status}")
        if 300 <= status < 400:
            return AttemptResult(
                False, False, f"HTTP {status}: redirects are not followed; configure the final URL"
            )
        return AttemptResult(False, False, f"HTTP {status}: the receiver rejected the request")

    async def _give_up(self, message: WebhookMessage, label: str, reason: str) -> None:
        metrics.WEBHOOK_DELIVERIES.labels(message.event_id, message.kind, "failed").inc()
        logger.warning(
            "webhooks.failed event_id=%s kind=%s delivery_id=%s url=%s attempts=%s reason=%s",
            message.event_id,
            message.kind,
            message.delivery_id,
            label,
            message.attempts,
            reason,
        )
        failure = WebhookFailure(
            event_id=message.event_id,
            delivery_id=message.delivery_id,
            kind=message.kind,
            url=label,
            attempts=message.attempts,
            reason=reason,
            created_at_ms=message.created_at_ms,
        )
        try:
            await self.store.record_webhook_failure(failure, self.failures_kept)
        except StoreUnavailable as error:
            logger.error(
                "webhooks.record_failed event_id=%s delivery_id=%s error=%s",
                message.event_id,
                message.delivery_id,
                error.__cause__ or error,
            )

    async def _event_config(self, event_id: str) -> EventConfig | None:
        now = time.monotonic()
        cached = self._configs.get(event_id)
        if cached is not None and now - cached[0] < CONFIG_CACHE_S:
            return cached[1]
        config = await self.store.get_event(event_id)
        self._configs[event_id] = (now, config)
        return config


def _target_url(config: EventConfig, kind: str) -> str | None:
    for configured_kind, url in config.webhooks:
        if configured_kind == kind:
            return url
    return None
