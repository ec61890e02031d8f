"""The blocking queue client: the asyncio client driven on a private event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from gatekeep.client._async import AsyncQueueClient
from gatekeep.client._protocol import Backoff, QueueStatus
from gatekeep.client._store import PlaceStore, SavedPlace

T = TypeVar("T")


class QueueClient:
    """The same API and states as AsyncQueueClient, for code without an event loop.

    Each call runs the asyncio client to completion on a loop this object owns, so it must
    not be called from inside a running event loop (use AsyncQueueClient there).
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
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = AsyncQueueClient(
            base_url,
            event_id,
            store=store,
            device_id=device_id,
            user_id=user_id,
            priority_grant=priority_grant,
            backoff=backoff,
            max_retries=max_retries,
            timeout_s=timeout_s,
        )

    def __enter__(self) -> QueueClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def status(self) -> QueueStatus:
        return self._client.status

    @property
    def place(self) -> SavedPlace:
        return self._client.place

    def _run(self, call: Coroutine[Any, Any, T]) -> T:
        return self._loop.run_until_complete(call)

    def join(self) -> QueueStatus:
        """Resume the saved place, or join when there is none (or it ended)."""
        return self._run(self._client.join())

    def refresh(self) -> QueueStatus:
        """Read the entry (a heartbeat too) and the event's state."""
        return self._run(self._client.refresh())

    def heartbeat(self) -> QueueStatus:
        return self._run(self._client.heartbeat())

    def leave(self) -> QueueStatus:
        """Give up the place (or end the admitted session) and forget it."""
        return self._run(self._client.leave())

    def wait(
        self,
        *,
        on_status: Callable[[QueueStatus], None] | None = None,
        timeout_s: float | None = None,
        use_stream: bool = True,
    ) -> QueueStatus:
        """Follow the entry until admitted; raises as AsyncQueueClient.wait does."""
        return self._run(
            self._client.wait(on_status=on_status, timeout_s=timeout_s, use_stream=use_stream)
        )

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._client.aclose())
        self._loop.close()
