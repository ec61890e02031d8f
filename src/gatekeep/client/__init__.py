"""Python SDK for Gatekeep's client protocol: join a queue, keep the place, get admitted.

    from gatekeep.client import QueueClient
    with QueueClient("https://queue.example", "launch") as client:
        admitted = client.wait(on_status=print)
        use(admitted.token)

`AsyncQueueClient` has the same API for asyncio code. Both save the place and token in a
`PlaceStore` (a JSON file by default), so a restarted process resumes its place.
"""

from gatekeep.client._async import AsyncQueueClient
from gatekeep.client._errors import (
    EntryExpired,
    EntryLeft,
    EventClosed,
    QueueClientError,
    QueueEnded,
    QueueRequestRejected,
    ServiceUnavailable,
    WaitTimedOut,
)
from gatekeep.client._protocol import (
    FINAL_STATES,
    Backoff,
    Outcome,
    QueueStatus,
    State,
    interpret,
    retry_after_seconds,
)
from gatekeep.client._store import FilePlaceStore, MemoryPlaceStore, PlaceStore, SavedPlace
from gatekeep.client._sync import QueueClient

__all__ = [
    "FINAL_STATES",
    "AsyncQueueClient",
    "Backoff",
    "EntryExpired",
    "EntryLeft",
    "EventClosed",
    "FilePlaceStore",
    "MemoryPlaceStore",
    "Outcome",
    "PlaceStore",
    "QueueClient",
    "QueueClientError",
    "QueueEnded",
    "QueueRequestRejected",
    "QueueStatus",
    "SavedPlace",
    "ServiceUnavailable",
    "State",
    "WaitTimedOut",
    "interpret",
    "retry_after_seconds",
]
