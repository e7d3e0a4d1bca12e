"""The PostgreSQL store's schema and statements: pure text, no connection.

Everything lives in one schema (``POSTGRES_SCHEMA``, default ``ctx_memory``), so tenants or
apps sharing a database are kept apart by schema name, the way Redis keys are by prefix.
The schema name is the only value ever spliced into SQL text, and only after
:func:`check_schema_name` accepted it (lower-case letters, digits, ``_``); session ids,
message ids and every stored value travel as bound parameters.

Tables (schema version :data:`SCHEMA_VERSION`, kept in ``meta``)::

    meta(key, value)                        -- ('schema_version', '4')
    sessions(sk, id, sp, md, sh, mc, tc, ts, n_messages, n_fetched, expires_at, last_access, ct)
    messages(sk, pos, id, tokens, body, wt) -- PRIMARY KEY (sk, pos), UNIQUE (sk, id)
    fetched(sk, seq, source_type, body)     -- PRIMARY KEY (sk, seq)
    fingerprints(sk, fp)                    -- PRIMARY KEY (sk, fp)
    recall_segments(sk, seq, body)          -- PRIMARY KEY (sk, seq)

``sk`` is a surrogate key; ``id`` the session id (``COLLATE "C"``: ids sort by code point,
as on every store). ``sp``, ``md`` and ``sh`` are the system prompt, metadata and shared
state as JSON text (kept byte for byte: key order and numbers as written); the counters
(``mc``, ``tc``) and the last write (``ts``, JSON) are columns spliced into the metadata on
read. Message and item bodies are the JSON text the manager encoded. ``expires_at`` is
server time (sliding TTL; reads ignore an expired session, writes and ``collect()`` delete
it); ``last_access`` comes from the sequence ``access_clock`` (LRU order). The sessions
table has no index on ``expires_at`` or ``last_access``: an append then updates the
session row in place (a HOT update), and garbage collection and LRU eviction scan it.

Write tokens: every append carries a random ``bigint`` (the same on its second attempt),
stored in ``messages.wt`` of each message it inserts and in ``sessions.ct`` of a session it
creates (both nullable: rows written otherwise, or by an older release, have none). A
second attempt (``p_again``) answers from them what its first attempt did: ``added``, the
batch's messages stored with its token, ``created``, whether ``ct`` is its token.

``recall_segments`` holds a session's saved recall-index segments (opaque text written by
:mod:`ctx_memory.recall`, in ``seq`` order). They are derived data: every write that
removes or changes stored messages (delete, replace, truncate, clear, import) deletes them
in its transaction, and they go with the session (``drop_session``, ``delete``) as its
other rows do (no foreign key: an append's update of the session row checks nothing).
Saving them (the function ``save_recall``) and reading them is not an access: no touch.

Writes that need no value computed in Python are one statement each: appending one message
to a live session is plain SQL (:meth:`SchemaSql.append_one`: an ``UPDATE`` of the session
row and an ``INSERT``, with the plpgsql function ``append_one`` as its fallback in the same
statement; an id the session holds is refused by ``UNIQUE (sk, id)`` and sent again to the
function); ``append`` (several messages, or a session to create), ``append_fetched`` and
``collect`` (garbage collection) are plpgsql functions; the other writes run in one
transaction that locks the session row (``upsert`` or ``live`` first).
"""

# ruff: noqa: S608 - SQL text by design: the one value spliced in is the validated schema name
from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from enum import Enum

from ctx_memory.errors import ConfigurationError, StoreUnavailableError

__all__ = [
    "IMPORT_LOCK",
    "SCHEMA_VERSION",
    "schema_version",
    "MIGRATIONS",
    "Read",
    "SchemaSql",
    "check_schema_name",
    "events_channel",
    "prefix_end",
    "schema_name_problem",
]

SCHEMA_VERSION = 5
"""The layout this module writes (``meta.schema_version``)."""

FAST_APPEND_WAIT_MS = 10
"""The longest wait for a session's row, held by a transaction that only locked it, after
which the one-message fast path still stands (its expiry judged with the time from before
the wait, this far off); past it the append is made again by the function, which reads the
clock once it holds the row."""

IMPORT_LOCK = b"SELECT pg_advisory_xact_lock(hashtextextended(%s, %s))"
"""Imports of one session id take turns (a transaction lock on a hash of the id, seeded
with the schema's :attr:`SchemaSql.lock_key`: advisory locks span the database, and imports in
other schemas do not wait for each other): two imports creating it would otherwise both
find it absent, and one INSERT would fail."""

_RECALL_SEGMENTS = """CREATE TABLE {s}.recall_segments (
    sk bigint NOT NULL,
    seq integer NOT NULL,
    body text NOT NULL,
    PRIMARY KEY (sk, seq)
);
"""

# The write tokens (version 3): nullable columns without a default, so adding them rewrites
# nothing (a change of the catalog only). IF NOT EXISTS: a schema labelled version 3 by the
# development builds between the recall segments and the write tokens lacks them, so the
# migration to version 4 adds them too (a no-op where version 3 has them).
_WRITE_TOKENS = """ALTER TABLE {s}.sessions ADD COLUMN IF NOT EXISTS ct bigint;
ALTER TABLE {s}.messages ADD COLUMN IF NOT EXISTS wt bigint;
"""

MIGRATIONS: dict[int, tuple[str, ...]] = {
    # 1 -> 2: the function append_one (the fallback of the one-message append). The tables
    # are unchanged; the functions are re-created after every migration, which adds it.
    1: (),
    # 2 -> 3: the table recall_segments (the functions re-created after it: drop_session
    # deletes its rows, save_recall writes them) and the write tokens' columns (append and
    # append_one take a token: new signatures, created beside the old ones).
    2: (_RECALL_SEGMENTS, _WRITE_TOKENS),
    # 3 -> 4: evict checks that a victim is still the least recently used once it holds its
    # row (the functions re-created after it bring the new body); the write tokens' columns
    # where an early version-3 schema lacks them.
    3: (_WRITE_TOKENS,),
    # 4 -> 5: the functions read the clock when they use it (clock_timestamp()), not at the
    # transaction's start, and waited() is new; the functions re-created after it bring them.
    4: (),
}
"""Statements taking a schema from version ``k`` to ``k + 1`` (``{s}`` is the schema).

Opening a schema of an older version runs the statements from its version up, then
re-creates the functions, in one transaction. Version 1 is the first layout; version 2
adds the function ``append_one`` (no table changes); version 3 the table
``recall_segments``, the function ``save_recall``, and the write tokens: the columns
``sessions.ct`` and ``messages.wt``, and ``append`` and ``append_one`` with two more
parameters (the token, and whether this is a second attempt); version 4 the function
``evict`` that does not evict a session written to while it chose (no table changes);
version 5 functions that judge expiry by the time after their row lock, and ``waited``
(no table changes).
The version-2 forms of ``append`` and ``append_one`` stay in a migrated schema (a function
of another signature is another function), so that a process of a version-2 release, still
running, goes on appending (storing no token) until it reopens the schema and refuses it; a
process of a version-3 release calls the same functions as this one.
"""


def schema_version(value: object, where: str) -> int:
    """The version a schema's ``meta`` holds; a clear error if it is not a number."""
    try:
        return int(str(value))
    except ValueError:
        msg = (
            f"PostgreSQL schema {where} has an unreadable version {value!r} in its 'meta' "
            "table: not made by ctx_memory, or changed by hand; set POSTGRES_SCHEMA to "
            "another schema"
        )
        raise StoreUnavailableError(msg) from None


_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,39}")


def schema_name_problem(name: object) -> str | None:
    """Why ``name`` cannot be the store's schema, or ``None``."""
    if isinstance(name, str) and _SCHEMA_NAME.fullmatch(name) and not name.startswith("pg_"):
        return None
    return (
        "must be 1-40 lower-case ASCII letters, digits or '_', not starting with a digit or 'pg_'"
    )


def check_schema_name(name: object) -> str:
    """Return ``name`` if it can be the store's schema, else raise.

    Raises:
        ConfigurationError: Names ``POSTGRES_SCHEMA``: 1-40 lower-case ASCII letters,
            digits or ``_``, not starting with a digit nor with ``pg_`` (PostgreSQL keeps
            those names).
    """
    problem = schema_name_problem(name)
    if problem is not None:
        raise ConfigurationError("POSTGRES_SCHEMA", f"{problem}, got {name!r}")
    assert isinstance(name, str)
    return name


def events_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel of a schema's events: ``<schema>_events``."""
    return f"{schema}_events"


def prefix_end(prefix: str) -> str | None:
    """The least string above every string starting with ``prefix`` (``None``: no bound).

    Strings compare by code point (``COLLATE "C"`` on UTF-8 text compares the bytes).
    """
    while prefix:
        last = ord(prefix[-1]) + 1
        if last == 0xD800:  # surrogates are not characters: skip them
            last = 0xE000
        if last <= 0x10FFFF:
            return prefix[:-1] + chr(last)
        prefix = prefix[:-1]
    return None


_TABLES = (
    """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE {s}.meta (key text PRIMARY KEY, value text NOT NULL);
CREATE SEQUENCE {s}.access_clock;
CREATE TABLE {s}.sessions (
    sk bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id text COLLATE "C" NOT NULL UNIQUE,
    sp text NOT NULL,
    md text NOT NULL,
    sh text NOT NULL,
    mc bigint NOT NULL,
    tc bigint NOT NULL,
    ts text,
    n_messages integer NOT NULL DEFAULT 0,
    n_fetched integer NOT NULL DEFAULT 0,
    expires_at timestamptz,
    last_access bigint NOT NULL,
    ct bigint
) WITH (fillfactor = 70);
CREATE TABLE {s}.messages (
    sk bigint NOT NULL,
    pos integer NOT NULL,
    id text COLLATE "C" NOT NULL,
    tokens bigint NOT NULL,
    body text NOT NULL,
    wt bigint,
    PRIMARY KEY (sk, pos),
    UNIQUE (sk, id)
);
CREATE TABLE {s}.fetched (
    sk bigint NOT NULL,
    seq integer NOT NULL,
    source_type text NOT NULL,
    body text NOT NULL,
    PRIMARY KEY (sk, seq)
);
CREATE TABLE {s}.fingerprints (
    sk bigint NOT NULL,
    fp text NOT NULL,
    PRIMARY KEY (sk, fp)
);
"""
    + _RECALL_SEGMENTS
)

# The functions: re-created (CREATE OR REPLACE) whenever the schema is created or migrated.
# Their time is clock_timestamp(), read when used, not now(), the transaction's start: a
# write that waited for a session's row lock must neither extend a session that expired
# meanwhile nor set an expiry already past.
_FUNCTIONS = """
CREATE OR REPLACE FUNCTION {s}.expiry(p_ttl float8) RETURNS timestamptz
LANGUAGE sql VOLATILE AS $fn$
    SELECT CASE WHEN p_ttl IS NULL THEN NULL
                ELSE clock_timestamp() + p_ttl * interval '1 second' END
$fn$;

CREATE OR REPLACE FUNCTION {s}.drop_session(p_sk bigint) RETURNS void
LANGUAGE sql AS $fn$
    DELETE FROM {s}.messages WHERE sk = p_sk;
    DELETE FROM {s}.fetched WHERE sk = p_sk;
    DELETE FROM {s}.fingerprints WHERE sk = p_sk;
    DELETE FROM {s}.recall_segments WHERE sk = p_sk;
    DELETE FROM {s}.sessions WHERE sk = p_sk;
$fn$;

-- Delete every expired session; the ids, each reported by the one call that deleted it.
CREATE OR REPLACE FUNCTION {s}.collect() RETURNS text[]
LANGUAGE plpgsql AS $fn$
DECLARE
    r record;
    gone text[] := '{{}}';
BEGIN
    FOR r IN SELECT sk, id FROM {s}.sessions WHERE expires_at <= clock_timestamp() ORDER BY id
             FOR UPDATE SKIP LOCKED LOOP
        PERFORM {s}.drop_session(r.sk);
        gone := gone || r.id;
    END LOOP;
    RETURN gone;
END
$fn$;

-- After creating session p_keep: at most p_max sessions (expired ones go first).
-- A victim is locked only if its last_access is still the one it was chosen for: a write
-- that touched it meanwhile (committed, or holding its row until it commits) makes it
-- recent, and the next least recently used goes instead (ORDER BY ... FOR UPDATE would
-- lock and evict it anyway: the order is not checked again after the wait).
CREATE OR REPLACE FUNCTION {s}.evict(p_max integer, p_keep bigint,
                                     OUT o_expired text[], OUT o_evicted text[])
LANGUAGE plpgsql AS $fn$
DECLARE
    r record;
    n bigint;
    dropped integer;
BEGIN
    o_evicted := '{{}}';
    PERFORM pg_advisory_xact_lock({lock});  -- creators count one at a time
    -- collect(), but never p_keep: made before this wait, it may look expired after it
    -- (the write that made it sets its expiry again once this returns)
    o_expired := '{{}}';
    FOR r IN SELECT sk, id FROM {s}.sessions
             WHERE expires_at <= clock_timestamp() AND sk <> p_keep ORDER BY id
             FOR UPDATE SKIP LOCKED LOOP
        PERFORM {s}.drop_session(r.sk);
        o_expired := o_expired || r.id;
    END LOOP;
    LOOP
        SELECT count(*) INTO n FROM {s}.sessions;
        EXIT WHEN n <= p_max;
        dropped := 0;
        FOR r IN SELECT sk, id, last_access FROM {s}.sessions WHERE sk <> p_keep
                 ORDER BY last_access LIMIT n - p_max LOOP
            PERFORM 1 FROM {s}.sessions
                WHERE sk = r.sk AND last_access = r.last_access FOR UPDATE;
            IF FOUND THEN
                PERFORM {s}.drop_session(r.sk);
                o_evicted := o_evicted || r.id;
                dropped := dropped + 1;
            END IF;
        END LOOP;
        EXIT WHEN dropped = 0 AND NOT EXISTS (SELECT 1 FROM {s}.sessions WHERE sk <> p_keep);
    END LOOP;
END
$fn$;

-- Lock a session for a write that does not create: (sk, length), or nulls if absent.
-- An expired session is deleted and reported in o_expired.
CREATE OR REPLACE FUNCTION {s}.live(p_id text,
                                    OUT o_sk bigint, OUT o_n integer, OUT o_expired text[])
LANGUAGE plpgsql AS $fn$
DECLARE
    r record;
BEGIN
    o_expired := '{{}}';
    SELECT sk, n_messages, expires_at INTO r FROM {s}.sessions WHERE id = p_id FOR UPDATE;
    IF r.sk IS NULL THEN
        RETURN;
    END IF;
    IF r.expires_at IS NOT NULL AND r.expires_at <= clock_timestamp() THEN
        PERFORM {s}.drop_session(r.sk);
        o_expired := ARRAY[p_id];
        RETURN;
    END IF;
    o_sk := r.sk;
    o_n := r.n_messages;
END
$fn$;

-- Lock a session for a write, creating it from the init header if absent.
CREATE OR REPLACE FUNCTION {s}.upsert(p_id text, p_sp text, p_md text, p_sh text, p_ts text,
                                      p_ttl float8, p_max integer,
                                      OUT o_sk bigint, OUT o_created boolean, OUT o_n integer,
                                      OUT o_expired text[], OUT o_evicted text[])
LANGUAGE plpgsql AS $fn$
DECLARE
    v record;
    e record;
BEGIN
    o_created := false;
    o_evicted := '{{}}';
    LOOP
        v := {s}.live(p_id);
        o_expired := v.o_expired;
        IF v.o_sk IS NOT NULL THEN
            o_sk := v.o_sk;
            o_n := v.o_n;
            RETURN;
        END IF;
        INSERT INTO {s}.sessions (id, sp, md, sh, mc, tc, ts, expires_at, last_access)
        VALUES (p_id, p_sp, p_md, p_sh, 0, 0, p_ts, {s}.expiry(p_ttl),
                nextval('{s}.access_clock'))
        ON CONFLICT (id) DO NOTHING
        RETURNING sk INTO o_sk;
        IF o_sk IS NOT NULL THEN
            o_created := true;
            o_n := 0;
            IF p_max IS NOT NULL THEN
                e := {s}.evict(p_max, o_sk);
                o_expired := o_expired || e.o_expired;
                o_evicted := e.o_evicted;
            END IF;
            RETURN;
        END IF;
        -- another transaction created it meanwhile: go round and lock that one
    END LOOP;
END
$fn$;

CREATE OR REPLACE FUNCTION {s}.touch(p_sk bigint, p_now text, p_ttl float8) RETURNS void
LANGUAGE sql AS $fn$
    UPDATE {s}.sessions
    SET ts = p_now, expires_at = {s}.expiry(p_ttl), last_access = nextval('{s}.access_clock')
    WHERE sk = p_sk;
$fn$;

-- Append messages: skip ids the session holds, bump the counters, slide the TTL. The common
-- case (a live session, new ids) is one row lock, an insert per message, one HOT update.
-- p_wt, the write's token, is stored with each message inserted and in the ct of a session
-- created. p_again (a second attempt of the write, whose first may have been stored) then
-- answers what the first attempt would have: the batch's messages stored with p_wt, and
-- whether ct is p_wt.
CREATE OR REPLACE FUNCTION {s}.append(p_id text, p_ids text[], p_tokens bigint[],
                                      p_bodies text[], p_now text,
                                      p_sp text, p_md text, p_sh text, p_ts text,
                                      p_ttl float8, p_max integer,
                                      p_wt bigint, p_again boolean,
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
    o_expired := '{{}}';
    o_evicted := '{{}}';
    SELECT sk, n_messages, expires_at INTO r FROM {s}.sessions WHERE id = p_id FOR UPDATE;
    IF r.sk IS NULL OR r.expires_at <= clock_timestamp() THEN
        u := {s}.upsert(p_id, p_sp, p_md, p_sh, p_ts, p_ttl, p_max);
        v_sk := u.o_sk;
        v_n := u.o_n;
        o_created := u.o_created;
        o_expired := u.o_expired;
        o_evicted := u.o_evicted;
    ELSE
        v_sk := r.sk;
        v_n := r.n_messages;
    END IF;
    -- the session row is locked: no other transaction inserts into this session meanwhile
    FOR i IN 1 .. coalesce(array_length(p_ids, 1), 0) LOOP
        INSERT INTO {s}.messages (sk, pos, id, tokens, body, wt)
        SELECT v_sk, v_n + o_added, p_ids[i], p_tokens[i], p_bodies[i], p_wt
        WHERE NOT EXISTS (SELECT 1 FROM {s}.messages WHERE sk = v_sk AND id = p_ids[i]);
        IF FOUND THEN
            o_added := o_added + 1;
            t := t + p_tokens[i];
        END IF;
    END LOOP;
    IF o_added > 0 OR o_created THEN
        UPDATE {s}.sessions
        SET n_messages = n_messages + o_added, mc = mc + o_added, tc = tc + t, ts = p_now,
            expires_at = {s}.expiry(p_ttl), last_access = nextval('{s}.access_clock'),
            ct = CASE WHEN o_created THEN p_wt ELSE ct END
        WHERE sk = v_sk;
    END IF;
    IF p_again AND p_wt IS NOT NULL THEN
        SELECT count(*) INTO o_added FROM {s}.messages
        WHERE sk = v_sk AND id = ANY(p_ids) AND wt = p_wt;
        SELECT coalesce(ct = p_wt, false) INTO o_created FROM {s}.sessions WHERE sk = v_sk;
    END IF;
END
$fn$;

-- Append one message (the fallback of SchemaSql.append_one: no live session, or a known
-- id; and every second attempt): append with one-element arrays and the init header split
-- from one JSON text (json, not jsonb: each part is the text as written). The result as one
-- JSON text: [created, added, expired, evicted].
CREATE OR REPLACE FUNCTION {s}.append_one(p_id text, p_mid text, p_tokens bigint,
                                          p_body text, p_now text, p_init text,
                                          p_ttl float8, p_max integer,
                                          p_wt bigint, p_again boolean) RETURNS text
LANGUAGE plpgsql AS $fn$
DECLARE
    j json := p_init::json;
    a record;
BEGIN
    a := {s}.append(p_id, ARRAY[p_mid], ARRAY[p_tokens], ARRAY[p_body], p_now,
                    (j -> 'system_prompt')::text, (j -> 'metadata')::text,
                    (j -> 'shared')::text, (j -> 'metadata' -> 'timestamp')::text,
                    p_ttl, p_max, p_wt, p_again);
    RETURN json_build_array(a.o_created, a.o_added, a.o_expired, a.o_evicted)::text;
END
$fn$;

-- Append fetched items; with p_dedupe, skip those whose fingerprint is stored.
CREATE OR REPLACE FUNCTION {s}.append_fetched(p_id text, p_types text[], p_bodies text[],
                                              p_fps text[], p_dedupe boolean, p_now text,
                                              p_sp text, p_md text, p_sh text, p_ts text,
                                              p_ttl float8, p_max integer,
                                              OUT o_created boolean, OUT o_added integer,
                                              OUT o_expired text[], OUT o_evicted text[])
LANGUAGE plpgsql AS $fn$
DECLARE
    u record;
    seq0 integer;
    fresh boolean;
BEGIN
    u := {s}.upsert(p_id, p_sp, p_md, p_sh, p_ts, p_ttl, p_max);
    SELECT n_fetched INTO seq0 FROM {s}.sessions WHERE sk = u.o_sk;
    o_added := 0;
    FOR i IN 1 .. coalesce(array_length(p_types, 1), 0) LOOP
        INSERT INTO {s}.fingerprints (sk, fp) VALUES (u.o_sk, p_fps[i])
        ON CONFLICT DO NOTHING;
        fresh := FOUND;
        IF fresh OR NOT p_dedupe THEN
            INSERT INTO {s}.fetched (sk, seq, source_type, body)
            VALUES (u.o_sk, seq0 + o_added, p_types[i], p_bodies[i]);
            o_added := o_added + 1;
        END IF;
    END LOOP;
    UPDATE {s}.sessions
    SET n_fetched = n_fetched + o_added, ts = p_now, expires_at = {s}.expiry(p_ttl),
        last_access = nextval('{s}.access_clock')
    WHERE sk = u.o_sk;
    o_created := u.o_created;
    o_expired := u.o_expired;
    o_evicted := u.o_evicted;
END
$fn$;

-- Save recall segments, after the session's (p_replace: instead of them). Not an access:
-- the session row is locked (saves, history edits and deletes of the session serialise
-- on it), not touched. false, and nothing written, without a live session.
CREATE OR REPLACE FUNCTION {s}.save_recall(p_id text, p_bodies text[], p_replace boolean)
RETURNS boolean
LANGUAGE plpgsql AS $fn$
DECLARE
    v_sk bigint;
    v_next integer := 0;
BEGIN
    SELECT sk INTO v_sk FROM {s}.sessions
    WHERE id = p_id AND (expires_at IS NULL OR expires_at > clock_timestamp()) FOR UPDATE;
    IF v_sk IS NULL THEN
        RETURN false;
    END IF;
    -- each statement sees what committed while this one waited for the lock
    IF p_replace THEN
        DELETE FROM {s}.recall_segments WHERE sk = v_sk;
    ELSE
        SELECT coalesce(max(seq) + 1, 0) INTO v_next FROM {s}.recall_segments WHERE sk = v_sk;
    END IF;
    INSERT INTO {s}.recall_segments (sk, seq, body)
    SELECT v_sk, v_next + t.n - 1, t.body FROM unnest(p_bodies) WITH ORDINALITY AS t(body, n);
    RETURN true;
END
$fn$;

-- Fail the statement calling it (the one-message fast path, after waiting for a row lock).
CREATE OR REPLACE FUNCTION {s}.waited() RETURNS text
LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION 'the append waited for the session row' USING ERRCODE = 'lock_not_available';
END
$fn$;

-- Renumber the messages from position p_first on as p_first, p_first + 1, ...
CREATE OR REPLACE FUNCTION {s}.renumber(p_sk bigint, p_first integer) RETURNS void
LANGUAGE sql AS $fn$
    -- through negative positions: (sk, pos) stays unique after every row
    UPDATE {s}.messages SET pos = -1 - pos WHERE sk = p_sk AND pos >= p_first;
    UPDATE {s}.messages AS m SET pos = r.new_pos
    FROM (SELECT pos, p_first - 1 + row_number() OVER (ORDER BY pos DESC) AS new_pos
          FROM {s}.messages WHERE sk = p_sk AND pos < 0) AS r
    WHERE m.sk = p_sk AND m.pos = r.pos;
$fn$;
"""

_LIVE = "(s.expires_at IS NULL OR s.expires_at > now())"

# A read's session row: a plain lookup, or (with max_sessions) one that bumps the LRU clock.
_READ_SESSION = f"SELECT * FROM {{s}}.sessions AS s WHERE s.id = %(id)s AND {_LIVE}"
_TOUCH_SESSION = (
    "UPDATE {s}.sessions AS s SET last_access = nextval('{s}.access_clock') "
    f"WHERE s.id = %(id)s AND {_LIVE} RETURNING s.*"
)
_HEADER_COLUMNS = "s.sp, s.md, s.sh, s.mc, s.tc, s.ts"
_MESSAGES_JSON = (
    "SELECT '[' || coalesce(string_agg(m.body, ',' ORDER BY m.pos), '') || ']' "
    "FROM {s}.messages AS m WHERE m.sk = s.sk"
)
# Fetched items as one JSON array of [source_type, item] pairs, in insertion order.
_FETCHED_JSON = (
    "SELECT '[' || coalesce(string_agg('[' || to_json(f.source_type)::text || ',' || f.body "
    "|| ']', ',' ORDER BY f.seq), '') || ']' FROM {s}.fetched AS f WHERE f.sk = s.sk"
)


class Read(Enum):
    """The reads of one live session, each one statement (:meth:`SchemaSql.read`)."""

    EXISTS = "exists"
    COUNT = "count"
    HEADER = "header"
    DOCUMENT = "document"
    MESSAGES = "messages"
    MESSAGE_SPANS = "message_spans"
    FETCHED = "fetched"
    FETCHED_TYPE = "fetched_type"
    RECALL_SEGMENTS = "recall_segments"


_READS: dict[Read, str] = {
    Read.EXISTS: "SELECT 1 FROM s",
    Read.COUNT: "SELECT s.n_messages FROM s",
    Read.HEADER: f"SELECT {_HEADER_COLUMNS} FROM s",
    Read.DOCUMENT: f"SELECT {_HEADER_COLUMNS}, ({_MESSAGES_JSON}), ({_FETCHED_JSON}) FROM s",
    # LRANGE bounds computed against the stored length: an indexed range scan of k rows, in
    # position order. The subquery's ORDER BY (it keeps the subquery from being flattened)
    # is the aggregate's order: one session row, a nested loop over the ordered index scan.
    # An ORDER BY inside string_agg would sort again (a tuplesort: 10 µs of a 30 µs read).
    Read.MESSAGES: (
        "SELECT '[' || coalesce(string_agg(m.body, ','), '') || ']' "
        "FROM s CROSS JOIN LATERAL (SELECT m.body FROM {s}.messages AS m "
        "WHERE m.sk = s.sk AND m.pos BETWEEN "
        "greatest(CASE WHEN %(lo)s < 0 THEN %(lo)s + s.n_messages ELSE %(lo)s END, 0) AND "
        "least(CASE WHEN %(hi)s < 0 THEN %(hi)s + s.n_messages ELSE %(hi)s END, "
        "s.n_messages - 1) ORDER BY m.pos) AS m"
    ),
    # Several spans (non-negative, inclusive): one JSON array per span, in the spans' order,
    # each an ordered index scan as above.
    Read.MESSAGE_SPANS: (
        "SELECT '[' || coalesce(string_agg(x.j, ',' ORDER BY x.i), '') || ']' "
        "FROM s CROSS JOIN LATERAL (SELECT r.i, '[' || coalesce((SELECT string_agg(b.body, ',') "
        "FROM (SELECT m.body FROM {s}.messages AS m WHERE m.sk = s.sk AND m.pos BETWEEN r.lo "
        "AND least(r.hi, s.n_messages - 1) ORDER BY m.pos) AS b), '') || ']' AS j "
        "FROM unnest(%(los)s::integer[], %(his)s::integer[]) WITH ORDINALITY AS r(lo, hi, i)) AS x"
    ),
    Read.FETCHED: f"SELECT ({_FETCHED_JSON}) FROM s",
    # one row per segment, in order (no rows: none, or no live session); never touched
    Read.RECALL_SEGMENTS: (
        "SELECT r.body FROM s JOIN {s}.recall_segments AS r ON r.sk = s.sk ORDER BY r.seq"
    ),
    Read.FETCHED_TYPE: (
        "SELECT '[' || coalesce(string_agg('[' || to_json(f.source_type)::text || ',' || "
        "f.body || ']', ',' ORDER BY f.seq), '') || ']' FROM s JOIN {s}.fetched AS f "
        "ON f.sk = s.sk AND f.source_type = %(type)s"
    ),
}


def _text(template: str, schema: str, lock: int) -> str:
    return template.format(s=f'"{schema}"', lock=lock)


@dataclass(frozen=True)
class SchemaSql:
    """Every statement of the store, for one schema, as bytes ready for psycopg.

    Args:
        schema: A name :func:`check_schema_name` accepted.
    """

    schema: str

    @property
    def quoted(self) -> str:
        """The schema as an SQL identifier."""
        return f'"{self.schema}"'

    @property
    def lock_key(self) -> int:
        """The advisory lock key of this schema (creators, schema changes)."""
        return zlib.crc32(f"ctx_memory:{self.schema}".encode())

    def q(self, template: str) -> bytes:
        """``template`` with ``{s}`` replaced by the quoted schema."""
        return _text(template, self.schema, self.lock_key).encode()

    def create_tables(self) -> bytes:
        """The tables of a fresh schema (version :data:`SCHEMA_VERSION`)."""
        return self.q(_TABLES)

    def create_functions(self) -> bytes:
        """Every function, ``CREATE OR REPLACE``."""
        return self.q(_FUNCTIONS)

    def migration(self, version: int) -> list[bytes]:
        """The statements taking the schema from ``version`` to ``version + 1``."""
        return [self.q(statement) for statement in MIGRATIONS[version]]

    def append(self, *, again: bool = False) -> bytes:
        """The statement appending messages: one call of the function ``append``.

        The arrays are binary parameters (``%b``): psycopg's text dumper escapes every
        element in Python (about 35 µs for one message body), the binary one copies it.
        ``wt`` is the write's token; ``again``: the statement of a second attempt, which
        answers from the token what the first did.
        """
        return self.q(
            "SELECT * FROM {s}.append(%(id)s, %(ids)b::text[], %(tokens)b::bigint[], "
            "%(bodies)b::text[], %(now)s, %(sp)s, %(md)s, %(sh)s, %(ts)s, %(ttl)s::float8, "
            f"%(max)s::integer, %(wt)s::bigint, {str(again).lower()})"
        )

    def append_one(self) -> bytes:
        """The statement appending one message: plain SQL, a function only as fallback.

        The common case, a live session and a new message id, is an ``UPDATE`` of the
        session row (counters, timestamp, TTL, LRU clock; it takes the row lock, so appends
        to one session serialise and each sees the length the previous one left) and an
        ``INSERT`` at the position it returned: about 30 µs on the server, against 80 µs
        for the plpgsql function ``append`` (its per-call and per-statement overhead).
        The reply is then ``''``. When the ``UPDATE`` matches nothing (no such session or
        an expired one), the same statement calls ``append_one``, which calls ``append``
        (it creates, expires or evicts) and replies ``[created, added, expired, evicted]``
        as JSON text. An ``UPDATE`` that waits for the row is evaluated again on the row
        its holder wrote (``WHERE`` and ``SET``, so the expiry with the clock after the
        wait), but not when the holder only locked the row: it then judged the expiry,
        and computed the new one, with the time from before the wait. ``RETURNING`` reads
        the clock again; an expiry more than :data:`FAST_APPEND_WAIT_MS` behind it makes
        the function ``waited`` fail the statement with ``lock_not_available``, which
        rolls it back, and the store sends :meth:`append_one_checked`, whose function
        reads the clock after the lock. ``coalesce`` calls ``append_one`` only when the
        ``UPDATE`` matched nothing; being a function, it adds little to the statement's
        plan, which is set up on every execution (an inline fallback, ``UNION ALL SELECT *
        FROM append(...)`` with its arguments, cost about 20 µs more per append though
        never run).

        Nothing looks for the message id first: ``UNIQUE (sk, id)`` does. A message id the
        session holds (a retry of an append whose reply was lost, an id the caller chose
        twice, the same id appended concurrently and committed while this one waited for
        the row lock) makes the ``INSERT`` fail with a unique violation, which rolls the
        whole statement back, counters included; the store then sends
        :meth:`append_one_checked`, which skips the id. A new id, nearly every append,
        costs no lookup of its own (the index's uniqueness check is the lookup). The
        message row keeps the write's token (``wt``: one more scalar parameter).
        """
        return self.q(
            "WITH u AS ("
            "UPDATE {s}.sessions AS s SET n_messages = s.n_messages + 1, mc = s.mc + 1, "
            "tc = s.tc + %(tokens)s::bigint, ts = %(now)s::text, "
            "expires_at = {s}.expiry(%(ttl)s::float8), "
            "last_access = nextval('{s}.access_clock') "
            "WHERE s.id = %(id)s::text AND (s.expires_at IS NULL OR "
            "s.expires_at > clock_timestamp()) "
            "RETURNING s.sk, s.n_messages, s.expires_at < {s}.expiry(%(ttl)s::float8) - "
            f"interval '{FAST_APPEND_WAIT_MS} ms' AS waited), "
            "i AS (INSERT INTO {s}.messages (sk, pos, id, tokens, body, wt) "
            "SELECT u.sk, u.n_messages - 1, %(mid)s::text, %(tokens)s::bigint, %(body)s::text, "
            "%(wt)s::bigint FROM u) "
            "SELECT coalesce((SELECT CASE WHEN u.waited THEN {s}.waited() ELSE '' END FROM u), "
            "{s}.append_one(%(id)s::text, %(mid)s::text, "
            "%(tokens)s::bigint, %(body)s::text, %(now)s::text, %(init)s::text, "
            "%(ttl)s::float8, %(max)s::integer, %(wt)s::bigint, false))"
        )

    def append_one_checked(self) -> bytes:
        """One message through the function ``append_one`` alone (same parameters).

        What the store sends after :meth:`append_one` met a unique violation, and on any
        second attempt of an append: the function locks the session row, then looks for
        the id in a snapshot taken after the lock (so a concurrent append of it that
        committed meanwhile is seen) and skips it. As a second attempt (``p_again``) it
        answers ``added`` and ``created`` from the write's token: what the first attempt,
        if it was stored, did (after a unique violation the first stored nothing: ``0``).
        The reply is its JSON text.
        """
        return self.q(
            "SELECT {s}.append_one(%(id)s::text, %(mid)s::text, %(tokens)s::bigint, "
            "%(body)s::text, %(now)s::text, %(init)s::text, %(ttl)s::float8, "
            "%(max)s::integer, %(wt)s::bigint, true)"
        )

    def save_recall(self) -> bytes:
        """The statement saving recall segments: one call of the function ``save_recall``.

        The segments are a binary ``text[]`` parameter (``%b``: each may be hundreds of
        KB, which the text dumper would escape in Python). The reply is ``(saved,)``.
        """
        return self.q("SELECT {s}.save_recall(%(id)s, %(bodies)b::text[], %(replace)s)")

    def read(self, kind: Read, *, touch: bool) -> bytes:
        """A read of one live session, bumping the LRU clock if ``touch``."""
        source = _TOUCH_SESSION if touch else _READ_SESSION
        return self.q(f"WITH s AS ({source}) {_READS[kind]}")
