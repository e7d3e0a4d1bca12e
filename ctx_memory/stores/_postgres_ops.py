"""What each PostgreSQL store operation sends: statements as generators, no connection.

:class:`PostgresOperations` turns each typed operation into a generator that yields
statements (:class:`Statement`) and receives their rows; :class:`~ctx_memory.stores.postgres.
PostgresStore` runs it on a pooled sync or async connection, in a transaction where the
operation needs one. The schema (and its version) is created the same way.
"""

from __future__ import annotations

import abc
import json
import logging
from typing import TYPE_CHECKING, Any, assert_never

from ctx_memory.errors import StoreUnavailableError, StoreVersionError
from ctx_memory.schema import dumps, dumps_validated
from ctx_memory.stores._postgres_sql import (
    IMPORT_LOCK,
    SCHEMA_VERSION,
    Read,
    SchemaSql,
    prefix_end,
    schema_version,
)
from ctx_memory.stores._postgres_statements import ALL, NONE, ONE, Found, Prepared, Statement
from ctx_memory.stores.base import (
    BaseStore,
    Header,
    WriteResult,
    assemble_document,
    check_shared_size,
    deep_merge,
    shared_result,
)
from ctx_memory.stores.ops import (
    AppendFetched,
    AppendMessages,
    ClearSession,
    CollectGarbage,
    CountMessages,
    CreateSession,
    DeleteMessages,
    DeleteSession,
    GetDocument,
    GetFetched,
    GetHeader,
    GetMessages,
    GetMessageSpans,
    GetRecallSegments,
    ListPage,
    ListSessions,
    MergeShared,
    ReplaceDocument,
    ReplaceMessage,
    SaveRecallSegments,
    SessionExists,
    SetShared,
    StoreOp,
    TruncateMessages,
    UpdateHeader,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Sequence


def _init_args(init: Header) -> tuple[str, str, str, str | None]:
    """``p_sp, p_md, p_sh, p_ts`` of the SQL functions: the init header as JSON text."""
    meta = init["metadata"]
    ts = dumps(meta["timestamp"]) if "timestamp" in meta else None
    return dumps(init["system_prompt"]), dumps(meta), dumps(init["shared"]), ts


def _header(row: Sequence[Any]) -> Header:
    """The header from ``sp, md, sh, mc, tc, ts`` (counters and timestamp are columns)."""
    sp, md, sh, mc, tc, ts = row[:6]
    metadata: dict[str, Any] = json.loads(md)
    metadata["message_count"] = mc
    metadata["token_count"] = tc
    if ts is not None:
        metadata["timestamp"] = json.loads(ts)
    return {"system_prompt": json.loads(sp), "metadata": metadata, "shared": json.loads(sh)}


def _fetched(pairs_json: str | None) -> dict[str, list[dict[str, Any]]]:
    """``{source_type: [item, ...]}`` from a JSON array of ``[source_type, item]`` pairs."""
    out: dict[str, list[dict[str, Any]]] = {}
    for source_type, body in json.loads(pairs_json or "[]"):
        out.setdefault(source_type, []).append(body)
    return out


logger = logging.getLogger("ctx_memory.stores.postgres")

__all__ = ["ALL", "NONE", "ONE", "Found", "PostgresOperations", "Prepared", "Statement"]


class PostgresOperations(BaseStore):
    """The PostgreSQL store's operations and schema as statement generators."""

    ttl_seconds: float | None
    max_sessions: int | None
    schema: str
    _sql: SchemaSql
    _reads: dict[Read, Any]
    _append_sql: Any
    _append_again_sql: Any
    _append_one_sql: Any
    _append_one_checked_sql: Any
    _prepared: dict[bytes, Prepared]
    _append_fetched_sql: Any
    _upsert_sql: Any
    _create_sql: Any
    _live_sql: Any
    _collect_sql: Any
    _recall_read_sql: Any
    _recall_save_sql: Any
    _touch_set: str

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """The server's URL, password masked."""

    def _prepare_statements(self) -> None:
        q = self._sql.q
        touch = self.max_sessions is not None
        self._reads = {
            kind: self._sql.read(kind, touch=touch)
            for kind in Read
            if kind is not Read.RECALL_SEGMENTS
        }
        init = "%s, %s, %s, %s, %s::float8, %s::integer"
        self._append_sql = self._sql.append()
        self._append_again_sql = self._sql.append(again=True)
        self._append_one_sql = self._sql.append_one()
        self._append_one_checked_sql = self._sql.append_one_checked()
        # The hot statements (one message appended, a range of messages read) go through
        # libpq as prepared statements when the driver can (PostgresStore._run).
        self._prepared = {
            sql: Prepared.of(sql) for sql in (self._append_one_sql, self._reads[Read.MESSAGES])
        }
        self._append_fetched_sql = q(
            "SELECT * FROM {s}.append_fetched(%s, %s::text[], %s::text[], %s::text[], %s, %s, "  # noqa: S608 - constant text
            + init
            + ")"
        )
        self._upsert_sql = q("SELECT * FROM {s}.upsert(%s, " + init + ")")  # noqa: S608 - constant
        self._create_sql = q(
            "SELECT u.o_created, u.o_expired, u.o_evicted, {s}.touch(u.o_sk, %s, %s::float8) "
            "FROM {s}.upsert(%s, " + init + ") AS u"
        )
        self._live_sql = q("SELECT * FROM {s}.live(%s)")
        self._set_ct_sql = q("UPDATE {s}.sessions SET ct = %s WHERE sk = %s")
        self._collect_sql = q("SELECT {s}.collect()")
        self._recall_read_sql = self._sql.read(Read.RECALL_SEGMENTS, touch=False)  # no access
        self._recall_save_sql = self._sql.save_recall()
        # UPDATE ... SET <columns>, then the touch: timestamp, TTL, LRU clock.
        self._touch_set = (
            "ts = %(now)s, expires_at = {s}.expiry(%(ttl)s::float8), "
            "last_access = nextval('{s}.access_clock')"
        )

    # ------------------------------------------------------------ the schema

    def _ensure_schema(self) -> Generator[Statement, Any, None]:
        """Create the schema, or migrate an older one; refuse a newer one (one transaction)."""
        sql = self._sql
        meta = f"{sql.quoted}.meta"
        version_sql = sql.q("SELECT value FROM {s}.meta WHERE key = 'schema_version'")
        (table,) = yield Statement(b"SELECT to_regclass(%s)::text", (meta,))
        if table is not None:
            row = yield Statement(version_sql)
            if row is not None and row[0] == str(SCHEMA_VERSION):
                return  # the common case takes no lock
        yield Statement(b"SELECT pg_advisory_xact_lock(%s)", (sql.lock_key,), NONE)
        (table,) = yield Statement(b"SELECT to_regclass(%s)::text", (meta,))  # another process?
        if table is None:
            yield Statement(sql.create_tables(), None, NONE)
            version = SCHEMA_VERSION
        else:
            row = yield Statement(version_sql)
            version = schema_version(row[0], f"{self.schema!r} at {self.url}") if row else 0
            if version > SCHEMA_VERSION:
                msg = (
                    f"PostgreSQL schema {self.schema!r} at {self.url} has version {version}, "
                    f"newer than this ctx_memory understands ({SCHEMA_VERSION}): upgrade "
                    "ctx_memory, or set POSTGRES_SCHEMA to another schema"
                )
                raise StoreVersionError(msg)
            if version < 1:
                msg = (
                    f"PostgreSQL schema {self.schema!r} at {self.url} has a 'meta' table "
                    "without a schema version: it was not made by ctx_memory; set "
                    "POSTGRES_SCHEMA to another schema"
                )
                raise StoreUnavailableError(msg)
            for step in range(version, SCHEMA_VERSION):
                for statement in sql.migration(step):
                    yield Statement(statement, None, NONE)
        yield Statement(sql.create_functions(), None, NONE)
        yield Statement(
            sql.q(
                "INSERT INTO {s}.meta (key, value) VALUES ('schema_version', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
            ),
            (str(SCHEMA_VERSION),),
            NONE,
        )
        if version < SCHEMA_VERSION:
            logger.info(
                "ctx_memory: migrated PostgreSQL schema %r from version %d to %d",
                self.schema,
                version,
                SCHEMA_VERSION,
            )

    # ------------------------------------------------------------ operations

    def _plan(  # noqa: PLR0911, PLR0912 - one case per operation
        self, op: StoreOp, found: Found, *, again: bool = False, token: int | None = None
    ) -> Generator[Statement, Any, Any]:
        """The statements of ``op`` (``again``, ``token``: see :meth:`_append_messages`)."""
        match op:
            case AppendMessages():
                return self._append_messages(op, found, again=again, token=token)
            case GetMessages():
                return self._get_messages(op)
            case GetMessageSpans():
                return self._get_message_spans(op)
            case GetHeader():
                return self._get_header(op)
            case GetDocument():
                return self._get_document(op)
            case GetFetched():
                return self._get_fetched(op)
            case CountMessages():
                return self._count_messages(op)
            case SessionExists():
                return self._exists(op)
            case ListSessions():
                return self._list_sessions(found)
            case ListPage():
                return self._list_page(op)
            case CreateSession():
                return self._create(op, found)
            case DeleteSession():
                return self._delete(op, found)
            case DeleteMessages():
                return self._delete_messages(op, found)
            case ReplaceMessage():
                return self._replace_message(op, found)
            case TruncateMessages():
                return self._truncate_messages(op, found)
            case AppendFetched():
                return self._append_fetched(op, found)
            case MergeShared():
                return self._write_shared(
                    op.session_id, op.init, op.now, lambda s: deep_merge(s, op.partial), found
                )
            case SetShared():
                value = json.loads(dumps(op.value))
                return self._write_shared(
                    op.session_id,
                    op.init,
                    op.now,
                    lambda s: s.__setitem__(op.key, value),
                    found,
                    again=again,
                    token=token,
                )
            case UpdateHeader():
                return self._update_header(op, found, again=again, token=token)
            case ClearSession():
                return self._clear(op, found)
            case ReplaceDocument():
                return self._replace_document(op, found, again=again, token=token)
            case CollectGarbage():
                return self._gc(found)
            case GetRecallSegments():
                return self._get_recall_segments(op)
            case SaveRecallSegments():
                return self._save_recall_segments(op)
            case _:
                assert_never(op)

    # ---- reads (one statement each)

    def _read(self, kind: Read, **params: Any) -> Generator[Statement, Any, Any]:
        sql = self._reads[kind]
        row = yield Statement(sql, params, ONE, large=True, prepared=self._prepared.get(sql))
        return row

    def _exists(self, op: SessionExists) -> Generator[Statement, Any, bool]:
        return (yield from self._read(Read.EXISTS, id=op.session_id)) is not None

    def _count_messages(self, op: CountMessages) -> Generator[Statement, Any, int]:
        row = yield from self._read(Read.COUNT, id=op.session_id)
        return 0 if row is None else int(row[0])

    def _get_header(self, op: GetHeader) -> Generator[Statement, Any, Header | None]:
        row = yield from self._read(Read.HEADER, id=op.session_id)
        return None if row is None else _header(row)

    def _get_document(self, op: GetDocument) -> Generator[Statement, Any, dict[str, Any] | None]:
        row = yield from self._read(Read.DOCUMENT, id=op.session_id)
        if row is None:
            return None
        return assemble_document(_header(row), json.loads(row[6]), _fetched(row[7]))

    def _get_messages(self, op: GetMessages) -> Generator[Statement, Any, list[dict[str, Any]]]:
        row = yield from self._read(Read.MESSAGES, id=op.session_id, lo=op.start, hi=op.end)
        messages: list[dict[str, Any]] = json.loads(row[0])  # one decode of the whole range
        return messages

    def _get_message_spans(
        self, op: GetMessageSpans
    ) -> Generator[Statement, Any, list[list[dict[str, Any]]]]:
        if not op.spans:
            return []
        los, his = [a for a, _ in op.spans], [b for _, b in op.spans]
        row = yield from self._read(Read.MESSAGE_SPANS, id=op.session_id, los=los, his=his)
        return json.loads(row[0]) or [[] for _ in op.spans]  # one decode; [] if no session

    def _get_fetched(
        self, op: GetFetched
    ) -> Generator[Statement, Any, dict[str, list[dict[str, Any]]]]:
        if op.source_type is None:
            row = yield from self._read(Read.FETCHED, id=op.session_id)
        else:
            row = yield from self._read(Read.FETCHED_TYPE, id=op.session_id, type=op.source_type)
        return {} if row is None else _fetched(row[0])

    def _list_sessions(self, found: Found) -> Generator[Statement, Any, list[str]]:
        ids, expired = yield Statement(
            self._sql.q(
                "SELECT ARRAY(SELECT id FROM {s}.sessions AS s WHERE s.expires_at IS NULL OR "
                "s.expires_at > now() ORDER BY id), "
                "EXISTS (SELECT 1 FROM {s}.sessions WHERE expires_at <= now())"
            ),
            large=True,
        )
        if expired:  # only then a write: delete them and report them
            yield from self._gc(found)
        return list(ids)

    def _list_page(self, op: ListPage) -> Generator[Statement, Any, list[str]]:
        low = op.prefix if op.cursor is None or op.cursor < op.prefix else op.cursor
        strict = op.cursor is not None and op.cursor >= op.prefix
        upper = prefix_end(op.prefix)
        rows = yield Statement(
            self._sql.q(
                "SELECT id FROM {s}.sessions AS s WHERE (s.expires_at IS NULL OR "
                "s.expires_at > now()) AND (id > %(low)s OR (NOT %(strict)s AND id = %(low)s)) "
                "AND (%(upper)s::text IS NULL OR id < %(upper)s::text) ORDER BY id LIMIT %(n)s"
            ),
            {"low": low, "strict": strict, "upper": upper, "n": op.limit},
            ALL,
        )
        return [r[0] for r in rows]

    # ---- single-statement writes

    def _limits(self) -> tuple[float | None, int | None]:
        return self.ttl_seconds, self.max_sessions

    def _append_messages(
        self, op: AppendMessages, found: Found, *, again: bool = False, token: int | None = None
    ) -> Generator[Statement, Any, WriteResult]:
        """One message: plain SQL, which a known id makes fail (``UNIQUE (sk, id)``).

        The driver then tries again with ``again``: the function ``append_one`` alone,
        which skips the id. So does any second attempt (after a dropped connection, the
        first may have stored the message). ``token`` (``wt``) is stored with the messages
        and a session created; a second attempt answers from it ``added`` and ``created``
        as its first attempt would have (without one: only what it stored itself).
        """
        ms = op.messages
        if len(ms) == 1:  # the common case: scalar parameters, plain SQL on a live session
            (m,) = ms
            params = {
                "id": op.session_id,
                "mid": m.id,
                "tokens": m.tokens,
                "body": m.json,
                "now": json.encoder.encode_basestring(op.now),  # dumps(op.now): a str
                "init": dumps_validated(op.init),
                "ttl": self.ttl_seconds,
                "max": self.max_sessions,
                "wt": token,
            }
            if again:
                (reply,) = yield Statement(self._append_one_checked_sql, params)
            else:
                sql = self._append_one_sql
                (reply,) = yield Statement(sql, params, prepared=self._prepared[sql])
            if not reply:  # appended to a live session
                return shared_result(False, 1)
            created, added, expired, evicted = json.loads(reply)
        else:
            sp, md, sh, ts = _init_args(op.init)
            created, added, expired, evicted = yield Statement(
                self._append_again_sql if again else self._append_sql,
                {
                    "id": op.session_id,
                    "ids": [m.id for m in ms],
                    "tokens": [m.tokens for m in ms],
                    "bodies": [m.json for m in ms],
                    "now": dumps(op.now),
                    "sp": sp,
                    "md": md,
                    "sh": sh,
                    "ts": ts,
                    "ttl": self.ttl_seconds,
                    "max": self.max_sessions,
                    "wt": token,
                },
            )
        found.add(expired, evicted)
        return shared_result(created, added, evicted)

    def _append_fetched(
        self, op: AppendFetched, found: Found
    ) -> Generator[Statement, Any, WriteResult]:
        items = op.items
        created, added, expired, evicted = yield Statement(
            self._append_fetched_sql,
            (
                op.session_id,
                [i.source_type for i in items],
                [i.json for i in items],
                [i.fingerprint for i in items],
                op.dedupe,
                dumps(op.now),
                *_init_args(op.init),
                *self._limits(),
            ),
        )
        found.add(expired, evicted)
        return WriteResult(created=created, added=added, evicted=tuple(evicted))

    def _create(self, op: CreateSession, found: Found) -> Generator[Statement, Any, WriteResult]:
        init = op.init
        created, expired, evicted, _ = yield Statement(
            self._create_sql,
            (
                dumps(init["metadata"]["timestamp"]),
                self.ttl_seconds,
                op.session_id,
                *_init_args(init),
                *self._limits(),
            ),
        )
        found.add(expired, evicted)
        return WriteResult(created=created, evicted=tuple(evicted))

    def _delete(self, op: DeleteSession, found: Found) -> Generator[Statement, Any, bool]:
        # Lock the row (waiting for an append in flight), then delete with a later snapshot:
        # one statement's snapshot predated the wait and left that append's messages behind.
        row = yield Statement(
            self._sql.q("SELECT sk, expires_at FROM {s}.sessions WHERE id = %s FOR UPDATE"),
            (op.session_id,),
        )
        if row is None:
            return False
        # Expired or not by the clock after the lock (a locking SELECT's columns are not
        # evaluated again when the holder only locked the row).
        (expired, _) = yield Statement(
            self._sql.q(
                "SELECT coalesce(%s::timestamptz <= clock_timestamp(), false), {s}.drop_session(%s)"
            ),
            (row[1], row[0]),
        )
        if expired:  # it had expired: it did not exist, and its expiry is reported
            found.add([op.session_id])
            return False
        return True

    def _gc(self, found: Found) -> Generator[Statement, Any, int]:
        (expired,) = yield Statement(self._collect_sql)
        found.add(expired)
        return len(expired)

    def _get_recall_segments(self, op: GetRecallSegments) -> Generator[Statement, Any, list[str]]:
        rows = yield Statement(self._recall_read_sql, {"id": op.session_id}, ALL, large=True)
        return [body for (body,) in rows]

    def _save_recall_segments(self, op: SaveRecallSegments) -> Generator[Statement, Any, bool]:
        params = {"id": op.session_id, "bodies": list(op.segments), "replace": op.replace}
        (saved,) = yield Statement(self._recall_save_sql, params)
        return bool(saved)

    # ---- writes in one transaction (the session row locked first)

    def _upsert(
        self,
        session_id: str,
        init: Header,
        found: Found,
        *,
        again: bool = False,
        token: int | None = None,
    ) -> Generator[Statement, Any, tuple[int, bool, tuple[str, ...]]]:
        """Lock the session, creating it from ``init``: ``(sk, created, evicted)``.

        With a write ``token``, a session this creates keeps it (``ct``, in the same
        transaction), and the write sent ``again`` after a lost reply finds it there:
        ``created`` is then what the first attempt answered.
        """
        sk, created, _, expired, evicted = yield Statement(
            self._upsert_sql, (session_id, *_init_args(init), *self._limits())
        )
        found.add(expired, evicted)
        if token is not None and created:
            yield Statement(self._set_ct_sql, (token, sk), NONE)
        elif token is not None and again:
            (ct,) = yield Statement(self._sql.q("SELECT ct FROM {s}.sessions WHERE sk = %s"), (sk,))
            created = ct == token
        return sk, created, tuple(evicted)

    def _live(
        self, session_id: str, found: Found
    ) -> Generator[Statement, Any, tuple[int, int] | None]:
        """Lock a live session: ``(sk, length)``, or ``None`` if absent (expired: deleted)."""
        sk, n, expired = yield Statement(self._live_sql, (session_id,))
        found.add(expired)
        return None if sk is None else (sk, n)

    def _update(self, columns: str, *, history: bool = False, **params: Any) -> Statement:
        """``UPDATE sessions SET <columns>`` and the touch, for ``sk``.

        ``history``: the write removed or changed stored messages, so the same statement
        deletes the session's recall segments (derived from them).
        """
        params.setdefault("ttl", self.ttl_seconds)
        drop = "WITH r AS (DELETE FROM {s}.recall_segments WHERE sk = %(sk)s) " if history else ""
        return Statement(
            # ``columns`` is constant text of this module; values are parameters
            self._sql.q(
                f"{drop}UPDATE {{s}}.sessions SET {columns}{self._touch_set} WHERE sk = %(sk)s"  # noqa: S608
            ),
            params,
            NONE,
        )

    def _write_shared(
        self,
        session_id: str,
        init: Header,
        now: str,
        change: Callable[[dict[str, Any]], object],
        found: Found,
        *,
        again: bool = False,
        token: int | None = None,
    ) -> Generator[Statement, Any, WriteResult]:
        """Replace ``shared`` by its changed copy; too large: raise (the transaction rolls back)."""
        sk, created, evicted = yield from self._upsert(
            session_id, init, found, again=again, token=token
        )
        if created and not again:
            shared: dict[str, Any] = json.loads(dumps(init["shared"]))
        else:
            (sh,) = yield Statement(self._sql.q("SELECT sh FROM {s}.sessions WHERE sk = %s"), (sk,))
            shared = json.loads(sh)
        change(shared)
        text = dumps(shared)
        check_shared_size(text)  # raises before the update: nothing is written, nor created
        yield self._update("sh = %(sh)s, ", sk=sk, sh=text, now=dumps(now))
        return WriteResult(created=created, evicted=evicted)

    def _update_header(
        self, op: UpdateHeader, found: Found, *, again: bool = False, token: int | None = None
    ) -> Generator[Statement, Any, WriteResult]:
        fields = {
            k: v
            for k, v in (op.metadata or {}).items()
            if k not in ("message_count", "token_count")
        }
        sk, created, evicted = yield from self._upsert(
            op.session_id, op.init, found, again=again, token=token
        )
        md: str | None = None
        if fields:
            (current,) = yield Statement(
                self._sql.q("SELECT md FROM {s}.sessions WHERE sk = %s"), (sk,)
            )
            meta = json.loads(current)
            meta.update(json.loads(dumps(fields)))
            md = dumps(meta)
        sp = dumps(op.system_prompt) if op.set_system_prompt else None
        yield self._update(
            "md = coalesce(%(md)s, md), sp = coalesce(%(sp)s, sp), ",
            sk=sk,
            md=md,
            sp=sp,
            now=dumps(op.now),
        )
        return WriteResult(created=created, evicted=evicted)

    def _clear(self, op: ClearSession, found: Found) -> Generator[Statement, Any, bool]:
        live = yield from self._live(op.session_id, found)
        if live is None:
            return False
        sk = live[0]
        yield Statement(self._sql.q("DELETE FROM {s}.messages WHERE sk = %s"), (sk,), NONE)
        if not op.preserve_fetched:
            yield Statement(
                self._sql.q(
                    "WITH f AS (DELETE FROM {s}.fetched WHERE sk = %(sk)s) "
                    "DELETE FROM {s}.fingerprints WHERE sk = %(sk)s"
                ),
                {"sk": sk},
                NONE,
            )
        fetched = "n_fetched" if op.preserve_fetched else "0"
        yield self._update(
            f"n_messages = 0, mc = 0, tc = 0, n_fetched = {fetched}, ",
            history=True,
            sk=sk,
            now=dumps(op.now),
        )
        return True

    def _counters(self, sk: int, messages: int, tokens: int, now: str) -> Statement:
        """The counters after a history edit (which drops the recall segments)."""
        return self._update(
            "n_messages = n_messages + %(m)s, mc = mc + %(m)s, tc = tc + %(t)s, ",
            history=True,
            sk=sk,
            m=messages,
            t=tokens,
            now=dumps(now),
        )

    def _delete_messages(self, op: DeleteMessages, found: Found) -> Generator[Statement, Any, int]:
        live = yield from self._live(op.session_id, found)
        if live is None:
            return 0
        sk = live[0]
        rows = yield Statement(
            self._sql.q(
                "DELETE FROM {s}.messages WHERE sk = %s AND id = ANY(%s::text[]) "
                "RETURNING pos, tokens"
            ),
            (sk, list(dict.fromkeys(op.message_ids))),
            ALL,
        )
        if not rows:
            return 0
        yield Statement(
            self._sql.q("SELECT {s}.renumber(%s, %s)"), (sk, min(r[0] for r in rows)), NONE
        )
        yield self._counters(sk, -len(rows), -sum(r[1] for r in rows), op.now)
        return len(rows)

    def _replace_message(self, op: ReplaceMessage, found: Found) -> Generator[Statement, Any, bool]:
        live = yield from self._live(op.session_id, found)
        if live is None:
            return False
        sk = live[0]
        row = yield Statement(
            self._sql.q(
                "UPDATE {s}.messages AS m SET body = %(body)s, tokens = %(tokens)s "
                "FROM (SELECT pos, tokens FROM {s}.messages WHERE sk = %(sk)s AND id = %(id)s) "
                "AS old WHERE m.sk = %(sk)s AND m.pos = old.pos RETURNING old.tokens"
            ),
            {"sk": sk, "id": op.message_id, "body": op.message.json, "tokens": op.message.tokens},
        )
        if row is None:
            return False
        yield self._counters(sk, 0, op.message.tokens - int(row[0]), op.now)
        return True

    def _truncate_messages(
        self, op: TruncateMessages, found: Found
    ) -> Generator[Statement, Any, int | None]:
        live = yield from self._live(op.session_id, found)
        if live is None:
            return None
        sk = live[0]
        row = yield Statement(
            self._sql.q("SELECT pos FROM {s}.messages WHERE sk = %s AND id = %s"),
            (sk, op.message_id),
        )
        if row is None:
            return None
        cut = row[0] if op.inclusive else row[0] + 1
        rows = yield Statement(
            self._sql.q("DELETE FROM {s}.messages WHERE sk = %s AND pos >= %s RETURNING tokens"),
            (sk, cut),
            ALL,
        )
        if rows:
            yield self._counters(sk, -len(rows), -sum(r[0] for r in rows), op.now)
        return len(rows)

    def _replace_document(
        self, op: ReplaceDocument, found: Found, *, again: bool = False, token: int | None = None
    ) -> Generator[Statement, Any, WriteResult]:
        # ``token`` in ``ct``: sent ``again`` after a lost reply, it answers as its first attempt
        yield Statement(IMPORT_LOCK, (op.session_id, self._sql.lock_key), NONE)  # take turns
        live = yield from self._live(op.session_id, found)
        created = live is None
        firsts: dict[str, Any] = {}  # a message id is stored once, as appends do
        messages = [firsts.setdefault(m.id, m) for m in op.messages if m.id not in firsts]
        if op.if_absent and live is not None:
            (ct,) = yield Statement(
                self._sql.q("SELECT ct FROM {s}.sessions WHERE sk = %s"), (live[0],)
            )
            mine = again and token is not None and ct == token
            return WriteResult(created=mine, added=len(messages) if mine else 0)
        if live is not None:
            yield Statement(self._sql.q("SELECT {s}.drop_session(%s)"), (live[0],), NONE)
        meta = op.header["metadata"]
        (sk,) = yield Statement(
            self._sql.q(
                "INSERT INTO {s}.sessions (id, sp, md, sh, mc, tc, ts, expires_at, last_access, "
                "ct) VALUES (%s, %s, %s, %s, %s, %s, %s, {s}.expiry(%s::float8), "
                "nextval('{s}.access_clock'), %s) RETURNING sk"
            ),
            (
                op.session_id,
                dumps(op.header["system_prompt"]),
                dumps(meta),
                dumps(op.header["shared"]),
                int(meta.get("message_count", 0)),
                int(meta.get("token_count", 0)),
                dumps(meta["timestamp"]) if "timestamp" in meta else None,
                self.ttl_seconds,
                token,
            ),
        )
        yield Statement(
            self._sql.q(
                "INSERT INTO {s}.messages (sk, pos, id, tokens, body) "
                "SELECT %s, t.n - 1, t.id, t.tokens, t.body "
                "FROM unnest(%s::text[], %s::bigint[], %s::text[]) "
                "WITH ORDINALITY AS t(id, tokens, body, n)"
            ),
            (
                sk,
                [m.id for m in messages],
                [m.tokens for m in messages],
                [m.json for m in messages],
            ),
            NONE,
        )
        yield Statement(
            self._sql.q(
                "WITH f AS (INSERT INTO {s}.fetched (sk, seq, source_type, body) "
                "SELECT %(sk)s, t.n - 1, t.source_type, t.body "
                "FROM unnest(%(types)s::text[], %(bodies)s::text[]) "
                "WITH ORDINALITY AS t(source_type, body, n)) "
                "INSERT INTO {s}.fingerprints (sk, fp) "
                "SELECT DISTINCT %(sk)s, fp FROM unnest(%(fps)s::text[]) AS fp "
                "ON CONFLICT DO NOTHING"
            ),
            {
                "sk": sk,
                "types": [i.source_type for i in op.items],
                "bodies": [i.json for i in op.items],
                "fps": [i.fingerprint for i in op.items],
            },
            NONE,
        )
        evicted: tuple[str, ...] = ()
        if created and self.max_sessions is not None:
            expired, victims = yield Statement(
                self._sql.q("SELECT * FROM {s}.evict(%s, %s)"), (self.max_sessions, sk)
            )
            found.add(expired, victims)
            evicted = tuple(victims)
        # Last, the expiry again: from now, not from before the rows (and eviction's wait).
        yield Statement(
            self._sql.q(
                "UPDATE {s}.sessions SET n_messages = %s, n_fetched = %s, "
                "expires_at = {s}.expiry(%s::float8) WHERE sk = %s"
            ),
            (len(messages), len(op.items), self.ttl_seconds, sk),
            NONE,
        )
        return WriteResult(created=created, added=len(messages), evicted=evicted)
