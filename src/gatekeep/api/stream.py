"""Server-Sent Events: `GET /v1/queue/{queue_id}/events` pushes an entry's state as it changes.

Every open stream of a process subscribes to one `StreamHub`. Once per tick the hub reads all
entries its process streams for an event with ONE `Store.watch` call, which is also their
heartbeat, and one `release_state` call for the event's phase. It then fans the changes out to
the connections. So the store load grows with the number of events and processes, not with
the number of streams.

Stream format (see docs/client-protocol.md):

- `retry: <ms>` first, then `event: status` with the entry's state (`id:` is an opaque state
  tag that a reconnecting client sends back as `Last-Event-ID`);
- `event: service_error` with the usual error body while the store is unreachable; the
  stream stays open;
- `event: end` when the entry is admitted or has ended, after which the server closes;
- a `: keep-alive` comment every `GATEKEEP_STREAM_HEARTBEAT_S` so proxies keep it open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from gatekeep.api.public import entry_body, event_body
from gatekeep.errors import GatekeepError, StoreUnavailable
from gatekeep.model import EntryStatus, EventSnapshot, WatchedEntry
from gatekeep.queue import QueueService, estimate_wait_s, event_id_of, poll_interval_ms
from gatekeep.store.base import Store

logger = logging.getLogger(__name__)

# Reconnect delay hint for EventSource, jittered so that a restart does not bring every client
# back in the same second.
RETRY_MIN_MS = 2000
RETRY_JITTER_MS = 3000

# Queued messages per connection; a slow reader loses the oldest, and every status message is a
# full state, so only the newest one matters.
MAX_PENDING_MESSAGES = 8

# An ETA moves every tick; a new status is pushed only when it moved by this fraction (or the
# position, status or event state changed).
ETA_CHANGE_FRACTION = 0.1

# Maximum wait for the hub's loop to finish at shutdown.
STOP_TIMEOUT_S = 5.0

_END = "end"


class StreamLimitReached(GatekeepError):
    """Raised when this process already has its maximum number of open streams."""

    status_code = 503
    code = "stream_limit_reached"

    def __init__(self, limit: int, retry_after_s: int) -> None:
        super().__init__(
            f"this server holds its maximum of {limit} streams; poll GET /v1/queue/{{queue_id}} "
            f"instead, or retry the stream in {retry_after_s} s",
            headers={"Retry-After": str(retry_after_s)},
        )


@dataclass(eq=False)
class Subscriber:
    """One open stream: the messages waiting to be written and what was last sent."""

    event_id: str
    queue_id: str
    last_position: int | None = None
    last_eta_s: float | None = None
    last_key: tuple[Any, ...] = ()
    pending: list[str] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, message: str) -> None:
        self.pending.append(message)
        if len(self.pending) > MAX_PENDING_MESSAGES:
            del self.pending[0]
        self.wake.set()

    def take(self) -> list[str]:
        messages, self.pending = self.pending, []
        self.wake.clear()
        return messages


def format_event(name: str, data: dict[str, Any], event_tag: str | None = None) -> str:
    """Render one SSE message; `data` is one line of JSON, so it needs no line splitting."""
    lines = [f"event: {name}"]
    if event_tag is not None:
        lines.append(f"id: {event_tag}")
    lines.append("data: " + orjson.dumps(data).decode())
    return "\n".join(lines) + "\n\n"


def state_tag(body: dict[str, Any]) -> str:
    """Return the `id:` of a status message: it changes whenever what a client shows changes."""
    event = body.get("event") or {}
    eta_s = body.get("eta_s")
    return "{}.{}.{}.{}".format(
        body["status"],
        body.get("position") or 0,
        "-" if eta_s is None else int(eta_s),
        event.get("state", ""),
    )


class StreamHub:
    """Per-process fan-out of entry states to open streams, with one store call per event tick."""

    def __init__(
        self,
        store: Store,
        queue: QueueService,
        *,
        tick_ms: int,
        max_streams: int,
    ) -> None:
        self.store = store
        self.queue = queue
        self.tick_s = tick_ms / 1000
        self.max_streams = max_streams
        # event_id -> queue_id -> the streams of that entry (a person may open two tabs).
        self._watched: dict[str, dict[str, set[Subscriber]]] = {}
        self._count = 0
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._outage_ticks = 0
        self._previous_sigterm: Callable[[int, FrameType | None], Any] | int | None = None

    @property
    def stream_count(self) -> int:
        return self._count

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gatekeep-stream-hub")
        self._chain_sigterm()

    async def stop(self) -> None:
        self.close_streams()
        if self._previous_sigterm is not None:
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, STOP_TIMEOUT_S)
            self._task = None

    def close_streams(self) -> None:
        """End every open stream; clients reconnect to another process after `retry`."""
        self._closing = True
        for queue_ids in self._watched.values():
            for subscribers in queue_ids.values():
                for subscriber in subscribers:
                    subscriber.offer(_END)

    def _chain_sigterm(self) -> None:
        """End the streams on SIGTERM, then run the handler installed before (uvicorn's).

        uvicorn waits for open responses to finish before it shuts the app down, so without
        this an open stream would hold a graceful stop forever.
        """
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            previous = signal.getsignal(signal.SIGTERM)
            loop = asyncio.get_running_loop()

            def on_sigterm(signum: int, frame: FrameType | None) -> None:
                loop.call_soon_threadsafe(self.close_streams)
                if callable(previous):
                    previous(signum, frame)

            signal.signal(signal.SIGTERM, on_sigterm)
            self._previous_sigterm = previous

    def subscribe(self, event_id: str, queue_id: str) -> Subscriber:
        if self._count >= self.max_streams:
            raise StreamLimitReached(self.max_streams, retry_after_s=random.randint(5, 15))
        subscriber = Subscriber(event_id=event_id, queue_id=queue_id)
        self._watched.setdefault(event_id, {}).setdefault(queue_id, set()).add(subscriber)
        self._count += 1
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        queue_ids = self._watched.get(subscriber.event_id)
        if queue_ids is None:
            return
        subscribers = queue_ids.get(subscriber.queue_id)
        if subscribers is None or subscriber not in subscribers:
            return
        subscribers.discard(subscriber)
        self._count -= 1
        if not subscribers:
            del queue_ids[subscriber.queue_id]
        if not queue_ids:
            del self._watched[subscriber.event_id]

    async def _run(self) -> None:
        # The flag, not only the cancellation, ends the loop: a cancellation that lands inside a
        # store call may come back as a store error, which the loop would outlive.
        while not self._closing:
            started = time.monotonic()
            for event_id in list(self._watched):
                try:
                    await self.tick_event(event_id)
                except Exception:
                    # One failing event must not stop the pushes of the others.
                    logger.exception("stream.tick_failed event_id=%s", event_id)
            await asyncio.sleep(max(0.0, self.tick_s - (time.monotonic() - started)))

    async def tick_event(self, event_id: str) -> None:
        """Read every streamed entry of the event in one store call and push what changed."""
        queue_ids = list(self._watched.get(event_id, {}))
        if not queue_ids:
            return

        try:
            result = await self.store.watch(event_id, queue_ids)
            release = await self.store.release_state(event_id)
        except StoreUnavailable as error:
            self._on_outage(event_id, error)
            return
        if self._outage_ticks:
            logger.info("stream.store_recovered failed_ticks=%s", self._outage_ticks)
            self._outage_ticks = 0

        event_document = event_body(result.event, release)
        watched_now = self._watched.get(event_id, {})
        for watched in result.entries:
            for subscriber in list(watched_now.get(watched.queue_id, ())):
                self._push(subscriber, watched, result.event, event_document)

    def _on_outage(self, event_id: str, error: StoreUnavailable) -> None:
        self._outage_ticks += 1
        if self._outage_ticks == 1 or self._outage_ticks % 50 == 0:
            logger.warning(
                "stream.store_unavailable event_id=%s failed_ticks=%s error=%s",
                event_id,
                self._outage_ticks,
                error.__cause__ or error,
            )
        message = format_event("service_error", _error_document(error))
        for subscribers in self._watched.get(event_id, {}).values():
            for subscriber in subscribers:
                if subscriber.last_key != ("outage",):
                    subscriber.last_key = ("outage",)
                    subscriber.offer(message)

    def _push(
        self,
        subscriber: Subscriber,
        watched: WatchedEntry,
        event: EventSnapshot,
        event_document: dict[str, Any],
    ) -> None:
        if watched.status is None:
            missing = GatekeepError("no queue entry with this queue_id; join the event again")
            missing.code = "queue_entry_not_found"
            subscriber.offer(format_event("service_error", _error_document(missing)))
            subscriber.offer(_END)
            return

        event_state = event_document.get("state")
        waiting = watched.status == EntryStatus.WAITING
        if waiting and not self._changed(subscriber, watched, event, event_state):
            return
        body = self._status_body(subscriber, watched, event, event_document)
        subscriber.offer(format_event("status", body, state_tag(body)))
        if watched.status != EntryStatus.WAITING:
            subscriber.offer(format_event("end", {"status": body["status"]}))
            subscriber.offer(_END)

    def _changed(
        self,
        subscriber: Subscriber,
        watched: WatchedEntry,
        event: EventSnapshot,
        event_state: object,
    ) -> bool:
        """Return True when a waiting entry's position, ETA or event state moved enough."""
        eta_s = estimate_wait_s(watched.position or 1, event)
        key = ("waiting", watched.position, event_state)
        moved = key != subscriber.last_key
        if not moved and eta_s is not None and subscriber.last_eta_s is not None:
            moved = abs(eta_s - subscriber.last_eta_s) > ETA_CHANGE_FRACTION * max(
                1.0, subscriber.last_eta_s
            )
        if moved:
            subscriber.last_key = key
            subscriber.last_eta_s = eta_s
        return moved

    def _status_body(
        self,
        subscriber: Subscriber,
        watched: WatchedEntry,
        event: EventSnapshot,
        event_document: dict[str, Any],
    ) -> dict[str, Any]:
        heartbeat_timeout_s = event.config.heartbeat_timeout_s
        body: dict[str, Any] = {
            "queue_id": watched.queue_id,
            "event_id": subscriber.event_id,
            "status": watched.status,
            "position": watched.position,
            "eta_s": None,
            "poll_after_ms": poll_interval_ms(
                watched.position, EntryStatus(watched.status or "expired"), heartbeat_timeout_s
            ),
            "token": None,
            "event": event_document,
        }
        if watched.status == EntryStatus.WAITING:
            eta_s = subscriber.last_eta_s
            body["eta_s"] = None if eta_s is None else round(eta_s, 1)
        elif watched.status == EntryStatus.ADMITTED and watched.entry is not None:
            body["eta_s"] = 0.0
            body["token"] = self.queue.signer.issue(watched.entry)
            body["admitted_at_ms"] = watched.entry.admitted_at_ms
            body["session_expires_at_ms"] = watched.entry.session_expires_at_ms
        return body


def _error_document(error: GatekeepError) -> dict[str, Any]:
    retry_after = error.headers.get("Retry-After")
    document: dict[str, Any] = {"error": {"code": error.code, "message": error.message}}
    if retry_after is not None:
        document["error"]["retry_after_s"] = int(retry_after)
    return document


def hub(request: Request) -> StreamHub:
    result: StreamHub = request.app.state.stream_hub
    return result


async def events(request: Request) -> StreamingResponse:
    """Open a stream for one entry; an unknown or ended entry gets the usual 404 or 410."""
    stream_hub = hub(request)
    queue_id = request.path_params["queue_id"]
    event_id = event_id_of(queue_id)
    view = await stream_hub.queue.status(queue_id)

    body = entry_body(view)
    release = await stream_hub.store.release_state(event_id)
    body["event"] = event_body(view.snapshot.event, release)
    initial_tag = state_tag(body)
    subscriber = stream_hub.subscribe(event_id, queue_id)
    subscriber.last_key = ("waiting", view.snapshot.position, body["event"].get("state"))
    subscriber.last_position = view.snapshot.position
    subscriber.last_eta_s = view.eta_s

    resumed = request.headers.get("last-event-id") == initial_tag
    retry_ms = RETRY_MIN_MS + random.randint(0, RETRY_JITTER_MS)
    first = f"retry: {retry_ms}\n\n"
    if not resumed:
        first += format_event("status", body, initial_tag)
    if view.snapshot.entry.status != EntryStatus.WAITING:
        subscriber.offer(format_event("end", {"status": body["status"]}))
        subscriber.offer(_END)

    heartbeat_s = request.app.state.services.settings.stream_heartbeat_s
    return StreamingResponse(
        _write(stream_hub, subscriber, first, heartbeat_s),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _write(
    stream_hub: StreamHub, subscriber: Subscriber, first: str, heartbeat_s: float
) -> AsyncIterator[str]:
    try:
        yield first
        while True:
            try:
                async with asyncio.timeout(heartbeat_s):
                    await subscriber.wake.wait()
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            for message in subscriber.take():
                if message == _END:
                    return
                yield message
    finally:
        stream_hub.unsubscribe(subscriber)


routes = [Route("/v1/queue/{queue_id}/events", events, methods=["GET"])]
