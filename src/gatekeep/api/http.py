"""Request parsing and response helpers shared by the client and admin routes."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gatekeep.errors import BodyTooLarge, GatekeepError, InvalidInput
from gatekeep.logs import request_id_var


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


async def read_json_object(
    request: Request, max_bytes: int, *, allow_empty: bool = False
) -> dict[str, Any]:
    """Read the body as one JSON object of at most `max_bytes`, or raise InvalidInput."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise BodyTooLarge("body", f"the body is {declared} bytes; send at most {max_bytes}")

    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > max_bytes:
            raise BodyTooLarge("body", f"the body is over {max_bytes} bytes; send less")

    if not body.strip():
        if allow_empty:
            return {}
        raise InvalidInput("body", "missing; send a JSON object")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidInput("body", f"malformed JSON ({error.msg} at byte {error.pos})") from None
    if not isinstance(document, dict):
        raise InvalidInput("body", f"expected a JSON object, got a JSON {type(document).__name__}")
    return document


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
