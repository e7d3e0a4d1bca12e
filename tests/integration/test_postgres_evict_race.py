"""LRU eviction never evicts a session written to while it chose its victim.

Eviction picks the least recently used sessions, then locks them. A write queued on a
victim's row (an append holds it until it commits) makes that session the most recently
used; locking the row after the wait must not evict it anyway: PostgreSQL re-checks a
locking query's ``WHERE`` on the row's new version, not its ``ORDER BY ... LIMIT``, so
``ORDER BY last_access LIMIT n FOR UPDATE`` evicted it with the message just appended.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from store_records import NOW, init, msg, wait_for, waiting_on_locks

from ctx_memory.stores.postgres import PostgresStore

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.postgres


@pytest.fixture
def store(postgres_url: str, pg_schema: str) -> Iterator[PostgresStore]:
    with PostgresStore(
        postgres_url, schema=pg_schema, ttl_seconds=3600, max_sessions=2, pool_size=2
    ) as store:
        yield store


def test_a_session_appended_to_while_eviction_waits_is_not_evicted(
    store: PostgresStore, postgres_url: str
) -> None:
    schema = store.schema
    store.append_messages("a", [msg(0)], init=init("a"), now=NOW)  # the least recently used
    store.append_messages("b", [msg(1)], init=init("b"), now=NOW)
    results: dict[str, Any] = {}
    with (
        psycopg.connect(postgres_url, autocommit=True) as watcher,
        psycopg.connect(postgres_url) as holder,
    ):
        # Hold a's row: the append to a queues first, then the eviction that a new session
        # starts (a is its victim by the order it read).
        # (writing it, as a ctx_memory write does: an append waiting for a row only locked is
        # rolled back and made again, behind the others; test_expiry_after_a_lock_wait.py)
        holder.execute(
            f'UPDATE "{schema}".sessions SET last_access = last_access WHERE id = %s', ("a",)
        )

        def append() -> None:
            results["append"] = store.append_messages("a", [msg(2)], init=init("a"), now=NOW)

        def create() -> None:
            results["create"] = store.append_messages("c", [msg(3)], init=init("c"), now=NOW)

        appending = threading.Thread(target=append)
        appending.start()
        wait_for(lambda: waiting_on_locks(watcher, schema) >= 1)
        creating = threading.Thread(target=create)
        creating.start()
        wait_for(lambda: waiting_on_locks(watcher, schema) >= 2)
        holder.commit()  # the append commits (a is now the newest), then the eviction runs
        appending.join(10)
        creating.join(10)
    assert results["append"].added == 1
    created = results["create"]
    assert (created.created, created.added) == (True, 1)
    assert created.evicted == ("b",)  # the least recently used once a was written to
    assert sorted(store.list_sessions()) == ["a", "c"]
    assert [m["id"] for m in store.get_messages("a")] == ["id-0", "id-2"]


def test_eviction_still_takes_the_least_recently_used(store: PostgresStore) -> None:
    for i, sid in enumerate(("a", "b", "c", "d")):
        result = store.append_messages(sid, [msg(i)], init=init(sid), now=NOW)
        assert result.evicted == (() if i < 2 else (("a", "b")[i - 2],))
    store.append_messages("c", [msg(9)], init=init("c"), now=NOW)  # c is now the newest
    assert store.append_messages("e", [msg(5)], init=init("e"), now=NOW).evicted == ("d",)
    assert sorted(store.list_sessions()) == ["c", "e"]
