"""A Ctrl-C (any ``BaseException``) landing inside a PostgreSQL call leaves the store whole.

A real Ctrl-C raises ``KeyboardInterrupt`` where CPython runs signal handlers: at the start
of a Python function, right after a call into C returns, on a loop's jump back. Each test
puts one at such a point by patching the function called there, then checks the same
store: its later calls succeed and the data is whole.

* A hot statement is prepared once per connection. A Ctrl-C after the server answered the
  PREPARE but before the connection recorded the name once left the statement prepared on
  the server and unknown to the client: every later use of that connection prepared it
  again and failed (``DuplicatePreparedStatement``). Such a connection is now closed, and
  the pool makes another.
* A Ctrl-C right after the pool handed out a connection, or at the start of the call that
  gives it back, once leaked it: after ``pool_size`` of them the next call waited for the
  pool, timed out, and replaced it. The connection now goes back to the pool or the store's
  stack whatever lands in between.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from psycopg.pq import TransactionStatus

from ctx_memory import ContextManager
from ctx_memory.stores import _postgres_wire as wire
from ctx_memory.stores import postgres as postgres_module
from ctx_memory.stores._postgres_statements import Prepared
from ctx_memory.stores.postgres import PostgresStore

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = pytest.mark.postgres

LATER = 5  # appends after the interrupted one


class Cut:
    """Makes the next ``armed`` calls of a patched function raise ``KeyboardInterrupt``."""

    def __init__(self) -> None:
        self.armed = 0
        self.cuts = 0

    def __call__(self) -> None:
        if self.armed:
            self.armed -= 1
            self.cuts += 1
            raise KeyboardInterrupt

    def wrap(self, function: Callable[..., Any]) -> Callable[..., Any]:
        """``function``, cut short at its start while armed."""

        def cut_short(*args: Any, **kwargs: Any) -> Any:
            self()
            return function(*args, **kwargs)

        return cut_short


# ------------------------------------------------------------ the prepare of a hot statement


@pytest.fixture(params=["at the reply check", "as the name is recorded"])
def prepare_cut(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Cut:
    """A Ctrl-C once the server has answered the PREPARE, before the name is recorded.

    At the start of the check of the reply, or in ``names.add`` itself (the connection's
    record of what it prepared: the last step before the name is known).
    """
    cut = Cut()
    if request.param == "at the reply check":
        monkeypatch.setattr(wire, "_failure", cut.wrap(wire._failure))
        return cut

    class Names(set[bytes]):
        def add(self, name: bytes) -> None:
            cut()
            super().add(name)

    class Session(wire._Session):
        __slots__ = ()

        def __init__(self, encoding: str) -> None:
            super().__init__(encoding)
            self.names = Names()

    monkeypatch.setattr(wire, "_Session", Session)
    return cut


@pytest.fixture(params=["own pool", "given pool", "given pool, transactions"])
def one_connection_store(
    request: pytest.FixtureRequest, postgres_url: str, pg_schema: str
) -> Iterator[PostgresStore]:
    """A store whose calls all run on one connection (one at a time)."""
    from psycopg_pool import ConnectionPool

    if request.param == "own pool":
        with PostgresStore(postgres_url, schema=pg_schema, pool_size=1) as store:
            yield store
        return
    autocommit = request.param == "given pool"
    with (
        ConnectionPool(
            postgres_url, min_size=1, max_size=1, kwargs={"autocommit": autocommit}
        ) as pool,
        PostgresStore(pool=pool, schema=pg_schema) as store,
    ):
        yield store


def assert_whole(manager: ContextManager, store: PostgresStore) -> None:
    """The session holds the appends after the interrupted one, its counters exact."""
    history = manager.get_context("s")["conversation_history"]
    assert [m["content"] for m in history] == [f"m{i}" for i in range(LATER)]
    assert store.count_messages("s") == LATER
    meta = manager.get_metadata("s")
    assert meta["message_count"] == LATER
    assert meta["token_count"] == sum(m["token_count"] for m in history) > 0


def test_a_ctrl_c_once_the_prepare_is_answered_leaves_appends_working(
    one_connection_store: PostgresStore, prepare_cut: Cut
) -> None:
    store = one_connection_store
    manager = ContextManager(store=store)
    manager.set_context("warm", "k", 1)  # the schema made; no hot statement prepared yet
    prepare_cut.armed = 1
    with pytest.raises(KeyboardInterrupt):
        manager.add_user_message("s", "cut short")  # its statement was never run
    assert prepare_cut.cuts == 1
    for i in range(LATER):  # each would fail with DuplicatePreparedStatement
        manager.add_user_message("s", f"m{i}")
        assert [m["content"] for m in manager.get_history("s", last_k=1)] == [f"m{i}"]
    assert_whole(manager, store)


def cut_on_a_loop(
    store: PostgresStore,
    cut: Cut,
    warm: Callable[[], Any],
    interrupted: Callable[[], Any],
    later: Callable[[], Any],
) -> None:
    """On an event loop run by ``run_until_complete`` (the Ctrl-C ends that run only):
    ``warm()``, then ``interrupted()`` cut short once, then ``later()``; all coroutines."""
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(warm())
        cut.armed = 1
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(interrupted())
        assert cut.cuts == 1
        loop.run_until_complete(later())
    finally:
        loop.close()
        store.close()


def test_async_a_ctrl_c_once_the_prepare_is_answered_leaves_appends_working(
    postgres_url: str, pg_schema: str, prepare_cut: Cut
) -> None:
    store = PostgresStore(postgres_url, schema=pg_schema, pool_size=1)
    manager = ContextManager(store=store)

    async def later() -> None:
        for i in range(LATER):
            await manager.aadd_user_message("s", f"m{i}")
            last = await manager.aget_history("s", last_k=1)
            assert [m["content"] for m in last] == [f"m{i}"]
        assert_whole(manager, store)
        await manager.aclose()

    cut_on_a_loop(
        store,
        prepare_cut,
        lambda: manager.aset_context("warm", "k", 1),
        lambda: manager.aadd_user_message("s", "cut short"),
        later,
    )


def test_send_closes_the_connection_only_when_the_prepare_is_cut_short(
    postgres_url: str, prepare_cut: Cut
) -> None:
    """An error reply prepared nothing: the connection serves on. Cut short after the reply:
    whether the statement is prepared is not recorded, so the connection is closed."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        session = wire.prepared_session(conn)
        assert session is not None
        bad = Prepared.of(b"SELECT x FROM no_such_table_here WHERE x = %(x)s")
        with pytest.raises(psycopg.errors.UndefinedTable):
            wire.send(conn, session, bad, {"x": "1"})
        assert not conn.closed
        assert bad.name not in session.names
        good = Prepared.of(b"SELECT %(x)s::text || 'b'")
        assert wire.send(conn, session, good, {"x": "a"}) == ("ab",)
        cut_short = Prepared.of(b"SELECT %(x)s::text || 'c'")
        prepare_cut.armed = 1
        with pytest.raises(KeyboardInterrupt):
            wire.send(conn, session, cut_short, {"x": "a"})
        assert prepare_cut.cuts == 1
        assert conn.closed
        assert conn.info.transaction_status == TransactionStatus.UNKNOWN


def test_a_statement_the_server_holds_and_the_record_lacks_is_used(postgres_url: str) -> None:
    """Someone deallocates one of two statements: the record forgets both (it cannot tell
    which), and the one the server still holds must not fail every later use."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        session = wire.prepared_session(conn)
        assert session is not None
        first = Prepared.of(b"SELECT %(x)s::text || 'd'")
        second = Prepared.of(b"SELECT %(x)s::text || 'e'")
        assert wire.send(conn, session, first, {"x": "a"}) == ("ad",)
        assert wire.send(conn, session, second, {"x": "a"}) == ("ae",)
        conn.execute(f"DEALLOCATE {first.name.decode()}")
        assert wire.send(conn, session, first, {"x": "b"}) == ("bd",)  # prepared again
        assert second.name not in session.names
        for x in "bcd":  # each once failed with DuplicatePreparedStatement
            assert wire.send(conn, session, second, {"x": x}) == (f"{x}e",)
        assert second.name in session.names
        assert not conn.closed


# ------------------------------------------------------------ checking a connection out and in


def checked_out(store: PostgresStore) -> int:
    """Connections out of the store's pool that its stack does not keep: none between calls."""
    stats = store.pool.get_stats()
    return stats["pool_size"] - stats["pool_available"] - len(store._kept)


def interrupted_calls(store: PostgresStore, cut: Cut, *, from_the_pool: bool) -> None:
    """``pool_size + 2`` calls cut short; after each, no connection is missing."""
    manager = ContextManager(store=store)
    manager.add_user_message("s", "warm")
    pool = store.pool
    for i in range(store._pool_size + 2):
        if from_the_pool:
            store._return_kept()  # so that the call takes its connection from the pool
        cut.armed = 1
        with pytest.raises(KeyboardInterrupt):
            manager.add_user_message("s", f"cut {i}")
        assert cut.cuts == i + 1
        assert checked_out(store) == 0
        assert store._waiting == 0
    manager.add_user_message("s", "after")
    assert store.pool is pool  # never replaced: no call waited for the pool in vain
    store._return_kept()
    stats = store.pool.get_stats()
    assert stats["pool_available"] == stats["pool_size"]
    assert stats.get("requests_errors", 0) == 0
    contents = [m["content"] for m in manager.get_history("s")]
    assert contents[0] == "warm"
    assert contents[-1] == "after"


def test_a_ctrl_c_right_after_getconn_returns_leaks_no_connection(
    postgres_url: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cut at the first call after ``getconn`` returned: the lease being made."""
    cut = Cut()
    monkeypatch.setattr(postgres_module, "Lease", cut.wrap(postgres_module.Lease))
    with PostgresStore(postgres_url, schema=pg_schema, pool_size=2, connect_timeout=1) as store:
        interrupted_calls(store, cut, from_the_pool=True)


@pytest.mark.parametrize("from_the_pool", [True, False], ids=["from the pool", "kept"])
def test_a_ctrl_c_as_the_connection_is_given_back_leaks_none(
    postgres_url: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch, from_the_pool: bool
) -> None:
    """Cut at the start of the call that gives the connection back (or keeps it)."""
    cut = Cut()
    monkeypatch.setattr(PostgresStore, "_give", cut.wrap(PostgresStore._give))
    with PostgresStore(postgres_url, schema=pg_schema, pool_size=2, connect_timeout=1) as store:
        interrupted_calls(store, cut, from_the_pool=from_the_pool)


# ------------------------------------------------------------ a transaction's start


@pytest.fixture
def transaction_start_cut(monkeypatch: pytest.MonkeyPatch) -> Cut:
    """A Ctrl-C as psycopg enters ``Connection.wait`` to start a transaction.

    psycopg undoes the start on the way out though it never began: the connection's count
    of open transactions went below zero, and every later transaction on it failed with
    ``OutOfOrderTransactionNesting`` until the process restarted.
    """
    import sys

    cut = Cut()
    sync_wait, async_wait = psycopg.Connection.wait, psycopg.AsyncConnection.wait

    def starting() -> bool:
        caller = sys._getframe(2).f_code
        return caller.co_name in ("__enter__", "__aenter__") and caller.co_filename.endswith(
            "transaction.py"
        )

    def wait(self: psycopg.Connection[Any], *args: Any, **kwargs: Any) -> Any:
        if starting():
            cut()
        return sync_wait(self, *args, **kwargs)

    async def await_(self: psycopg.AsyncConnection[Any], *args: Any, **kwargs: Any) -> Any:
        if starting():
            cut()
        return await async_wait(self, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "wait", wait)
    monkeypatch.setattr(psycopg.AsyncConnection, "wait", await_)
    return cut


def test_a_ctrl_c_as_a_transaction_starts_leaves_the_store_usable(
    postgres_url: str, pg_schema: str, transaction_start_cut: Cut
) -> None:
    with PostgresStore(postgres_url, schema=pg_schema, pool_size=1) as store:
        manager = ContextManager(store=store)
        manager.set_context("s", "k", 0)
        transaction_start_cut.armed = 1
        with pytest.raises(KeyboardInterrupt):
            manager.set_context("s", "k", -1)
        assert transaction_start_cut.cuts == 1
        for i in range(LATER):  # each failed with OutOfOrderTransactionNesting
            manager.set_context("s", f"k{i}", i)
        shared = manager.get_context("s")["shared"]
        assert shared["k"] == 0
        assert [shared[f"k{i}"] for i in range(LATER)] == list(range(LATER))
        stats = store.pool.get_stats()
        assert stats["pool_available"] + len(store._kept) == stats["pool_size"]


def test_async_a_ctrl_c_as_a_transaction_starts_leaves_the_store_usable(
    postgres_url: str, pg_schema: str, transaction_start_cut: Cut
) -> None:
    store = PostgresStore(postgres_url, schema=pg_schema, pool_size=1)
    manager = ContextManager(store=store)

    async def later() -> None:
        for i in range(LATER):
            await manager.aset_context("s", f"k{i}", i)
        shared = (await manager.aget_context("s"))["shared"]
        assert shared["k"] == 0
        assert [shared[f"k{i}"] for i in range(LATER)] == list(range(LATER))
        await manager.aclose()

    cut_on_a_loop(
        store,
        transaction_start_cut,
        lambda: manager.aset_context("s", "k", 0),
        lambda: manager.aset_context("s", "k", -1),
        later,
    )
