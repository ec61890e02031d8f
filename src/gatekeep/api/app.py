"""The Starlette application: routes, error handling, request ids, and start-up/shut-down."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gatekeep import metrics, openapi
from gatekeep.api import admin, page, public, release_admin, stream, tokens
from gatekeep.api.http import JSONResponse, error_response
from gatekeep.api.state import Services, services
from gatekeep.config import Settings, load_settings
from gatekeep.errors import GatekeepError, StoreUnavailable
from gatekeep.logs import configure_logging, request_id_var
from gatekeep.ratelimit import RateLimiter, RequestLimiter, rate_limit_headers
from gatekeep.release import ReleaseLoop
from gatekeep.store.base import Store
from gatekeep.store.memory import MemoryStore
from gatekeep.tokens import Keyring, TokenSigner
from gatekeep.tokens.service import RecordingQueueService, TokenService
from gatekeep.tracing import enable_tracing
from gatekeep.webhooks import WebhookDispatcher

logger = logging.getLogger(__name__)

REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class NotFoundError(GatekeepError):
    status_code = 404
    code = "not_found"


class MethodNotAllowed(GatekeepError):
    status_code = 405
    code = "method_not_allowed"


class RequestContext:
    """ASGI middleware: request id in, request id out, one access line and one timing per request.

    The request id comes from `X-Request-ID` when it is 1 to 64 safe characters, else a new
    one is generated; either way it is returned in the response header of the same name.
    """

    def __init__(self, app: ASGIApp, routes: list[Route]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id = _request_id(scope)
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status_code = 500

        async def send_with_request_id(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                headers.extend(rate_limit_headers(scope, headers))
                message = {**message, "headers": headers}
            await send(message)

        response_started = False

        async def send_tracked(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send_with_request_id(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception:
            # Respond with the error shape and the request id instead of a bare 500. The stack
            # goes to the log only.
            logger.exception("http.unhandled_error method=%s", scope["method"])
            if response_started:
                raise
            internal = GatekeepError("internal error; the request id identifies it in the logs")
            await error_response(internal)(scope, receive, send_with_request_id)
        finally:
            duration_s = time.perf_counter() - started
            route = self._route_template(scope)
            metrics.HTTP_DURATION.labels(scope["method"], route, str(status_code)).observe(
                duration_s
            )
            logger.info(
                "http.request method=%s route=%s status=%s duration_ms=%.1f",
                scope["method"],
                route,
                status_code,
                duration_s * 1000,
            )
            request_id_var.reset(token)

    def _route_template(self, scope: Scope) -> str:
        """Return the matched route's path template, never the raw path (it may hold a queue id)."""
        matched = scope.get("route")  # set by Starlette's router on the shared scope
        if isinstance(matched, Route):
            return str(matched.path)
        for route in self.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return str(route.path)
        return "unmatched"


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate: str = value.decode("latin-1")
            if REQUEST_ID_PATTERN.fullmatch(candidate):
                return candidate
            break
    return uuid.uuid4().hex


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> JSONResponse:
    await services(request).store.ping()
    return JSONResponse({"status": "ready", "store": services(request).store.name})


async def handle_gatekeep_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, GatekeepError)
    if isinstance(error, StoreUnavailable):
        logger.warning(
            "store.unavailable operation=%s error=%s", error.operation, error.__cause__ or error
        )
    return error_response(error)


async def handle_http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    if error.status_code == 405:
        return error_response(MethodNotAllowed(f"method {request.method} is not allowed here"))
    if error.status_code == 404:
        return error_response(NotFoundError("no such route; see the API reference in the README"))
    generic = GatekeepError(str(error.detail))
    generic.status_code = error.status_code
    generic.code = "http_error"
    return error_response(generic)


def build_store(settings: Settings) -> Store:
    if settings.redis_url is None:
        return MemoryStore()
    from gatekeep.store.redis import RedisStore

    return RedisStore.from_url(settings.redis_url, call_timeout_s=settings.store_timeout_s)


def build_webhooks(store: Store, settings: Settings) -> WebhookDispatcher:
    return WebhookDispatcher(
        store,
        settings.webhook_secret,
        timeout_s=settings.webhook_timeout_s,
        max_attempts=settings.webhook_max_attempts,
        backoff_s=settings.webhook_backoff_s,
        backoff_max_s=settings.webhook_backoff_max_s,
        max_pending=settings.webhook_queue_size,
    )


def build_keyring(settings: Settings) -> Keyring:
    if settings.token_secret is None and settings.token_keys_file is None:
        logger.warning(
            "tokens.secret_generated reason=no GATEKEEP_TOKEN_SECRET; tokens issued by this "
            "process cannot be verified by origins and become invalid when it stops"
        )
        return Keyring.generate_hs256()
    return Keyring.from_config(settings.token_secret, settings.token_keys_file)


def create_app(settings: Settings, store: Store | None = None) -> Starlette:
    """Build the app; the store connects and the release loop starts in the lifespan."""
    store = store or build_store(settings)
    signer = TokenSigner(build_keyring(settings), issuer=settings.token_issuer)
    token_service = TokenService(store, signer, leeway_s=settings.token_leeway_s)
    queue = RecordingQueueService(store, signer, settings.grant_secret, token_service)
    webhooks = build_webhooks(store, settings)
    release_loop = ReleaseLoop(
        store,
        settings.release_tick_ms,
        settings.release_max_batch,
        webhooks=webhooks,
        configured_events=settings.events,
    )
    stream_hub = stream.StreamHub(
        store,
        queue,
        tick_ms=settings.stream_tick_ms,
        max_streams=settings.stream_max_connections,
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await _connect(store)
        await _create_configured_events(store, settings)
        webhooks.start()
        release_loop.start()
        stream_hub.start()
        logger.info(
            "service.start store=%s host=%s port=%s events=%s",
            store.name,
            settings.host,
            settings.port,
            len(settings.events),
        )
        try:
            yield
        finally:
            await stream_hub.stop()
            await release_loop.stop()
            await webhooks.stop()
            await store.close()
            logger.info("service.stop")

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        *openapi.routes,
        *public.routes,
        *admin.routes,
        *release_admin.routes,
        *stream.routes,
        *page.routes,
        *tokens.routes,
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            GatekeepError: handle_gatekeep_error,
            HTTPException: handle_http_error,
        },
    )
    app.state.services = Services(settings=settings, store=store, queue=queue)
    app.state.release_loop = release_loop
    app.state.rate_limiter = RequestLimiter(
        RateLimiter(store.rate_limit_storage(), settings.rate_limits),
        settings.trusted_proxies,
        store,
    )
    app.state.tokens = token_service
    app.state.webhooks = webhooks
    app.state.stream_hub = stream_hub
    app.add_middleware(RequestContext, routes=routes)
    enable_tracing(app)
    return app


async def _connect(store: Store) -> None:
    connect = getattr(store, "connect", None)
    if connect is not None:
        await connect()


async def _create_configured_events(store: Store, settings: Settings) -> None:
    """Create each event of the events file that the store does not have yet.

    An event that already exists is left as stored, so a rolling restart never undoes a pause
    or a rate change made through the admin API.
    """
    for config in settings.events:
        created = await store.create_event(config)
        stored = config if created else await store.get_event(config.event_id)
        if created:
            logger.info("event.created event_id=%s source=events_file", config.event_id)
        elif stored != config:
            logger.warning(
                "event.kept_stored event_id=%s reason=the stored configuration differs from the "
                "events file; change it through the admin API",
                config.event_id,
            )


def app_from_environment() -> Starlette:
    """App factory for uvicorn workers: settings come from GATEKEEP_* variables."""
    settings = load_settings()
    configure_logging(settings.log_level)
    return create_app(settings)
