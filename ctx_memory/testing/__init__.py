"""The store contract suite, for any store: subclass :class:`StoreContract` and run pytest.

A store is one interface (:class:`~ctx_memory.stores.base.BaseStore`) plus this suite: the
same tests run on the in-memory, SQLite, Redis and Redis Cluster stores of ctx_memory.
A third-party store's test module subclasses :class:`StoreContract`, overrides one
fixture, ``store_factory``, and declares the optional capabilities its store lacks; the
suite needs pytest and nothing else (``pip install "ctx-memory[testing]"``).

The tests are grouped by what they check:

* :mod:`ctx_memory.testing.operation_tests`: each store operation called directly (upsert,
  id idempotency, counters, ``LRANGE`` reads, fetched items, shared state and its size
  limit, header, clear, import, history edits, paging, async twins);
* :mod:`ctx_memory.testing.lifecycle_tests`: TTL, LRU eviction, lifecycle hooks,
  concurrent writers and several store objects on one backend;
* :mod:`ctx_memory.testing.manager_tests`: the same through a
  :class:`~ctx_memory.manager.ContextManager` (the documents of a workload, bad values
  refused before any write, history edits, paging, events);
* :mod:`ctx_memory.testing.recall_segment_tests`: the saved recall-index segments (kept
  in order, dropped with history edits and with the session; or, for a store whose
  ``keeps_recall_segments`` is false, never kept).
"""

from __future__ import annotations

from ctx_memory._extras import missing_extra

try:
    import pytest  # noqa: F401  (checked here: every module of the suite needs it)
except ImportError as e:  # pragma: no cover - pytest is in every test environment
    raise missing_extra("testing", __name__, e) from e

from ctx_memory.testing._base import StoreFactory
from ctx_memory.testing.lifecycle_tests import StoreLifecycleTests
from ctx_memory.testing.manager_tests import ManagerContractTests
from ctx_memory.testing.operation_tests import StoreOperationTests
from ctx_memory.testing.recall_segment_tests import StoreRecallSegmentTests

__all__ = ["StoreContract", "StoreFactory"]


class StoreContract(
    StoreOperationTests, StoreLifecycleTests, ManagerContractTests, StoreRecallSegmentTests
):
    """The whole store contract, as a pytest test class to subclass.

    Name the subclass ``Test...`` so pytest collects it, and override the
    ``store_factory`` fixture: it returns a :class:`StoreFactory`, a callable taking
    ``ttl_seconds=`` and ``max_sessions=`` (``None`` for none) that builds a store. Every
    store it builds within one test must share one backend (one database, one key
    prefix), and the next test must start from an empty one; the suite closes the stores
    it built.

    A store without a capability says so with a class attribute, and the tests that need
    it are left out of the subclass (``excluded_tests`` names them):

    * ``supports_ttl = False``: no ``ttl_seconds`` (no expiry);
    * ``supports_max_sessions = False``: no ``max_sessions`` (no LRU eviction);
    * ``supports_shared_backend = False``: two store objects do not see each other's
      writes (like the in-memory store); the multi-writer tests then run on one object.

    A test that fails names the clause of the contract in its docstring.

    Example:
        .. code-block:: python

            import pytest

            from ctx_memory.stores import InMemoryStore
            from ctx_memory.testing import StoreContract


            class TestInMemoryStore(StoreContract):
                supports_shared_backend = False  # each object keeps its own sessions

                @pytest.fixture
                def store_factory(self):
                    return InMemoryStore


            assert "test_lru_is_shared_between_store_objects" in TestInMemoryStore.excluded_tests
    """
