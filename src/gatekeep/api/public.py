"""Client API under /v1: join, status, heartbeat, leave, and an event's public state."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Scope

from gatekeep import metrics
from gatekeep.api.http import JSONResponse, optional_string, read_json_object, reject_unknown_fields
from gatekeep.api.state import services
from gatekeep.errors import (
    EventClosed,
    EventDisabled,
    EventNotFound,
    GatekeepError,
    InvalidInput,
    JoinsRejected,
    QueueFull,
    RateLimited,
    SoldOut,
)
from gatekeep.fairness import ALGORITHM
from gatekeep.model import EventSnapshot, ReleasePhase, ReleaseState, check_id, format_utc_ms
from gatekeep.queue import EntryView, event_id_of, seconds_until_opening
from gatekeep.ratelimit import RequestLimiter, request_limiter
from gatekeep.ratewindow import WindowLimit

JOIN_FIELDS = frozenset({"device_id", "user_id", "priority_grant", "priority_code"})


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
        "ticket_id": entry.ticket_id,
        "opens_in_s": None if view.opens_in_s is None else round(view.opens_in_s, 1),
    }


def event_body(snapshot: EventSnapshot, release: ReleaseState | None = None) -> dict[str, Any]:
    """Render the public state of an event: no queue ids, no totals beyond counts.

    With the release controller's `release` state, `state` is also `scheduled`, `sold_out`
    or `closed` (after `closes_at`), and the schedule and stock are shown.
    """
    config = snapshot.config
    phase = release.phase if release is not None else ReleasePhase.OPEN
    if not config.enabled or phase == ReleasePhase.CLOSED:
        state = "closed"
    elif phase == ReleasePhase.SOLD_OUT:
        state = "sold_out"
    elif phase == ReleasePhase.SCHEDULED:
        state = "scheduled"
    elif config.paused:
        state = "paused"
    else:
        state = "open"
    observed = snapshot.observed_rate_per_s
    controller: dict[str, Any] = {}
    if release is not None:
        opens_in_s = seconds_until_opening(snapshot)
        controller = {
            "mode": config.mode.value,
            "opens_at": format_utc_ms(config.opens_at_ms),
            "closes_at": format_utc_ms(config.closes_at_ms),
            "opens_in_s": None if opens_in_s is None else round(opens_in_s, 1),
            "stock_remaining": release.stock_remaining,
        }
    return {
        **controller,
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
        limit_headers = await request_limiter(request).check(
            request,
            "join",
            event_id=check_id("event_id", event_id),
            device=_string_or_none(document["device_id"]),
            user=_string_or_none(document.get("user_id")),
        )
        view = await app.queue.join(
            event_id,
            document["device_id"],
            optional_string(document, "user_id"),
            optional_string(document, "priority_grant"),
            priority_code=optional_string(document, "priority_code"),
        )
    except GatekeepError as error:
        # Only these errors prove that the event exists. Any other failure is counted without
        # the id, so unknown ids cannot grow the label set.
        known_event = QueueFull | EventDisabled | EventClosed | SoldOut | JoinsRejected
        label = event_id if isinstance(error, known_event) else ""
        metrics.JOINS.labels(label, error.code).inc()
        raise

    metrics.JOINS.labels(event_id, "created" if view.created else "existing").inc()
    return JSONResponse(
        entry_body(view), status_code=201 if view.created else 200, headers=limit_headers
    )


async def status(request: Request) -> JSONResponse:
    queue_id = request.path_params["queue_id"]
    limiter = request_limiter(request)
    view = await entry_call(
        request.scope, limiter, "status", queue_id, services(request).queue.status
    )
    return JSONResponse(entry_body(view))


async def heartbeat(request: Request) -> JSONResponse:
    app = services(request)
    document = await read_json_object(request, app.settings.max_body_bytes, allow_empty=True)
    reject_unknown_fields(document, frozenset())
    queue_id = request.path_params["queue_id"]
    limiter = request_limiter(request)
    view = await entry_call(request.scope, limiter, "heartbeat", queue_id, app.queue.heartbeat)
    return JSONResponse(entry_body(view))


async def entry_call(
    scope: Scope,
    limiter: RequestLimiter,
    kind: str,
    queue_id: str,
    call: Callable[[str, Sequence[WindowLimit]], Awaitable[EntryView]],
) -> EntryView:
    """Run a status or heartbeat call, rate-limited by client IP and by queue entry.

    The store counts the limits inside the call itself. A malformed queue id is rejected with
    400 before any store call, so it counts against no limit.
    """
    event_id = event_id_of(queue_id)
    limits = await limiter.entry_limits(scope, kind, event_id, queue_id)
    try:
        view = await call(queue_id, limits)
    except RateLimited as rejected:
        metrics.RATE_LIMITED.labels(kind, rejected.limit_name.partition(".")[2]).inc()
        raise
    limiter.remember(scope, view.snapshot.limit)
    return view


def _string_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


async def leave(request: Request) -> JSONResponse:
    view = await services(request).queue.leave(request.path_params["queue_id"])
    metrics.LEAVES.labels(view.snapshot.entry.event_id).inc()
    return JSONResponse(entry_body(view))


async def event_state(request: Request) -> JSONResponse:
    snapshot = await services(request).queue.event_state(request.path_params["event_id"])
    release = await services(request).store.release_state(snapshot.config.event_id)
    return JSONResponse(event_body(snapshot, release))


async def fairness(request: Request) -> JSONResponse:
    """Return the fairness commitment before opening, and the revealed seed and order after."""
    event_id = check_id("event_id", request.path_params["event_id"])
    release = await services(request).store.release_state(event_id, with_publication=True)
    config = await services(request).store.get_event(event_id)
    if config is None:
        raise EventNotFound(event_id)
    if release.publication is not None:
        return JSONResponse({**release.publication, "state": release.phase.value})
    return JSONResponse(
        {
            "algorithm": ALGORITHM,
            "event_id": event_id,
            "state": release.phase.value,
            "opens_at": format_utc_ms(config.opens_at_ms),
            "commitment": release.commitment,
            "seed": None,
            "tickets": None,
        }
    )


routes = [
    Route("/v1/events/{event_id}/join", join, methods=["POST"]),
    Route("/v1/events/{event_id}", event_state, methods=["GET"]),
    Route("/v1/events/{event_id}/fairness", fairness, methods=["GET"]),
    Route("/v1/queue/{queue_id}", status, methods=["GET"]),
    Route("/v1/queue/{queue_id}", leave, methods=["DELETE"]),
    Route("/v1/queue/{queue_id}/heartbeat", heartbeat, methods=["POST"]),
]
