"""Tenant-prefixed storage: one ContextManager per tenant, each in its own namespace.

A key opens one tenant, and a tenant's sessions live where no other tenant's manager looks:
not a filter over shared storage but separate storage, so no request can name its way
into another tenant's data, whatever session id it sends.

=========  ==========================================================================
store      where tenant ``acme`` lives (:func:`tenant_settings`)
=========  ==========================================================================
memory     its own :class:`~ctx_memory.stores.memory.InMemoryStore` (own ``MAX_SESSIONS``)
sqlite     its own file: ``ctx_memory.sqlite3`` becomes ``ctx_memory.tenant-acme.sqlite3``
           (a path with no extension: ``.sqlite3`` added for a tenant named like a
           side file, ``acme-wal``, so it is never tenant ``acme``'s WAL)
redis      its own key prefix: ``REDIS_KEY_PREFIX`` + ``:tenant:acme``
postgres   its own schema: ``POSTGRES_SCHEMA``'s first 15 characters, ``_t`` and 22 hex
           digits of a SHA-256 of schema and tenant (:func:`postgres_tenant_schema`)
=========  ==========================================================================

Any other store: pass ``create_app(tenant_manager=...)``, a function from a tenant name to
its manager. A server without keys has one tenant, :data:`~ctx_memory.server.keys.DEFAULT_TENANT`,
on the configured store as it is (no prefix), so sessions written through the library
are the ones it serves.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

from ctx_memory.config import with_overrides
from ctx_memory.errors import ConfigurationError
from ctx_memory.manager import ContextManager
from ctx_memory.server.keys import check_tenant

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from ctx_memory.config import Settings

__all__ = ["Tenants", "postgres_tenant_schema", "tenant_settings"]


def postgres_tenant_schema(schema: str, tenant: str) -> str:
    """The PostgreSQL schema of ``tenant`` under the app's ``schema`` (a valid schema name).

    Tenant names may hold upper-case letters and ``-``, which a schema name may not, and the
    schema name has at most 40 characters: the tenant is hashed with the app's schema, so
    two tenants (or two apps) never share a schema, and the name stays readable by its
    start.
    """
    digest = hashlib.sha256(f"{schema}\0{tenant}".encode()).hexdigest()[:22]
    return f"{schema[:15]}_t{digest}"


_SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
"""What SQLite appends to a database's name for the files it keeps beside it."""


def tenant_settings(settings: Settings, tenant: str) -> Settings:
    """The settings of ``tenant``'s store: ``settings`` with the tenant's namespace.

    Pure: builds no store. See the module docstring for the layout per store.

    Raises:
        ConfigurationError: The store has no tenant layout here (pass a
            ``tenant_manager`` to :func:`~ctx_memory.server.create_app`).

    Example:
        .. code-block:: python

            from ctx_memory.config import load_settings
            from ctx_memory.server.tenants import tenant_settings

            base = load_settings(store="redis", redis_key_prefix="app")
            assert tenant_settings(base, "acme").redis_key_prefix == "app:tenant:acme"
    """
    check_tenant(tenant)
    backend = settings.backend
    if backend == "memory":
        return settings
    if backend == "redis":
        return with_overrides(
            settings, redis_key_prefix=f"{settings.redis_key_prefix}:tenant:{tenant}"
        )
    if backend == "sqlite":
        path = settings.sqlite_path
        if path in ("", ":memory:"):
            return settings  # a private database per store object already
        pure = PurePath(path)
        suffix = pure.suffix
        if not suffix and tenant.endswith(_SQLITE_SIDE_FILES):
            # Without an extension, tenant "acme-wal"'s file would be tenant "acme"'s WAL.
            suffix = ".sqlite3"
        name = f"{pure.stem}.tenant-{tenant}{suffix}"
        return with_overrides(settings, sqlite_path=str(pure.with_name(name)))
    if backend == "postgres":
        schema = postgres_tenant_schema(settings.postgres_schema, tenant)
        return with_overrides(settings, postgres_schema=schema)
    msg = (
        f"the HTTP service has no tenant layout for the {backend} store: pass"
        " create_app(tenant_manager=...) (a function from a tenant name to its manager)"
    )
    raise ConfigurationError("STORE", msg)


class Tenants:
    """The managers of a server's tenants, built on first use and closed with the app.

    Args:
        names: The tenants that exist (the others are refused).
        factory: Builds a tenant's manager.
        shared: Managers given by the caller, by tenant: used as they are, never closed.
    """

    def __init__(
        self,
        names: Iterable[str],
        factory: Callable[[str], ContextManager],
        *,
        shared: dict[str, ContextManager] | None = None,
    ) -> None:
        self.names: tuple[str, ...] = tuple(sorted(set(names)))
        self._factory = factory
        self._shared = dict(shared or {})
        self._built: dict[str, ContextManager] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Tenants({len(self.names)} tenants, {len(self._built)} open)"

    def __contains__(self, tenant: object) -> bool:
        return tenant in self.names

    def get(self, tenant: str) -> ContextManager:
        """The manager of ``tenant``.

        Raises:
            KeyError: No such tenant.
        """
        manager = self._shared.get(tenant) or self._built.get(tenant)
        if manager is not None:
            return manager
        if tenant not in self.names:
            raise KeyError(tenant)
        with self._lock:
            manager = self._built.get(tenant)
            if manager is None:
                manager = self._built[tenant] = self._factory(tenant)
        return manager

    async def aclose(self) -> None:
        """Close the managers this object built (not the ones it was given)."""
        with self._lock:
            built, self._built = list(self._built.values()), {}
        for manager in built:
            await manager.aclose()


def settings_factory(settings: Settings) -> Callable[[str], ContextManager]:
    """A tenant factory: :class:`ContextManager` over :func:`tenant_settings`.

    Checks the store has a tenant layout now, so a bad configuration fails at startup.
    """
    tenant_settings(settings, "probe")

    def build(tenant: str) -> ContextManager:
        own = tenant_settings(settings, tenant)
        if own.backend == "sqlite":
            _refuse_a_renamed_file(settings.sqlite_path, own.sqlite_path, tenant)
        return ContextManager(own)

    return build


def _refuse_a_renamed_file(base: str, path: str, tenant: str) -> None:
    """Refuse a tenant file that would lose a database a release before this one wrote.

    Under a path with no extension, a tenant named like a SQLite side file
    (``acme-wal``) had ``x.tenant-acme-wal``: also tenant ``acme``'s WAL. It now has
    ``x.tenant-acme-wal.sqlite3``. While the old file holds a database, that tenant's
    sessions would be out of sight, and opening tenant ``acme`` would take it for its WAL
    and drop it: both refuse, saying to rename it (with the service stopped).
    """
    if PurePath(base).suffix:
        return
    own = Path(path)
    legacy = [Path(f"{path}{side}") for side in _SQLITE_SIDE_FILES]  # beside this tenant's
    if own.suffix == ".sqlite3" and tenant.endswith(_SQLITE_SIDE_FILES) and not own.exists():
        legacy.append(own.with_suffix(""))  # where this tenant's file was
    for old in legacy:
        try:
            with old.open("rb") as f:
                head = f.read(16)
        except OSError:
            continue
        if head == b"SQLite format 3\x00":
            msg = (
                f"{old.name!r} holds the sessions of a tenant a release before this one kept "
                f"there; with the service stopped, rename it to {old.name + '.sqlite3'!r} "
                "(its name is also another tenant's SQLite side file)"
            )
            raise ConfigurationError("SQLITE_PATH", msg)
