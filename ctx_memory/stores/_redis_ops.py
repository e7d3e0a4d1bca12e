"""What each Redis store operation sends, as requests: no sockets, no event loop.

:class:`RedisOperations` turns each typed operation into a generator that yields
:data:`Request` values (a script call, a raw command, several commands in one round trip)
and receives their replies; :class:`~ctx_memory.stores.redis.RedisStore` runs that
generator on the sync client or on the asyncio client. Every operation is thus written
once for both.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, assert_never

from ctx_memory.errors import SharedStateTooLargeError, StoreError, StoreVersionError
from ctx_memory.schema import dumps
from ctx_memory.stores._redis_codec import (
    append_result,
    as_int,
    clean_init,
    decode_fetched,
    decode_header,
    decode_messages,
    encode_fetched,
    json_str,
    triples,
    write_result,
)
from ctx_memory.stores._redis_keys import (
    LAYOUT_VERSION,
    as_text,
    layout_key,
    member_id,
    session_keys,
)
from ctx_memory.stores._redis_lua import Script
from ctx_memory.stores._redis_requests import (
    APPEND_SHA,
    Call,
    Command,
    Eval,
    Pipeline,
    Prepared,
    Request,
    eval_command,
)
from ctx_memory.stores._redis_wire import pack_args
from ctx_memory.stores.base import MAX_SHARED_BYTES, BaseStore, WriteResult, assemble_document
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
    from collections import OrderedDict
    from collections.abc import Generator, Iterable, Mapping, Sequence

    from ctx_memory.stores.base import EncodedItem, EncodedMessage, Header

__all__ = ["RedisOperations"]


_MAX_SHARED = str(MAX_SHARED_BYTES)

HEADER_FIELDS = ("id", "sp", "md", "sh", "mc", "tc", "ts")
"""The hash fields of a header, in the order :func:`decode_header` takes them."""


class RedisOperations(BaseStore):
    """The Redis store's operations as request generators (the store runs them)."""

    prefix: str
    cluster: bool
    max_sessions: int | None
    _known: OrderedDict[str, Call]
    _tokens: bool
    _ttl_ms: str
    _max: str
    _limits: str
    _idx: str
    _lex: str
    _idx_arg: tuple[str, ...]

    # ------------------------------------------------------------ operations (written once)

    def _session(
        self,
        script: Script,
        session_id: str,
        *extra: Any,
        token: str = "",
        now: str = "",
        init: str = "",
    ) -> Eval:
        keys: tuple[str, ...] = session_keys(self.prefix, session_id).script_keys
        if not self.cluster:
            keys += (self._idx, self._lex)
        return Eval(script, keys, (f"{self._limits}:{token}", session_id, now, init, *extra))

    def _index(self, script: Script, *args: Any) -> Eval:
        return Eval(script, (self._idx, self._lex, self._lex + "v"), args)

    def _touch(self, session_id: str) -> Eval:
        """The LRU touch of a read (TOUCH_SCRIPT): of a session that exists and is indexed."""
        k = session_keys(self.prefix, session_id)
        # On a cluster the session's hash is in another slot: the caller read it first.
        keys = (self._idx,) if self.cluster else (self._idx, k.h)
        return Eval(Script.TOUCH, keys, (k.member,))

    def _read(self, script: Script, session_id: str) -> Generator[Request, Any, Any]:
        """A read by a session script (a document, existence): it touches the index itself."""
        reply = yield self._session(script, session_id)
        if self.cluster and self.max_sessions is not None and reply:
            yield self._touch(session_id)
        return reply

    def _plain_read(
        self, command: tuple[Any, ...], session_id: str
    ) -> Generator[Request, Any, Any]:
        """The reply of a read ``command``, and, with ``max_sessions``, the session's touch.

        No script returns the data: a reply passed through Lua costs more than the command.
        On a single server the touch goes in the same round trip (TOUCH_SCRIPT checks that
        the session exists); on a cluster, where the index has its own slot, it follows
        when an ``EXISTS`` sent with the read (same slot, same round trip) found the session.
        """
        if self.max_sessions is None:  # no LRU index to touch, and reads never slide the TTL
            return (yield Command(command))
        return (yield from self._plain_reads((command,), session_id))[0]

    def _plain_reads(
        self, commands: tuple[tuple[Any, ...], ...], session_id: str
    ) -> Generator[Request, Any, list[Any]]:
        """The replies of read ``commands`` in one round trip, as :meth:`_plain_read`."""
        if self.max_sessions is None:
            return list((yield Pipeline(commands)))
        touch = self._touch(session_id)
        replies: list[Any]
        if self.cluster:
            *replies, exists = yield Pipeline(
                (*commands, ("EXISTS", session_keys(self.prefix, session_id).h))
            )
            if exists:
                yield touch
            return replies
        *replies, _ = yield Pipeline((*commands, eval_command(touch)))
        return replies

    def _write(
        self,
        script: Script,
        session_id: str,
        init: Header,
        now: str,
        *extra: Any,
        always_token: bool = False,
        again: bool = False,
        touched: bool = False,
        indexed: bool | None = None,
    ) -> Generator[Request, Any, WriteResult]:
        # An append always carries a token: its message ids record it, so that a retry
        # whose first attempt landed answers that attempt's count. touched: the caller sent
        # the first touch already, which answered ``indexed`` (see _cluster_touch_first).
        write_token = os.urandom(8).hex() if always_token else self._token()
        now_json = json_str(now)
        if not touched:
            indexed = yield from self._cluster_touch_first(session_id)
        known = session_id in self._known
        init_json = "" if known else dumps(clean_init(init))
        reply = yield self._session(
            script, session_id, *extra, token=write_token, now=now_json, init=init_json
        )
        if known and as_text(reply) == "init":  # gone since (expired, evicted, deleted elsewhere)
            init_json = dumps(clean_init(init))
            reply = yield self._session(
                script, session_id, *extra, token=write_token, now=now_json, init=init_json
            )
        if isinstance(reply, (bytes, str)) and as_text(reply).startswith("too_large:"):
            raise SharedStateTooLargeError(int(as_text(reply)[10:]), MAX_SHARED_BYTES)
        created, added, expired, evicted = write_result(reply)
        if self.cluster:
            # (Not after an eviction deleted it: the session's old entry is gone, reported.)
            expired, evicted, alive = yield from self._cluster_settled(
                session_id, created=created, look=not again, indexed=indexed
            )
            if not alive and not again:  # an eviction deleted it as it was written: again
                self._report(expired, evicted)
                self._forget((session_id,))
                return (
                    yield from self._write(
                        script, session_id, init, now, *extra, always_token=always_token, again=True
                    )
                )
        # Reported before it is remembered: the expiry reported may be this session's own
        # (this write re-created it), which _report forgets.
        self._report(expired, evicted)
        self._remember(session_id)
        return WriteResult(created=created, added=added, evicted=tuple(evicted))

    def _token(self) -> str:
        return os.urandom(8).hex() if self._tokens else ""

    def _remember(self, session_id: str, *, fetched: bool = False) -> Call:
        """Remember a session as existing; returns the start of its APPEND_SCRIPT call."""
        known = self._known
        call = known.get(session_id)
        if call is not None and (not fetched or int(call.args[2]) >= 5):
            return call
        k = session_keys(self.prefix, session_id)
        # With the index (max_sessions on a single server) the fetched keys always come too.
        full = fetched or bool(self._idx_arg)
        keys = ((k.h, k.m, k.ids, k.f, k.fp) if full else (k.h, k.m, k.ids)) + self._idx_arg
        args = ("EVALSHA", APPEND_SHA, str(len(keys)).encode(), *[k.encode() for k in keys])
        call = known[session_id] = Call(args, pack_args(args))
        if len(known) > 10_000:
            known.popitem(last=False)
        return call

    def _forget(self, session_ids: Iterable[str]) -> None:
        for session_id in session_ids:
            self._known.pop(session_id, None)

    def _cluster_touch_first(
        self, session_id: str, *, existing_only: bool = False
    ) -> Generator[Request, Any, bool | None]:
        """On a cluster with ``max_sessions``, a write's LRU touch, sent before it.

        Answers whether the session was indexed before this touch (which indexes it), for
        :meth:`_cluster_settled`; None when nothing was sent or ``existing_only``.
        """
        if self.cluster and self.max_sessions is not None:
            member = session_keys(self.prefix, session_id).member
            if existing_only:
                yield self._index(Script.INDEX_WRITE, member, self._max, "0", "1")
                return None
            reply = yield self._index(Script.INDEX_WRITE, member, self._max, "0", "0", "1")
            return not int(reply[0])
        return None

    def _cluster_settled(
        self,
        session_id: str,
        *,
        created: bool,
        look: bool = False,
        indexed: bool | None = None,
    ) -> Generator[Request, Any, tuple[list[str], list[str], bool]]:
        """After a write on a cluster: its LRU touch, eviction, and whether the session is there.

        A session the write created is indexed and may start an eviction. A write touches
        the index first (:meth:`_cluster_touch_first`), but an eviction may have chosen the
        session just before that touch and marked it just after the write: its mark then
        stays, the index drops the member and the eviction deletes the session that was just
        written. This second touch finds the member missing in that case and takes the
        session back (``UNMARK``: the eviction then keeps it), or, when the eviction deleted
        it already, answers False: the caller writes again.

        ``look``: a session the write created whose member was indexed already (``indexed``,
        as the first touch found it; else as this touch finds it) had expired, its member
        waiting for gc; the write takes the member over (its score moves, so no listing
        drops it), and the expiry is reported here, once, as on a single server (finish()
        in ``session.lua``). A collector that dropped the member first reported it itself.
        """
        if not self.cluster or (not created and self.max_sessions is None):
            return [], [], True
        member = session_keys(self.prefix, session_id).member
        reply = yield self._index(
            Script.INDEX_WRITE, member, self._max, "1" if created else "0", "0", "1"
        )
        missing, chosen = int(reply[0]), list(reply[1:])
        expired, evicted = (yield from self._cluster_evict(chosen)) if chosen else ([], [])
        if look and created and (not missing if indexed is None else indexed):
            expired.insert(0, session_id)
        alive = True
        if missing and self.max_sessions is not None:
            alive = bool((yield self._session(Script.UNMARK, session_id)))
        return expired, evicted, alive

    def _cluster_evict(
        self, chosen: Sequence[Any]
    ) -> Generator[Request, Any, tuple[list[str], list[str]]]:
        """Evict the sessions the index ``chosen`` (member, score pairs); (expired, evicted).

        On one server eviction is one script. On a cluster the index and each session are
        in different slots, so it takes four steps, none of which loses a write landing
        between them: each victim is *marked* in its own slot; the index drops those whose
        score is unchanged (no write or read touched them since they were chosen: writes
        touch first, see :meth:`_cluster_touch_first`); each dropped one is deleted only if
        still marked (every write removes the mark). A victim written meanwhile is kept and
        indexed again (the index may then exceed ``max_sessions`` until the next creation).
        """
        token = os.urandom(8).hex()
        members = [as_text(m) for m in chosen[::2]]
        pairs: list[str] = []
        gone: set[str] = set()
        for member, score in zip(members, chosen[1::2], strict=True):
            victim = member_id(member)
            if not (yield self._session(Script.MARK, victim, token=token)):
                gone.add(member)
            pairs += (member, as_text(score))
        expired: list[str] = []
        evicted: list[str] = []
        for member in (yield self._index(Script.INDEX_FORGET_STALE, *pairs)):
            victim = member_id(member)
            if as_text(member) in gone:
                expired.append(victim)
                continue
            deleted = int((yield self._session(Script.EVICT, victim, token=token)))
            if deleted == 1:
                evicted.append(victim)
            elif deleted == 0:  # written since it was marked: it stays, indexed again
                yield self._index(Script.INDEX_WRITE, as_text(member), self._max, "0", "0")
            else:
                expired.append(victim)
        return expired, evicted

    def _report(self, expired: Sequence[str], evicted: Sequence[str]) -> None:
        """Forget and report sessions a call found expired or evicted."""
        self._forget(expired)
        self._forget(evicted)
        for victim in expired:
            self._notify("session_expired", victim)
        for victim in evicted:
            self._notify("session_evicted", victim)

    def _op_create(self, session_id: str, init: Header) -> Generator[Request, Any, WriteResult]:
        return self._write(Script.CREATE, session_id, init, init["metadata"]["timestamp"])

    def _op_exists(self, session_id: str) -> Generator[Request, Any, bool]:
        return bool((yield from self._read(Script.EXISTS, session_id)))

    def _op_delete(self, session_id: str) -> Generator[Request, Any, bool]:
        gone = False  # only its index entry is left: it expired
        if self.cluster:
            keys = session_keys(self.prefix, session_id)
            # Keys looked for first: one another delete removes meanwhile was live, not
            # expired. Then unindexed before the keys go: a write re-creating the session
            # after that indexes it again, so no live session is left out of the index.
            (alive,) = yield Pipeline((("EXISTS", keys.h),))
            indexed = int((yield self._index(Script.INDEX_FORGET, keys.member)))
            gone = not alive and indexed == 1
        reply = int((yield self._session(Script.DELETE, session_id)))
        if reply == -1 or (gone and reply == 0):  # it did not exist: this call, which
            self._report((session_id,), ())  # removed its index entry, reports the expiry
            return False
        self._forget((session_id,))
        return reply == 1

    def _op_gc(self) -> Generator[Request, Any, int]:
        _, expired = yield from self._members()
        return expired

    def _op_list(self) -> Generator[Request, Any, list[str]]:
        alive, _ = yield from self._members()
        return sorted(member_id(m) for m in alive)

    def _members(self) -> Generator[Request, Any, tuple[list[str], int]]:
        """Live index members; members whose keys are gone (expired) are dropped.

        A gone member is dropped only if its score is the one read here (nobody re-created
        the session since), and only the call that dropped it reports it: several
        processes listing at once report each expiry once.
        """
        reply = yield self._index(Script.INDEX_MEMBERS)
        members = [as_text(m) for m in reply[0::2]]
        if not members:
            return [], 0
        alive = yield Pipeline(
            tuple(("EXISTS", session_keys(self.prefix, member_id(m)).h) for m in members)
        )
        stale: list[Any] = []
        for member, score, ok in zip(members, reply[1::2], alive, strict=True):
            if not int(ok):
                stale += (member, score)
        removed = (yield from self._forget_stale(stale)) if stale else 0
        return [m for m, ok in zip(members, alive, strict=True) if int(ok)], removed

    def _forget_stale(self, stale: Sequence[Any]) -> Generator[Request, Any, int]:
        """Drop ``(member, score)`` pairs still at that score; report those expiries once.

        The recall segments of those sessions are deleted too: they expire no later than
        the session's hash, but for segments saved with no TTL before the session got one.
        """
        removed = [member_id(m) for m in (yield self._index(Script.INDEX_FORGET_STALE, *stale))]
        if removed:
            yield Pipeline(tuple(("DEL", session_keys(self.prefix, sid).r) for sid in removed))
        self._report(removed, ())
        return len(removed)

    def _op_document(self, session_id: str) -> Generator[Request, Any, dict[str, Any] | None]:
        reply = yield from self._read(Script.DOC, session_id)
        if not reply:
            return None
        fields, messages, fetched = reply
        return assemble_document(
            decode_header(fields), decode_messages(messages), decode_fetched(fetched)
        )

    def _op_header(self, session_id: str) -> Generator[Request, Any, Header | None]:
        command = ("HMGET", session_keys(self.prefix, session_id).h, *HEADER_FIELDS)
        reply = yield from self._plain_read(command, session_id)
        return decode_header(reply) if reply[0] is not None else None

    def _op_messages(
        self, session_id: str, start: int, end: int
    ) -> Generator[Request, Any, list[dict[str, Any]]]:
        command = ("LRANGE", session_keys(self.prefix, session_id).m, start, end)
        return decode_messages((yield from self._plain_read(command, session_id)))

    def _op_message_spans(
        self, session_id: str, spans: tuple[tuple[int, int], ...]
    ) -> Generator[Request, Any, list[list[dict[str, Any]]]]:
        if not spans:
            return []
        key = session_keys(self.prefix, session_id).m
        commands = tuple(("LRANGE", key, start, end) for start, end in spans)
        return [
            decode_messages(reply) for reply in (yield from self._plain_reads(commands, session_id))
        ]

    def _op_count(self, session_id: str) -> Generator[Request, Any, int]:
        command = ("LLEN", session_keys(self.prefix, session_id).m)
        return int((yield from self._plain_read(command, session_id)))

    def _op_fetched(
        self, session_id: str, source_type: str | None
    ) -> Generator[Request, Any, dict[str, list[dict[str, Any]]]]:
        command = ("LRANGE", session_keys(self.prefix, session_id).f, 0, -1)
        return decode_fetched((yield from self._plain_read(command, session_id)), source_type)

    def _append_tail(self, messages: Sequence[EncodedMessage], now: str) -> tuple[Any, ...]:
        """The ``ARGV`` of ``APPEND_SCRIPT``: its scalars packed in one, then the messages."""
        head = f"{self._ttl_ms} {os.urandom(8).hex()} {json_str(now)}"
        if len(messages) == 1:
            msg = messages[0]
            return (head, msg.id, msg.tokens, msg.json)
        return (head, *triples(messages))

    def _op_append_messages(
        self, session_id: str, messages: Sequence[EncodedMessage], init: Header, now: str
    ) -> Generator[Request, Any, WriteResult]:
        call = self._known.get(session_id)
        indexed: bool | None = None
        if call is not None:
            # The session exists as far as we know: APPEND_SCRIPT, which answers an integer.
            if self.cluster:  # (a test, not a generator, on the hot path)
                indexed = yield from self._cluster_touch_first(session_id)
            tail = self._append_tail(messages, now)
            reply = yield Prepared(call, tail)
            if reply == -2:  # it has fetched items: their keys' TTL must be refreshed too
                call = self._remember(session_id, fetched=True)
                reply = yield Prepared(call, tail)  # same token: still applied once
            alive = reply >= 0
            if alive:
                created, added = bool(reply & 1), reply >> 1
                expired: Sequence[str] = ()
                evicted: Sequence[str] = ()
                if self.cluster:  # (created: a retry of the write that created it)
                    expired, evicted, alive = yield from self._cluster_settled(
                        session_id, created=created
                    )
                if expired or evicted:
                    self._report(expired, evicted)
                if alive and evicted:
                    return WriteResult(created=created, added=added, evicted=tuple(evicted))
                if alive:
                    return append_result(reply)
                indexed = False  # an eviction deleted it as it was written: no expiry
            # Gone since (expired, evicted, deleted elsewhere, or by an eviction as it was
            # written): create it again with the init header.
            self._forget((session_id,))
        return (
            yield from self._write(
                Script.UPSERT_APPEND,
                session_id,
                init,
                now,
                *triples(messages),
                always_token=True,
                touched=call is not None,
                indexed=indexed,
            )
        )

    def _op_edit(
        self, script: Script, session_id: str, now: str, *extra: Any
    ) -> Generator[Request, Any, int]:
        """A history edit (``MSGDEL``, ``MSGSET``, ``TRUNCATE``): removed/replaced, or -1."""
        yield from self._cluster_touch_first(session_id, existing_only=True)
        reply = yield self._session(script, session_id, *extra, token=self._token(), now=dumps(now))
        return int(reply)

    def _op_delete_messages(
        self, session_id: str, message_ids: Sequence[str], now: str
    ) -> Generator[Request, Any, int]:
        if not message_ids:
            return 0
        return max(0, (yield from self._op_edit(Script.MSGDEL, session_id, now, *message_ids)))

    def _op_replace_message(
        self, session_id: str, message_id: str, message: EncodedMessage, now: str
    ) -> Generator[Request, Any, bool]:
        reply = yield from self._op_edit(
            Script.MSGSET, session_id, now, message_id, message.tokens, message.json
        )
        return reply > 0

    def _op_truncate(
        self, session_id: str, message_id: str, inclusive: bool, now: str
    ) -> Generator[Request, Any, int | None]:
        reply = yield from self._op_edit(
            Script.TRUNCATE, session_id, now, message_id, "1" if inclusive else "0"
        )
        return None if reply < 0 else reply

    def _op_page(
        self, prefix: str, cursor: str | None, limit: int
    ) -> Generator[Request, Any, list[str]]:
        """A page of live ids from the id-ordered index; gone sessions are dropped from it."""
        low = b"[" + prefix.encode()
        if cursor is not None and cursor >= prefix:
            low = b"(" + cursor.encode()
        high = b"(" + prefix.encode() + b"\xff" if prefix else b"+"  # 0xff: in no UTF-8 text
        page: list[str] = []
        while len(page) < limit:
            want = limit - len(page)
            ids = [as_text(i) for i in (yield self._index(Script.INDEX_PAGE, low, high, want))]
            if not ids:
                break
            keys = [session_keys(self.prefix, sid) for sid in ids]
            alive = yield Pipeline(tuple(("EXISTS", k.h) for k in keys))
            page += [sid for sid, ok in zip(ids, alive, strict=True) if int(ok)]
            gone = [k.member for k, ok in zip(keys, alive, strict=True) if not int(ok)]
            if gone:
                yield from self._drop_gone(gone)
            if len(ids) < want:
                break
            low = b"(" + ids[-1].encode()
        return page

    def _drop_gone(self, members: Sequence[str]) -> Generator[Request, Any, None]:
        """Drop index members whose session expired; report each expiry once."""
        scores = yield Command(("ZMSCORE", self._idx, *members))
        stale: list[Any] = []
        for member, score in zip(members, scores, strict=True):
            if score is not None:
                stale += (member, score)
        if stale:
            yield from self._forget_stale(stale)

    def _op_append_fetched(
        self, session_id: str, items: Sequence[EncodedItem], init: Header, now: str, dedupe: bool
    ) -> Generator[Request, Any, WriteResult]:
        pairs: list[str] = []
        for item in items:
            pairs += (item.fingerprint, encode_fetched(item))
        result = yield from self._write(
            Script.FETCH,
            session_id,
            init,
            now,
            "1" if dedupe else "0",
            *pairs,
        )
        if items:
            self._remember(session_id, fetched=True)
        return result

    def _op_merge(
        self, session_id: str, mode: str, partial: Mapping[str, Any], init: Header, now: str
    ) -> Generator[Request, Any, WriteResult]:
        return self._write(
            Script.MERGE,
            session_id,
            init,
            now,
            mode,
            dumps(dict(partial)),
            _MAX_SHARED,
        )

    def _op_update_header(
        self,
        session_id: str,
        *,
        init: Header,
        now: str,
        metadata: Mapping[str, Any] | None,
        system_prompt: str | None,
        set_system_prompt: bool,
    ) -> Generator[Request, Any, WriteResult]:
        fields = {
            k: v for k, v in (metadata or {}).items() if k not in ("message_count", "token_count")
        }
        return self._write(
            Script.HEADER,
            session_id,
            init,
            now,
            dumps(fields) if fields else "",
            "1" if set_system_prompt else "0",
            dumps(system_prompt) if set_system_prompt else "",
        )

    def _op_clear(
        self, session_id: str, now: str, preserve_fetched: bool
    ) -> Generator[Request, Any, bool]:
        yield from self._cluster_touch_first(session_id, existing_only=True)
        existed = bool(
            (
                yield self._session(
                    Script.CLEAR,
                    session_id,
                    "1" if preserve_fetched else "0",
                    token=self._token(),
                    now=dumps(now),
                )
            )
        )
        return existed

    def _op_replace(
        self,
        session_id: str,
        header: Header,
        messages: Sequence[EncodedMessage],
        items: Sequence[EncodedItem],
        *,
        if_absent: bool,
        again: bool = False,
    ) -> Generator[Request, Any, WriteResult]:
        metadata = dict(header["metadata"])
        pairs: list[str] = []
        for item in items:
            pairs += (item.fingerprint, encode_fetched(item))
        ts = metadata.get("timestamp")
        indexed = yield from self._cluster_touch_first(session_id)
        reply = yield self._session(
            Script.REPLACE,
            session_id,
            dumps(header["system_prompt"]),
            dumps(metadata),
            dumps(header["shared"]),
            as_int(metadata.get("message_count", 0)),
            as_int(metadata.get("token_count", 0)),
            len(messages),
            *triples(messages),
            *pairs,
            token=self._token(),
            now=dumps(ts) if "timestamp" in metadata else "",
            init="absent" if if_absent else "",
        )
        created, added, expired, evicted = write_result(reply)
        if self.cluster:
            expired, evicted, alive = yield from self._cluster_settled(
                session_id, created=created, look=not again, indexed=indexed
            )
            if not alive and not again:  # an eviction deleted it as it was imported: again
                self._report(expired, evicted)
                return (
                    yield from self._op_replace(
                        session_id, header, messages, items, if_absent=if_absent, again=True
                    )
                )
        self._report(expired, evicted)
        return WriteResult(created=created, added=added, evicted=tuple(evicted))

    # ------------------------------------------------------------ recall segments

    def _op_recall_segments(self, session_id: str) -> Generator[Request, Any, list[str]]:
        """The list ``r``, if the session's hash exists (one round trip; not an access)."""
        k = session_keys(self.prefix, session_id)
        exists, segments = yield Pipeline((("EXISTS", k.h), ("LRANGE", k.r, 0, -1)))
        return [as_text(s) for s in segments] if int(exists) else []

    def _op_save_recall_segments(
        self, session_id: str, segments: Sequence[str], replace: bool
    ) -> Generator[Request, Any, bool]:
        """Append to (``replace``: swap) the list ``r`` of an existing session (``RECALL``)."""
        if not segments and not replace:  # nothing to write: whether the session exists
            return bool((yield Command(("EXISTS", session_keys(self.prefix, session_id).h))))
        keys = session_keys(self.prefix, session_id).script_keys  # no index: not an access
        token = self._token() if segments else ""
        args = (f"0:0:{token}", session_id, "", "", "1" if replace else "0", *segments)
        return bool((yield Eval(Script.RECALL, keys, args)))

    # ------------------------------------------------------------ the layout version

    def _op_layout(self) -> Generator[Request, Any, None]:
        """Mark the data under the prefix with this layout, or refuse a newer one.

        Data written before the version key existed has the first layout (version 1). Data
        of every older layout is valid data of this one (layout 2 only adds a key), so
        migrating it is recording the new version, which LAYOUT_SCRIPT does atomically.
        """
        raw = yield Eval(Script.LAYOUT, (layout_key(self.prefix),), (str(LAYOUT_VERSION),))
        text = "1" if raw is None else as_text(raw)
        if not (text.isascii() and text.isdigit()):
            msg = (
                f"the Redis data under key prefix {self.prefix!r} has an unreadable layout"
                f" version {text!r} (key {layout_key(self.prefix)!r})"
            )
            raise StoreError(msg)
        found = int(text)
        if found > LAYOUT_VERSION:
            msg = (
                f"the Redis data under key prefix {self.prefix!r} has layout version {found},"
                f" newer than this ctx_memory writes ({LAYOUT_VERSION}): upgrade ctx_memory"
                " (or use another REDIS_KEY_PREFIX)"
            )
            raise StoreVersionError(msg)

    # ------------------------------------------------------------ operation -> requests

    def _plan(self, op: StoreOp) -> Generator[Request, Any, object]:  # noqa: PLR0911, PLR0912
        """The requests ``op`` needs, as a generator the two drivers run."""
        match op:
            case AppendMessages():
                return self._op_append_messages(op.session_id, op.messages, op.init, op.now)
            case GetMessages():
                return self._op_messages(op.session_id, op.start, op.end)
            case GetMessageSpans():
                return self._op_message_spans(op.session_id, op.spans)
            case GetHeader():
                return self._op_header(op.session_id)
            case GetDocument():
                return self._op_document(op.session_id)
            case GetFetched():
                return self._op_fetched(op.session_id, op.source_type)
            case CountMessages():
                return self._op_count(op.session_id)
            case SessionExists():
                return self._op_exists(op.session_id)
            case ListSessions():
                return self._op_list()
            case ListPage():
                return self._op_page(op.prefix, op.cursor, op.limit)
            case CreateSession():
                return self._op_create(op.session_id, op.init)
            case DeleteSession():
                return self._op_delete(op.session_id)
            case DeleteMessages():
                return self._op_delete_messages(op.session_id, op.message_ids, op.now)
            case ReplaceMessage():
                return self._op_replace_message(op.session_id, op.message_id, op.message, op.now)
            case TruncateMessages():
                return self._op_truncate(op.session_id, op.message_id, op.inclusive, op.now)
            case AppendFetched():
                return self._op_append_fetched(op.session_id, op.items, op.init, op.now, op.dedupe)
            case MergeShared():
                return self._op_merge(op.session_id, "deep", op.partial, op.init, op.now)
            case SetShared():
                return self._op_merge(op.session_id, "shallow", {op.key: op.value}, op.init, op.now)
            case UpdateHeader():
                return self._op_update_header(
                    op.session_id,
                    init=op.init,
                    now=op.now,
                    metadata=op.metadata,
                    system_prompt=op.system_prompt,
                    set_system_prompt=op.set_system_prompt,
                )
            case ClearSession():
                return self._op_clear(op.session_id, op.now, op.preserve_fetched)
            case ReplaceDocument():
                return self._op_replace(
                    op.session_id, op.header, op.messages, op.items, if_absent=op.if_absent
                )
            case CollectGarbage():
                return self._op_gc()
            case GetRecallSegments():
                return self._op_recall_segments(op.session_id)
            case SaveRecallSegments():
                return self._op_save_recall_segments(op.session_id, op.segments, op.replace)
            case _:
                assert_never(op)
