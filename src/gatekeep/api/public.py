"""Client API under /v1: join, status, heartbeat, leave, and an event's public state."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from gatekeep import metrics
from gatekeep.api.http import JSONResponse, optional_string, read_json_object, reject_unknown_fields
from gatekeep.api.state import services
from gatekeep.errors import EventDisabled, GatekeepError, InvalidInput, QueueFull
from gatekeep.model import EventSnapshot
from gatekeep.queue import EntryView

JOIN_FIELDS = frozenset({"device_id", "user_id", "priority_grant"})


def entry_body(view: EntryView) -> dict[str, Any]:
    """Render an entry as every entry response shows it."""
    entry = view.snapshot.entry
    return {
        "queue_id": entry.queue_id,
        "event_id": entry.event_id,
        "status": entry.status.value,
        "position": view.snapshot.position,
        "eta_s": None if view.eta_s is None else round(view.eta_s, 1),
        "poll_after_ms": view.poll_after_ms,
        "token": view.token,
        "bucket": entry.bucket,
        "joined_at_ms": entry.joined_at_ms,
        "admitted_at_ms": entry.admitted_at_ms,
        "session_expires_at_ms": entry.session_expires_at_ms,
    }


def event_body(snapshot: EventSnapshot) -> dict[str, Any]:
    """Render the public state of an event: no queue ids, no totals beyond counts."""
    config = snapshot.config
    if not config.enabled:
        state = "closed"
    elif config.paused:
        state = "paused"
    else:
        state = "open"
    observed = snapshot.observed_rate_per_s
    return {
        "event_id": config.event_id,
        "state": state,
        "waiting": snapshot.waiting_count,
        "release_rate": config.release_rate,
        "observed_release_rate": None if observed is None else round(observed, 3),
        "max_capacity": config.max_capacity,
        "heartbeat_timeout_s": config.heartbeat_timeout_s,
        "admitted_active": snapshot.admitted_active,
    }


async def join(request: Request) -> JSONResponse:
    app = services(request)
    event_id = request.path_params["event_id"]
    try:
        document = await read_json_object(request, app.settings.max_body_bytes)
        reject_unknown_fields(document, JOIN_FIELDS)
        if "device_id" not in document:
            raise InvalidInput("device_id", "missing; send a stable id for this device")
        view = await app.queue.join(
            event_id,
            document["device_id"],
            optional_string(document, "user_id"),
            optional_string(document, "priority_grant"),
        )
    except GatekeepError as error:
        # Only a full queue or a closed event proves the event exists; any other failure is
        # counted without the id, so unknown ids cannot grow the label set.
        label = event_id if isinstance(error, QueueFull | EventDisabled) else ""
        metrics.JOINS.labels(label, error.code).inc()
        raise

    metrics.JOINS.labels(event_id, "created" if view.created else "existing").inc()
    return JSONResponse(entry_body(view), status_code=201 if view.created else 200)


async def status(request: Request) -> JSONResponse:
    view = await services(request).queue.status(request.path_params["queue_id"])
    return JSONResponse(entry_body(view))


async def heartbeat(request: Request) -> JSONResponse:
    app = services(request)
    document = await read_json_object(request, app.settings.max_body_bytes, allow_empty=True)
    reject_unknown_fields(document, frozenset())
    view = await app.queue.heartbeat(request.path_params["queue_id"])
    return JSONResponse(entry_body(view))


async def leave(request: Request) -> JSONResponse:
    view = await services(request).queue.leave(request.path_params["queue_id"])
    metrics.LEAVES.labels(view.snapshot.entry.event_id).inc()
    return JSONResponse(entry_body(view))


async def event_state(request: Request) -> JSONResponse:
    snapshot = await services(request).queue.event_state(request.path_params["event_id"])
    return JSONResponse(event_body(snapshot))


routes = [
    Route("/v1/events/{event_id}/join", join, methods=["POST"]),
    Route("/v1/events/{event_id}", event_state, methods=["GET"]),
    Route("/v1/queue/{queue_id}", status, methods=["GET"]),
    Route("/v1/queue/{queue_id}", leave, methods=["DELETE"]),
    Route("/v1/queue/{queue_id}/heartbeat", heartbeat, methods=["POST"]),
]
