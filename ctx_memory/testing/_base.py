"""What every contract test class shares: the store fixtures, capabilities and records.

A test that needs a capability a store may lack is decorated with :func:`requires`; a
subclass declaring that capability absent (``supports_ttl = False``, ...) does not have
the test at all, so pytest neither runs nor reports it (pytest collects no attribute that
is ``None``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, TypeVar

import pytest

from ctx_memory.schema import dumps
from ctx_memory.stores.base import EncodedItem, EncodedMessage, Header, new_header

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from ctx_memory.stores.base import BaseStore, WriteResult

__all__ = [
    "LATER",
    "NOW",
    "Capability",
    "ContractBase",
    "StoreFactory",
    "append",
    "contents",
    "decoded",
    "init",
    "item",
    "msg",
    "requires",
]

NOW = "2025-01-01T00:00:00+00:00"
LATER = "2025-01-01T00:05:00+00:00"

Capability = Literal["ttl", "max_sessions", "shared_backend", "exact_lru"]
"""An optional store capability; a contract class declares it with ``supports_<name>``."""

TestT = TypeVar("TestT", bound="Callable[..., Any]")

_REQUIRES = "_ctx_memory_contract_requires"


def requires(*capabilities: Capability) -> Callable[[TestT], TestT]:
    """Mark a contract test as meaningful only for stores with these capabilities."""

    def mark(test: TestT) -> TestT:
        setattr(test, _REQUIRES, frozenset(capabilities))
        return test

    return mark


class StoreFactory(Protocol):
    """Builds one store object on the test's backend.

    Every store a factory builds during one test shares that test's data (the same
    database, the same key prefix), like several processes on one backend; the next test
    gets a backend of its own. ``ttl_seconds`` and ``max_sessions`` are the constructor
    arguments every store accepts (:class:`~ctx_memory.stores.base.BaseStore`).
    """

    def __call__(
        self, *, ttl_seconds: float | None = None, max_sessions: int | None = None
    ) -> BaseStore:
        """A new store object; the suite closes it after the test."""
        ...


def _supports(cls: type[ContractBase], capability: str) -> bool:
    """Whether a contract class declares ``capability`` (its ``supports_*`` flag)."""
    flags = {
        "ttl": cls.supports_ttl,
        "max_sessions": cls.supports_max_sessions,
        "shared_backend": cls.supports_shared_backend,
        "exact_lru": cls.supports_exact_lru,
    }
    return flags[capability]


class ContractBase:
    """Fixtures and capability flags of the contract suite (see ``StoreContract``).

    Attributes:
        supports_ttl: The store accepts ``ttl_seconds`` and expires sessions.
        supports_max_sessions: The store accepts ``max_sessions`` and evicts the least
            recently used session.
        supports_shared_backend: Two store objects from one factory see each other's
            writes (a database or server, not one object's memory).
        supports_exact_lru: With ``max_sessions``, a write that changes nothing (an
            append of stored ids only) is no access: it leaves the LRU order as it was.
            A store whose LRU index is touched before the write (Redis Cluster: the index
            is in another hash slot than the session) says ``False``.
        excluded_tests: Names of the tests this class leaves out for want of a
            capability (set for each subclass).
    """

    supports_ttl: ClassVar[bool] = True
    supports_max_sessions: ClassVar[bool] = True
    supports_shared_backend: ClassVar[bool] = True
    supports_exact_lru: ClassVar[bool] = True
    excluded_tests: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        excluded = []
        for name, test in _contract_tests(cls).items():
            current = getattr(cls, name, None)
            if current is not None and current is not test:
                continue  # the subclass wrote its own version of the test
            needs: frozenset[str] = getattr(test, _REQUIRES, frozenset())
            if all(_supports(cls, capability) for capability in needs):
                if current is None:  # left out by a parent class, back in here
                    setattr(cls, name, test)
            else:
                setattr(cls, name, None)
                excluded.append(name)
        cls.excluded_tests = tuple(sorted(excluded))

    # ------------------------------------------------------------------ fixtures

    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        """Override this fixture: return a :class:`StoreFactory` for your store."""
        msg = (
            f"{type(self).__name__} must override the store_factory fixture: return a "
            "callable taking ttl_seconds= and max_sessions= that builds your store"
        )
        raise NotImplementedError(msg)

    @pytest.fixture
    def open_store(self, store_factory: StoreFactory) -> Iterator[StoreFactory]:
        """The factory, closing every store it built once the test is over."""
        made: list[BaseStore] = []

        def build(
            *, ttl_seconds: float | None = None, max_sessions: int | None = None
        ) -> BaseStore:
            store = store_factory(ttl_seconds=ttl_seconds, max_sessions=max_sessions)
            made.append(store)
            return store

        yield build
        for store in made:
            store.close()

    @pytest.fixture
    def store(self, open_store: StoreFactory) -> BaseStore:
        """A fresh store: no TTL, no session limit."""
        return open_store()


def _contract_tests(cls: type) -> dict[str, Callable[..., Any]]:
    """The tests the contract classes of ``cls``'s ancestry define, by name."""
    found: dict[str, Callable[..., Any]] = {}
    for klass in reversed(cls.__mro__):
        if not klass.__module__.startswith("ctx_memory.testing"):
            continue
        found.update(
            {name: v for name, v in vars(klass).items() if name.startswith("test") and callable(v)}
        )
    return found


# ---------------------------------------------------------------------- records


def init(session_id: str, now: str = NOW) -> Header:
    """The header a fresh session gets."""
    return new_header(session_id, now=now, encoding="o200k_base")


def msg(i: int, tokens: int = 3, role: str = "user") -> EncodedMessage:
    """Message ``i``: content ``m<i>``, id ``id-<i>``."""
    record = {"role": role, "content": f"m{i}", "token_count": tokens, "id": f"id-{i}"}
    return EncodedMessage(dumps(record), tokens, f"id-{i}")


def item(source_type: str, i: int, fp: str | None = None) -> EncodedItem:
    """Fetched item ``i``: content ``c<i>``, fingerprint ``fp-<type>-<i>`` unless given."""
    body = {"source_type": source_type, "content": f"c{i}", "url": f"https://x/{i}"}
    return EncodedItem(source_type, dumps(body), 5, fp or f"fp-{source_type}-{i}")


def decoded(encoded: EncodedItem | EncodedMessage) -> dict[str, Any]:
    """The record an encoded item or message holds."""
    record: dict[str, Any] = json.loads(encoded.json)
    return record


def contents(records: list[dict[str, Any]]) -> list[str]:
    """The ``content`` of each record."""
    return [str(r["content"]) for r in records]


def append(store: BaseStore, sid: str, *indices: int, now: str = NOW) -> WriteResult:
    """Append messages ``indices`` (see :func:`msg`) to session ``sid``."""
    return store.append_messages(sid, [msg(i) for i in indices], init=init(sid), now=now)
