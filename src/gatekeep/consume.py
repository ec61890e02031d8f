"""Consume hooks for the origin middleware that call Gatekeep's `POST /v1/tokens/consume`.

    from gatekeep.consume import AsyncConsumeClient, ConsumeClient

    GatekeepASGIMiddleware(app, verifier=verifier, waiting_room_url=url,
                           consume=AsyncConsumeClient(gatekeep_url, origin_key))
    GatekeepWSGIMiddleware(app, verifier=verifier, waiting_room_url=url,
                           consume=ConsumeClient(gatekeep_url, origin_key))

The middleware has already verified the token, so the hook sends its `event_id`, `jti` and
`device_id` claims. It returns True when this call consumed the token and False when Gatekeep
rejects it (409: already consumed, revoked, session ended, unknown). Any other response, such
as 403 for a wrong key, or a service that cannot be reached, raises ConsumeFailed, so a
request is never let through unchecked. Needs `httpx`.
"""

from __future__ import annotations

from typing import Any

import httpx

CONSUME_PATH = "/v1/tokens/consume"
DEFAULT_TIMEOUT_S = 2.0


class ConsumeFailed(Exception):
    """Raised when the consume endpoint gives neither 200 nor 409, or cannot be reached."""


def _body(claims: dict[str, Any]) -> dict[str, Any]:
    return {"event_id": claims["event_id"], "jti": claims["jti"], "device_id": claims["device_id"]}


def _outcome(response: httpx.Response) -> bool:
    if response.status_code == 200:
        return True
    if response.status_code == 409:
        return False
    raise ConsumeFailed(
        f"POST {CONSUME_PATH} returned HTTP {response.status_code}, expected 200 or 409: "
        f"{response.text[:200]}"
    )


class ConsumeClient:
    """Synchronous consume hook for `GatekeepWSGIMiddleware`. Call close() when done."""

    def __init__(
        self, base_url: str, api_key: str, *, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self._client = httpx.Client(
            base_url=base_url,
            timeout=timeout_s,
            headers={"Authorization": f"Bearer {api_key}"},
        )

    def __call__(self, claims: dict[str, Any]) -> bool:
        try:
            response = self._client.post(CONSUME_PATH, json=_body(claims))
        except httpx.HTTPError as error:
            raise ConsumeFailed(f"POST {CONSUME_PATH} failed: {error}") from error
        return _outcome(response)

    def close(self) -> None:
        self._client.close()


class AsyncConsumeClient:
    """Asynchronous consume hook for `GatekeepASGIMiddleware`. Call aclose() when done."""

    def __init__(
        self, base_url: str, api_key: str, *, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url,
            timeout=timeout_s,
            headers={"Authorization": f"Bearer {api_key}"},
        )

    async def __call__(self, claims: dict[str, Any]) -> bool:
        try:
            response = await self._client.post(CONSUME_PATH, json=_body(claims))
        except httpx.HTTPError as error:
            raise ConsumeFailed(f"POST {CONSUME_PATH} failed: {error}") from error
        return _outcome(response)

    async def aclose(self) -> None:
        await self._client.aclose()
