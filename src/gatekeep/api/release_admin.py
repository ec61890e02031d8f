"""Admin API of the release controller: manual release, stock, controller state, admission log."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from gatekeep import metrics
from gatekeep.api.admin import audit, guard
from gatekeep.api.http import JSONResponse, read_json_object, reject_unknown_fields
from gatekeep.api.state import services
from gatekeep.errors import EventNotFound, InvalidInput
from gatekeep.model import MAX_STOCK, check_id, format_utc_ms
from gatekeep.store.base import Store

# Maximum users one manual release may admit; the free capacity bounds it further.
MANUAL_RELEASE_MAX = 10_000

# Admission log records read from the store per page of the export.
LOG_PAGE_SIZE = 1000


def _whole_number(document: dict[str, object], name: str, low: int, high: int) -> int:
    value = document.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(name, f"expected a whole number from {low} to {high}, got {value!r}")
    return value


async def release_now(request: Request) -> JSONResponse:
    """Admit `count` users now, whatever the credit or pause, never beyond the capacity."""
    by_key = await guard(request)
    app = services(request)
    event_id = check_id("event_id", request.path_params["event_id"])
    document = await read_json_object(request, app.settings.max_body_bytes)
    reject_unknown_fields(document, frozenset({"count"}))
    count = _whole_number(document, "count", 1, MANUAL_RELEASE_MAX)

    result = await app.store.release_now(event_id, count)
    admitted = len(result.admitted_queue_ids)
    if admitted:
        metrics.ADMISSIONS.labels(event_id).inc(admitted)
    request.app.state.webhooks.emit_release(event_id, result)
    audit(
        "release",
        by_key,
        event_id,
        {"requested": count},
        {"admitted": admitted, "transitions": result.transitions},
    )
    return JSONResponse(
        {
            "event_id": event_id,
            "requested": count,
            "admitted": admitted,
            "transitions": result.transitions,
        }
    )


async def adjust_stock(request: Request) -> JSONResponse:
    """Decrement the stock (`{"decrement": N}`) or set it (`{"remaining": N}`)."""
    by_key = await guard(request)
    app = services(request)
    event_id = check_id("event_id", request.path_params["event_id"])
    document = await read_json_object(request, app.settings.max_body_bytes)
    reject_unknown_fields(document, frozenset({"decrement", "remaining"}))
    if ("decrement" in document) == ("remaining" in document):
        raise InvalidInput("body", "send exactly one of decrement and remaining")

    if "decrement" in document:
        decrement = _whole_number(document, "decrement", 1, MAX_STOCK)
        remaining = await app.store.adjust_stock(event_id, decrement=decrement)
    else:
        requested = _whole_number(document, "remaining", 0, MAX_STOCK)
        remaining = await app.store.adjust_stock(event_id, remaining=requested)
    audit("stock", by_key, event_id, document, {"stock_remaining": remaining})
    return JSONResponse(
        {"event_id": event_id, "stock_remaining": remaining, "sold_out": remaining == 0}
    )


async def release_state(request: Request) -> JSONResponse:
    """Return what the controller decides with: phase, schedule, mode, stock, log length."""
    await guard(request)
    store = services(request).store
    event_id = check_id("event_id", request.path_params["event_id"])
    state = await store.release_state(event_id)
    config = await store.get_event(event_id)
    if config is None:
        raise EventNotFound(event_id)
    return JSONResponse(
        {
            "event_id": event_id,
            "phase": state.phase.value,
            "paused": config.paused,
            "mode": config.mode.value,
            "opens_at": format_utc_ms(config.opens_at_ms),
            "closes_at": format_utc_ms(config.closes_at_ms),
            "opened_at": format_utc_ms(state.opened_at_ms),
            "stock_remaining": state.stock_remaining,
            "admission_log_length": state.admission_log_length,
            "commitment": state.commitment,
        }
    )


async def _log_lines(store: Store, event_id: str, start: int) -> AsyncIterator[bytes]:
    while True:
        records = await store.admission_log(event_id, start, LOG_PAGE_SIZE)
        if not records:
            return
        yield ("\n".join(records) + "\n").encode()
        start += len(records)


async def admission_log(request: Request) -> StreamingResponse:
    """Stream the admission log as JSON lines, oldest first; `?from=N` starts at record N."""
    await guard(request)
    store = services(request).store
    event_id = check_id("event_id", request.path_params["event_id"])
    first = request.query_params.get("from", "1")
    if not first.isdigit() or int(first) < 1:
        raise InvalidInput("from", f"expected a record number of at least 1, got {first[:20]!r}")
    await store.release_state(event_id)  # raises EventNotFound before the stream starts

    return StreamingResponse(
        _log_lines(store, event_id, int(first) - 1), media_type="application/x-ndjson"
    )


routes = [
    Route("/admin/events/{event_id}/release", release_now, methods=["POST"]),
    Route("/admin/events/{event_id}/stock", adjust_stock, methods=["POST"]),
    Route("/admin/events/{event_id}/release-state", release_state, methods=["GET"]),
    Route("/admin/events/{event_id}/admission-log", admission_log, methods=["GET"]),
]
