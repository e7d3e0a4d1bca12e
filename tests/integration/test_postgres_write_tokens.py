"""A retried append answers what its first attempt did: the PostgreSQL write tokens.

The connection of an append is dropped for real after its statement ran and committed
(``pg_terminate_backend`` from another connection), before the operation sees the reply: the
store meets psycopg's ``OperationalError``, replaces its pool and sends the append again,
which finds its own messages stored. Each append carries a random token, stored with the
messages it inserts and the session it creates, so the second attempt answers ``added`` and
``created`` as an unfailed call would, and the manager emits the events of the messages that
were added, and of the session created, once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from langchain_core.messages import AIMessage, HumanMessage
from store_records import NOW, init, msg
from test_postgres_schema_versions import _back_to_version_2

from ctx_memory.errors import SessionExistsError
from ctx_memory.events import EventType
from ctx_memory.manager import ContextManager
from ctx_memory.stores._postgres_ops import Statement
from ctx_memory.stores.postgres import PostgresStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Generator

    from ctx_memory.events import Event
    from ctx_memory.stores.base import EncodedMessage

pytestmark = pytest.mark.postgres


def reply(result: Any) -> tuple[bool, int, tuple[str, ...]]:
    return result.created, result.added, result.evicted


class ConnectionDrops:
    """Drops the connection of the next operations the store runs (``arm``), for real.

    ``after`` (the default): once the operation's first statement ran (in autocommit: it
    committed), its connection is terminated by the server (``pg_terminate_backend`` from
    another connection) and its reply withheld from the operation, which then sends one
    more statement on the dead connection: psycopg raises ``OperationalError``, as for a
    reply lost on the way. ``before``: the connection is terminated before the statement
    is sent (nothing is stored).
    """

    def __init__(self, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.url = url
        self.armed: list[str] = []
        self.dropped: list[int] = []  # the backends terminated
        run, arun = PostgresStore._run, PostgresStore._arun

        def dropping_run(conn: Any, steps: Any) -> Any:
            return run(conn, self._wrap(conn, steps))

        async def dropping_arun(conn: Any, steps: Any) -> Any:
            return await arun(conn, self._wrap(conn, steps))

        monkeypatch.setattr(PostgresStore, "_run", staticmethod(dropping_run))
        monkeypatch.setattr(PostgresStore, "_arun", staticmethod(dropping_arun))

    def arm(self, when: str = "after") -> None:
        self.armed.append(when)

    def _wrap(self, conn: Any, steps: Generator[Statement, Any, Any]) -> Any:
        if not self.armed:
            return steps
        return self._drop(conn, steps, self.armed.pop(0))

    def _terminate(self, conn: Any) -> None:
        pid = conn.info.backend_pid
        with psycopg.connect(self.url, autocommit=True) as other:
            row = other.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,)).fetchone()
        assert row == (True,)
        self.dropped.append(pid)

    def _drop(
        self, conn: Any, steps: Generator[Statement, Any, Any], when: str
    ) -> Generator[Statement, Any, Any]:
        statement = next(steps)
        if when == "before":
            self._terminate(conn)
            yield statement  # sent on a dead connection: OperationalError
        else:
            yield statement  # it runs and commits; the operation never sees its reply
            self._terminate(conn)
            yield Statement(b"SELECT 1")  # the connection is gone: OperationalError
        raise AssertionError("the connection was dropped")  # pragma: no cover


@pytest.fixture(params=["fresh", "migrated"])
async def store(
    request: pytest.FixtureRequest, postgres_url: str, pg_schema: str
) -> AsyncIterator[PostgresStore]:
    """A store on a schema of this release, or on a version-2 schema it migrated (closed
    on the test's event loop: its asyncio pool too)."""
    if request.param == "migrated":
        with PostgresStore(postgres_url, schema=pg_schema) as older:
            older.append_messages("old", [msg(0)], init=init("old"), now=NOW)
        _back_to_version_2(postgres_url, pg_schema)
    store = PostgresStore(postgres_url, schema=pg_schema, ttl_seconds=3600)
    try:
        assert not store.exists("warm-up")  # the schema is ready before anything is dropped
        yield store
    finally:
        await store.aclose()


@pytest.fixture
def drops(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> ConnectionDrops:
    return ConnectionDrops(postgres_url, monkeypatch)


async def append(store: PostgresStore, mode: str, sid: str, batch: list[EncodedMessage]) -> Any:
    if mode == "async":
        return await store.aappend_messages(sid, batch, init=init(sid), now=NOW)
    return store.append_messages(sid, batch, init=init(sid), now=NOW)


def counters(store: PostgresStore, sid: str) -> tuple[int, int]:
    header = store.get_header(sid)
    assert header is not None
    return header["metadata"]["message_count"], header["metadata"]["token_count"]


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("session", ["new", "existing"])
@pytest.mark.parametrize("size", [1, 3])
async def test_an_append_whose_reply_is_lost_answers_as_its_first_attempt(
    store: PostgresStore, drops: ConnectionDrops, mode: str, session: str, size: int
) -> None:
    """The first attempt stored the batch (and created the session): the second answers
    ``added`` and ``created`` as an unfailed call, and stores nothing twice."""
    held = [msg(0, 5)] if session == "existing" else []
    if held:
        store.append_messages("s", held, init=init("s"), now=NOW)
    batch = [msg(i, 2 + i) for i in range(1, size + 1)]
    drops.arm()
    result = await append(store, mode, "s", batch)
    assert len(drops.dropped) == 1  # the first attempt's connection was dropped after commit
    assert reply(result) == (session == "new", size, ())
    stored = [*held, *batch]
    assert [m["id"] for m in store.get_messages("s")] == [m.id for m in stored]
    assert store.count_messages("s") == len(stored)
    assert counters(store, "s") == (len(stored), sum(m.tokens for m in stored))
    # the same batch appended again is another write (another token): nothing added
    assert reply(await append(store, mode, "s", batch)) == (False, 0, ())
    assert counters(store, "s") == (len(stored), sum(m.tokens for m in stored))


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("size", [1, 3])
async def test_an_append_whose_connection_drops_before_it_ran(
    store: PostgresStore, drops: ConnectionDrops, mode: str, size: int
) -> None:
    """Nothing was stored by the first attempt: the second stores the batch and says so."""
    batch = [msg(i) for i in range(size)]
    drops.arm("before")
    assert reply(await append(store, mode, "s", batch)) == (True, size, ())
    assert len(drops.dropped) == 1
    assert [m["id"] for m in store.get_messages("s")] == [m.id for m in batch]
    assert counters(store, "s") == (size, 2 * size)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_retry_counts_only_the_messages_its_own_write_stored(
    store: PostgresStore, drops: ConnectionDrops, mode: str
) -> None:
    """Ids another write stored before are not the retried write's: a batch of three whose
    first id the session held answers ``added == 2``, as it would unfailed."""
    store.append_messages("s", [msg(1)], init=init("s"), now=NOW)
    drops.arm()
    result = await append(store, mode, "s", [msg(1), msg(2), msg(3)])
    assert len(drops.dropped) == 1
    assert reply(result) == (False, 2, ())
    assert [m["id"] for m in store.get_messages("s")] == ["id-1", "id-2", "id-3"]
    assert counters(store, "s") == (3, 6)


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("size", [1, 3])
async def test_the_manager_emits_each_event_once_after_a_lost_reply(
    store: PostgresStore, drops: ConnectionDrops, mode: str, size: int
) -> None:
    """Through a ContextManager: one ``session_created``, and ``message_added`` for every
    message added (one event per call, its ``count`` the messages added), each message
    stored once, the counters those of a session whose appends all answered."""
    cm = ContextManager(store=store, token_counter="approximate")
    created: list[Event] = []
    added: list[Event] = []
    cm.on(EventType.SESSION_CREATED, created.append)
    cm.on(EventType.MESSAGE_ADDED, added.append)

    def batch(n: int) -> list[Any]:
        kinds = [HumanMessage, AIMessage]
        return [kinds[i % 2](f"message {n}.{i}", id=f"m{n}.{i}") for i in range(size)]

    async def add(sid: str, messages: list[Any]) -> None:
        if mode == "async":
            await cm.aadd_messages(sid, messages)
        else:
            cm.add_messages(sid, messages)

    for n in range(2):  # the first call creates the session, the second appends to it
        drops.arm()
        await add("s", batch(n))
        await add("control", batch(n))  # the same messages, no connection dropped
    assert len(drops.dropped) == 2
    assert [e.session_id for e in created] == ["s", "control"]
    assert [(e.session_id, e.data["count"]) for e in added] == [
        ("s", size),
        ("control", size),
    ] * 2
    history = cm.get_history("s")
    assert [r["id"] for r in history] == [f"m{n}.{i}" for n in range(2) for i in range(size)]
    assert [r["content"] for r in history] == [r["content"] for r in cm.get_history("control")]
    meta, control = cm.get_metadata("s"), cm.get_metadata("control")
    assert meta["message_count"] == control["message_count"] == 2 * size
    assert meta["token_count"] == control["token_count"] > 0


class DropsAfterCommit:
    """Drops the connection of the next operation once its transaction committed, for real
    (``pg_terminate_backend``), then sends one more statement on it: ``OperationalError``,
    as for a reply lost after the commit of a multi-statement write."""

    def __init__(self, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.url = url
        self.armed = 0
        self.dropped: list[int] = []
        attempt, aattempt = PostgresStore._attempt, PostgresStore._aattempt

        def dropping(store: PostgresStore, conn: Any, *args: Any, **kwargs: Any) -> Any:
            result = attempt(store, conn, *args, **kwargs)
            if self._take(conn):
                conn.execute("SELECT 1")  # the connection is gone: OperationalError
            return result

        async def adropping(store: PostgresStore, conn: Any, *args: Any, **kwargs: Any) -> Any:
            result = await aattempt(store, conn, *args, **kwargs)
            if self._take(conn):
                await conn.execute("SELECT 1")
            return result

        monkeypatch.setattr(PostgresStore, "_attempt", dropping)
        monkeypatch.setattr(PostgresStore, "_aattempt", adropping)

    def _take(self, conn: Any) -> bool:
        if not self.armed:
            return False
        self.armed -= 1
        pid = conn.info.backend_pid
        with psycopg.connect(self.url, autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
        self.dropped.append(pid)
        return True


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_an_import_without_overwrite_whose_reply_is_lost_succeeds_once(
    store: PostgresStore, postgres_url: str, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """The import committed, its reply was lost: the second attempt finds the session its
    first attempt wrote (its token), so the import succeeds as it did, one
    ``session_created``; another import of the same id is still refused."""
    source = ContextManager(token_counter="approximate")
    source.add_messages("s", [HumanMessage("hi", id="q"), AIMessage("hello", id="a")])
    document = source.export_session("s")
    cm = ContextManager(store=store, token_counter="approximate")
    created: list[Event] = []
    cm.on(EventType.SESSION_CREATED, created.append)
    drops = DropsAfterCommit(postgres_url, monkeypatch)
    drops.armed = 1

    async def load() -> str:
        if mode == "async":
            return await cm.aimport_session(document, overwrite=False)
        return cm.import_session(document, overwrite=False)

    assert await load() == "s"
    assert len(drops.dropped) == 1
    assert [e.session_id for e in created] == ["s"]
    assert [r["id"] for r in cm.get_history("s")] == ["q", "a"]
    assert cm.get_metadata("s")["message_count"] == 2
    with pytest.raises(SessionExistsError):
        await load()


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("write", ["update_metadata", "set_system_prompt", "set_context"])
async def test_a_write_that_created_the_session_says_so_after_a_lost_reply(
    store: PostgresStore, postgres_url: str, monkeypatch: pytest.MonkeyPatch, mode: str, write: str
) -> None:
    """Metadata, system prompt and ``set`` writes that create the session keep their token
    on it: the second attempt after a lost reply answers ``created`` as the first did, so
    ``session_created`` is emitted once (before, never), and the write is applied once."""
    cm = ContextManager(store=store, token_counter="approximate")
    created: list[Event] = []
    cm.on(EventType.SESSION_CREATED, created.append)
    drops = DropsAfterCommit(postgres_url, monkeypatch)
    calls: dict[str, tuple[Any, Any]] = {  # (sync, async)
        "update_metadata": (
            lambda sid: cm.update_metadata(sid, mode="research"),
            lambda sid: cm.aupdate_metadata(sid, mode="research"),
        ),
        "set_system_prompt": (
            lambda sid: cm.set_system_prompt(sid, "Be brief."),
            lambda sid: cm.aset_system_prompt(sid, "Be brief."),
        ),
        "set_context": (
            lambda sid: cm.set_context(sid, "k", {"v": 1}),
            lambda sid: cm.aset_context(sid, "k", {"v": 1}),
        ),
    }
    for sid in ("s", "control"):
        drops.armed = 1 if sid == "s" else 0
        if mode == "async":
            await calls[write][1](sid)
        else:
            calls[write][0](sid)
    assert len(drops.dropped) == 1
    assert [e.session_id for e in created] == ["s", "control"]
    doc, control = cm.get_context("s"), cm.get_context("control")
    for part in ("system_prompt", "shared"):
        assert doc[part] == control[part]
    assert doc["metadata"].get("mode") == control["metadata"].get("mode")
    created.clear()  # a later write to the session it created is no creation
    cm.update_metadata("s", mode="thinking")
    assert created == []
