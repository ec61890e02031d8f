"""Queue state stores: the interface, the embedded memory store and the Redis store."""

from gatekeep.store.base import Store
from gatekeep.store.memory import MemoryStore

__all__ = ["MemoryStore", "Store"]
