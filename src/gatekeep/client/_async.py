"""The asyncio queue client."""

from __future__ import annotations

import asyncio
import logging
import random as random_module
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import httpx
import orjson

from gatekeep.client._errors import (
    QueueRequestRejected,
    ServiceUnavailable,
    WaitTimedOut,
    raise_for_final,
)
from gatekeep.client._protocol import (
    Backoff,
    Outcome,
    QueueStatus,
    State,
    interpret,
    retry_after_seconds,
    status_from,
)
from gatekeep.client._store import FilePlaceStore, PlaceStore, SavedPlace

logger = logging.getLogger(__name__)

StatusCallback = Callable[[QueueStatus], Awaitable[None] | None]

# Minimum pause between two polls, whatever `poll_after_ms` is.
MIN_POLL_S = 0.25
# Stream attempts that may fail in a row before wait() polls for the rest of the wait.
MAX_STREAM_FAILURES = 3
# A stream silent for this long is dead: the server sends a keep-alive comment every 15 s by
# default (GATEKEEP_STREAM_HEARTBEAT_S), so this allows for three lost ones.
STREAM_READ_TIMEOUT_S = 60.0


class AsyncQueueClient:
    """A queue client for one event: join or resume, follow the entry, report admission.

    The place (queue id) and the token are saved in `store` as soon as the service returns
    them, so a new client with the same store resumes them instead of joining again.
    `max_retries` bounds the retries of one call on network errors, 429, 503 and other 5xx.
    """

    def __init__(
        self,
        base_url: str,
        event_id: str,
        *,
        store: PlaceStore | None = None,
        device_id: str | None = None,
        user_id: str | None = None,
        priority_grant: str | None = None,
        backoff: Backoff | None = None,
        max_retries: int = 8,
        timeout_s: float = 10.0,
        http: httpx.AsyncClient | None = None,
        random: Callable[[], float] = random_module.random,
    ) -> None:
        self.event_id = event_id
        self.store: PlaceStore = store if store is not None else FilePlaceStore()
        self.user_id = user_id
        self.priority_grant = priority_grant
        self.backoff = backoff or Backoff()
        self.max_retries = max_retries
        self.random = random
        self._http = http or httpx.AsyncClient(base_url=base_url, timeout=timeout_s)
        self._owns_http = http is None

        saved = self.store.load(event_id)
        if saved is None:
            saved = SavedPlace(event_id=event_id, device_id=device_id or _new_device_id())
            self.store.save(saved)
        elif device_id is not None and device_id != saved.device_id:
            saved = SavedPlace(event_id=event_id, device_id=device_id)
            self.store.save(saved)
        self.place = saved
        self.status = QueueStatus(state=State.IDLE, event_id=event_id, queue_id=saved.queue_id)

    async def __aenter__(self) -> AsyncQueueClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    # Calls

    async def join(self) -> QueueStatus:
        """Resume the saved place, or join when there is none (or it ended)."""
        saved = self.place
        session_live = (saved.session_expires_at_ms or 0) > time.time() * 1000
        if saved.token and saved.queue_id and session_live:
            body = {
                "queue_id": saved.queue_id,
                "status": "admitted",
                "token": saved.token,
                "session_expires_at_ms": saved.session_expires_at_ms,
            }
            return self._record(interpret("status", 200, body), body)
        if saved.queue_id:
            resumed = await self.refresh()
            if resumed.state in (State.WAITING, State.ADMITTED):
                return resumed

        self.status = replace(self.status, state=State.JOINING)
        document: dict[str, Any] = {"device_id": self.place.device_id}
        if self.user_id:
            document["user_id"] = self.user_id
        if self.priority_grant:
            document["priority_grant"] = self.priority_grant
        outcome, body = await self._call(
            "join", "POST", f"/v1/events/{self.event_id}/join", document
        )
        return self._record(outcome, body)

    async def refresh(self) -> QueueStatus:
        """Read the entry (a heartbeat too) and the event's state."""
        queue_id = self._queue_id()
        outcome, body = await self._call("status", "GET", f"/v1/queue/{queue_id}")
        if isinstance(body, dict) and outcome.state == State.WAITING:
            _, event_body = await self._call("event", "GET", f"/v1/events/{self.event_id}")
            if isinstance(event_body, dict) and "error" not in event_body:
                body["event"] = event_body
        return self._record(outcome, body)

    async def heartbeat(self) -> QueueStatus:
        """Tell the service this client is still there; returns the entry."""
        outcome, body = await self._call(
            "heartbeat", "POST", f"/v1/queue/{self._queue_id()}/heartbeat"
        )
        return self._record(outcome, body)

    async def leave(self) -> QueueStatus:
        """Give up the place (or end the admitted session) and forget it."""
        outcome, body = await self._call("leave", "DELETE", f"/v1/queue/{self._queue_id()}")
        status = self._record(outcome, body)
        self._save(SavedPlace(event_id=self.event_id, device_id=self.place.device_id))
        return status

    async def wait(
        self,
        *,
        on_status: StatusCallback | None = None,
        timeout_s: float | None = None,
        use_stream: bool = True,
    ) -> QueueStatus:
        """Join or resume, then follow the entry until admitted; return the admitted status.

        Follows the stream when it can and polls otherwise. Raises EntryExpired, EntryLeft,
        EventClosed or QueueRequestRejected when the wait ends otherwise, WaitTimedOut after
        `timeout_s`, and ServiceUnavailable when one call runs out of retries.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        status = self.status if self.status.state == State.WAITING else await self.join()
        await _notify(on_status, status)
        stream_failures = 0

        while not status.final:
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimedOut(status, timeout_s or 0.0)
            if use_stream and stream_failures < MAX_STREAM_FAILURES:
                streamed = await self._follow_stream(on_status, deadline)
                if streamed is None:
                    stream_failures += 1
                    await asyncio.sleep(
                        self.backoff.delay_s(stream_failures - 1, random=self.random)
                    )
                else:
                    stream_failures = 0
                status = (
                    await self.refresh() if streamed is None or not streamed.final else streamed
                )
            else:
                pause_s = max(MIN_POLL_S, (status.poll_after_ms or 2000) / 1000)
                if deadline is not None:
                    pause_s = min(pause_s, max(0.0, deadline - time.monotonic()))
                await asyncio.sleep(pause_s)
                status = await self.refresh()
            await _notify(on_status, status)

        if status.state != State.ADMITTED:
            raise_for_final(status)
        return status

    async def stream(self) -> AsyncIterator[QueueStatus]:
        """Yield each status the service pushes, until the stream ends or breaks."""
        url = f"/v1/queue/{self._queue_id()}/events"
        async with self._http.stream(
            "GET", url, timeout=httpx.Timeout(10.0, read=STREAM_READ_TIMEOUT_S)
        ) as response:
            if response.status_code != 200:
                await response.aread()
                body = _json_or_none(response.content)
                retry_after_s = retry_after_seconds(response.headers.get("retry-after"))
                outcome = interpret("stream", response.status_code, body, retry_after_s)
                if not outcome.retry:
                    yield self._record(outcome, body)
                return
            async for name, data in _sse_events(response):
                body = _json_or_none(data.encode())
                if name == "status":
                    yield self._record(interpret("stream", 200, body), body)
                elif name == "service_error":
                    outcome = interpret("stream", 503, body)
                    if not outcome.retry:
                        yield self._record(outcome, body)
                        return
                elif name == "end":
                    return

    # Helpers

    async def _follow_stream(
        self, on_status: StatusCallback | None, deadline: float | None
    ) -> QueueStatus | None:
        """Follow the stream; return the last status, or None when it gave nothing."""
        last: QueueStatus | None = None
        try:
            async with asyncio.timeout_at(_loop_deadline(deadline)):
                async for status in self.stream():
                    last = status
                    await _notify(on_status, status)
                    if status.final:
                        break
        except TimeoutError:
            return last
        except httpx.HTTPError as error:
            logger.info("gatekeep.client.stream_failed error=%s", type(error).__name__)
        return last

    def _queue_id(self) -> str:
        if not self.place.queue_id:
            raise QueueRequestRejected(
                replace(self.status, state=State.ERROR, reason="no_place", message="join first")
            )
        return self.place.queue_id

    async def _call(
        self, call: str, method: str, path: str, document: dict[str, Any] | None = None
    ) -> tuple[Outcome, Any]:
        """Send one request, retrying transient failures with backoff; return the outcome."""
        attempt = 0
        while True:
            try:
                response = await self._http.request(method, path, json=document)
                body = _json_or_none(response.content)
                retry_after_s = retry_after_seconds(response.headers.get("retry-after"))
                outcome = interpret(call, response.status_code, body, retry_after_s)
            except httpx.TransportError as error:
                body = None
                outcome = interpret(call, 0, None)
                logger.debug("gatekeep.client.transport_error error=%s", type(error).__name__)

            if not outcome.retry:
                return outcome, body
            if attempt >= self.max_retries:
                raise ServiceUnavailable(attempt + 1, outcome.reason, outcome.message)
            delay_s = self.backoff.delay_s(attempt, outcome.retry_after_s, self.random)
            logger.info(
                "gatekeep.client.retry call=%s attempt=%s reason=%s delay_s=%.2f",
                call,
                attempt + 1,
                outcome.reason,
                delay_s,
            )
            attempt += 1
            await asyncio.sleep(delay_s)

    def _record(self, outcome: Outcome, body: Any) -> QueueStatus:
        """Turn a final outcome into the current status and persist what must survive."""
        status = status_from(self.event_id, outcome, body, self.place.queue_id)
        self.status = status
        place = self.place
        if status.queue_id and status.queue_id != place.queue_id and status.state == State.WAITING:
            place = replace(place, queue_id=status.queue_id, token=None)
        if status.state == State.ADMITTED and status.token:
            place = replace(
                place,
                queue_id=status.queue_id,
                token=status.token,
                session_expires_at_ms=status.session_expires_at_ms,
            )
        if status.state in (State.EXPIRED, State.LEFT, State.CLOSED):
            place = SavedPlace(event_id=self.event_id, device_id=place.device_id)
        if place != self.place:
            self._save(place)
        return status

    def _save(self, place: SavedPlace) -> None:
        self.place = place
        self.store.save(place)


def _new_device_id() -> str:
    return "py-" + secrets.token_hex(16)


def _json_or_none(content: bytes) -> Any:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return None


def _loop_deadline(deadline: float | None) -> float | None:
    """Convert a time.monotonic() deadline to the event loop's clock."""
    if deadline is None:
        return None
    return asyncio.get_running_loop().time() + (deadline - time.monotonic())


async def _notify(callback: StatusCallback | None, status: QueueStatus) -> None:
    if callback is None:
        return
    result = callback(status)
    if result is not None:
        await result


async def _sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """Yield (event name, data) for each message of a text/event-stream response."""
    name = "message"
    data: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield name, "\n".join(data)
            name, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
