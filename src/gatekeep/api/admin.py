"""Admin API under /admin: events, stats, queue inspection and priority codes, behind bearer
admin keys, with its own rate limits and one audit line per action that changes state."""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any

import orjson
from starlette.requests import Request
from starlette.routing import Route

from gatekeep import metrics
from gatekeep.api.http import JSONResponse, read_json_object, reject_unknown_fields
from gatekeep.api.state import services
from gatekeep.errors import EventNotFound, Forbidden, InvalidInput, Unauthorized
from gatekeep.model import EventConfig, check_id
from gatekeep.priority import (
    CODE_ID_PATTERN,
    MAX_CODES_PER_CALL,
    PriorityCode,
    code_id_of,
    hash_code,
    new_code,
)
from gatekeep.queue import event_id_of
from gatekeep.ratelimit import request_limiter
from gatekeep.webhooks import WebhookDispatcher, url_label

logger = logging.getLogger(__name__)


def key_id(key: str) -> str:
    """Return a short, non-secret name for an admin key, for audit lines."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def authorize(request: Request) -> str:
    """Check the bearer admin key in constant time; return its key id.

    Every configured key is compared, whether or not an earlier one matched, so the time
    taken does not reveal which key or how much of it matched.
    """
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    missing = scheme.lower() != "bearer" or not presented.strip()

    # A request without a key runs the same comparisons (against an empty key), so 401 and
    # 403 take the same time.
    keys = services(request).settings.admin_api_keys
    presented_bytes = b"" if missing else presented.strip().encode()
    matched: str | None = None
    for key in keys:
        if hmac.compare_digest(presented_bytes, key.encode()):
            matched = key

    if not keys:
        raise Forbidden("the admin API is disabled; set GATEKEEP_ADMIN_API_KEYS and restart")
    if missing:
        raise Unauthorized(
            "missing admin key; send the header 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if matched is None:
        raise Forbidden("the admin key is not valid; check GATEKEEP_ADMIN_API_KEYS")
    return key_id(matched)


async def guard(request: Request) -> str:
    """Apply the admin rate limits and check the admin key; return the key id.

    The per-address limit comes first, so guessing keys is rate limited too.
    """
    limiter = request_limiter(request)
    await limiter.check(request, "admin")
    by_key = authorize(request)
    await limiter.check(request, "admin", key=by_key)
    return by_key


def audit(
    action: str,
    by_key: str,
    event_id: str | None,
    before: object,
    after: object,
) -> None:
    """Write the one audit line of an admin action that changed state.

    `before` and `after` are JSON-ready values; they never contain secrets, because codes and
    keys are stored and logged only as ids.
    """
    metrics.ADMIN_ACTIONS.labels(action).inc()
    logger.info(
        "admin.audit action=%s key_id=%s event_id=%s before=%s after=%s",
        action,
        by_key,
        event_id,
        orjson.dumps(before).decode(),
        orjson.dumps(after).decode(),
    )


async def put_event(request: Request) -> JSONResponse:
    by_key = await guard(request)
    app = services(request)
    event_id = check_id("event_id", request.path_params["event_id"])
    document = await read_json_object(request, app.settings.max_body_bytes)
    config = EventConfig.from_dict(document, event_id=event_id)
    _check_webhooks_signable(request, config)

    before = await app.store.get_event(event_id)
    stored = await app.store.put_event(config)
    if before is None:
        request.app.state.release_loop.refresh_events()
    audit("put_event", by_key, event_id, _loggable(before) if before else None, _loggable(stored))
    if before is not None and before.paused != stored.paused:
        _emit_pause_webhook(request, event_id, stored.paused, by_key)
    return JSONResponse(stored.to_dict(), status_code=200 if before else 201)


async def get_event(request: Request) -> JSONResponse:
    await guard(request)
    event_id = check_id("event_id", request.path_params["event_id"])
    config = await services(request).store.get_event(event_id)
    if config is None:
        raise EventNotFound(event_id)
    return JSONResponse(config.to_dict())


async def list_events(request: Request) -> JSONResponse:
    await guard(request)
    store = services(request).store
    events = []
    for event_id in await store.list_event_ids():
        config = await store.get_event(event_id)
        if config is not None:
            events.append(config.to_dict())
    return JSONResponse({"events": events})


async def _set_paused(request: Request, paused: bool) -> JSONResponse:
    by_key = await guard(request)
    event_id = check_id("event_id", request.path_params["event_id"])
    store = services(request).store
    # Read first so that the webhook goes out only when the state changes. A concurrent pause
    # from another process can slip in between, and then both send it.
    before = await store.get_event(event_id)
    stored = await store.set_paused(event_id, paused)
    audit(
        "pause" if paused else "resume",
        by_key,
        event_id,
        {"paused": before.paused if before else None},
        {"paused": stored.paused},
    )
    if before is not None and before.paused != paused:
        _emit_pause_webhook(request, event_id, paused, by_key)
    return JSONResponse(stored.to_dict())


async def webhook_failures(request: Request) -> JSONResponse:
    await guard(request)
    event_id = check_id("event_id", request.path_params["event_id"])
    store = services(request).store
    if await store.get_event(event_id) is None:
        raise EventNotFound(event_id)
    failures = await store.webhook_failures(event_id)
    return JSONResponse(
        {"event_id": event_id, "failures": [failure.to_dict() for failure in failures]}
    )


def _emit_pause_webhook(request: Request, event_id: str, paused: bool, by_key: str) -> None:
    dispatcher: WebhookDispatcher | None = getattr(request.app.state, "webhooks", None)
    if dispatcher is not None:
        dispatcher.emit(event_id, "paused" if paused else "resumed", {"key_id": by_key})


def _loggable(config: EventConfig) -> dict[str, Any]:
    """Return the config for a log line, with webhook URLs reduced to url_label's form."""
    data = config.to_dict()
    data["webhooks"] = {kind: url_label(url) for kind, url in config.webhooks}
    return data


async def pause(request: Request) -> JSONResponse:
    return await _set_paused(request, True)


async def resume(request: Request) -> JSONResponse:
    return await _set_paused(request, False)


async def patch_event(request: Request) -> JSONResponse:
    """Change some fields of an event; the others keep their stored values."""
    by_key = await guard(request)
    app = services(request)
    event_id = check_id("event_id", request.path_params["event_id"])
    changes = await read_json_object(request, app.settings.max_body_bytes)

    before = await app.store.get_event(event_id)
    if before is None:
        raise EventNotFound(event_id)
    config = EventConfig.from_dict({**before.to_dict(), **changes}, event_id=event_id)
    _check_webhooks_signable(request, config)
    stored = await app.store.put_event(config)
    audit("patch_event", by_key, event_id, _loggable(before), _loggable(stored))
    if before.paused != stored.paused:
        _emit_pause_webhook(request, event_id, stored.paused, by_key)
    return JSONResponse(stored.to_dict())


async def delete_event(request: Request) -> JSONResponse:
    by_key = await guard(request)
    event_id = check_id("event_id", request.path_params["event_id"])
    store = services(request).store
    before = await store.get_event(event_id)
    if before is None:
        raise EventNotFound(event_id)

    waiting, admitted = await store.delete_event(event_id)
    audit("delete_event", by_key, event_id, _loggable(before), None)
    return JSONResponse(
        {
            "event_id": event_id,
            "deleted": True,
            "dropped_waiting": waiting,
            "dropped_admitted": admitted,
        }
    )


async def reset_event(request: Request) -> JSONResponse:
    """Drop an event's whole queue and sessions; the body must repeat the event id."""
    by_key = await guard(request)
    app = services(request)
    event_id = check_id("event_id", request.path_params["event_id"])
    document = await read_json_object(request, app.settings.max_body_bytes)
    reject_unknown_fields(document, frozenset({"confirm"}))
    if document.get("confirm") != event_id:
        raise InvalidInput(
            "confirm", f'a reset drops every queue entry; send {{"confirm": {event_id!r}}}'
        )

    before = (await app.store.event_stats(event_id)).to_dict()
    waiting, admitted = await app.store.reset_event(event_id)
    after = (await app.store.event_stats(event_id)).to_dict()
    audit("reset_event", by_key, event_id, before, after)
    return JSONResponse(
        {
            "event_id": event_id,
            "reset": True,
            "dropped_waiting": waiting,
            "dropped_admitted": admitted,
        }
    )


async def event_stats(request: Request) -> JSONResponse:
    await guard(request)
    event_id = check_id("event_id", request.path_params["event_id"])
    stats = await services(request).store.event_stats(event_id)
    return JSONResponse(stats.to_dict())


async def metrics_summary(request: Request) -> JSONResponse:
    """Return the stats of every event in one document."""
    await guard(request)
    store = services(request).store
    events = []
    for event_id in await store.list_event_ids():
        try:
            events.append((await store.event_stats(event_id)).to_dict())
        except EventNotFound:
            # Deleted between the listing and the read; the summary omits it.
            logger.info("admin.metrics_event_gone event_id=%s", event_id)
    return JSONResponse({"events": events})


async def inspect_entry(request: Request) -> JSONResponse:
    """Return one queue entry as operators see it, without counting a heartbeat."""
    await guard(request)
    queue_id = request.path_params["queue_id"]
    snapshot = await services(request).store.inspect_entry(event_id_of(queue_id), queue_id)
    entry = snapshot.entry
    return JSONResponse(
        {
            "queue_id": entry.queue_id,
            "event_id": entry.event_id,
            "status": entry.status.value,
            "position": snapshot.position,
            "bucket": entry.bucket,
            "device_id": entry.device_id,
            "user_id": entry.user_id,
            "token_id": entry.token_id,
            "joined_at_ms": entry.joined_at_ms,
            "last_heartbeat_ms": entry.last_heartbeat_ms,
            "admitted_at_ms": entry.admitted_at_ms,
            "session_expires_at_ms": entry.session_expires_at_ms,
            "ended_at_ms": entry.ended_at_ms,
        }
    )


PRIORITY_CODE_FIELDS = frozenset({"bucket", "max_uses", "count"})


async def create_priority_codes(request: Request) -> JSONResponse:
    """Create `count` codes for one bucket; the codes appear in this response only."""
    by_key = await guard(request)
    app = services(request)
    event_id = check_id("event_id", request.path_params["event_id"])
    document = await read_json_object(request, app.settings.max_body_bytes)
    reject_unknown_fields(document, PRIORITY_CODE_FIELDS)
    if "bucket" not in document:
        raise InvalidInput("bucket", "missing; name the bucket the codes put their holder in")
    bucket = check_id("bucket", document["bucket"])
    max_uses = _whole_number(document, "max_uses", 1, 0, 1_000_000)
    count = _whole_number(document, "count", 1, 1, MAX_CODES_PER_CALL)

    now_ms = await app.store.now_ms()
    secrets_by_id: dict[str, str] = {}
    codes = []
    for _ in range(count):
        code = new_code()
        code_id = code_id_of(code)
        secrets_by_id[code_id] = code
        codes.append(
            PriorityCode(
                code_id=code_id,
                code_hash=hash_code(code),
                bucket=bucket,
                max_uses=max_uses,
                uses=0,
                disabled=False,
                created_at_ms=now_ms,
            )
        )
    await app.store.put_priority_codes(event_id, codes)
    audit(
        "create_priority_codes",
        by_key,
        event_id,
        None,
        {"bucket": bucket, "max_uses": max_uses, "code_ids": [code.code_id for code in codes]},
    )
    body = [{"code": secrets_by_id[code.code_id], **code.to_public()} for code in codes]
    return JSONResponse({"event_id": event_id, "codes": body}, status_code=201)


async def list_priority_codes(request: Request) -> JSONResponse:
    await guard(request)
    event_id = check_id("event_id", request.path_params["event_id"])
    codes = await services(request).store.list_priority_codes(event_id)
    return JSONResponse({"event_id": event_id, "codes": [code.to_public() for code in codes]})


async def disable_priority_code(request: Request) -> JSONResponse:
    by_key = await guard(request)
    event_id = check_id("event_id", request.path_params["event_id"])
    code_id = request.path_params["code_id"]
    if not CODE_ID_PATTERN.fullmatch(code_id):
        raise InvalidInput("code_id", "expected the 16 hex digits that the code listing shows")
    store = services(request).store
    before = await store.get_priority_code(event_id, code_id)
    stored = await store.disable_priority_code(event_id, code_id)
    audit(
        "disable_priority_code",
        by_key,
        event_id,
        before.to_public() if before else None,
        stored.to_public(),
    )
    return JSONResponse(stored.to_public())


def _whole_number(document: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = document.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(name, f"expected a whole number from {low} to {high}, got {value!r}")
    return value


def _check_webhooks_signable(request: Request, config: EventConfig) -> None:
    if config.webhooks and services(request).settings.webhook_secret is None:
        raise InvalidInput(
            "webhooks",
            "GATEKEEP_WEBHOOK_SECRET is not set, so payloads cannot be signed; set it (at least "
            "32 random bytes) and restart, or remove the webhooks",
        )


routes = [
    Route("/admin/events", list_events, methods=["GET"]),
    Route("/admin/events/{event_id}", put_event, methods=["PUT"]),
    Route("/admin/events/{event_id}", get_event, methods=["GET"]),
    Route("/admin/events/{event_id}/pause", pause, methods=["POST"]),
    Route("/admin/events/{event_id}/resume", resume, methods=["POST"]),
    Route("/admin/events/{event_id}/webhook-failures", webhook_failures, methods=["GET"]),
    Route("/admin/events/{event_id}", patch_event, methods=["PATCH"]),
    Route("/admin/events/{event_id}", delete_event, methods=["DELETE"]),
    Route("/admin/events/{event_id}/reset", reset_event, methods=["POST"]),
    Route("/admin/events/{event_id}/stats", event_stats, methods=["GET"]),
    Route("/admin/events/{event_id}/priority-codes", create_priority_codes, methods=["POST"]),
    Route("/admin/events/{event_id}/priority-codes", list_priority_codes, methods=["GET"]),
    Route(
        "/admin/events/{event_id}/priority-codes/{code_id}/disable",
        disable_priority_code,
        methods=["POST"],
    ),
    Route("/admin/queue/{queue_id}", inspect_entry, methods=["GET"]),
    Route("/admin/metrics", metrics_summary, methods=["GET"]),
]
