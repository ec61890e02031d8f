"""Token routes: the public JWKS, consume and introspect for origins, and admin revocation.

Consume and introspect take an origin key (`GATEKEEP_ORIGIN_API_KEYS`) or an admin key as
`Authorization: Bearer <key>`. Origin keys can do nothing else, so an origin never needs an
admin key.
"""

from __future__ import annotations

import hmac
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gatekeep.api.admin import audit, guard, key_id
from gatekeep.api.http import JSONResponse, optional_string, read_json_object, reject_unknown_fields
from gatekeep.api.state import services
from gatekeep.errors import Forbidden, InvalidInput, Unauthorized
from gatekeep.model import check_id
from gatekeep.tokens.service import TokenService

# How long origins and proxies may cache the JWKS. A new key must be published at least this
# long before it signs, which the rotation steps in docs/tokens.md allow for.
JWKS_MAX_AGE_S = 300

CONSUME_FIELDS = frozenset({"token", "device_id", "event_id", "jti"})
INTROSPECT_FIELDS = frozenset({"token", "device_id"})
REVOKE_FIELDS = frozenset({"jti", "device_id", "event_id"})


def token_service(request: Request) -> TokenService:
    result: TokenService = request.app.state.tokens
    return result


def authorize_origin(request: Request) -> str:
    """Check the bearer origin or admin key in constant time; return its key id.

    Every configured key is compared, so the time taken does not reveal which one matched.
    """
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise Unauthorized(
            "missing origin key; send the header 'Authorization: Bearer <key>' with a key "
            "from GATEKEEP_ORIGIN_API_KEYS",
            headers={"WWW-Authenticate": "Bearer"},
        )

    settings = services(request).settings
    keys = (*settings.origin_api_keys, *settings.admin_api_keys)
    if not keys:
        raise Forbidden(
            "token consume and introspect are disabled; set GATEKEEP_ORIGIN_API_KEYS and restart"
        )

    presented_bytes = presented.strip().encode()
    matched: str | None = None
    for key in keys:
        if hmac.compare_digest(presented_bytes, key.encode()):
            matched = key
    if matched is None:
        raise Forbidden("the origin key is not valid; check GATEKEEP_ORIGIN_API_KEYS")
    return key_id(matched)


async def jwks(request: Request) -> Response:
    """Serve the public keys; `If-None-Match` with the current ETag gets 304."""
    tokens = token_service(request)
    headers = {
        "Cache-Control": f"public, max-age={JWKS_MAX_AGE_S}",
        "ETag": tokens.jwks_etag,
    }
    if tokens.jwks_etag in _etags(request.headers.get("if-none-match", "")):
        return Response(status_code=304, headers=headers)
    return Response(tokens.jwks_body, media_type="application/json", headers=headers)


def _etags(header: str) -> set[str]:
    tags = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return tags - {""}


async def consume(request: Request) -> JSONResponse:
    authorize_origin(request)
    document = await read_json_object(request, services(request).settings.max_body_bytes)
    reject_unknown_fields(document, CONSUME_FIELDS)
    device_id = _optional_id(document, "device_id")
    tokens = token_service(request)

    if "token" in document:
        if "jti" in document or "event_id" in document:
            raise InvalidInput("token", "send either token, or event_id and jti, not both")
        return JSONResponse(await tokens.consume(_token(document), device_id))

    if "jti" not in document or "event_id" not in document:
        raise InvalidInput("token", "missing; send the token, or event_id and jti")
    event_id = check_id("event_id", document["event_id"])
    jti = check_id("jti", document["jti"])
    return JSONResponse(await tokens.consume_jti(event_id, jti, device_id))


async def introspect(request: Request) -> JSONResponse:
    authorize_origin(request)
    document = await read_json_object(request, services(request).settings.max_body_bytes)
    reject_unknown_fields(document, INTROSPECT_FIELDS)
    device_id = _optional_id(document, "device_id")
    body = await token_service(request).introspect(_token(document), device_id)
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


async def revoke(request: Request) -> JSONResponse:
    by_key = await guard(request)
    document = await read_json_object(request, services(request).settings.max_body_bytes)
    reject_unknown_fields(document, REVOKE_FIELDS)
    jti = _optional_id(document, "jti")
    device_id = _optional_id(document, "device_id")
    event_id = _optional_id(document, "event_id")
    if jti is not None and device_id is not None:
        raise InvalidInput("device_id", "send jti or device_id, not both")
    if jti is None and device_id is None and event_id is None:
        raise InvalidInput("jti", "missing; send jti, device_id or event_id")

    result = await token_service(request).revoke(event_id=event_id, jti=jti, device_id=device_id)
    after = {"revoked_tokens": result.revoked_tokens, "ended_sessions": result.ended_sessions}
    target = {"jti": jti, "device_id": device_id, "event_id": event_id}
    audit("revoke_tokens", by_key, event_id, target, after)
    return JSONResponse(after)


def _token(document: dict[str, Any]) -> str:
    token = document.get("token")
    if not isinstance(token, str) or not token:
        raise InvalidInput("token", "missing or not a string; send the admission token")
    return token


def _optional_id(document: dict[str, Any], name: str) -> str | None:
    value = optional_string(document, name)
    return None if value is None else check_id(name, value)


routes = [
    Route("/.well-known/jwks.json", jwks, methods=["GET"]),
    Route("/v1/tokens/consume", consume, methods=["POST"]),
    Route("/v1/tokens/introspect", introspect, methods=["POST"]),
    Route("/admin/tokens/revoke", revoke, methods=["POST"]),
]
