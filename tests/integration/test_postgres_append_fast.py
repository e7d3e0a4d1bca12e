"""The one-message append without a lookup of its id: what must stay true.

The fast statement does not look for the message id before inserting it; ``UNIQUE (sk, id)``
refuses an id the session holds (a unique violation rolls the whole statement back) and the
store sends the function ``append_one``, which skips it. Each test would fail if that path
lost a guarantee: each id stored once, exact counters, nothing touched by a refused append
(timestamp, TTL, LRU clock), the replies the store gave when it looked first, and a
connection that goes on working after the failed statement, sync and async, in autocommit
and in a caller's transaction.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from langchain_core.messages import HumanMessage
from psycopg.pq import TransactionStatus
from store_records import NOW, init, msg

from ctx_memory.events import EventType
from ctx_memory.manager import ContextManager
from ctx_memory.schema import dumps
from ctx_memory.stores import postgres as postgres_module
from ctx_memory.stores.postgres import PostgresStore

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ctx_memory.events import Event

pytestmark = pytest.mark.postgres

LATER = "2025-01-02T00:00:00+00:00"


def reply(result: Any) -> tuple[bool, int, tuple[str, ...]]:
    return result.created, result.added, result.evicted


def session_row(url: str, schema: str, sid: str) -> tuple[Any, ...]:
    """Everything an append may change on the session row."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT n_messages, mc, tc, ts, expires_at, last_access "
            f'FROM "{schema}".sessions WHERE id = %s',
            (sid,),
        ).fetchone()
    assert row is not None
    return tuple(row)


@pytest.fixture
def refused(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The errors the prepared fast statement met on the server (class names), sync and async."""
    seen: list[str] = []
    send, asend = postgres_module.send, postgres_module.asend

    def recording_send(*args: Any) -> Any:
        try:
            return send(*args)
        except psycopg.Error as e:
            seen.append(type(e).__name__)
            raise

    async def recording_asend(*args: Any) -> Any:
        try:
            return await asend(*args)
        except psycopg.Error as e:
            seen.append(type(e).__name__)
            raise

    monkeypatch.setattr(postgres_module, "send", recording_send)
    monkeypatch.setattr(postgres_module, "asend", recording_asend)
    return seen


@pytest.fixture
def store(postgres_url: str, pg_schema: str) -> Iterator[PostgresStore]:
    with PostgresStore(postgres_url, schema=pg_schema, ttl_seconds=3600, pool_size=1) as store:
        yield store


def test_a_retried_id_is_stored_once_and_touches_nothing(
    store: PostgresStore, postgres_url: str, refused: list[str]
) -> None:
    """The second append of an id: refused by the index, skipped by the function; the
    counters, timestamp, TTL and LRU clock stay as the first append left them."""
    assert reply(store.append_messages("s", [msg(0, 5)], init=init("s"), now=NOW)) == (
        True,
        1,
        (),
    )
    assert reply(store.append_messages("s", [msg(1, 7)], init=init("s"), now=NOW)) == (
        False,
        1,
        (),
    )
    assert refused == []  # new ids: the fast statement, nothing refused
    before = session_row(postgres_url, store.schema, "s")
    assert before[:4] == (2, 2, 12, dumps(NOW))

    time.sleep(0.01)  # a touch would move expires_at
    again = store.append_messages("s", [msg(1, 7)], init=init("s"), now=LATER)
    assert reply(again) == (False, 0, ())  # the reply of an append that looked first
    assert refused == ["UniqueViolation"]  # the index refused it; the function skipped it
    assert session_row(postgres_url, store.schema, "s") == before
    header = store.get_header("s")
    assert header is not None
    meta = header["metadata"]
    assert (meta["message_count"], meta["token_count"], meta["timestamp"]) == (2, 12, NOW)
    assert [m["content"] for m in store.get_messages("s")] == ["m0", "m1"]


def test_a_retry_after_a_lost_reply_counts_once(
    store: PostgresStore, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The append lands but its reply is lost (the connection drops): the store sends it
    again on a fresh connection, through the function, which finds the id and skips it.
    The message is stored once, and the reply is the first attempt's, ``added == 1``: the
    id was stored with this append's write token (``test_postgres_write_tokens.py`` drops
    the connection for real)."""
    store.append_messages("s", [msg(0)], init=init("s"), now=NOW)
    send = postgres_module.send
    calls: list[int] = []

    def lose_the_first_reply(*args: Any) -> Any:
        calls.append(1)
        row = send(*args)
        if len(calls) == 1:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return row

    monkeypatch.setattr(postgres_module, "send", lose_the_first_reply)
    result = store.append_messages("s", [msg(1, 3)], init=init("s"), now=LATER)
    assert reply(result) == (False, 1, ())
    assert calls == [1]  # the second attempt is the function, not the fast statement
    n, mc, tc, ts, _, _ = session_row(postgres_url, store.schema, "s")
    assert (n, mc, tc, ts) == (2, 2, 5, dumps(LATER))  # the first attempt's write, once
    assert [m["content"] for m in store.get_messages("s")] == ["m0", "m1"]
    assert reply(store.append_messages("s", [msg(2)], init=init("s"), now=LATER)) == (
        False,
        1,
        (),
    )


def test_a_user_supplied_id_already_in_the_session(
    postgres_url: str, pg_schema: str, refused: list[str]
) -> None:
    """Through the manager: a message whose id the session holds (different content too)
    is passed over; one message, one MESSAGE_ADDED event, the token count of the first."""
    with ContextManager(
        store=PostgresStore(postgres_url, schema=pg_schema), token_counter="approximate"
    ) as cm:
        events: list[Event] = []
        cm.on(EventType.MESSAGE_ADDED, events.append)
        cm.add_messages("s", [HumanMessage("where to?", id="q1")])
        tokens = cm.get_metadata("s")["token_count"]
        cm.add_messages("s", [HumanMessage("where to?", id="q1")])
        cm.add_messages("s", [HumanMessage("somewhere else entirely", id="q1")])
        assert refused == ["UniqueViolation", "UniqueViolation"]
        history = cm.get_history("s")
        assert [(r["id"], r["content"]) for r in history] == [("q1", "where to?")]
        meta = cm.get_metadata("s")
        assert (meta["message_count"], meta["token_count"]) == (1, tokens)
        assert [e.data["count"] for e in events] == [1]
        cm.add_user_message("s", "and back")
        assert cm.get_metadata("s")["message_count"] == 2
        assert refused == ["UniqueViolation", "UniqueViolation"]


def test_two_sessions_may_hold_the_same_message_id(
    store: PostgresStore, refused: list[str]
) -> None:
    """The unique key is per session: the same id is a new message in another session."""
    for sid in ("a", "b"):
        assert reply(store.append_messages(sid, [msg(0, 4)], init=init(sid), now=NOW)) == (
            True,
            1,
            (),
        )
        assert reply(store.append_messages(sid, [msg(1, 6)], init=init(sid), now=NOW)) == (
            False,
            1,
            (),
        )
    assert refused == []
    assert store.append_messages("b", [msg(1)], init=init("b"), now=NOW).added == 0
    assert refused == ["UniqueViolation"]
    for sid in ("a", "b"):
        assert [m["id"] for m in store.get_messages(sid)] == ["id-0", "id-1"]
        header = store.get_header(sid)
        assert header is not None
        assert (header["metadata"]["message_count"], header["metadata"]["token_count"]) == (
            2,
            10,
        )


def test_the_connection_that_met_the_violation_serves_the_next_append(
    store: PostgresStore, refused: list[str]
) -> None:
    """The failed statement was its own transaction: the connection is idle again, kept
    by the store, and the next append on it takes the fast statement."""
    store.append_messages("s", [msg(0)], init=init("s"), now=NOW)
    (lease,) = store._kept
    pid = lease.conn.info.backend_pid
    assert store.append_messages("s", [msg(0)], init=init("s"), now=NOW).added == 0
    assert refused == ["UniqueViolation"]
    (after,) = store._kept
    assert after.conn is lease.conn
    assert after.conn.info.backend_pid == pid
    assert after.conn.info.transaction_status == TransactionStatus.IDLE
    for i in range(1, 4):
        assert store.append_messages("s", [msg(i)], init=init("s"), now=NOW).added == 1
    assert store._kept[0].conn is lease.conn
    assert refused == ["UniqueViolation"]
    assert [m["content"] for m in store.get_messages("s")] == ["m0", "m1", "m2", "m3"]


@pytest.mark.parametrize("autocommit", [True, False])
def test_a_callers_pool_keeps_working_after_the_violation(
    postgres_url: str, pg_schema: str, refused: list[str], autocommit: bool
) -> None:
    """One connection, in autocommit or not (the store then runs each call in a
    transaction, which the violation aborts and psycopg rolls back)."""
    from psycopg_pool import ConnectionPool

    with (
        ConnectionPool(
            postgres_url, min_size=1, max_size=1, kwargs={"autocommit": autocommit}
        ) as pool,
        PostgresStore(pool=pool, schema=pg_schema) as store,
    ):
        store.append_messages("s", [msg(0)], init=init("s"), now=NOW)
        assert reply(store.append_messages("s", [msg(0)], init=init("s"), now=LATER)) == (
            False,
            0,
            (),
        )
        assert refused == ["UniqueViolation"]
        with pool.connection() as conn:
            assert conn.info.transaction_status == TransactionStatus.IDLE
        assert store.append_messages("s", [msg(1)], init=init("s"), now=LATER).added == 1
        header = store.get_header("s")
        assert header is not None
        meta = header["metadata"]
        assert (meta["message_count"], meta["token_count"], meta["timestamp"]) == (2, 4, LATER)


async def test_async_a_known_id_is_skipped_and_the_connection_goes_on(
    postgres_url: str, pg_schema: str, refused: list[str]
) -> None:
    store = PostgresStore(postgres_url, schema=pg_schema, pool_size=1)
    try:
        first = await store.aappend_messages("s", [msg(0, 3)], init=init("s"), now=NOW)
        assert reply(first) == (True, 1, ())
        again = await store.aappend_messages("s", [msg(0, 3)], init=init("s"), now=LATER)
        assert reply(again) == (False, 0, ())
        assert refused == ["UniqueViolation"]
        assert (await store.aappend_messages("s", [msg(1, 4)], init=init("s"), now=LATER)).added
        assert refused == ["UniqueViolation"]
        header = await store.aget_header("s")
        assert header is not None
        meta = header["metadata"]
        assert (meta["message_count"], meta["token_count"], meta["timestamp"]) == (2, 7, LATER)
        assert [m["content"] for m in await store.aget_messages("s")] == ["m0", "m1"]
    finally:
        await store.aclose()


def test_a_refused_append_does_not_touch_the_lru_clock(
    postgres_url: str, pg_schema: str, refused: list[str]
) -> None:
    """With ``max_sessions``, a known id leaves the session as old as it was: it is the
    one evicted when a new session needs room."""
    with PostgresStore(postgres_url, schema=pg_schema, max_sessions=2) as store:
        store.append_messages("a", [msg(0)], init=init("a"), now=NOW)
        store.append_messages("b", [msg(0)], init=init("b"), now=NOW)
        assert store.append_messages("a", [msg(0)], init=init("a"), now=NOW).added == 0
        assert refused == ["UniqueViolation"]
        created = store.append_messages("c", [msg(0)], init=init("c"), now=NOW)
        assert reply(created) == (True, 1, ("a",))
        assert store.list_sessions() == ["b", "c"]


def test_a_known_id_of_an_expired_session_starts_it_afresh(
    postgres_url: str, pg_schema: str, refused: list[str]
) -> None:
    """An expired session matches no row: the function replaces it, and the id it held is
    new to the new session (nothing is refused)."""
    with PostgresStore(postgres_url, schema=pg_schema, ttl_seconds=0.3) as store:
        store.append_messages("s", [msg(0)], init=init("s"), now=NOW)
        time.sleep(0.4)
        fresh = store.append_messages("s", [msg(0, 9)], init=init("s"), now=LATER)
        assert reply(fresh) == (True, 1, ())
        assert refused == []
        header = store.get_header("s")
        assert header is not None
        assert (header["metadata"]["message_count"], header["metadata"]["token_count"]) == (1, 9)
