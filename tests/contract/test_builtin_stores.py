"""The shipped contract suite (``ctx_memory.testing``) on every built-in store.

Each class takes its stores from ``make_store`` (``tests/conftest.py``), narrowed to one
kind: ``redis`` is a real server, ``cluster`` a real 3-master Redis Cluster and
``postgres`` a real PostgreSQL server (one schema per test), all started by the test
session; stores built in one test share their data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from ctx_memory.testing import StoreContract

if TYPE_CHECKING:
    from collections.abc import Callable

    from ctx_memory.stores.base import BaseStore


class BuiltInStore(StoreContract):
    @pytest.fixture
    def store_factory(self, make_store: Callable[..., BaseStore]) -> Callable[..., BaseStore]:
        return make_store


@pytest.mark.stores("memory")
class TestInMemoryStore(BuiltInStore):
    supports_shared_backend = False  # each InMemoryStore object keeps its own sessions


@pytest.mark.stores("sqlite")
class TestSqliteStore(BuiltInStore):
    pass


@pytest.mark.stores("redis")
class TestRedisStore(BuiltInStore):
    pass


@pytest.mark.stores("cluster")
class TestRedisClusterStore(BuiltInStore):
    # The LRU index has its own hash slot and is touched before each write (see
    # ctx_memory.stores._redis_ops: eviction on a cluster relies on it).
    supports_exact_lru = False


@pytest.mark.stores("postgres")
class TestPostgresStore(BuiltInStore):
    pass


def test_every_built_in_store_runs_the_contract() -> None:
    assert TestInMemoryStore.excluded_tests == (
        "test_lru_is_shared_between_store_objects",
        "test_write_after_another_store_object_deleted_the_session",
    )
    for suite in (TestSqliteStore, TestRedisStore, TestPostgresStore):
        assert suite.excluded_tests == ()
    assert TestRedisClusterStore.excluded_tests == (
        "test_a_refused_or_empty_write_is_no_access",
        "test_appending_only_known_ids_is_no_access",
    )


def test_every_built_in_store_keeps_recall_segments() -> None:
    from ctx_memory.stores.memory import InMemoryStore
    from ctx_memory.stores.postgres import PostgresStore
    from ctx_memory.stores.redis import RedisStore
    from ctx_memory.stores.sqlite import SqliteStore

    for store_class in (InMemoryStore, SqliteStore, RedisStore, PostgresStore):
        assert store_class.keeps_recall_segments, store_class
