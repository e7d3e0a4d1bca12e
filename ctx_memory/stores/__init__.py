"""Storage backends behind one interface: in-memory, SQLite, Redis, PostgreSQL, and yours.

:func:`create_store` builds the backend that settings select; the Redis, SQLite and
PostgreSQL modules are imported only when used.

A third-party store registers under the ``ctx_memory.stores`` entry point group; its name
then works as ``STORE`` (settings, ``CTX_MEMORY_STORE``, ``ContextManager(store="name")``,
the CLI). The entry point names a store class with a ``from_settings(settings)`` classmethod,
or any callable taking the settings and returning a store::

    # the third party's pyproject.toml
    [project.entry-points."ctx_memory.stores"]
    blob = "blob_store:BlobStore"
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from ctx_memory.errors import ConfigurationError, CtxMemoryError
from ctx_memory.stores._gc import gc_interval
from ctx_memory.stores.base import BaseStore, EncodedItem, EncodedMessage, Header, WriteResult
from ctx_memory.stores.memory import InMemoryStore

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

    from ctx_memory.config import Settings

__all__ = [
    "ENTRY_POINT_GROUP",
    "BaseStore",
    "EncodedItem",
    "EncodedMessage",
    "Header",
    "InMemoryStore",
    "WriteResult",
    "create_store",
    "registered_stores",
]

ENTRY_POINT_GROUP = "ctx_memory.stores"
"""The entry point group third-party stores register in (name → ``module:attribute``)."""

_BUILTIN = frozenset(("memory", "sqlite", "redis", "postgres"))


def registered_stores() -> dict[str, EntryPoint]:
    """Third-party stores installed in this environment, by name (nothing is imported).

    Entry points named like a built-in store are left out: ``STORE=redis`` always means
    ctx_memory's own.
    """
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in _BUILTIN}


def _from_entry_point(name: str, settings: Settings) -> BaseStore:
    entry = registered_stores().get(name)
    if entry is None:  # settings validate STORE: only an uninstall since then gets here
        msg = f"no store is named {name!r} (entry point group {ENTRY_POINT_GROUP!r})"
        raise ConfigurationError("STORE", msg)
    try:
        target: Any = entry.load()
    except Exception as e:
        msg = f"the store {name!r} ({entry.value}) cannot be imported: {type(e).__name__}: {e}"
        raise ConfigurationError("STORE", msg) from e
    factory = getattr(target, "from_settings", target)
    if not callable(factory):
        msg = f"the store {name!r} ({entry.value}) is neither a factory nor has from_settings"
        raise ConfigurationError("STORE", msg)
    try:
        store = factory(settings)
    except CtxMemoryError:
        raise  # the store's own error (a server it cannot reach, say), as built-in stores'
    except Exception as e:  # noqa: BLE001 - any failure to build is the STORE setting's
        from ctx_memory.config import redact_url  # noqa: PLC0415 - config imports this module

        msg = (
            f"the store {name!r} ({entry.value}) could not be built: {type(e).__name__}: "
            f"{redact_url(str(e))}"
        )
        raise ConfigurationError("STORE", msg) from None  # its text may hold a secret
    if not isinstance(store, BaseStore):
        msg = (
            f"the store {name!r} ({entry.value}) built a {type(store).__name__}, "
            "not a ctx_memory.stores.base.BaseStore"
        )
        raise ConfigurationError("STORE", msg)
    return store


def create_store(settings: Settings) -> BaseStore:
    """The store ``settings`` select (``STORE`` / ``USE_REDIS_CACHING``).

    With ``GARBAGE_COLLECTION`` on (the default) and a session TTL, every built-in store
    runs a background garbage collector every ``GC_INTERVAL_SECONDS`` until it is closed.
    A name registered in the ``ctx_memory.stores`` entry point group builds that store.

    Raises:
        ConfigurationError: A registered store cannot be imported or built.
    """
    backend = settings.backend
    if backend == "redis":
        from ctx_memory.stores.redis import RedisStore  # noqa: PLC0415

        return RedisStore.from_settings(settings)
    if backend == "sqlite":
        from ctx_memory.stores.sqlite import SqliteStore  # noqa: PLC0415

        return SqliteStore.from_settings(settings)
    if backend == "postgres":
        from ctx_memory.stores.postgres import PostgresStore  # noqa: PLC0415

        return PostgresStore.from_settings(settings)
    if backend == "memory":
        return InMemoryStore(
            ttl_seconds=settings.ttl_seconds,
            max_sessions=settings.max_sessions,
            gc_interval_seconds=gc_interval(settings),
        )
    return _from_entry_point(backend, settings)
