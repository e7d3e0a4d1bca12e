"""SqliteStore faults: reads never wait for a writer, appends never touch ``shared``, a
deleted or replaced file is detected instead of silently swallowing writes.

Real SQLite files in ``tmp_path``; a writer in another process is a real process.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import sqlite3
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, overload

import pytest

from ctx_memory.errors import StoreError, StoreUnavailableError
from ctx_memory.schema import dumps
from ctx_memory.stores.base import EncodedMessage, Header, new_header
from ctx_memory.stores.sqlite import SQLITE_MAX_PATH_BYTES, SqliteStore

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

NOW = "2025-01-01T00:00:00+00:00"
WAIT = 10.0  # only a deadlock breaker: every assertion below is about order, not time


def init(sid: str) -> Header:
    return new_header(sid, now=NOW, encoding="o200k_base")


def msg(i: int, tokens: int = 3) -> EncodedMessage:
    body = {"role": "user", "content": f"m{i}", "token_count": tokens, "id": f"id-{i}"}
    return EncodedMessage(dumps(body), tokens, f"id-{i}")


def contents(messages: list[dict[str, Any]]) -> list[str]:
    return [m["content"] for m in messages]


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "ctx.sqlite3")


class StalledImport(Sequence[EncodedMessage]):
    """Messages of an import that stalls, inside its transaction, until released.

    ``replace_document`` reads them while it holds the write lock: ``entered`` is set
    then. ``released_by`` tells whether ``release`` was set by the test (``"reader"``)
    or the wait ran out (``"timeout"``).
    """

    def __init__(self, entered: Any, release: Any, messages: list[EncodedMessage]) -> None:
        self.entered, self.release, self.messages = entered, release, messages
        self.released_by = ""

    def __len__(self) -> int:
        return len(self.messages)

    @overload
    def __getitem__(self, i: int) -> EncodedMessage: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[EncodedMessage]: ...
    def __getitem__(self, i: int | slice) -> EncodedMessage | Sequence[EncodedMessage]:
        return self.messages[i]

    def __iter__(self) -> Iterator[EncodedMessage]:
        self.entered.set()
        self.released_by = "reader" if self.release.wait(WAIT) else "timeout"
        return iter(self.messages)


def write_lock_is_held(path: str) -> bool:
    probe = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as e:
        if "locked" not in str(e):
            raise
        return True
    else:
        probe.execute("ROLLBACK")
        return False
    finally:
        probe.close()


def read_everything(store: SqliteStore, sid: str) -> dict[str, Any]:
    document = store.get_document(sid)
    return {
        "document": document,
        "header": store.get_header(sid),
        "messages": contents(store.get_messages(sid, -1, -1)),
        "count": store.count_messages(sid),
        "exists": store.exists(sid),
        "fetched": store.get_fetched(sid),
        "list": store.list_sessions(),
        "history": contents(document["conversation_history"]) if document else None,
    }


# ------------------------------------------------------------------ reads vs a writer


def test_reads_take_no_write_lock(db: str) -> None:
    with SqliteStore(db, busy_timeout=0.2) as store:
        store.append_messages("s", [msg(0)], init=init("s"), now=NOW)
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        holder.execute("UPDATE sessions SET n_messages = 99")  # uncommitted
        try:
            seen = read_everything(store, "s")
            assert seen["count"] == 1  # the last committed state
            assert seen["history"] == ["m0"]
            assert seen["list"] == ["s"]
            assert store.get_document("nope") is None
            # a write does wait, and gives up after busy_timeout
            with pytest.raises(StoreUnavailableError, match="locked"):
                store.append_messages("s", [msg(1)], init=init("s"), now=NOW)
        finally:
            holder.execute("ROLLBACK")
            holder.close()


def test_a_reader_thread_does_not_wait_for_a_long_import(db: str) -> None:
    with SqliteStore(db) as store:
        store.append_messages("s", [msg(0)], init=init("s"), now=NOW)
        stalled = StalledImport(threading.Event(), threading.Event(), [msg(10), msg(11)])
        writer = threading.Thread(target=store.replace_document, args=("s", init("s"), stalled, []))
        writer.start()
        try:
            assert stalled.entered.wait(WAIT)
            assert write_lock_is_held(db)
            seen: dict[str, Any] = {}
            reader = threading.Thread(target=lambda: seen.update(read_everything(store, "s")))
            reader.start()
            reader.join(WAIT)
            finished_first = not reader.is_alive()
            still_importing = writer.is_alive() and write_lock_is_held(db)
        finally:
            stalled.release.set()
            writer.join(WAIT)
        reader.join(WAIT)
        assert finished_first, "the reader waited for the writer"
        assert still_importing
        assert stalled.released_by == "reader"
        assert seen["history"] == ["m0"]  # what was committed when it read
        assert contents(store.get_messages("s")) == ["m10", "m11"]


def _stalled_import(path: str, entered: Any, release: Any, out: Any) -> None:
    with SqliteStore(path) as store:
        stalled = StalledImport(entered, release, [msg(10), msg(11)])
        store.replace_document("s", init("s"), stalled, [])
        out.put(stalled.released_by)


def test_a_reader_does_not_wait_for_an_import_in_another_process(db: str) -> None:
    with SqliteStore(db) as store:
        store.append_messages("s", [msg(0)], init=init("s"), now=NOW)
    ctx = multiprocessing.get_context("fork")
    entered, release, out = ctx.Event(), ctx.Event(), ctx.Queue()
    writer = ctx.Process(target=_stalled_import, args=(db, entered, release, out))
    writer.start()
    try:
        assert entered.wait(WAIT)
        assert write_lock_is_held(db)
        # a store opened while the other process holds the write lock
        with SqliteStore(db, busy_timeout=3 * WAIT) as reader:
            seen = read_everything(reader, "s")
            released_in_time = writer.is_alive() and write_lock_is_held(db)
    finally:
        release.set()
        writer.join(3 * WAIT)
    assert writer.exitcode == 0
    assert out.get(timeout=WAIT) == "reader", "the reader waited for the writer's commit"
    assert released_in_time
    assert seen["history"] == ["m0"]
    assert seen["count"] == 1
    with SqliteStore(db) as store:
        assert contents(store.get_messages("s")) == ["m10", "m11"]


def test_reads_with_a_session_limit_are_writes_that_bump_the_lru(db: str) -> None:
    with SqliteStore(db, max_sessions=2, busy_timeout=0.2) as store:
        store.append_messages("a", [msg(0)], init=init("a"), now=NOW)
        store.append_messages("b", [msg(0)], init=init("b"), now=NOW)
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailableError, match="locked"):
            store.get_messages("a")  # documented: it has to bump "a"
        holder.execute("ROLLBACK")
        holder.close()
        assert store.get_messages("a")
        assert store.append_messages("c", [msg(0)], init=init("c"), now=NOW).evicted == ("b",)


def test_readers_see_whole_writes(db: str) -> None:
    with SqliteStore(db) as store:
        store.append_messages("s", [msg(0)], init=init("s"), now=NOW)
        stop = threading.Event()
        bad: list[Any] = []

        def read() -> None:
            while not stop.is_set():
                document = store.get_document("s")
                assert document is not None
                n = len(document["conversation_history"])
                if document["metadata"]["message_count"] != n or n % 2 != 1:
                    bad.append(document["metadata"]["message_count"])

        readers = [threading.Thread(target=read) for _ in range(4)]
        for r in readers:
            r.start()
        for i in range(1, 200, 2):
            store.append_messages("s", [msg(i), msg(i + 1)], init=init("s"), now=NOW)
        stop.set()
        for r in readers:
            r.join(WAIT)
        assert bad == []
        assert store.count_messages("s") == 201


# ------------------------------------------------------------------ expiry seen by reads


def test_a_read_reports_an_expired_session_absent_without_deleting_it(db: str) -> None:
    clock = [1000.0]
    events: list[tuple[str, str]] = []
    with SqliteStore(db, ttl_seconds=10, clock=lambda: clock[0], busy_timeout=0.2) as store:
        store.lifecycle_hook = lambda kind, sid: events.append((kind, sid))
        store.append_messages("old", [msg(0)], init=init("old"), now=NOW)
        store.merge_shared("old", {"k": 1}, init=init("old"), now=NOW)
        clock[0] += 5
        store.append_messages("new", [msg(0)], init=init("new"), now=NOW)
        clock[0] += 6  # "old" expired, "new" not
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # so a read that tried to delete would fail
        try:
            assert store.get_document("old") is None
            assert store.get_header("old") is None
            assert store.get_messages("old") == []
            assert store.count_messages("old") == 0
            assert store.get_fetched("old") == {}
            assert not store.exists("old")
            assert store.exists("new")
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        conn = sqlite3.connect(db)
        assert conn.execute("SELECT COUNT(*) FROM sessions WHERE id = 'old'").fetchone() == (1,)
        conn.close()
        assert events == []
        assert store.list_sessions() == ["new"]  # listing collects it, once
        assert events == [("session_expired", "old")]
        assert store.gc() == 0
        # a write to it starts afresh
        assert store.append_messages("old", [msg(1)], init=init("old"), now=NOW).created
        assert store.get_header("old")["shared"] == {}  # type: ignore[index]
        assert events == [("session_expired", "old")]


# ------------------------------------------------------------------ appends vs shared


def test_an_append_reads_and_writes_nothing_of_shared(db: str) -> None:
    with SqliteStore(db) as store:
        store.merge_shared("s", {"blob": "x" * 1000}, init=init("s"), now=NOW)
        statements: list[str] = []
        conn = store._conn
        assert conn is not None
        conn.set_trace_callback(statements.append)
        store.append_messages("s", [msg(0)], init=init("s"), now=NOW)
        conn.set_trace_callback(None)
    assert any(s.startswith("INSERT INTO messages") for s in statements), statements
    for statement in statements:
        assert not re.search(r"\bsh\b|\bsession_shared\b|\*", statement), statement
        # the row an append updates holds no JSON part (SQLite rewrites whole rows)
        assert not re.search(r"\b(sp|md|sh)\b", statement), statement


# ------------------------------------------------------------------ the file goes away


def test_a_deleted_file_makes_writes_fail_instead_of_vanishing(db: str) -> None:
    with SqliteStore(db) as store:
        store.append_messages("s", [msg(0)], init=init("s"), now=NOW)
        orphan = sqlite3.connect(db)  # keeps the deleted file readable
        assert orphan.execute("SELECT COUNT(*) FROM messages").fetchone() == (1,)
        os.remove(db)
        with pytest.raises(StoreUnavailableError, match=re.escape(repr(db))) as caught:
            store.append_messages("s", [msg(1)], init=init("s"), now=NOW)
        assert "deleted" in str(caught.value)
        for write in (
            lambda: store.merge_shared("s", {"k": 1}, init=init("s"), now=NOW),
            lambda: store.create("t", init("t")),
            lambda: store.clear("s", now=NOW),
            lambda: store.delete("s"),
            store.gc,
            lambda: store.replace_document("s", init("s"), [msg(5)], []),
        ):
            with pytest.raises(StoreUnavailableError, match="deleted"):
                write()
        with pytest.raises(StoreUnavailableError, match="deleted"):
            store.get_messages("s")  # nor is the orphan read as if it were the store
        # nothing reached the orphan
        assert orphan.execute("SELECT COUNT(*) FROM messages").fetchone() == (1,)
        assert orphan.execute("SELECT id FROM sessions").fetchall() == [("s",)]
        orphan.close()
    assert not os.path.exists(db)  # and no stray empty file was created in its place


def test_a_replaced_file_is_detected(db: str, tmp_path: Path) -> None:
    other = str(tmp_path / "other.sqlite3")
    with SqliteStore(other) as second:
        second.append_messages("x", [msg(7)], init=init("x"), now=NOW)
    with SqliteStore(db) as store:
        store.append_messages("s", [msg(0)], init=init("s"), now=NOW)
        os.replace(other, db)
        with pytest.raises(StoreUnavailableError, match="replaced by another file"):
            store.append_messages("s", [msg(1)], init=init("s"), now=NOW)
        with pytest.raises(StoreUnavailableError, match="replaced by another file"):
            store.list_sessions()
    # (what a new connection then finds at the path is SQLite's business: the old
    # store's write-ahead log is still next to it)


async def test_a_deleted_file_fails_async_writes_too(db: str) -> None:
    async with SqliteStore(db) as store:
        await store.aappend_messages("s", [msg(0)], init=init("s"), now=NOW)
        os.remove(db)
        with pytest.raises(StoreUnavailableError, match="deleted"):
            await store.aappend_messages("s", [msg(1)], init=init("s"), now=NOW)


def test_closed_store_refuses_reads_and_writes(db: str) -> None:
    store = SqliteStore(db)
    store.append_messages("s", [msg(0)], init=init("s"), now=NOW)
    assert store.count_messages("s") == 1
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.count_messages("s")
    with pytest.raises(StoreError, match="closed"):
        store.append_messages("s", [msg(1)], init=init("s"), now=NOW)


def test_memory_database_reads_and_writes(tmp_path: Path) -> None:
    with SqliteStore(":memory:") as store:
        store.append_messages("s", [msg(0), msg(0), msg(1)], init=init("s"), now=NOW)
        assert contents(store.get_messages("s")) == ["m0", "m1"]
        assert store.list_sessions() == ["s"]


def test_a_path_too_long_for_sqlite_says_so(tmp_path: Path) -> None:
    """SQLite answers only "unable to open database file"; the error adds its path limit."""
    folder = tmp_path / ("a" * 200) / ("b" * 200)
    folder.mkdir(parents=True)
    room = SQLITE_MAX_PATH_BYTES - len(os.fsencode(folder)) - 1
    fits = folder / ("c" * room)
    SqliteStore(str(fits)).close()  # the longest path opens
    with pytest.raises(StoreUnavailableError, match="SQLite opens paths of up to 504 bytes"):
        SqliteStore(str(folder / ("c" * (room + 1))))


# ------------------------------------------------------------------ a signal mid-write


class InterruptingClock:
    """Wall clock whose next reading, once armed, raises ``KeyboardInterrupt``.

    A write reads the clock just after ``BEGIN IMMEDIATE``: that is where Ctrl-C (or a
    SIGTERM turned into an interrupt) lands when it arrives while SQLite takes the lock.
    """

    def __init__(self) -> None:
        self.armed = False

    def __call__(self) -> float:
        if self.armed:
            self.armed = False
            raise KeyboardInterrupt
        return 1_735_689_600.0


@pytest.mark.parametrize("where", ["file", "memory"])
def test_a_write_interrupted_after_begin_keeps_no_lock_and_no_transaction(
    db: str, where: str
) -> None:
    clock = InterruptingClock()
    with SqliteStore(db if where == "file" else ":memory:", clock=clock) as store:
        store.append_messages("s", [msg(0)], init=init("s"), now=NOW)
        clock.armed = True
        with pytest.raises(KeyboardInterrupt):
            store.append_messages("s", [msg(1)], init=init("s"), now=NOW)
        if where == "file":
            assert not write_lock_is_held(db)  # other processes can write
        assert contents(store.get_messages("s")) == ["m0"]  # nothing half-written
        store.append_messages("s", [msg(2)], init=init("s"), now=NOW)
        assert contents(store.get_messages("s")) == ["m0", "m2"]
