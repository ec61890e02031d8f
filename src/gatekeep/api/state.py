"""The objects one running app shares between requests."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from gatekeep.config import Settings
from gatekeep.queue import QueueService
from gatekeep.store.base import Store


@dataclass
class Services:
    settings: Settings
    store: Store
    queue: QueueService


def services(request: Request) -> Services:
    result: Services = request.app.state.services
    return result
