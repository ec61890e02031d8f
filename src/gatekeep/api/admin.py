"""Admin API under /admin: events and pause/resume, behind bearer admin keys."""

from __future__ import annotations

import hashlib
import hmac
import logging

from starlette.requests import Request
from starlette.routing import Route

from gatekeep.api.http import JSONResponse, read_json_object
from gatekeep.api.state import services
from gatekeep.errors import EventNotFound, Forbidden, Unauthorized
from gatekeep.model import EventConfig, check_id

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
    if scheme.lower() != "bearer" or not presented.strip():
        raise Unauthorized(
            "missing admin key; send the header 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )

    keys = services(request).settings.admin_api_keys
    if not keys:
        raise Forbidden("the admin API is disabled; set GATEKEEP_ADMIN_API_KEYS and restart")

    presented_bytes = presented.strip().encode()
    matched: str | None = None
    for key in keys:
        if hmac.compare_digest(presented_bytes, key.encode()):
            matched = key
    if matched is None:
        raise Forbidden("the admin key is not valid; check GATEKEEP_ADMIN_API_KEYS")
    return key_id(matched)


async def put_event(request: Request) -> JSONResponse:
    by_key = authorize(request)
    app = services(request)
    event_id = check_id("event_id", request.path_params["event_id"])
    document = await read_json_object(request, app.settings.max_body_bytes)
    config = EventConfig.from_dict(document, event_id=event_id)

    before = await app.store.get_event(event_id)
    stored = await app.store.put_event(config)
    logger.info(
        "admin.put_event event_id=%s key_id=%s before=%s after=%s",
        event_id,
        by_key,
        before.to_dict() if before else None,
        stored.to_dict(),
    )
    return JSONResponse(stored.to_dict(), status_code=200 if before else 201)


async def get_event(request: Request) -> JSONResponse:
    authorize(request)
    event_id = check_id("event_id", request.path_params["event_id"])
    config = await services(request).store.get_event(event_id)
    if config is None:
        raise EventNotFound(event_id)
    return JSONResponse(config.to_dict())


async def list_events(request: Request) -> JSONResponse:
    authorize(request)
    store = services(request).store
    events = []
    for event_id in await store.list_event_ids():
        config = await store.get_event(event_id)
        if config is not None:
            events.append(config.to_dict())
    return JSONResponse({"events": events})


async def _set_paused(request: Request, paused: bool) -> JSONResponse:
    by_key = authorize(request)
    event_id = check_id("event_id", request.path_params["event_id"])
    stored = await services(request).store.set_paused(event_id, paused)
    logger.info(
        "admin.%s event_id=%s key_id=%s",
        "pause" if paused else "resume",
        event_id,
        by_key,
    )
    return JSONResponse(stored.to_dict())


async def pause(request: Request) -> JSONResponse:
    return await _set_paused(request, True)


async def resume(request: Request) -> JSONResponse:
    return await _set_paused(request, False)


routes = [
    Route("/admin/events", list_events, methods=["GET"]),
    Route("/admin/events/{event_id}", put_event, methods=["PUT"]),
    Route("/admin/events/{event_id}", get_event, methods=["GET"]),
    Route("/admin/events/{event_id}/pause", pause, methods=["POST"]),
    Route("/admin/events/{event_id}/resume", resume, methods=["POST"]),
]
