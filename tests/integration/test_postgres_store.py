"""PostgresStore specifics against a real server: round trips, schema versions, TTL on every
row, crafted ids, secrets, settings and the docstring example."""

from __future__ import annotations

import asyncio
import inspect
import re
import textwrap
import time
import zlib
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from store_records import NOW, init, msg

from ctx_memory.config import load_settings
from ctx_memory.errors import (
    ConfigurationError,
    StoreError,
    StoreUnavailableError,
    StoreVersionError,
)
from ctx_memory.manager import ContextManager
from ctx_memory.schema import dumps, dumps_validated
from ctx_memory.stores import _postgres_ops, _postgres_sql, create_store
from ctx_memory.stores import postgres as postgres_module
from ctx_memory.stores.base import EncodedItem, EncodedMessage
from ctx_memory.stores.postgres import PostgresStore

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = pytest.mark.postgres

TABLES = ("sessions", "messages", "fetched", "fingerprints", "recall_segments")


def rows(url: str, schema: str) -> dict[str, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        return {
            table: conn.execute(f'SELECT count(*) FROM "{schema}".{table}').fetchone()[0]  # type: ignore[index]
            for table in TABLES
        }


@pytest.fixture
def store(postgres_url: str, pg_schema: str) -> Iterator[PostgresStore]:
    with PostgresStore(postgres_url, schema=pg_schema) as store:
        yield store


# ------------------------------------------------------------------ round trips


@pytest.fixture(scope="module")
def counted_server(postgres_server_factory: Callable[..., Any]) -> Any:
    """A private server with pg_stat_statements (nothing else runs statements on it)."""
    server = postgres_server_factory()
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    return server


def _statements(url: str) -> dict[str, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        found = conn.execute(
            "SELECT query, calls FROM pg_stat_statements "
            "WHERE query NOT LIKE '%%pg_stat_statements%%'"
        ).fetchall()
    return dict(found)


def _reset(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")


@pytest.mark.parametrize("ttl", [None, 3600.0])
def test_one_statement_per_append_counted_by_the_server(counted_server: Any, ttl: Any) -> None:
    """Each add_user_message is one statement on the server: no BEGIN, no COMMIT, no read."""
    with PostgresStore(counted_server.url, schema="counted", ttl_seconds=ttl) as store:
        cm = ContextManager(store=store, token_counter="approximate")
        cm.add_user_message("warm", "schema created, statements prepared")
        _reset(counted_server.url)
        for i in range(50):
            cm.add_user_message("s", f"message {i}")
        seen = _statements(counted_server.url)
        assert sum(seen.values()) == 50, seen
        ((query, calls),) = seen.items()
        assert calls == 50
        assert 'WITH u AS (UPDATE "counted".sessions' in query  # plain SQL (prepared) ...
        assert '"counted".append_one(' in query  # ... with a function as its fallback
        _reset(counted_server.url)
        assert len(cm.get_messages("s", last_k=20)) == 20  # the last 20: one statement too
        assert sum(_statements(counted_server.url).values()) == 1


def _nested(url: str) -> dict[str, int]:
    """Statements run inside functions (recorded with ``pg_stat_statements.track=all``)."""
    with psycopg.connect(url, autocommit=True) as conn:
        found = conn.execute(
            "SELECT query, calls FROM pg_stat_statements WHERE NOT toplevel"
        ).fetchall()
    return dict(found)


def test_an_append_to_a_live_session_runs_no_function(counted_server: Any) -> None:
    """A new message on a live session is plain SQL; the plpgsql ``append`` runs only to
    create a session or replace an expired one, in the same statement, or to skip a known
    id, in the statement sent after the unique index refused the first."""
    from psycopg_pool import ConnectionPool

    kwargs = {"autocommit": True, "options": "-c pg_stat_statements.track=all"}
    with (
        ConnectionPool(counted_server.url, min_size=1, max_size=2, kwargs=kwargs) as pool,
        PostgresStore(pool=pool, schema="plain", ttl_seconds=0.5) as store,
    ):
        first = store.append_messages("s", [msg(0)], init=init("s"), now=NOW)
        assert (first.created, first.added) == (True, 1)
        _reset(counted_server.url)
        for i in range(1, 21):
            assert store.append_messages("s", [msg(i, 3)], init=init("s"), now=NOW).added == 1
        assert _nested(counted_server.url) == {}
        assert sum(_statements(counted_server.url).values()) == 20

        _reset(counted_server.url)
        again = store.append_messages("s", [msg(7)], init=init("s"), now=NOW)  # a retry
        assert (again.created, again.added) == (False, 0)
        assert _nested(counted_server.url)  # the function decided
        nested = _nested(counted_server.url)
        (checked,) = (q for q in _statements(counted_server.url) if q not in nested)
        assert checked.startswith('SELECT "plain".append_one(')  # (a refused one: not counted)
        header = store.get_header("s")
        assert header is not None
        assert header["metadata"]["message_count"] == 21
        assert header["metadata"]["token_count"] == 2 + 20 * 3
        assert [m["content"] for m in store.get_messages("s", -3, -1)] == ["m18", "m19", "m20"]

        time.sleep(0.6)  # expired: the fallback deletes it and starts afresh
        expired: list[str] = []
        store.add_lifecycle_hook(lambda kind, sid: expired.append(f"{kind}:{sid}"))
        fresh = store.append_messages("s", [msg(1)], init=init("s"), now=NOW)
        assert (fresh.created, fresh.added) == (True, 1)
        assert expired == ["session_expired:s"]
        assert store.count_messages("s") == 1


def test_the_init_header_split_on_the_server_is_stored_byte_for_byte(
    store: PostgresStore, postgres_url: str
) -> None:
    """One message sends the init header as one JSON text the server splits; several send
    its parts: both store the same texts, as ``dumps`` wrote them."""
    header = init("x")
    header["system_prompt"] = 'Tu es "utile" ✓ 😀'
    header["metadata"].update({"n": 1.5, "big": 10**20, "nested": {"a": [1, "é", None]}})
    header["shared"] = {"k": {"v": [True, False]}, "e": "\u2028"}
    assert dumps_validated(header) == dumps(header)
    store.append_messages("one", [msg(1)], init={**header}, now=NOW)
    store.append_messages("two", [msg(1), msg(2)], init={**header}, now=NOW)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        stored = dict(
            conn.execute(
                f'SELECT id, ARRAY[sp, md, sh] FROM "{store.schema}".sessions ORDER BY id'
            ).fetchall()
        )
    meta = header["metadata"]
    assert (
        stored["one"]
        == stored["two"]
        == [
            dumps(header["system_prompt"]),
            dumps(meta),
            dumps(header["shared"]),
        ]
    )
    one, two = store.get_header("one"), store.get_header("two")
    assert one is not None
    assert two is not None
    assert (one["system_prompt"], one["shared"]) == (header["system_prompt"], header["shared"])
    assert one["metadata"] == {**meta, "message_count": 1, "token_count": 2}
    assert two["metadata"] == {**meta, "message_count": 2, "token_count": 4}


def test_a_concurrent_append_of_the_same_id_is_stored_once(
    store: PostgresStore, postgres_url: str
) -> None:
    """An append waiting for the row lock while another transaction appends the same id:
    its snapshot cannot see that id, the unique index refuses it, it is sent again and
    skips it. Counters and positions stay exact."""
    import threading

    store.append_messages("s", [msg(0)], init=init("s"), now=NOW)
    params = {
        "id": "s",
        "mid": "id-1",
        "tokens": 2,
        "body": msg(1).json,
        "now": dumps(NOW),
        "init": dumps(init("s")),
        "ttl": None,
        "max": None,
        "wt": 7,  # another write's token
    }
    results: list[Any] = []
    with psycopg.connect(postgres_url) as other:  # a transaction held open
        assert other.execute(store._append_one_sql, params).fetchone() == ("",)  # appended
        waiter = threading.Thread(
            target=lambda: results.append(
                store.append_messages("s", [msg(1)], init=init("s"), now=NOW)
            )
        )
        waiter.start()
        time.sleep(0.3)
        assert waiter.is_alive()  # waiting for the session row
        other.commit()
    waiter.join(10)
    assert [(r.created, r.added) for r in results] == [(False, 0)]
    header = store.get_header("s")
    assert header is not None
    assert (header["metadata"]["message_count"], header["metadata"]["token_count"]) == (2, 4)
    assert [m["content"] for m in store.get_messages("s")] == ["m0", "m1"]
    store.append_messages("s", [msg(2)], init=init("s"), now=NOW)
    assert [m["content"] for m in store.get_messages("s", -1, -1)] == ["m2"]


def test_a_pool_with_another_row_factory_still_gets_tuples(
    postgres_url: str, pg_schema: str
) -> None:
    from psycopg.rows import dict_row
    from psycopg_pool import ConnectionPool

    kwargs = {"autocommit": True, "row_factory": dict_row}
    with ConnectionPool(postgres_url, min_size=1, max_size=1, kwargs=kwargs) as pool:
        with PostgresStore(pool=pool, schema=pg_schema) as store:
            store.append_messages("s", [msg(1)], init=init("s"), now=NOW)
            store.append_messages("s", [msg(2), msg(3)], init=init("s"), now=NOW)
            assert [m["content"] for m in store.get_messages("s", -2, -1)] == ["m2", "m3"]
        with pool.connection() as conn:  # the pool's own use of it is unchanged
            assert conn.execute("SELECT 1 AS one").fetchone() == {"one": 1}


def test_prepared_statement_text_numbers_each_named_parameter_once() -> None:
    prepared = _postgres_ops.Prepared.of(
        b"SELECT %(b)s, %(a)s, %(b)s::text, '%%' || %(c)s WHERE x LIKE 'a%%'"
    )
    assert prepared.sql == b"SELECT $1, $2, $1::text, '%' || $3 WHERE x LIKE 'a%'"
    assert prepared.order == ("b", "a", "c")
    assert prepared.name.startswith(b"ctx_memory_")
    assert _postgres_ops.Prepared.of(b"SELECT %(a)s").name != prepared.name


CRC_TWINS = ("tvvekwlpxlsfh", "tduxbdagnvvkn")
"""Schema names whose statements' texts have equal CRC-32s (the names' old form)."""


def test_two_schemas_on_one_pool_never_share_a_prepared_statement(postgres_url: str) -> None:
    """Statements are named by a 128-bit digest of their text: a connection that served one
    schema runs the other's own statements, even for names chosen to collide."""
    from psycopg_pool import ConnectionPool

    assert len({zlib.crc32(_postgres_sql.SchemaSql(s).read(_postgres_sql.Read.MESSAGES,
                touch=False)) for s in CRC_TWINS}) == 1  # fmt: skip
    try:
        with ConnectionPool(postgres_url, min_size=1, max_size=1) as pool:
            first, second = (PostgresStore(pool=pool, schema=s) for s in CRC_TWINS)
            for store, text in ((first, "first's"), (second, "second's")):
                ContextManager(store=store).add_user_message("s", text)
            for store, text in ((first, "first's"), (second, "second's")):
                assert [m["content"] for m in store.get_messages("s")] == [text]
            assert rows(postgres_url, CRC_TWINS[1])["messages"] == 1
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            for schema in CRC_TWINS:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_imports_in_other_schemas_do_not_wait_for_each_other(
    postgres_url: str, pg_schema: str
) -> None:
    """The import lock of a session id is the schema's: a transaction holding it in one
    schema does not hold up an import of the same id in another."""
    other = f"{pg_schema}_b"
    try:
        with (
            PostgresStore(postgres_url, schema=pg_schema) as mine,
            PostgresStore(postgres_url, schema=other) as theirs,
        ):
            document = ContextManager(store=mine)
            document.add_user_message("shared-id", "hi")
            exported = document.export_session("shared-id")
            with psycopg.connect(postgres_url) as holder:  # their import's lock, held
                holder.execute(_postgres_sql.IMPORT_LOCK, ("shared-id", theirs._sql.lock_key))
                started = time.monotonic()
                ContextManager(store=mine).import_session(exported, session_id="shared-id")
                assert time.monotonic() - started < 1.0
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{other}" CASCADE')


def test_prepared_statements_the_server_forgot_are_prepared_again(
    postgres_url: str, pg_schema: str
) -> None:
    """The hot statements are prepared once per connection; DEALLOCATE ALL (or a pooler's
    DISCARD ALL) on that connection is met by preparing them again."""
    with PostgresStore(postgres_url, schema=pg_schema, pool_size=1) as store:
        store.append_messages("s", [msg(1)], init=init("s"), now=NOW)
        assert [m["content"] for m in store.get_messages("s", -1, -1)] == ["m1"]
        with store._borrow() as conn:
            (names,) = conn.execute(
                "SELECT array_agg(name ORDER BY name) FROM pg_prepared_statements "
                "WHERE starts_with(name, 'ctx_memory_')"
            ).fetchone()  # type: ignore[misc]
            assert len(names) == 2  # the append and the read
            conn.execute("DEALLOCATE ALL")
        store.append_messages("s", [msg(2)], init=init("s"), now=NOW)
        with store._borrow() as conn:
            conn.execute("DISCARD ALL")
        assert [m["content"] for m in store.get_messages("s")] == ["m1", "m2"]
        assert store.count_messages("s") == 2


def test_no_prepared_statement_where_psycopg_prepares_none(
    postgres_url: str, pg_schema: str
) -> None:
    """prepare_threshold=None (as behind PgBouncer in transaction mode before 1.21): the
    store prepares nothing either."""
    from psycopg_pool import ConnectionPool

    kwargs = {"autocommit": True, "prepare_threshold": None}
    with (
        ConnectionPool(postgres_url, min_size=1, max_size=1, kwargs=kwargs) as pool,
        PostgresStore(pool=pool, schema=pg_schema) as store,
    ):
        for i in range(8):
            store.append_messages("s", [msg(i)], init=init("s"), now=NOW)
            assert len(store.get_messages("s", -2, -1)) == min(i + 1, 2)
        with pool.connection() as conn:
            assert conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone() == (0,)


def test_parameters_and_replies_in_the_connection_encoding(
    postgres_url: str, pg_schema: str
) -> None:
    from psycopg_pool import ConnectionPool

    kwargs = {"autocommit": True, "options": "-c client_encoding=LATIN1"}
    with (
        ConnectionPool(postgres_url, min_size=1, max_size=1, kwargs=kwargs) as pool,
        PostgresStore(pool=pool, schema=pg_schema) as store,
    ):
        with pool.connection() as conn:
            assert conn.info.encoding == "iso8859-1"
        sid = "sessiön ü"
        record = {"role": "user", "content": "café naïve", "id": "ïd", "token_count": 1}
        store.append_messages(
            sid, [EncodedMessage(dumps(record), 1, "ïd")], init=init(sid), now=NOW
        )
        assert store.get_messages(sid) == [record]
        assert store.list_sessions() == [sid]


def test_a_large_reply_is_not_kept_by_the_pooled_connection(
    postgres_url: str, pg_schema: str
) -> None:
    """Each connection keeps one cursor; after a large reply it is closed, not kept. A
    range of messages goes through libpq (no cursor): nothing of it is kept either."""
    with PostgresStore(postgres_url, schema=pg_schema, pool_size=1) as store:
        big = "x" * 100_000
        record = {"role": "user", "content": big, "id": "big", "token_count": 1}
        store.append_messages(
            "s", [EncodedMessage(dumps(record), 1, "big")], init=init("s"), now=NOW
        )
        with store._borrow() as conn:  # the connection the store's calls use
            kept = conn._ctx_memory_cursor  # type: ignore[attr-defined]
        assert store.count_messages("s") == 1
        with store._borrow() as conn:
            assert conn._ctx_memory_cursor is kept  # type: ignore[attr-defined]  # reused
        assert store.get_messages("s")[0]["content"] == big  # libpq: the cursor is not used
        assert not kept.closed
        assert kept.pgresult.ntuples == 1  # (still the count's result)
        document = store.get_document("s")  # a large reply through the cursor
        assert document is not None
        assert document["conversation_history"][0]["content"] == big
        assert kept.closed
        with store._borrow() as conn:
            fresh = conn._ctx_memory_cursor  # type: ignore[attr-defined]
        assert fresh is not kept
        assert fresh.pgresult is None  # nothing of the large reply is held
        assert store.count_messages("s") == 1
        assert fresh.pgresult is not None  # a small one is: the cursor is reused
        assert fresh.pgresult.ntuples == 1


def test_large_recall_segments_are_not_kept_by_the_pooled_connection(
    postgres_url: str, pg_schema: str
) -> None:
    """Recall segments come back one row each: a few large rows free the cursor too."""
    with PostgresStore(postgres_url, schema=pg_schema, pool_size=1) as store:
        store.append_messages("s", [msg(1)], init=init("s"), now=NOW)
        store.save_recall_segments("s", ["small"])
        with store._borrow() as conn:
            kept = conn._ctx_memory_cursor  # type: ignore[attr-defined]
        assert store.get_recall_segments("s") == ["small"]
        assert not kept.closed  # a small reply: the cursor is reused
        big = "y" * 100_000
        store.save_recall_segments("s", [big], replace=True)
        assert store.get_recall_segments("s") == [big]
        assert kept.closed
        with store._borrow() as conn:
            assert conn._ctx_memory_cursor.pgresult is None  # type: ignore[attr-defined]


def test_a_save_of_recall_segments_whose_reply_is_lost(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection drops after the save ran: one that appends is not sent again (its
    segments would be stored twice), one that replaces is."""
    store.append_messages("s", [msg(1)], init=init("s"), now=NOW)
    run = PostgresStore._run
    losses: list[int] = []

    def lose_the_reply(conn: psycopg.Connection[Any], steps: Any) -> Any:
        result = run(conn, steps)
        if losses:
            losses.pop()
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return result

    monkeypatch.setattr(PostgresStore, "_run", staticmethod(lose_the_reply))
    losses.append(1)
    with pytest.raises(StoreUnavailableError):
        store.save_recall_segments("s", ["a"])
    assert store.get_recall_segments("s") == ["a"]  # saved once
    losses.append(1)
    assert store.save_recall_segments("s", ["b", "c"], replace=True)
    assert not losses  # the first attempt lost its reply; the second one answered
    assert store.get_recall_segments("s") == ["b", "c"]


# ------------------------------------------------------------------ schema versions


def _version(url: str, schema: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            f"SELECT value FROM \"{schema}\".meta WHERE key = 'schema_version'"
        ).fetchone()
    assert row is not None
    return str(row[0])


def test_a_new_schema_records_its_version(store: PostgresStore, postgres_url: str) -> None:
    store.create("s", init("s"))
    assert _version(postgres_url, store.schema) == str(postgres_module.SCHEMA_VERSION)


def test_a_newer_schema_is_refused_with_what_to_do(store: PostgresStore, postgres_url: str) -> None:
    store.append_messages("s", [msg(1)], init=init("s"), now=NOW)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"UPDATE \"{store.schema}\".meta SET value = '99'")
    newer = PostgresStore(postgres_url, schema=store.schema)
    with pytest.raises(StoreVersionError) as info:
        newer.get_messages("s")
    message = str(info.value)
    assert "version 99" in message
    assert "upgrade ctx_memory" in message
    assert "POSTGRES_SCHEMA" in message
    assert _password(postgres_url) not in message
    newer.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # nothing was changed
        conn.execute(
            f'UPDATE "{store.schema}".meta SET value = %s', (str(postgres_module.SCHEMA_VERSION),)
        )


def test_an_older_schema_is_migrated_keeping_its_data(
    postgres_url: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening a schema an older version made runs the migrations, in one transaction."""
    today = postgres_module.SCHEMA_VERSION
    with PostgresStore(postgres_url, schema=pg_schema) as old:  # today's layout
        ContextManager(store=old, token_counter="approximate").add_user_message("kept", "hi")
    step = ("ALTER TABLE {s}.sessions ADD COLUMN note text DEFAULT 'migrated'",)
    monkeypatch.setitem(_postgres_sql.MIGRATIONS, today, step)
    monkeypatch.setattr(_postgres_ops, "SCHEMA_VERSION", today + 1)  # where it is checked
    with PostgresStore(postgres_url, schema=pg_schema) as new:
        assert [m["content"] for m in new.get_messages("kept")] == ["hi"]
        new.append_messages("kept", [msg(2)], init=init("kept"), now=NOW)
        assert new.count_messages("kept") == 2
    assert _version(postgres_url, pg_schema) == str(today + 1)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        (note,) = conn.execute(f'SELECT note FROM "{pg_schema}".sessions').fetchone()  # type: ignore[misc]
    assert note == "migrated"


def test_a_foreign_meta_table_is_refused(postgres_url: str, pg_schema: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{pg_schema}"')
        conn.execute(f'CREATE TABLE "{pg_schema}".meta (key text PRIMARY KEY, value text)')
    with (
        PostgresStore(postgres_url, schema=pg_schema) as store,
        pytest.raises(StoreUnavailableError, match="not made by ctx_memory"),
    ):
        store.exists("s")


# ------------------------------------------------------------------ TTL on every row


def test_ttl_removes_every_row_of_an_expired_session(postgres_url: str, pg_schema: str) -> None:
    with PostgresStore(postgres_url, schema=pg_schema, ttl_seconds=0.4) as store:
        cm = ContextManager(store=store, token_counter="approximate")
        cm.add_user_message("gone", "hello")
        cm.add_fetched_context("gone", "web_search", "a page", url="https://a.example")
        cm.update_partial_context("gone", {"k": 1})
        cm.add_user_message("kept", "hello")
        assert store.save_recall_segments("gone", ["g"])
        assert store.save_recall_segments("kept", ["k"])
        assert all(n > 0 for n in rows(postgres_url, pg_schema).values())
        time.sleep(0.25)
        cm.add_user_message("kept", "again")  # slides kept's TTL
        time.sleep(0.25)
        assert store.get_document("gone") is None  # enforced on read, before any GC
        assert store.count_messages("gone") == 0
        assert store.get_fetched("gone") == {}
        assert store.exists("kept")
        assert store.gc() == 1
        left = rows(postgres_url, pg_schema)
        expected = {"sessions": 1, "messages": 2, "fetched": 0, "fingerprints": 0}
        assert left == {**expected, "recall_segments": 1}
        time.sleep(0.5)
        assert store.gc() == 1
        assert rows(postgres_url, pg_schema) == dict.fromkeys(TABLES, 0)


def test_lru_eviction_removes_every_row(postgres_url: str, pg_schema: str) -> None:
    with PostgresStore(postgres_url, schema=pg_schema, max_sessions=2) as store:
        cm = ContextManager(store=store, token_counter="approximate")
        for sid in ("a", "b", "c"):
            cm.add_user_message(sid, "x")
            cm.add_fetched_context(sid, "web", "page", url=f"https://{sid}.example")
            assert store.save_recall_segments(sid, [sid])  # not an access: LRU order kept
        assert store.list_sessions() == ["b", "c"]
        assert rows(postgres_url, pg_schema) == {
            "sessions": 2,
            "messages": 2,
            "fetched": 2,
            "fingerprints": 2,
            "recall_segments": 2,
        }


# ------------------------------------------------------------------ crafted ids

CRAFTED = [
    "'; DROP TABLE sessions; --",
    'x"); DELETE FROM messages; --',
    "a%",
    "a_",
    "\\",
    "$1",
    "{s}",
    "%(id)s",
    "ünï €",
    "😀" * 64,
    "z" * 256,
    " leading and trailing ",
]


def test_crafted_session_ids_stay_their_own_sessions(store: PostgresStore) -> None:
    cm = ContextManager(store=store, token_counter="approximate")
    cm.add_user_message("ab", "plain")
    for i, sid in enumerate(CRAFTED):
        cm.add_user_message(sid, f"for {i}")
        cm.update_partial_context(sid, {"who": sid})
    for i, sid in enumerate(CRAFTED):
        assert [m.content for m in cm.get_messages(sid)] == [f"for {i}"]
        assert cm.get_context(sid)["shared"] == {"who": sid}
    assert store.list_sessions() == sorted([*CRAFTED, "ab"])
    assert store.list_page(prefix="a%", limit=10) == ["a%"]  # no LIKE wildcard
    assert store.list_page(prefix="a_", limit=10) == ["a_"]
    assert [m.content for m in cm.get_messages("ab")] == ["plain"]
    for sid in CRAFTED:
        assert cm.delete_context(sid)
    assert store.list_sessions() == ["ab"]


def test_crafted_message_ids_and_source_types(store: PostgresStore) -> None:
    odd = EncodedMessage(dumps({"role": "user", "content": "x", "id": "'); --"}), 1, "'); --")
    store.append_messages("s", [odd, odd], init=init("s"), now=NOW)
    item = EncodedItem("x'); DROP TABLE fetched; --", dumps({"content": "c"}), 1, "fp'--")
    store.append_fetched("s", [item], init=init("s"), now=NOW)
    assert store.count_messages("s") == 1
    assert store.get_fetched("s", "x'); DROP TABLE fetched; --") == {
        "x'); DROP TABLE fetched; --": [{"content": "c"}]
    }
    assert store.delete_messages("s", ["'); --"], now=NOW) == 1


def test_bad_schema_names_are_refused_before_connecting() -> None:
    for bad in ("Upper", "has-dash", 'q"uote', "pg_catalog", "1st", "", "x" * 41, "a b"):
        with pytest.raises(ConfigurationError, match="POSTGRES_SCHEMA"):
            PostgresStore("postgresql://127.0.0.1:1/db", schema=bad)


def test_schemas_keep_apps_apart(postgres_url: str, pg_schema: str) -> None:
    other = pg_schema + "_b"
    try:
        with (
            PostgresStore(postgres_url, schema=pg_schema) as one,
            PostgresStore(postgres_url, schema=other) as two,
        ):
            one.append_messages("s", [msg(1)], init=init("s"), now=NOW)
            assert two.get_document("s") is None
            assert two.list_sessions() == []
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{other}" CASCADE')


# ------------------------------------------------------------------ secrets


def _password(url: str) -> str:
    match = re.match(r"postgres(?:ql)?://[^:/@]*:([^@]*)@", url)
    return match[1] if match else "\x00no password\x00"


def test_unreachable_server_error_names_url_without_password() -> None:
    secret = "pw-Not-Printed-77"
    store = PostgresStore(f"postgresql://bob:{secret}@127.0.0.1:1/db", connect_timeout=1)
    with pytest.raises(StoreUnavailableError) as info:
        store.get_document("s")
    message = str(info.value)
    assert "postgresql://bob:***@127.0.0.1:1/db" in message
    assert secret not in message
    assert secret not in repr(info.value.__cause__)
    assert secret not in repr(store)
    assert store.url == "postgresql://bob:***@127.0.0.1:1/db"
    store.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_wrong_password_error_says_so_and_hides_both(postgres_url: str, mode: str) -> None:
    """The pool only logs why it cannot connect: the error asks the server once and says
    why (it said only "couldn't get a connection after N sec"), without either password."""
    wrong = re.sub(r"(://[^:]+:)[^@]*@", r"\1Wr0ng-Secret@", postgres_url)
    store = PostgresStore(wrong, connect_timeout=2)
    call = asyncio.to_thread(store.exists, "s") if mode == "sync" else store.aexists("s")
    with pytest.raises(StoreUnavailableError) as info:
        await call
    assert "password authentication failed" in str(info.value)
    text = f"{info.value} {info.value.__cause__!r} {info.value.__context__!r}"
    assert "Wr0ng-Secret" not in text
    assert _password(postgres_url) not in text
    await store.aclose()


def test_a_missing_database_is_named(postgres_url: str) -> None:
    store = PostgresStore(postgres_url.rsplit("/", 1)[0] + "/no_such_db", connect_timeout=2)
    with pytest.raises(StoreUnavailableError, match='database "no_such_db" does not exist'):
        store.get_document("s")
    store.close()


def test_settings_and_their_errors_hide_the_password(postgres_url: str) -> None:
    settings = load_settings(store="postgres", postgres_url=postgres_url)
    assert _password(postgres_url) not in repr(settings)
    with pytest.raises(ConfigurationError) as info:
        load_settings(store="postgres", postgres_url="mysql://u:Sekr1t@h/db")
    assert "Sekr1t" not in str(info.value)
    assert "POSTGRES_URL" in str(info.value)
    with pytest.raises(ConfigurationError) as info:
        PostgresStore("postgresql://u:Sekr1t@h/db#frag")
    assert "Sekr1t" not in str(info.value)


# ------------------------------------------------------------------ settings, pools


def test_store_postgres_from_settings(postgres_url: str, pg_schema: str) -> None:
    settings = load_settings(store="postgres", postgres_url=postgres_url, postgres_schema=pg_schema)
    store = create_store(settings)
    assert isinstance(store, PostgresStore)
    assert (store.schema, store.ttl_seconds, store.max_sessions) == (pg_schema, 30 * 86_400, None)
    assert store.gc_running
    with ContextManager(store=store, token_counter="approximate") as cm:
        cm.add_user_message("s", "hi")
        assert cm.get_memory_stats("s")["message_count"] == 1


def test_an_existing_pool_is_used_and_not_closed(postgres_url: str, pg_schema: str) -> None:
    from psycopg_pool import ConnectionPool

    with ConnectionPool(postgres_url, min_size=1, max_size=2, open=True) as pool:  # no autocommit
        store = PostgresStore(pool=pool, schema=pg_schema)
        assert _password(postgres_url) not in repr(store)
        store.append_messages("s", [msg(1), msg(2)], init=init("s"), now=NOW)
        assert store.count_messages("s") == 2
        assert store._kept == []  # none of a given pool's connections held between calls
        # The pool may still be resetting a returned connection in its worker thread (a
        # pool without autocommit rolls back what it gets back): wait for that, not more.
        deadline = time.monotonic() + 5
        while (stats := pool.get_stats())["pool_available"] != stats["pool_size"]:
            assert time.monotonic() < deadline, stats
            time.sleep(0.01)
        store.close()
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(StoreError, match="is closed"):  # the pool is open, the store not
            store.count_messages("s")


async def test_a_store_on_a_given_async_pool_refuses_calls_once_closed(
    postgres_url: str, pg_schema: str
) -> None:
    from psycopg_pool import AsyncConnectionPool

    async with AsyncConnectionPool(postgres_url, min_size=1, max_size=2, open=False) as apool:
        store = PostgresStore(postgres_url, async_pool=apool, schema=pg_schema)
        await store.aappend_messages("s", [msg(1)], init=init("s"), now=NOW)
        await store.aclose()
        with pytest.raises(StoreError, match="is closed"):
            await store.acount_messages("s")


def test_the_store_keeps_its_own_connections_between_calls(
    postgres_url: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its own pool's connections stay checked out between calls, as many as calls ran at
    once; they go back through the pool every KEEP_SECONDS and all of them on close."""
    import threading

    store = PostgresStore(postgres_url, schema=pg_schema, pool_size=4)
    cm = ContextManager(store=store, token_counter="approximate")
    cm.add_user_message("s", "first")
    requests = store.pool.get_stats()["requests_num"]
    for i in range(20):
        cm.add_user_message("s", f"m{i}")
        assert len(cm.get_history("s", last_k=2)) == 2
    assert store.pool.get_stats()["requests_num"] == requests  # not one checkout per call
    assert len(store._kept) == 1

    barrier = threading.Barrier(4)

    def writer(w: int) -> None:
        barrier.wait()
        for i in range(30):
            cm.add_user_message(f"w{w}", f"{i}")

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 1 <= len(store._kept) <= 4
    assert [len(cm.get_history(f"w{w}")) for w in range(4)] == [30] * 4

    kept = [lease.conn for lease in store._kept]
    pool = store.pool
    store.close()
    assert store._kept == []
    assert pool.closed
    assert all(conn.closed for conn in kept)

    monkeypatch.setattr(postgres_module, "KEEP_SECONDS", 0.0)  # due at once: via the pool
    with PostgresStore(postgres_url, schema=pg_schema) as store:
        store.count_messages("s")
        before = store.pool.get_stats()["requests_num"]
        for _ in range(5):
            assert store.count_messages("s") == 21
        assert store.pool.get_stats()["requests_num"] == before + 5


def _child_sees_no_kept_connection(store: PostgresStore, out: Any) -> None:
    out.put(len(store._kept))


def test_a_forked_child_drops_the_kept_connections_without_closing_them(
    postgres_url: str, pg_schema: str
) -> None:
    import multiprocessing

    with PostgresStore(postgres_url, schema=pg_schema) as store:
        store.append_messages("s", [msg(1)], init=init("s"), now=NOW)
        assert len(store._kept) == 1
        ctx = multiprocessing.get_context("fork")
        out = ctx.Queue()
        child = ctx.Process(target=_child_sees_no_kept_connection, args=(store, out))
        child.start()
        assert out.get(timeout=30) == 0
        child.join(30)
        assert child.exitcode == 0
        assert len(store._kept) == 1  # the parent's, still open and working
        store.append_messages("s", [msg(2)], init=init("s"), now=NOW)
        assert store.count_messages("s") == 2


def _child_writes_on_its_own_connections(store: PostgresStore, out: Any) -> None:
    backend = None
    try:
        for i in range(40):
            store.append_messages("child", [msg(i)], init=init("child"), now=NOW)
        with store.pool.connection() as conn:
            backend = conn.info.backend_pid
    finally:
        out.put(backend)


def test_a_forked_child_opens_its_own_pool_and_both_keep_writing(
    postgres_url: str, pg_schema: str
) -> None:
    """The child's calls took the parent's pooled connection: two processes on one server
    session (a hang, a failed write, a prepared statement "already exists")."""
    import multiprocessing

    with PostgresStore(postgres_url, schema=pg_schema) as store:
        store.append_messages("parent", [msg(0)], init=init("parent"), now=NOW)
        with store.pool.connection() as conn:
            parents = {conn.info.backend_pid}
        ctx = multiprocessing.get_context("fork")
        out = ctx.Queue()
        child = ctx.Process(target=_child_writes_on_its_own_connections, args=(store, out))
        child.start()
        for i in range(1, 40):  # meanwhile, on the parent's connections
            store.append_messages("parent", [msg(i)], init=init("parent"), now=NOW)
            with store.pool.connection() as conn:
                parents.add(conn.info.backend_pid)
        child_backend = out.get(timeout=60)
        child.join(30)
        assert child.exitcode == 0
        assert child_backend is not None
        assert child_backend not in parents
        assert store.count_messages("parent") == store.count_messages("child") == 40


async def test_native_async_on_two_event_loops_in_turn(postgres_url: str, pg_schema: str) -> None:
    store = PostgresStore(postgres_url, schema=pg_schema)
    await store.aappend_messages("s", [msg(1)], init=init("s"), now=NOW)
    assert [m["content"] for m in await store.aget_messages("s")] == ["m1"]
    await store.aclose()


def test_docstring_example_runs(postgres_url: str) -> None:
    doc = inspect.getdoc(PostgresStore) or ""
    match = re.search(r"\.\. code-block:: python\s*\n\n(?P<code>(?:[ \t]+.*\n|\s*\n)+)", doc + "\n")
    assert match is not None
    code = textwrap.dedent(match["code"])
    assert "postgresql://localhost:5432/postgres" in code
    exec(
        compile(code.replace("postgresql://localhost:5432/postgres", postgres_url), "<ex>", "exec"),
        {"__name__": "__example__"},
    )
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute('DROP SCHEMA IF EXISTS "ctx_memory" CASCADE')


def test_a_session_limit_beyond_an_sql_integer_works(postgres_url: str, pg_schema: str) -> None:
    """``MAX_SESSIONS`` of 2**31 or more: every other store took it, PostgreSQL's functions
    (``integer``) failed every write. It is now the largest they take: no limit in practice."""
    with PostgresStore(postgres_url, schema=pg_schema, max_sessions=3_000_000_000) as store:
        assert store.max_sessions == 2**31 - 1
        store.append_messages("s", [msg(1)], init=init("s"), now=NOW)
        assert store.count_messages("s") == 1
