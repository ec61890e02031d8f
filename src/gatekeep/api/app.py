"""The Starlette application: routes, error handling, request ids, and start-up/shut-down."""

from __future__ import annotations

import logging
import random
import re
import time
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
from gatekeep.api.entry_routes import ENTRY_ROUTE_KEY, EntryRoutes
from gatekeep.api.http import JSONResponse, error_response, log_store_outage
from gatekeep.api.state import Services, services
from gatekeep.config import Settings, load_settings
from gatekeep.errors import GatekeepError
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
        await self.run(scope, receive, send, self.app)

    async def run(self, scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
        """Serve one HTTP request with `app` inside the request's context."""
        request_id = _request_id(scope)
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status_code = 500
        response_started = False

        async def send_with_request_id(message: Message) -> None:
            nonlocal status_code, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status_code = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                headers.extend(rate_limit_headers(scope, headers))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await app(scope, receive, send_with_request_id)
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
            metrics.observe_http(scope["method"], route, status_code, duration_s)
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
        matched = scope.get("route")  # set by Starlette's router
        if isinstance(matched, Route):
            return str(matched.path)
        template = scope.get(ENTRY_ROUTE_KEY)
        if template is not None:
            return str(template)
        for route in self.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return str(route.path)
        return "unmatched"


class GatekeepApp(Starlette):
    """The Starlette app, whose status and heartbeat calls skip its router and middleware.

    Those two calls are the bulk of all traffic, so `EntryRoutes` serves them as plain ASGI
    inside the same request context (request id, access line, timing). Every other request,
    and every request while a tracing middleware is installed, goes through Starlette.
    """

    entry_routes: EntryRoutes | None = None
    entry_context: RequestContext | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.entry_routes is not None:
            handler = self.entry_routes.match(scope)
            if handler is not None:
                assert self.entry_context is not None
                scope["app"] = self
                await self.entry_context.run(scope, receive, send, handler)
                return
        await super().__call__(scope, receive, send)


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate: str = value.decode("latin-1")
            if REQUEST_ID_PATTERN.fullmatch(candidate):
                return candidate
            break
    # Request ids must be unique, not secret, so the fast generator is enough.
    return f"{random.getrandbits(128):032x}"


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> JSONResponse:
    await services(request).store.ping()
    return JSONResponse({"status": "ready", "store": services(request).store.name})


async def handle_gatekeep_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, GatekeepError)
    log_store_outage(error)
    return error_response(error)


async def handle_http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    if error.status_code == 405:
        # A 405 response must name the allowed methods. Starlette names only those of the
        # first route whose path matched, so every route with this path counts here.
        methods = sorted(
            method
            for route in request.app.router.routes
            if isinstance(route, Route) and route.path_regex.match(request.scope["path"])
            for method in route.methods or ()
        )
        allow = {"Allow": ", ".join(methods)} if methods else dict(error.headers or {})
        message = f"method {request.method} is not allowed here"
        return error_response(MethodNotAllowed(message, headers=allow))
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


def create_app(settings: Settings, store: Store | None = None) -> GatekeepApp:
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
    app = GatekeepApp(
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
    if not enable_tracing(app):
        app.entry_routes = EntryRoutes(app.state.services, app.state.rate_limiter)
        app.entry_context = RequestContext(app.router, routes)
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
