"""PostgreSQL schemas an older release made open with this one; this layout is refused by
the release before it.

There is no fixture file (as ``tests/fixtures`` has for SQLite and Redis): an older layout
is made with today's store, then what the later versions added is taken away
(:func:`_back_to_version_3`, :func:`_back_to_version_2`, whose result is checked against
the version-2 catalog).
"""

from __future__ import annotations

import json

import psycopg
import pytest
from store_records import NOW, init, msg

from ctx_memory import ContextManager
from ctx_memory.errors import StoreUnavailableError, StoreVersionError
from ctx_memory.schema import dumps
from ctx_memory.stores import _postgres_ops
from ctx_memory.stores import postgres as postgres_module
from ctx_memory.stores._postgres_sql import SchemaSql
from ctx_memory.stores.postgres import PostgresStore

pytestmark = pytest.mark.postgres

V2_TABLES = {"meta", "sessions", "messages", "fetched", "fingerprints"}
V2_FUNCTIONS = {
    "expiry",
    "drop_session",
    "collect",
    "evict",
    "live",
    "upsert",
    "touch",
    "append",
    "append_one",
    "append_fetched",
    "renumber",
}
# drop_session as version 2 wrote it (version 3 deletes the session's recall segments too)
V2_DROP_SESSION = """
CREATE OR REPLACE FUNCTION "{s}".drop_session(p_sk bigint) RETURNS void
LANGUAGE sql AS $fn$
    DELETE FROM "{s}".messages WHERE sk = p_sk;
    DELETE FROM "{s}".fetched WHERE sk = p_sk;
    DELETE FROM "{s}".fingerprints WHERE sk = p_sk;
    DELETE FROM "{s}".sessions WHERE sk = p_sk;
$fn$
"""
# append and append_one as version 2 wrote them (version 3 adds the write token and the
# second-attempt flag: new signatures), the functions a process of that release calls
V2_APPEND = """
CREATE FUNCTION "{s}".append(p_id text, p_ids text[], p_tokens bigint[],
                             p_bodies text[], p_now text,
                             p_sp text, p_md text, p_sh text, p_ts text,
                             p_ttl float8, p_max integer,
                             OUT o_created boolean, OUT o_added integer,
                             OUT o_expired text[], OUT o_evicted text[])
LANGUAGE plpgsql AS $fn$
DECLARE
    r record;
    u record;
    v_sk bigint;
    v_n integer;
    t bigint := 0;
BEGIN
    o_created := false;
    o_added := 0;
    o_expired := '{}';
    o_evicted := '{}';
    SELECT sk, n_messages, expires_at INTO r FROM "{s}".sessions WHERE id = p_id FOR UPDATE;
    IF r.sk IS NULL OR r.expires_at <= now() THEN
        u := "{s}".upsert(p_id, p_sp, p_md, p_sh, p_ts, p_ttl, p_max);
        v_sk := u.o_sk;
        v_n := u.o_n;
        o_created := u.o_created;
        o_expired := u.o_expired;
        o_evicted := u.o_evicted;
    ELSE
        v_sk := r.sk;
        v_n := r.n_messages;
    END IF;
    FOR i IN 1 .. coalesce(array_length(p_ids, 1), 0) LOOP
        INSERT INTO "{s}".messages (sk, pos, id, tokens, body)
        SELECT v_sk, v_n + o_added, p_ids[i], p_tokens[i], p_bodies[i]
        WHERE NOT EXISTS (SELECT 1 FROM "{s}".messages WHERE sk = v_sk AND id = p_ids[i]);
        IF FOUND THEN
            o_added := o_added + 1;
            t := t + p_tokens[i];
        END IF;
    END LOOP;
    IF o_added > 0 OR o_created THEN
        UPDATE "{s}".sessions
        SET n_messages = n_messages + o_added, mc = mc + o_added, tc = tc + t, ts = p_now,
            expires_at = "{s}".expiry(p_ttl), last_access = nextval('"{s}".access_clock')
        WHERE sk = v_sk;
    END IF;
END
$fn$;
CREATE FUNCTION "{s}".append_one(p_id text, p_mid text, p_tokens bigint,
                                 p_body text, p_now text, p_init text,
                                 p_ttl float8, p_max integer) RETURNS text
LANGUAGE plpgsql AS $fn$
DECLARE
    j json := p_init::json;
    a record;
BEGIN
    a := "{s}".append(p_id, ARRAY[p_mid], ARRAY[p_tokens], ARRAY[p_body], p_now,
                      (j -> 'system_prompt')::text, (j -> 'metadata')::text,
                      (j -> 'shared')::text, (j -> 'metadata' -> 'timestamp')::text,
                      p_ttl, p_max);
    RETURN json_build_array(a.o_created, a.o_added, a.o_expired, a.o_evicted)::text;
END
$fn$;
"""
# evict as versions 1 to 3 wrote it (version 4 checks a victim's last_access once locked)
V3_EVICT = """
CREATE OR REPLACE FUNCTION "{s}".evict(p_max integer, p_keep bigint,
                                       OUT o_expired text[], OUT o_evicted text[])
LANGUAGE plpgsql AS $fn$
DECLARE
    r record;
    n bigint;
BEGIN
    o_evicted := '{}';
    PERFORM pg_advisory_xact_lock({lock});
    o_expired := "{s}".collect();
    SELECT count(*) INTO n FROM "{s}".sessions;
    IF n > p_max THEN
        FOR r IN SELECT sk, id FROM "{s}".sessions WHERE sk <> p_keep
                 ORDER BY last_access LIMIT n - p_max FOR UPDATE LOOP
            PERFORM "{s}".drop_session(r.sk);
            o_evicted := o_evicted || r.id;
        END LOOP;
    END IF;
END
$fn$;
"""
V2_COLUMNS = {
    "sessions": [
        "sk",
        "id",
        "sp",
        "md",
        "sh",
        "mc",
        "tc",
        "ts",
        "n_messages",
        "n_fetched",
        "expires_at",
        "last_access",
    ],
    "messages": ["sk", "pos", "id", "tokens", "body"],
}
V2_SIGNATURES = {("append", 11), ("append_one", 8)}


def _catalog(url: str, schema: str) -> tuple[set[str], set[str], str]:
    """The schema's tables, its functions and its recorded version."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)
        ).fetchall()
        functions = conn.execute(
            "SELECT p.proname FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace "
            "WHERE n.nspname = %s",
            (schema,),
        ).fetchall()
        (version,) = conn.execute(
            f"SELECT value FROM \"{schema}\".meta WHERE key = 'schema_version'"
        ).fetchone() or (None,)
    return {t for (t,) in tables}, {f for (f,) in functions}, str(version)


def _columns(url: str, schema: str) -> dict[str, list[str]]:
    """The columns of ``sessions`` and ``messages``, in order."""
    with psycopg.connect(url, autocommit=True) as conn:
        return {
            table: [
                name
                for (name,) in conn.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
                    (schema, table),
                )
            ]
            for table in ("sessions", "messages")
        }


def _functions(url: str, schema: str, names: tuple[str, ...]) -> list[tuple[str, int, str]]:
    """``(name, number of arguments, definition)`` of the schema's functions so named."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT p.proname, p.pronargs, pg_get_functiondef(p.oid) FROM pg_proc AS p "
            "JOIN pg_namespace AS n ON n.oid = p.pronamespace "
            "WHERE n.nspname = %s AND p.proname = ANY(%s)",
            (schema, list(names)),
        ).fetchall()
    return [(name, int(n), str(definition)) for name, n, definition in rows]


def _signatures(url: str, schema: str) -> set[tuple[str, int]]:
    """``(name, number of arguments)`` of every ``append`` and ``append_one``."""
    return {(name, n) for name, n, _ in _functions(url, schema, ("append", "append_one"))}


def _rows(url: str, schema: str, tables: set[str]) -> dict[str, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        return {
            table: conn.execute(f'SELECT count(*) FROM "{schema}".{table}').fetchone()[0]  # type: ignore[index]
            for table in sorted(tables - {"meta"})
        }


def _evict_definition(url: str, schema: str) -> str:
    [(_, _, definition)] = _functions(url, schema, ("evict",))
    return definition


def _clock_of(url: str, schema: str) -> set[str]:
    """The clocks the functions that judge expiry read: ``now()``, ``clock_timestamp()``."""
    found = set()
    for _, _, definition in _functions(url, schema, ("expiry", "live", "append", "collect")):
        found |= {clock for clock in ("now()", "clock_timestamp()") if clock in definition}
    return found


def _back_to_version_4(url: str, schema: str) -> None:
    """Turn a schema of today's layout into the one the version-4 release made: the same
    functions, their time the transaction's start (``now()``)."""
    functions = SchemaSql(schema).create_functions().decode()
    old = functions.replace("clock_timestamp()", "now()")
    old = old.replace("sql VOLATILE AS", "sql STABLE AS")
    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute(old.encode())
        conn.execute(f'DROP FUNCTION "{schema}".waited')
        conn.execute(f"UPDATE \"{schema}\".meta SET value = '4'")
    assert _clock_of(url, schema) == {"now()"}


def _back_to_version_3(url: str, schema: str) -> None:
    """Turn a schema of today's layout into the one the version-3 release made."""
    _back_to_version_4(url, schema)
    with psycopg.connect(url) as conn, conn.transaction():
        lock = str(SchemaSql(schema).lock_key)
        conn.execute(V3_EVICT.replace("{s}", schema).replace("{lock}", lock))
        conn.execute(f"UPDATE \"{schema}\".meta SET value = '3'")
    assert "r.last_access" not in _evict_definition(url, schema)


def _back_to_version_2(url: str, schema: str) -> None:
    """Turn a schema of today's layout into the one the version-2 release made."""
    _back_to_version_3(url, schema)
    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute(f'DROP FUNCTION "{schema}".save_recall')
        conn.execute(V2_DROP_SESSION.replace("{s}", schema))
        conn.execute(f'DROP TABLE "{schema}".recall_segments')
        conn.execute(f'DROP FUNCTION "{schema}".append_one')  # (the write tokens': below)
        conn.execute(f'DROP FUNCTION "{schema}".append')
        conn.execute(f'ALTER TABLE "{schema}".sessions DROP COLUMN ct')
        conn.execute(f'ALTER TABLE "{schema}".messages DROP COLUMN wt')
        conn.execute(V2_APPEND.replace("{s}", schema))
        conn.execute(f"UPDATE \"{schema}\".meta SET value = '2'")
    assert _catalog(url, schema) == (V2_TABLES, V2_FUNCTIONS, "2")
    assert _columns(url, schema) == V2_COLUMNS
    assert _signatures(url, schema) == V2_SIGNATURES


def test_a_version_2_postgres_schema_is_migrated_and_keeps_recall_segments(
    postgres_url: str, pg_schema: str
) -> None:
    """Version 2 (the release before recall segments) is migrated to version 3 when a store
    of this release first opens it: the table ``recall_segments`` is created, every session
    and row is kept, and segments are then saved, and dropped with the session's rows."""
    with PostgresStore(postgres_url, schema=pg_schema, ttl_seconds=3600) as store:
        cm = ContextManager(store=store, token_counter="approximate")
        cm.add_user_message("s", "hello")
        cm.add_assistant_message("s", "hi there")
        cm.add_fetched_context("s", "web", "a page", url="https://a.example")
        cm.update_partial_context("s", {"k": [1, 2]})
        cm.add_user_message("t", "other")
        before = {sid: store.get_document(sid) for sid in ("s", "t")}
    _back_to_version_2(postgres_url, pg_schema)
    counts = {"fetched": 1, "fingerprints": 1, "messages": 3, "sessions": 2}
    assert _rows(postgres_url, pg_schema, V2_TABLES) == counts
    with PostgresStore(postgres_url, schema=pg_schema, ttl_seconds=3600) as store:
        assert store.list_sessions() == ["s", "t"]
        assert {sid: store.get_document(sid) for sid in ("s", "t")} == before
        tables, functions, version = _catalog(postgres_url, pg_schema)
        assert (tables, version) == ({*V2_TABLES, "recall_segments"}, "5")
        assert functions == {*V2_FUNCTIONS, "save_recall", "waited"}
        assert _columns(postgres_url, pg_schema) == {
            "sessions": [*V2_COLUMNS["sessions"], "ct"],
            "messages": [*V2_COLUMNS["messages"], "wt"],
        }
        # the version-2 forms stay beside the write tokens' ones (see _v2_process_appends)
        assert _signatures(postgres_url, pg_schema) == {
            *V2_SIGNATURES,
            ("append", 13),
            ("append_one", 10),
        }
        assert store.get_recall_segments("s") == []
        assert store.save_recall_segments("s", ["one", "two"])
        assert store.save_recall_segments("t", ["three"])
        assert store.get_recall_segments("s") == ["one", "two"]
        assert store.get_document("s") == before["s"]  # saving is not a write of the session
        store.append_messages("s", [msg(9)], init=init("s"), now=NOW)
        assert store.get_recall_segments("s") == ["one", "two"]
        assert store.delete_messages("s", ["id-9"], now=NOW) == 1
        assert store.get_recall_segments("s") == []
        assert store.save_recall_segments("s", ["four"])
        assert store.replace_document("t", init("t"), [msg(1)], []).added == 1
        assert store.get_recall_segments("t") == []  # (drop_session, as version 3 wrote it)
        _v2_process_appends(postgres_url, pg_schema, "t")
        assert [m["content"] for m in store.get_messages("t")] == ["m1", "m5", "m6"]
        header = store.get_header("t")
        assert header is not None
        meta = header["metadata"]  # (the import set the counters of its header: 0)
        assert (meta["message_count"], meta["token_count"]) == (2, 4)
        assert store.append_messages("t", [msg(6), msg(7)], init=init("t"), now=NOW).added == 1
        assert store.delete("s")
    assert _rows(postgres_url, pg_schema, tables)["recall_segments"] == 0


def _v2_process_appends(url: str, schema: str, sid: str) -> None:
    """What a process of the release before, still running after the migration, sends to
    append messages ``id-5`` and ``id-6``: its functions, kept, store them (with no write
    token), and skip an id the session holds."""
    head = dumps(init(sid))
    with psycopg.connect(url, autocommit=True) as conn:
        one = f'SELECT "{schema}".append_one(%s, %s, %s, %s, %s, %s, %s::float8, %s::integer)'
        row = conn.execute(one, (sid, "id-5", 2, msg(5).json, dumps(NOW), head, 3600, None))
        assert json.loads(row.fetchone()[0]) == [False, 1, [], []]  # type: ignore[index]
        many = (
            f'SELECT o_created, o_added FROM "{schema}".append(%s, %s::text[], %s::bigint[], '
            "%s::text[], %s, %s, %s, %s, %s, %s::float8, %s::integer)"
        )
        sp, md, sh = dumps(None), dumps({}), dumps({})
        args = (sid, ["id-5", "id-6"], [2, 2], [msg(5).json, msg(6).json], dumps(NOW), sp, md, sh)
        assert conn.execute(many, (*args, None, 3600, None)).fetchone() == (False, 1)


def test_a_version_1_postgres_schema_is_migrated_through(postgres_url: str, pg_schema: str) -> None:
    """Version 1 (the first layout) had every function of version 2 but ``append_one``:
    opening it runs both migrations; the sessions, their counters and appends go on."""
    assert postgres_module.SCHEMA_VERSION == 5
    with PostgresStore(postgres_url, schema=pg_schema, ttl_seconds=3600) as store:
        store.append_messages("s", [msg(1), msg(2)], init=init("s"), now=NOW)
    _back_to_version_2(postgres_url, pg_schema)
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # back to version 1
        conn.execute(f'DROP FUNCTION "{pg_schema}".append_one')
        conn.execute(f"UPDATE \"{pg_schema}\".meta SET value = '1'")
    with PostgresStore(postgres_url, schema=pg_schema, ttl_seconds=3600) as store:
        append = store.append_messages
        assert append("s", [msg(2)], init=init("s"), now=NOW).added == 0
        assert append("s", [msg(3)], init=init("s"), now=NOW).added == 1
        created = append("new", [msg(1)], init=init("new"), now=NOW)
        assert (created.created, created.added) == (True, 1)
        header = store.get_header("s")
        assert header is not None
        assert (header["metadata"]["message_count"], header["metadata"]["token_count"]) == (3, 6)
        assert [m["content"] for m in store.get_messages("s")] == ["m1", "m2", "m3"]
        assert store.save_recall_segments("s", ["a"])
        assert store.get_recall_segments("s") == ["a"]
    _, functions, version = _catalog(postgres_url, pg_schema)
    assert version == "5"
    assert functions == {*V2_FUNCTIONS, "save_recall", "waited"}
    assert "r.last_access" in _evict_definition(postgres_url, pg_schema)


def test_a_version_3_postgres_schema_gets_the_eviction_that_checks_again(
    postgres_url: str, pg_schema: str
) -> None:
    """Version 3 evicted a session written to while eviction waited for its row (see
    ``test_postgres_evict_race.py``); opening it re-creates ``evict`` (no table changes),
    and the sessions, their rows and the LRU order are kept."""
    with PostgresStore(postgres_url, schema=pg_schema, max_sessions=3) as store:
        for i, sid in enumerate(("a", "b", "c")):
            store.append_messages(sid, [msg(i)], init=init(sid), now=NOW)
        store.save_recall_segments("a", ["x"])
        before = {sid: store.get_document(sid) for sid in ("a", "b", "c")}
    tables, functions, _ = _catalog(postgres_url, pg_schema)
    columns, signatures = _columns(postgres_url, pg_schema), _signatures(postgres_url, pg_schema)
    _back_to_version_3(postgres_url, pg_schema)
    with PostgresStore(postgres_url, schema=pg_schema, max_sessions=3) as store:
        assert {sid: store.get_document(sid) for sid in ("a", "b", "c")} == before
        assert _catalog(postgres_url, pg_schema) == (tables, functions, "5")
        assert _columns(postgres_url, pg_schema) == columns
        assert _signatures(postgres_url, pg_schema) == signatures
        assert "r.last_access" in _evict_definition(postgres_url, pg_schema)
        assert store.get_recall_segments("a") == ["x"]
        assert store.append_messages("d", [msg(4)], init=init("d"), now=NOW).evicted == ("a",)


def test_a_version_4_postgres_schema_gets_functions_that_read_the_clock_after_the_lock(
    postgres_url: str, pg_schema: str
) -> None:
    """Version 4 judged expiry with the transaction's start (see
    ``test_expiry_after_a_lock_wait.py``); opening it re-creates the functions, and the
    sessions are kept."""
    with PostgresStore(postgres_url, schema=pg_schema, ttl_seconds=3600) as store:
        store.append_messages("a", [msg(0)], init=init("a"), now=NOW)
        before = store.get_document("a")
    catalog = _catalog(postgres_url, pg_schema)
    _back_to_version_4(postgres_url, pg_schema)
    with PostgresStore(postgres_url, schema=pg_schema, ttl_seconds=3600) as store:
        assert store.get_document("a") == before
        assert _catalog(postgres_url, pg_schema) == catalog  # waited() is back
        assert "waited" in catalog[1]
        assert _clock_of(postgres_url, pg_schema) == {"clock_timestamp()"}
        assert store.append_messages("a", [msg(1)], init=init("a"), now=NOW).added == 1


def test_an_early_version_3_postgres_schema_without_write_tokens_is_migrated(
    postgres_url: str, pg_schema: str
) -> None:
    """Development builds labelled version 3 a schema with the recall segments but not yet
    the write tokens' columns (``sessions.ct``, ``messages.wt``) nor the functions taking
    them. Migrating it to version 4 adds what it lacks, so it is written to again."""
    with PostgresStore(postgres_url, schema=pg_schema) as store:
        store.append_messages("a", [msg(0)], init=init("a"), now=NOW)
        before = store.get_document("a")
    columns, signatures = _columns(postgres_url, pg_schema), _signatures(postgres_url, pg_schema)
    _back_to_version_3(postgres_url, pg_schema)
    with psycopg.connect(postgres_url) as conn, conn.transaction():
        conn.execute(f'DROP FUNCTION "{pg_schema}".append_one')
        conn.execute(f'DROP FUNCTION "{pg_schema}".append')
        conn.execute(f'ALTER TABLE "{pg_schema}".sessions DROP COLUMN ct')
        conn.execute(f'ALTER TABLE "{pg_schema}".messages DROP COLUMN wt')
    with PostgresStore(postgres_url, schema=pg_schema) as store:
        assert store.get_document("a") == before
        assert _columns(postgres_url, pg_schema) == columns
        assert _signatures(postgres_url, pg_schema) == signatures
        assert store.append_messages("a", [msg(1)], init=init("a"), now=NOW).added == 1
        assert store.append_messages("b", [msg(2)], init=init("b"), now=NOW).created


def test_the_release_before_refuses_a_version_5_postgres_schema(
    postgres_url: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store that knows version 4 at most (the release before) refuses this layout."""
    with PostgresStore(postgres_url, schema=pg_schema) as store:
        store.append_messages("s", [msg(1)], init=init("s"), now=NOW)
        store.save_recall_segments("s", ["a"])
    monkeypatch.setattr(_postgres_ops, "SCHEMA_VERSION", 4)  # where it is checked
    with (
        PostgresStore(postgres_url, schema=pg_schema) as older,
        pytest.raises(StoreVersionError, match="has version 5, newer"),
    ):
        older.get_messages("s")
    assert _catalog(postgres_url, pg_schema)[2] == "5"


def test_an_unreadable_schema_version_is_a_clear_error(postgres_url: str, pg_schema: str) -> None:
    with PostgresStore(postgres_url, schema=pg_schema) as store:
        store.append_messages("a", [msg(0)], init=init("a"), now=NOW)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"UPDATE \"{pg_schema}\".meta SET value = 'abc'")
    with (
        PostgresStore(postgres_url, schema=pg_schema) as store,
        pytest.raises(StoreUnavailableError, match=r"unreadable version 'abc'"),
    ):
        store.get_messages("a")
