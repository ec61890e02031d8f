"""Status polls and heartbeats as plain ASGI handlers, outside Starlette's router.

These two calls are most of the service's traffic: every waiting client polls, and far more
clients wait than join or leave at any moment. Starlette's router, exception middleware and
Request and Response objects took about a sixth of a status call's CPU time in a py-spy
profile, and these handlers skip them. They respond exactly as the Starlette routes of
`public.py` do, which remain for requests this module does not match (HEAD, a root path) and
for tracing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import orjson
from starlette.types import Receive, Scope, Send

from gatekeep.api.http import (
    error_response,
    log_store_outage,
    receive_json_object,
    reject_unknown_fields,
)
from gatekeep.api.public import entry_body, entry_call
from gatekeep.api.state import Services
from gatekeep.errors import GatekeepError
from gatekeep.queue import EntryView
from gatekeep.ratelimit import RequestLimiter
from gatekeep.ratewindow import WindowLimit

Handler = Callable[[Scope, Receive, Send], Awaitable[None]]

QUEUE_PREFIX = "/v1/queue/"
HEARTBEAT_SUFFIX = "/heartbeat"
# Scope key under which a matched request keeps its route template, for the access line and
# the duration metric.
ENTRY_ROUTE_KEY = "gatekeep.route"
STATUS_ROUTE = "/v1/queue/{queue_id}"
HEARTBEAT_ROUTE = "/v1/queue/{queue_id}/heartbeat"

_JSON_HEADERS = [(b"content-type", b"application/json")]


class EntryRoutes:
    """GET /v1/queue/{queue_id} and POST /v1/queue/{queue_id}/heartbeat as ASGI handlers."""

    def __init__(self, services: Services, limiter: RequestLimiter) -> None:
        self.services = services
        self.limiter = limiter

    def match(self, scope: Scope) -> Handler | None:
        """Return the handler of a status or heartbeat request, or None for any other request.

        A queue id never contains a slash, so `/v1/queue/ID` is a status call and
        `/v1/queue/ID/heartbeat` a heartbeat; anything else is left to Starlette.
        """
        path: str = scope["path"]
        if not path.startswith(QUEUE_PREFIX) or scope.get("root_path"):
            return None
        rest = path[len(QUEUE_PREFIX) :]
        method = scope["method"]
        if method == "GET" and rest and "/" not in rest:
            scope["path_params"] = {"queue_id": rest}
            scope[ENTRY_ROUTE_KEY] = STATUS_ROUTE
            return self.status
        if method == "POST" and rest.endswith(HEARTBEAT_SUFFIX):
            queue_id = rest[: -len(HEARTBEAT_SUFFIX)]
            if queue_id and "/" not in queue_id:
                scope["path_params"] = {"queue_id": queue_id}
                scope[ENTRY_ROUTE_KEY] = HEARTBEAT_ROUTE
                return self.heartbeat
        return None

    async def status(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._serve(scope, receive, send, "status", self.services.queue.status)

    async def heartbeat(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._serve(scope, receive, send, "heartbeat", self.services.queue.heartbeat)

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        kind: str,
        call: Callable[[str, Sequence[WindowLimit]], Awaitable[EntryView]],
    ) -> None:
        """Run one status or heartbeat call and send the entry, or the error in its shape.

        A heartbeat's body must be empty or `{}`; a status call has no body to read.
        """
        try:
            if kind == "heartbeat":
                max_body_bytes = self.services.settings.max_body_bytes
                document = await receive_json_object(scope, receive, max_body_bytes, True)
                reject_unknown_fields(document, frozenset())
            queue_id = scope["path_params"]["queue_id"]
            view = await entry_call(scope, self.limiter, kind, queue_id, call)
        except GatekeepError as error:
            log_store_outage(error)
            await error_response(error)(scope, receive, send)
            return
        await _send_json(send, orjson.dumps(entry_body(view)))


async def _send_json(send: Send, body: bytes) -> None:
    headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
