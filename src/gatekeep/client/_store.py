"""Place stores: persistence of a client's place and token, so a restarted process resumes."""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson


@dataclass(frozen=True, slots=True)
class SavedPlace:
    """Persisted client record per event: device id, place and, once admitted, the token."""

    event_id: str
    device_id: str
    queue_id: str | None = None
    token: str | None = None
    session_expires_at_ms: int | None = None


class PlaceStore(Protocol):
    """Persistence of saved places, one per event id."""

    def load(self, event_id: str) -> SavedPlace | None: ...

    def save(self, place: SavedPlace) -> None: ...


class MemoryPlaceStore:
    """Keeps places in this process only: a restart loses them."""

    def __init__(self) -> None:
        self._places: dict[str, SavedPlace] = {}

    def load(self, event_id: str) -> SavedPlace | None:
        return self._places.get(event_id)

    def save(self, place: SavedPlace) -> None:
        self._places[place.event_id] = place


class FilePlaceStore:
    """Keeps places in one JSON file, replaced atomically on every save.

    The file contains bearer secrets (the queue id and the token), so it is created readable
    by its owner only.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        default = Path.home() / ".gatekeep" / "places.json"
        self.path = Path(path) if path is not None else default

    def _read(self) -> dict[str, Any]:
        try:
            document = orjson.loads(self.path.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return {}
        return document if isinstance(document, dict) else {}

    def load(self, event_id: str) -> SavedPlace | None:
        record = self._read().get(event_id)
        if not isinstance(record, dict):
            return None
        try:
            return SavedPlace(**record)
        except TypeError:
            return None

    def save(self, place: SavedPlace) -> None:
        document = self._read()
        document[place.event_id] = asdict(place)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".places-")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(orjson.dumps(document, option=orjson.OPT_INDENT_2))
            os.chmod(temporary, 0o600)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
