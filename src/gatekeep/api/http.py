"""Request parsing and response helpers shared by the client and admin routes."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope

from gatekeep.errors import BodyTooLarge, GatekeepError, InvalidInput, StoreUnavailable
from gatekeep.logs import request_id_var

logger = logging.getLogger(__name__)


class JSONResponse(Response):
    """A JSON response serialised with orjson."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(error: GatekeepError) -> JSONResponse:
    """Render an error in the one shape every endpoint uses."""
    body = {
        "error": {
            "code": error.code,
            "message": error.message,
            "request_id": request_id_var.get(),
        }
    }
    return JSONResponse(body, status_code=error.status_code, headers=error.headers)


def log_store_outage(error: GatekeepError) -> None:
    """Log a store outage that a request ran into; other errors are the client's."""
    if isinstance(error, StoreUnavailable):
        logger.warning(
            "store.unavailable operation=%s error=%s", error.operation, error.__cause__ or error
        )


async def read_json_object(
    request: Request, max_bytes: int, *, allow_empty: bool = False
) -> dict[str, Any]:
    """Read the body as one JSON object of at most `max_bytes`, or raise InvalidInput."""
    return await receive_json_object(request.scope, request.receive, max_bytes, allow_empty)


async def receive_json_object(
    scope: Scope, receive: Receive, max_bytes: int, allow_empty: bool = False
) -> dict[str, Any]:
    """Receive an ASGI request body as one JSON object of at most `max_bytes`.

    Raises BodyTooLarge, or InvalidInput naming the body and what to send instead.
    """
    for name, value in scope["headers"]:
        if name == b"content-length":
            declared = value.decode("latin-1")
            if declared.isdigit() and int(declared) > max_bytes:
                raise BodyTooLarge(
                    "body", f"the body is {declared} bytes; send at most {max_bytes}"
                )

    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        body.extend(message.get("body", b""))
        if len(body) > max_bytes:
            raise BodyTooLarge("body", f"the body is over {max_bytes} bytes; send less")
        if not message.get("more_body", False):
            break

    if not body.strip():
        if allow_empty:
            return {}
        raise InvalidInput("body", "missing; send a JSON object")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidInput("body", f"malformed JSON ({error.msg} at byte {error.pos})") from None
    if not isinstance(document, dict):
        raise InvalidInput("body", f"expected a JSON object, got a JSON {_json_kind(document)}")
    return document


def _json_kind(value: object) -> str:
    """Return the JSON name of a decoded value's kind: array, string, number, boolean or null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "string" if isinstance(value, str) else "array"


def reject_unknown_fields(document: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(document) - allowed)
    if unknown:
        names = ", ".join(sorted(allowed)) or "none"
        raise InvalidInput(unknown[0][:64], f"unknown field; allowed fields are {names}")


def optional_string(document: dict[str, Any], name: str) -> str | None:
    value = document.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidInput(name, f"expected a string or null, got {type(value).__name__}")
    return value
