"""The OpenAPI 3.1 document of the client, token and admin APIs, served at /openapi.json.

Written by hand from the handlers. `tests/test_openapi.py` keeps it true: every route of the
app must appear here, and schemathesis calls every operation against a live service and checks
each response against this document.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from gatekeep import __version__
from gatekeep.api.http import JSONResponse
from gatekeep.model import (
    EVENT_FIELDS,
    ID_PATTERN,
    MAX_BUCKETS,
    MAX_SESSION_S,
    MAX_STOCK,
    EntryStatus,
    QueueMode,
)
from gatekeep.queue import QUEUE_ID_PATTERN

JSON = "application/json"
Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


ID_SCHEMA: Schema = {"type": "string", "pattern": f"^{ID_PATTERN.pattern}$"}
QUEUE_ID_SCHEMA: Schema = {"type": "string", "pattern": f"^{QUEUE_ID_PATTERN.pattern}$"}
INTEGER: Schema = {"type": "integer"}
NUMBER: Schema = {"type": "number"}
STRING: Schema = {"type": "string"}
BOOLEAN: Schema = {"type": "boolean"}

RATE_LIMIT_HEADERS: dict[str, Any] = {
    "RateLimit-Limit": {"description": "Requests allowed in the window", "schema": STRING},
    "RateLimit-Remaining": {"description": "Requests left in the window", "schema": STRING},
    "RateLimit-Reset": {"description": "Seconds until the window resets", "schema": STRING},
}

# Typed fields of an event document. Fields other features add to EventConfig appear with an
# open schema (see `_event_config_schema`), so the document never omits an accepted field.
EVENT_FIELD_SCHEMAS: dict[str, Schema] = {
    "event_id": ID_SCHEMA,
    "enabled": BOOLEAN,
    "paused": BOOLEAN,
    "max_queue_size": {"type": "integer", "minimum": 1, "maximum": 10_000_000},
    "max_capacity": {"type": "integer", "minimum": 1, "maximum": 10_000_000},
    "release_rate": {"type": "number", "minimum": 0.001, "maximum": 100_000},
    "session_ttl_s": {"type": "number", "minimum": 1, "maximum": 86_400},
    "heartbeat_timeout_s": {"type": "number", "minimum": 1, "maximum": 86_400},
    "buckets": {
        "type": "array",
        "items": ID_SCHEMA,
        "minItems": 1,
        "maxItems": MAX_BUCKETS,
        "uniqueItems": True,
    },
    "rate_limits": {
        "type": "object",
        "description": 'Per-event rate limits, such as {"join.ip": "60/minute"} or "off"',
        "additionalProperties": STRING,
    },
    "opens_at": _nullable({"type": "string", "description": "ISO 8601 UTC, such as ...Z"}),
    "closes_at": _nullable({"type": "string", "description": "ISO 8601 UTC, after opens_at"}),
    "mode": {"enum": [mode.value for mode in QueueMode]},
    "stock": _nullable({"type": "integer", "minimum": 0, "maximum": MAX_STOCK}),
    "max_session_s": _nullable({"type": "number", "maximum": MAX_SESSION_S}),
}


def _event_config_schema(*, request: bool) -> Schema:
    properties = {name: EVENT_FIELD_SCHEMAS.get(name, {}) for name in sorted(EVENT_FIELDS)}
    schema: Schema = {"type": "object", "properties": properties}
    if request:
        schema["additionalProperties"] = False
    else:
        schema["required"] = sorted(set(EVENT_FIELD_SCHEMAS) & EVENT_FIELDS)
    return schema


SCHEMAS: dict[str, Schema] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "request_id"],
                "properties": {
                    "code": STRING,
                    "message": STRING,
                    "request_id": _nullable(STRING),
                },
            }
        },
    },
    "Entry": {
        "type": "object",
        "required": [
            "queue_id",
            "event_id",
            "status",
            "position",
            "eta_s",
            "poll_after_ms",
            "token",
            "bucket",
            "joined_at_ms",
        ],
        "properties": {
            "queue_id": QUEUE_ID_SCHEMA,
            "event_id": ID_SCHEMA,
            "status": {"enum": [status.value for status in EntryStatus]},
            "position": _nullable({"type": "integer", "minimum": 1}),
            "eta_s": _nullable(NUMBER),
            "poll_after_ms": _nullable(INTEGER),
            "token": _nullable(STRING),
            "bucket": STRING,
            "joined_at_ms": INTEGER,
            "admitted_at_ms": _nullable(INTEGER),
            "session_expires_at_ms": _nullable(INTEGER),
            "ticket_id": STRING,
            "opens_in_s": _nullable(NUMBER),
        },
    },
    "EventState": {
        "type": "object",
        "required": ["event_id", "state", "waiting", "release_rate", "observed_release_rate"],
        "properties": {
            "event_id": ID_SCHEMA,
            "state": STRING,
            "waiting": INTEGER,
            "release_rate": NUMBER,
            "observed_release_rate": _nullable(NUMBER),
            "max_capacity": INTEGER,
            "heartbeat_timeout_s": NUMBER,
            "admitted_active": INTEGER,
        },
    },
    "EventConfig": _event_config_schema(request=False),
    "EventConfigInput": _event_config_schema(request=True),
    "EventStats": {
        "type": "object",
        "required": [
            "event_id",
            "waiting",
            "waiting_by_bucket",
            "admitted_active",
            "released_total",
            "expired_total",
            "left_total",
            "observed_release_rate",
            "wait_median_s",
            "wait_p90_s",
        ],
        "properties": {
            "event_id": ID_SCHEMA,
            "paused": BOOLEAN,
            "enabled": BOOLEAN,
            "waiting": INTEGER,
            "waiting_by_bucket": {"type": "object", "additionalProperties": INTEGER},
            "admitted_active": INTEGER,
            "max_capacity": INTEGER,
            "released_total": INTEGER,
            "expired_total": INTEGER,
            "left_total": INTEGER,
            "release_rate": NUMBER,
            "observed_release_rate": _nullable(NUMBER),
            "wait_samples": INTEGER,
            "wait_median_s": _nullable(NUMBER),
            "wait_p90_s": _nullable(NUMBER),
        },
    },
    "AdminEntry": {
        "type": "object",
        "required": ["queue_id", "event_id", "status", "position", "bucket", "device_id"],
        "properties": {
            "queue_id": QUEUE_ID_SCHEMA,
            "event_id": ID_SCHEMA,
            "status": {"enum": [status.value for status in EntryStatus]},
            "position": _nullable(INTEGER),
            "bucket": STRING,
            "device_id": STRING,
            "user_id": _nullable(STRING),
            "token_id": STRING,
            "joined_at_ms": INTEGER,
            "last_heartbeat_ms": INTEGER,
            "admitted_at_ms": _nullable(INTEGER),
            "session_expires_at_ms": _nullable(INTEGER),
            "ended_at_ms": _nullable(INTEGER),
        },
    },
    "PriorityCode": {
        "type": "object",
        "required": ["code_id", "bucket", "max_uses", "uses", "disabled", "created_at_ms"],
        "properties": {
            "code": {"type": "string", "description": "The code itself; only at creation"},
            "code_id": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
            "bucket": STRING,
            "max_uses": {"type": "integer", "description": "0 = unlimited"},
            "uses": INTEGER,
            "disabled": BOOLEAN,
            "created_at_ms": INTEGER,
        },
    },
    "Dropped": {
        "type": "object",
        "required": ["event_id", "dropped_waiting", "dropped_admitted"],
        "properties": {
            "event_id": ID_SCHEMA,
            "deleted": BOOLEAN,
            "reset": BOOLEAN,
            "dropped_waiting": INTEGER,
            "dropped_admitted": INTEGER,
        },
    },
    "Object": {"type": "object"},
}


def _json_body(schema: Schema, *, required: bool = True) -> Schema:
    return {"required": required, "content": {JSON: {"schema": schema}}}


def _responses(
    status: str,
    description: str,
    schema: Schema | None,
    *,
    media_type: str = JSON,
    headers: dict[str, Any] | None = None,
    extra_status: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Return the success response(s) and the shared error shape for every other status."""
    success: dict[str, Any] = {"description": description}
    if schema is not None:
        success["content"] = {media_type: {"schema": schema}}
    if headers:
        success["headers"] = headers
    responses = {status: success}
    for other in extra_status:
        responses[other] = success
    responses["default"] = {
        "description": "An error; `code` says which (see the README's error table)",
        "content": {JSON: {"schema": _ref("Error")}},
    }
    return responses


def _page_responses(content: dict[str, Any] | None) -> dict[str, Any]:
    """Return the responses of a browser route: its content, and errors as HTML, text or JSON."""
    success: dict[str, Any] = {"description": "The resource"}
    if content is not None:
        success["content"] = content
    error_content = {
        "text/html": {"schema": STRING},
        "text/plain": {"schema": STRING},
        JSON: {"schema": _ref("Error")},
    }
    return {"200": success, "default": {"description": "An error", "content": error_content}}


def _operation(
    operation_id: str,
    summary: str,
    responses: dict[str, Any],
    *,
    tag: str,
    parameters: list[str] = (),  # type: ignore[assignment]
    body: Schema | None = None,
    security: str | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        "responses": responses,
    }
    if parameters:
        operation["parameters"] = [
            {"$ref": f"#/components/parameters/{name}"} for name in parameters
        ]
    if body is not None:
        operation["requestBody"] = body
    if security is not None:
        operation["security"] = [{security: []}]
    return operation


def _admin(operation_id: str, summary: str, responses: dict[str, Any], **kwargs: Any) -> Any:
    return _operation(operation_id, summary, responses, tag="admin", security="adminKey", **kwargs)


JOIN_BODY: Schema = {
    "type": "object",
    "required": ["device_id"],
    "additionalProperties": False,
    "properties": {
        "device_id": ID_SCHEMA,
        "user_id": _nullable(ID_SCHEMA),
        "priority_grant": _nullable(STRING),
        "priority_code": _nullable(STRING),
    },
}


def _paths() -> dict[str, Any]:
    entry = _ref("Entry")
    event_config = _ref("EventConfig")
    return {
        "/health": {
            "get": _operation(
                "health", "Process is alive", _responses("200", "Alive", _ref("Object")), tag="ops"
            )
        },
        "/ready": {
            "get": _operation(
                "ready",
                "Store is reachable (503 when not)",
                _responses("200", "Ready", _ref("Object")),
                tag="ops",
            )
        },
        "/openapi.json": {
            "get": _operation(
                "openapi",
                "This document",
                _responses("200", "OpenAPI 3.1", _ref("Object")),
                tag="ops",
            )
        },
        "/v1/events/{event_id}/join": {
            "post": _operation(
                "join",
                "Join an event's queue (201 new entry, 200 the device's live entry)",
                _responses(
                    "201", "The entry", entry, headers=RATE_LIMIT_HEADERS, extra_status=("200",)
                ),
                tag="client",
                parameters=["event_id"],
                body=_json_body(JOIN_BODY),
            )
        },
        "/v1/events/{event_id}": {
            "get": _operation(
                "event_state",
                "An event's public state",
                _responses("200", "The event", _ref("EventState")),
                tag="client",
                parameters=["event_id"],
            )
        },
        "/v1/queue/{queue_id}": {
            "get": _operation(
                "status",
                "The entry; counts as a heartbeat",
                _responses("200", "The entry", entry, headers=RATE_LIMIT_HEADERS),
                tag="client",
                parameters=["queue_id"],
            ),
            "delete": _operation(
                "leave",
                "Leave the queue or end the admitted session",
                _responses("200", "The ended entry", entry),
                tag="client",
                parameters=["queue_id"],
            ),
        },
        "/v1/queue/{queue_id}/heartbeat": {
            "post": _operation(
                "heartbeat",
                "Keep a waiting entry alive",
                _responses("200", "The entry", entry, headers=RATE_LIMIT_HEADERS),
                tag="client",
                parameters=["queue_id"],
                body=_json_body({"type": "object", "additionalProperties": False}, required=False),
            )
        },
        "/v1/queue/{queue_id}/events": {
            "get": _operation(
                "entry_events",
                "Server-sent events with the entry's updates",
                _responses("200", "An event stream", STRING, media_type="text/event-stream"),
                tag="client",
                parameters=["queue_id"],
            )
        },
        "/wait/{event_id}": {
            "get": _operation(
                "wait_page",
                "The hosted waiting-room page (an HTML error page when the event is unknown)",
                _page_responses({"text/html": {"schema": STRING}}),
                tag="page",
                parameters=["event_id"],
            )
        },
        "/sdk/gatekeep.js": {
            "get": _operation(
                "sdk",
                "The browser SDK, an ES module",
                _page_responses({"text/javascript": {"schema": STRING}}),
                tag="page",
            )
        },
        "/static/{name}": {
            "get": _operation(
                "static_asset",
                "A static asset of the hosted page (its type follows the file name)",
                _page_responses(None),
                tag="page",
                parameters=["name"],
            )
        },
        "/.well-known/jwks.json": {
            "get": _operation(
                "jwks",
                "Public keys that verify admission tokens",
                _responses("200", "JWK set", _ref("Object")),
                tag="tokens",
            )
        },
        "/v1/tokens/consume": {
            "post": _operation(
                "consume_token",
                "Mark an admission token used (origin or admin key)",
                _responses("200", "Token state", _ref("Object")),
                tag="tokens",
                body=_json_body(_ref("Object")),
                security="originKey",
            )
        },
        "/v1/tokens/introspect": {
            "post": _operation(
                "introspect_token",
                "Read an admission token's state (origin or admin key)",
                _responses("200", "Token state", _ref("Object")),
                tag="tokens",
                body=_json_body(_ref("Object")),
                security="originKey",
            )
        },
        "/admin/tokens/revoke": {
            "post": _admin(
                "revoke_tokens",
                "Revoke one token, a device's tokens or an event's tokens",
                _responses("200", "What was revoked", _ref("Object")),
                body=_json_body(_ref("Object")),
            )
        },
        "/admin/events": {
            "get": _admin(
                "list_events",
                "Every event",
                _responses(
                    "200",
                    "The events",
                    {
                        "type": "object",
                        "required": ["events"],
                        "properties": {"events": {"type": "array", "items": event_config}},
                    },
                ),
            )
        },
        "/admin/events/{event_id}": {
            "get": _admin(
                "get_event",
                "The stored event",
                _responses("200", "The event", event_config),
                parameters=["event_id"],
            ),
            "put": _admin(
                "put_event",
                "Create (201) or replace (200) an event",
                _responses("200", "The stored event", event_config, extra_status=("201",)),
                parameters=["event_id"],
                body=_json_body(_ref("EventConfigInput")),
            ),
            "patch": _admin(
                "patch_event",
                "Change some fields of an event",
                _responses("200", "The stored event", event_config),
                parameters=["event_id"],
                body=_json_body(_ref("EventConfigInput")),
            ),
            "delete": _admin(
                "delete_event",
                "Delete an event with its queue, sessions and priority codes",
                _responses("200", "What was dropped", _ref("Dropped")),
                parameters=["event_id"],
            ),
        },
        "/admin/events/{event_id}/pause": {
            "post": _admin(
                "pause",
                "Stop releases; joins still queue",
                _responses("200", "The stored event", event_config),
                parameters=["event_id"],
            )
        },
        "/admin/events/{event_id}/resume": {
            "post": _admin(
                "resume",
                "Restart releases",
                _responses("200", "The stored event", event_config),
                parameters=["event_id"],
            )
        },
        "/admin/events/{event_id}/reset": {
            "post": _admin(
                "reset_event",
                "Drop every entry and session; the body must repeat the event id",
                _responses("200", "What was dropped", _ref("Dropped")),
                parameters=["event_id"],
                body=_json_body(
                    {
                        "type": "object",
                        "required": ["confirm"],
                        "additionalProperties": False,
                        "properties": {"confirm": ID_SCHEMA},
                    }
                ),
            )
        },
        "/admin/events/{event_id}/stats": {
            "get": _admin(
                "event_stats",
                "Counts by bucket, totals, observed rate, wait median and p90",
                _responses("200", "The stats", _ref("EventStats")),
                parameters=["event_id"],
            )
        },
        "/admin/events/{event_id}/webhook-failures": {
            "get": _admin(
                "webhook_failures",
                "Recent webhook messages that failed",
                _responses("200", "The failures", _ref("Object")),
                parameters=["event_id"],
            )
        },
        "/admin/events/{event_id}/priority-codes": {
            "post": _admin(
                "create_priority_codes",
                "Create codes that put their holder in a bucket; shown only here",
                _responses(
                    "201",
                    "The new codes",
                    {
                        "type": "object",
                        "required": ["codes"],
                        "properties": {
                            "event_id": ID_SCHEMA,
                            "codes": {"type": "array", "items": _ref("PriorityCode")},
                        },
                    },
                ),
                parameters=["event_id"],
                body=_json_body(
                    {
                        "type": "object",
                        "required": ["bucket"],
                        "additionalProperties": False,
                        "properties": {
                            "bucket": ID_SCHEMA,
                            "max_uses": {
                                "type": "integer",
                                "minimum": 0,
                                "maximum": 1_000_000,
                                "description": "1 = single use (default), 0 = unlimited",
                            },
                            "count": {"type": "integer", "minimum": 1, "maximum": 1000},
                        },
                    }
                ),
            ),
            "get": _admin(
                "list_priority_codes",
                "The event's priority codes, without the codes themselves",
                _responses(
                    "200",
                    "The codes",
                    {
                        "type": "object",
                        "required": ["codes"],
                        "properties": {
                            "event_id": ID_SCHEMA,
                            "codes": {"type": "array", "items": _ref("PriorityCode")},
                        },
                    },
                ),
                parameters=["event_id"],
            ),
        },
        "/admin/events/{event_id}/priority-codes/{code_id}/disable": {
            "post": _admin(
                "disable_priority_code",
                "Disable a priority code",
                _responses("200", "The disabled code", _ref("PriorityCode")),
                parameters=["event_id", "code_id"],
            )
        },
        "/v1/events/{event_id}/fairness": {
            "get": _operation(
                "fairness",
                "The event's published release commitment and state",
                _responses("200", "The publication", _ref("Object")),
                tag="client",
                parameters=["event_id"],
            )
        },
        "/admin/events/{event_id}/release": {
            "post": _admin(
                "release_now",
                "Admit up to `count` users now, within the capacity",
                _responses("200", "What was admitted", _ref("Object")),
                parameters=["event_id"],
                body=_json_body(
                    {
                        "type": "object",
                        "required": ["count"],
                        "additionalProperties": False,
                        "properties": {"count": {"type": "integer", "minimum": 1}},
                    }
                ),
            )
        },
        "/admin/events/{event_id}/stock": {
            "post": _admin(
                "adjust_stock",
                "Decrement the stock or set what remains",
                _responses("200", "The remaining stock", _ref("Object")),
                parameters=["event_id"],
                body=_json_body(
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "decrement": {"type": "integer", "minimum": 1},
                            "remaining": {"type": "integer", "minimum": 0},
                        },
                    }
                ),
            )
        },
        "/admin/events/{event_id}/release-state": {
            "get": _admin(
                "release_state",
                "Phase, schedule, mode, stock and admission-log length",
                _responses("200", "The controller state", _ref("Object")),
                parameters=["event_id"],
            )
        },
        "/admin/events/{event_id}/admission-log": {
            "get": _admin(
                "admission_log",
                "The admission log as JSON lines, oldest first",
                _responses("200", "JSON lines", STRING, media_type="application/x-ndjson"),
                parameters=["event_id"],
            )
        },
        "/admin/queue/{queue_id}": {
            "get": _admin(
                "inspect_entry",
                "One queue entry, without counting a heartbeat",
                _responses("200", "The entry", _ref("AdminEntry")),
                parameters=["queue_id"],
            )
        },
        "/admin/metrics": {
            "get": _admin(
                "metrics_summary",
                "The stats of every event",
                _responses(
                    "200",
                    "Every event's stats",
                    {
                        "type": "object",
                        "required": ["events"],
                        "properties": {"events": {"type": "array", "items": _ref("EventStats")}},
                    },
                ),
            )
        },
    }


def _path_parameter(name: str, schema: Schema) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def build_document() -> dict[str, Any]:
    """Return the OpenAPI 3.1 document as a JSON-ready dict."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Gatekeep",
            "version": __version__,
            "description": "A virtual waiting room: client, token and admin APIs.",
        },
        "paths": _paths(),
        "components": {
            "schemas": SCHEMAS,
            "parameters": {
                "event_id": _path_parameter("event_id", ID_SCHEMA),
                "queue_id": _path_parameter("queue_id", QUEUE_ID_SCHEMA),
                "code_id": _path_parameter(
                    "code_id", {"type": "string", "pattern": "^[0-9a-f]{16}$"}
                ),
                "name": _path_parameter(
                    "name", {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}
                ),
            },
            "securitySchemes": {
                "adminKey": {"type": "http", "scheme": "bearer", "description": "An admin key"},
                "originKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An origin key (GATEKEEP_ORIGIN_API_KEYS) or an admin key",
                },
            },
        },
    }


async def openapi_document(request: Request) -> JSONResponse:
    return JSONResponse(build_document())


routes = [Route("/openapi.json", openapi_document, methods=["GET"])]
