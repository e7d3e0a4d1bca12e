"""Storage backends behind one interface: in-memory, SQLite and Redis.

:func:`create_store` builds the backend that settings select; the Redis and SQLite modules
are imported only when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ctx_memory.stores._gc import gc_interval
from ctx_memory.stores.base import BaseStore, EncodedItem, EncodedMessage, Header, WriteResult
from ctx_memory.stores.memory import InMemoryStore

if TYPE_CHECKING:
    from ctx_memory.config import Settings

__all__ = [
    "BaseStore",
    "EncodedItem",
    "EncodedMessage",
    "Header",
    "InMemoryStore",
    "WriteResult",
    "create_store",
]


def create_store(settings: Settings) -> BaseStore:
    """The store ``settings`` select (``STORE`` / ``USE_REDIS_CACHING``).

    With ``GARBAGE_COLLECTION`` on (the default) and a session TTL, every store runs a
    background garbage collector every ``GC_INTERVAL_SECONDS`` until it is closed.
    """
    backend = settings.backend
    if backend == "redis":
        from ctx_memory.stores.redis import RedisStore  # noqa: PLC0415

        return RedisStore.from_settings(settings)
    if backend == "sqlite":
        from ctx_memory.stores.sqlite import SqliteStore  # noqa: PLC0415

        return SqliteStore.from_settings(settings)
    return InMemoryStore(
        ttl_seconds=settings.ttl_seconds,
        max_sessions=settings.max_sessions,
        gc_interval_seconds=gc_interval(settings),
    )
