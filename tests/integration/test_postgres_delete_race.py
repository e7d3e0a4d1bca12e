"""Deleting a session while an append to it is in flight leaves nothing of it behind.

The append holds the session row's lock until it commits. A delete that queued behind it
must delete the messages that append wrote too: a delete run as one statement took its
snapshot before the wait and left them behind, unreachable (the session row gone, the
messages still on disk: a delete that did not delete).
"""

from __future__ import annotations

import asyncio
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
    with PostgresStore(postgres_url, schema=pg_schema, ttl_seconds=3600, pool_size=2) as store:
        yield store


def rows_left(conn: psycopg.Connection[Any], schema: str, sk: int) -> int:
    row = conn.execute(f'SELECT count(*) FROM "{schema}".messages WHERE sk = %s', (sk,)).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("run", ["sync", "async"])
def test_a_delete_queued_behind_an_append_deletes_what_the_append_wrote(
    store: PostgresStore, postgres_url: str, run: str
) -> None:
    schema = store.schema
    store.append_messages("s", [msg(0)], init=init("s"), now=NOW)
    with psycopg.connect(postgres_url, autocommit=True) as watcher:
        found = watcher.execute(f'SELECT sk FROM "{schema}".sessions WHERE id = %s', ("s",))
        (sk,) = found.fetchone() or (None,)
        assert sk is not None
        results: dict[str, Any] = {}
        with psycopg.connect(postgres_url) as holder:
            # Hold the session row, so the append and then the delete queue behind it.
            # (writing it, as a ctx_memory write does: an append waiting for a row only
            # locked is rolled back and made again, behind the others; see
            # test_expiry_after_a_lock_wait.py)
            holder.execute(
                f'UPDATE "{schema}".sessions SET last_access = last_access WHERE id = %s', ("s",)
            )

            def append() -> None:
                results["append"] = store.append_messages("s", [msg(1)], init=init("s"), now=NOW)

            def delete() -> None:
                if run == "sync":
                    results["delete"] = store.delete("s")
                else:
                    results["delete"] = asyncio.run(store.adelete("s"))

            appending = threading.Thread(target=append)
            appending.start()
            wait_for(lambda: waiting_on_locks(watcher, "sessions") >= 1)
            deleting = threading.Thread(target=delete)
            deleting.start()
            wait_for(lambda: waiting_on_locks(watcher, "sessions") >= 2)
            holder.commit()  # the append runs and commits, then the delete
            appending.join(10)
            deleting.join(10)
        assert results["append"].added == 1
        assert results["delete"] is True
        if results["append"].created:
            # The append waited, so it was rolled back and made again (expiry is judged
            # after the lock: test_expiry_after_a_lock_wait.py), behind the delete: a new
            # session holding its message alone, and nothing of the deleted one.
            assert [m["id"] for m in store.get_messages("s")] == ["id-1"]
            store.delete("s")
        assert store.get_header("s") is None
        assert rows_left(watcher, schema, sk) == 0  # nothing of the session left on disk
        # The id is free again: a new session starts empty.
        store.append_messages("s", [msg(2)], init=init("s"), now=NOW)
        assert [m["id"] for m in store.get_messages("s")] == ["id-2"]
