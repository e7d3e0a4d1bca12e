"""The in-memory store: one process, thread-safe, with TTL, LRU and a garbage collector.

Every write is whole or nothing, also when a ``KeyboardInterrupt`` (Ctrl-C, a notebook's
interrupt button) lands in it. CPython raises one only where it checks for signals: at
the start of a function, right after a call returns, and at a loop's backward jump. So a
write first computes every new value off to the side (new lists, sets, dicts and counts;
an interrupt there changes nothing), then publishes them with plain assignments that
hold no call (attribute and item stores, ``+=``, ``|=`` and ``-=`` on lists and sets,
``del history[cut:]``); its one call, the LRU move or :meth:`InMemoryStore._place` for
a new session, comes last.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from itertools import islice
from typing import TYPE_CHECKING, Any

from typing_extensions import override

from ctx_memory.schema import dumps
from ctx_memory.stores._gc import GarbageCollector
from ctx_memory.stores.base import (
    Header,
    WriteResult,
    assemble_document,
    check_limits,
    check_shared_size,
    deep_merge,
    shared_result,
)
from ctx_memory.stores.handlers import OperationStore
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
    TruncateMessages,
    UpdateHeader,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence, Set

    _Plan = Callable[["_Session"], tuple[int, Header, dict[str, list[str]], Set[str]]]

__all__ = ["InMemoryStore"]

logger = logging.getLogger(__name__)

_NO_IDS: frozenset[str] = frozenset()


def _clone(value: Any) -> Any:
    """A deep copy of JSON-native data (a JSON round trip beats ``copy.deepcopy``)."""
    return json.loads(dumps(value))


def _decode_all(raw: Sequence[str]) -> list[Any]:
    """Decode stored JSON texts in one ``json.loads`` of a joined array.

    Same values as ``[json.loads(r) for r in raw]`` (each text is one complete JSON
    value), about 3x faster than one call per text.
    """
    return json.loads("[" + ",".join(raw) + "]") if raw else []


def _position(session: _Session, message_id: str) -> tuple[int, dict[str, Any]] | None:
    """Where the message with this id is, and its record (searching from the newest)."""
    if message_id in session.ids:
        for index in range(len(session.messages) - 1, -1, -1):
            record: dict[str, Any] = json.loads(session.messages[index])
            if record.get("id") == message_id:
                return index, record
    return None


class _Session:
    """One session's state.

    Messages and items are kept as JSON text: compact, and every read decodes fresh
    objects, so no caller can alias stored state.
    """

    __slots__ = (
        "expires_at",
        "fetched",
        "fingerprints",
        "header",
        "ids",
        "messages",
        "recall_segments",
    )

    def __init__(self, header: Header) -> None:
        self.header: Header = _clone(header)
        self.messages: list[str] = []
        self.ids: set[str] = set()
        self.fetched: dict[str, list[str]] = {}
        self.fingerprints: set[str] = set()
        self.expires_at: float | None = None
        self.recall_segments: list[str] = []


class InMemoryStore(OperationStore):
    """Sessions in this process's memory.

    Every operation holds one lock for a few microseconds: appends are O(1), reading the
    last ``k`` messages decodes only those ``k``. Sessions expire ``ttl_seconds`` after
    their last write (checked on every access, and by the garbage collector for sessions
    nobody touches); creating a session beyond ``max_sessions`` evicts the least recently
    used one.

    Args:
        ttl_seconds: Sliding time to live; ``None`` for no expiry.
        max_sessions: Most live sessions; ``None`` for no limit.
        gc_interval_seconds: Run a background garbage-collection thread at this interval;
            ``None`` for none. The thread stops on :meth:`close`.
        clock: Monotonic clock in seconds (tests pass a fake one).

    Example:
        .. code-block:: python

            from ctx_memory import ContextManager, InMemoryStore

            with InMemoryStore(ttl_seconds=3600, max_sessions=100) as store:
                manager = ContextManager(store=store)
                manager.add_user_message("s1", "hi")
                assert store.count_messages("s1") == 1
    """

    name = "memory"
    keeps_recall_segments = True
    imports_if_absent = True
    offload = False  # the lock is held for microseconds: no thread hop for async callers

    def __init__(
        self,
        *,
        ttl_seconds: float | None = None,
        max_sessions: int | None = None,
        gc_interval_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        ttl_seconds = check_limits(ttl_seconds, max_sessions)
        self.ttl_seconds = ttl_seconds
        self.max_sessions = max_sessions
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._collector = (
            GarbageCollector(self.gc, gc_interval_seconds, name=repr(self))
            if gc_interval_seconds
            else None
        )

    def __repr__(self) -> str:
        return (
            f"InMemoryStore(sessions={len(self._sessions)}, ttl_seconds={self.ttl_seconds}, "
            f"max_sessions={self.max_sessions})"
        )

    # ------------------------------------------------------------ internals (lock held)

    def _live(self, session_id: str, expired: list[str], *, touch: bool = True) -> _Session | None:
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires_at is not None and session.expires_at <= self._clock():
            del self._sessions[session_id]
            expired.append(session_id)
            return None
        if touch:
            self._sessions.move_to_end(session_id)
        return session

    def _expiry(self) -> float | None:
        """When a session written now expires (``None``: never)."""
        ttl = self.ttl_seconds
        return None if ttl is None else self._clock() + ttl

    def _place(
        self, session_id: str, session: _Session, expired: list[str], evicted: list[str]
    ) -> None:
        """Add a new, fully written session: the last step of its write (lock held).

        Room is planned first, changing nothing a read sees (the expired sessions it drops
        read as absent already); then the session goes in, and the least recently used one
        beyond ``max_sessions`` out, with no call in between: a Ctrl-C lands before (the
        session never existed) or after (written whole, the limit kept).
        """
        sessions = self._sessions
        limit = self.max_sessions
        victims: list[str] = []
        if limit is not None and len(sessions) >= limit:
            self._drop_expired(expired)  # the limit counts live sessions only
            victims = list(islice(sessions, max(len(sessions) + 1 - limit, 0)))
        if len(victims) > 1:  # only after max_sessions was lowered: a whole new table
            doomed = set(victims)
            table = OrderedDict((k, v) for k, v in sessions.items() if k not in doomed)
            table[session_id] = session
            self._sessions = table
        else:
            sessions[session_id] = session
            if victims:
                del sessions[victims[0]]
        evicted += victims

    def _drop_expired(self, expired: list[str]) -> None:
        """Delete every expired session (lock held), reporting each as expired."""
        now = self._clock()
        for session_id, session in list(self._sessions.items()):
            if session.expires_at is not None and session.expires_at <= now:
                del self._sessions[session_id]
                expired.append(session_id)

    def _report(self, expired: list[str], evicted: Sequence[str] = ()) -> None:
        for session_id in expired:
            self._notify("session_expired", session_id)
        for session_id in evicted:
            self._notify("session_evicted", session_id)

    def _write(self, session_id: str, init: Header, now: str, plan: _Plan) -> WriteResult:
        """Upsert the session and apply ``plan``'s change, whole or not at all.

        ``plan(session)`` computes the change without making it (it may refuse, by
        raising) and returns ``(added, header, fetched, fingerprints to add)``, then
        published with plain assignments (see the module docstring). A missing session is
        built off to the side and only then placed, evicting if need be.
        """
        expired: list[str] = []
        evicted: list[str] = []
        try:
            with self._lock:
                s = self._live(session_id, expired, touch=False)  # refused: no access
                created = s is None
                if s is None:
                    s = _Session(init)
                added, header, fetched, fingerprints = plan(s)
                expires = self._expiry()
                # Publish: no call before the last step.
                s.header, s.fetched, s.expires_at = header, fetched, expires
                s.fingerprints |= fingerprints
                header["metadata"]["timestamp"] = now
                if created:
                    self._place(session_id, s, expired, evicted)
                else:
                    self._sessions.move_to_end(session_id)
        finally:
            self._report(expired, evicted)
        return shared_result(created, added, evicted)

    def _read(
        self,
        session_id: str,
        read: Callable[[_Session], Any],
        default: Any,
        *,
        touch: bool = True,
    ) -> Any:
        """``read(session)`` under the lock; ``touch``: the lookup counts as an LRU access."""
        expired: list[str] = []
        with self._lock:
            session = self._live(session_id, expired, touch=touch)
            result = default if session is None else read(session)
        self._report(expired)
        return result

    # ------------------------------------------------------------ operations

    @override
    def _create(self, op: CreateSession) -> WriteResult:
        session_id, init = op.session_id, op.init
        return self._write(
            session_id,
            init,
            init["metadata"]["timestamp"],
            lambda s: (0, s.header, s.fetched, _NO_IDS),
        )

    @override
    def _exists(self, op: SessionExists) -> bool:
        session_id = op.session_id
        return bool(self._read(session_id, lambda _s: True, default=False))

    @override
    def _delete(self, op: DeleteSession) -> bool:
        session_id = op.session_id
        expired: list[str] = []
        with self._lock:  # an expired session did not exist: removed, reported as expired
            existed = self._live(session_id, expired, touch=False) is not None
            if existed:
                del self._sessions[session_id]
        self._report(expired)
        return existed

    @override
    def _list_sessions(self, op: ListSessions) -> list[str]:
        self._gc(CollectGarbage())  # inside this operation, not a second one
        with self._lock:
            return sorted(self._sessions)

    @override
    def _get_header(self, op: GetHeader) -> Header | None:
        session_id = op.session_id
        return self._read(session_id, lambda s: _clone(s.header), default=None)  # type: ignore[no-any-return]

    @override
    def _get_document(self, op: GetDocument) -> dict[str, Any] | None:
        session_id = op.session_id

        def read(s: _Session) -> dict[str, Any]:
            header: Header = _clone(s.header)
            messages = [json.loads(m) for m in s.messages]
            fetched = {t: [json.loads(i) for i in items] for t, items in s.fetched.items()}
            return assemble_document(header, messages, fetched)

        return self._read(session_id, read, default=None)  # type: ignore[no-any-return]

    @override
    def _get_messages(self, op: GetMessages) -> list[dict[str, Any]]:
        session_id, start, end = op.session_id, op.start, op.end

        def read(s: _Session) -> list[str]:
            n = len(s.messages)
            lo = max(start + n if start < 0 else start, 0)
            hi = min(end + n if end < 0 else end, n - 1)
            return s.messages[lo : hi + 1] if lo <= hi else []

        raw: list[str] = self._read(session_id, read, default=[])
        return _decode_all(raw)  # decode outside the lock

    @override
    def _get_message_spans(self, op: GetMessageSpans) -> list[list[dict[str, Any]]]:
        spans = op.spans

        def read(s: _Session) -> list[list[str]]:
            return [s.messages[start : end + 1] for start, end in spans]

        raw: list[list[str]] = self._read(op.session_id, read, default=None) or [[] for _ in spans]
        return [_decode_all(part) for part in raw]  # decode outside the lock

    @override
    def _count_messages(self, op: CountMessages) -> int:
        session_id = op.session_id
        return self._read(session_id, lambda s: len(s.messages), default=0)  # type: ignore[no-any-return]

    @override
    def _get_fetched(self, op: GetFetched) -> dict[str, list[dict[str, Any]]]:
        session_id, source_type = op.session_id, op.source_type

        def read(s: _Session) -> dict[str, list[str]]:
            if source_type is None:
                return {t: list(items) for t, items in s.fetched.items()}
            items = s.fetched.get(source_type)
            return {source_type: list(items)} if items else {}

        raw: dict[str, list[str]] = self._read(session_id, read, default={})
        return {t: _decode_all(items) for t, items in raw.items()}

    @override
    def _append_messages(self, op: AppendMessages) -> WriteResult:
        # The hot path, written out (no closure, no generic _write): its cost is what an
        # in-memory append costs beyond encoding the message. What it adds is gathered
        # off to the side, then published without a call (see the module docstring).
        expired: list[str] = []
        evicted: list[str] = []
        session_id, messages = op.session_id, op.messages
        with self._lock:
            s = self._live(session_id, expired, touch=False)
            created = s is None
            if s is None:
                s = _Session(op.init)
            ids = s.ids
            fresh: Set[str]
            texts: Sequence[str]
            if len(messages) == 1:  # the common case: no loop, no containers to grow
                m = messages[0]
                if m.id in ids:  # a stored id is skipped: appends are idempotent by id
                    fresh, texts, tokens = _NO_IDS, (), 0
                else:
                    fresh, texts, tokens = {m.id}, (m.json,), m.tokens
            else:
                new_ids: set[str] = set()
                new_texts: list[str] = []
                tokens = 0
                for m in messages:
                    if m.id not in ids and m.id not in new_ids:
                        new_ids.add(m.id)
                        new_texts.append(m.json)
                        tokens += m.tokens
                fresh, texts = new_ids, new_texts
            added = len(texts)
            # Appending only known ids is a no-op, and no access (as on the other stores).
            if added or created:
                ttl = self.ttl_seconds
                expires = None if ttl is None else self._clock() + ttl
                meta = s.header["metadata"]
                # Publish: no call before the last step.
                s.messages += texts
                s.ids |= fresh
                meta["message_count"] += added
                meta["token_count"] += tokens
                meta["timestamp"] = op.now
                s.expires_at = expires
                if created:
                    self._place(session_id, s, expired, evicted)
                else:
                    self._sessions.move_to_end(session_id)
        if expired or evicted:
            self._report(expired, evicted)
        return shared_result(created, added, evicted)

    @override
    def _delete_messages(self, op: DeleteMessages) -> int:
        session_id, message_ids, now = op.session_id, op.message_ids, op.now
        doomed = set(message_ids)

        def edit(s: _Session) -> int:
            gone = doomed & s.ids
            if not gone:
                return 0
            kept: list[str] = []
            count, tokens = len(gone), 0
            for raw in s.messages:
                record = json.loads(raw)
                if record.get("id") in gone:
                    tokens += int(record.get("token_count", 0))
                else:
                    kept.append(raw)
            expires = self._expiry()
            meta = s.header["metadata"]
            # Publish: no call before the last step (an edit drops the recall segments).
            s.messages, s.recall_segments, s.expires_at = kept, [], expires
            s.ids -= gone
            meta["message_count"] -= count
            meta["token_count"] -= tokens
            meta["timestamp"] = now
            self._sessions.move_to_end(session_id)  # an edit that finds nothing: no access
            return count

        return int(self._read(session_id, edit, default=0, touch=False))

    @override
    def _replace_message(self, op: ReplaceMessage) -> bool:
        session_id, message_id, message, now = op.session_id, op.message_id, op.message, op.now

        def edit(s: _Session) -> bool:
            found = _position(s, message_id)
            if found is None:
                return False
            index, old = found
            tokens = message.tokens - int(old.get("token_count", 0))
            expires = self._expiry()
            meta = s.header["metadata"]
            # Publish: no call before the last step (an edit drops the recall segments).
            s.messages[index] = message.json
            s.recall_segments, s.expires_at = [], expires
            meta["token_count"] += tokens
            meta["timestamp"] = now
            self._sessions.move_to_end(session_id)  # an edit that finds nothing: no access
            return True

        return bool(self._read(session_id, edit, default=False, touch=False))

    @override
    def _truncate_messages(self, op: TruncateMessages) -> int | None:
        session_id, message_id, inclusive, now = op.session_id, op.message_id, op.inclusive, op.now

        def edit(s: _Session) -> int | None:
            found = _position(s, message_id)
            if found is None:
                return None
            cut = found[0] if inclusive else found[0] + 1
            removed = _decode_all(s.messages[cut:])
            if not removed:
                return 0
            gone = {r.get("id") for r in removed}
            count = len(removed)
            tokens = sum(int(r.get("token_count", 0)) for r in removed)
            expires = self._expiry()
            meta = s.header["metadata"]
            # Publish: no call before the last step (an edit drops the recall segments).
            del s.messages[cut:]
            s.ids -= gone
            s.recall_segments, s.expires_at = [], expires
            meta["message_count"] -= count
            meta["token_count"] -= tokens
            meta["timestamp"] = now
            self._sessions.move_to_end(session_id)  # an edit that finds nothing: no access
            return count

        result: int | None = self._read(session_id, edit, default=None, touch=False)
        return result

    @override
    def _list_page(self, op: ListPage) -> list[str]:
        prefix, cursor, limit = op.prefix, op.cursor, op.limit
        ids = [
            sid
            for sid in self.list_sessions()
            if sid.startswith(prefix) and (cursor is None or sid > cursor)
        ]
        return ids[:limit]

    @override
    def _append_fetched(self, op: AppendFetched) -> WriteResult:
        session_id, items, init, now, dedupe = op.session_id, op.items, op.init, op.now, op.dedupe

        def plan(s: _Session) -> tuple[int, Header, dict[str, list[str]], Set[str]]:
            seen = s.fingerprints
            fresh: set[str] = set()
            new: dict[str, list[str]] = {}
            added = 0
            for item in items:
                if dedupe and (item.fingerprint in seen or item.fingerprint in fresh):
                    continue
                fresh.add(item.fingerprint)
                new.setdefault(item.source_type, []).append(item.json)
                added += 1
            fetched = s.fetched
            if new:  # the lists that grow are copied, the others shared
                fetched = dict(fetched)
                for source_type, texts in new.items():
                    fetched[source_type] = [*fetched.get(source_type, ()), *texts]
            return added, s.header, fetched, fresh

        return self._write(session_id, init, now, plan)

    @override
    def _merge_shared(self, op: MergeShared) -> WriteResult:
        session_id, partial, init, now = op.session_id, op.partial, op.init, op.now
        return self._write_shared(session_id, init, now, lambda s: deep_merge(_clone(s), partial))

    @override
    def _set_shared(self, op: SetShared) -> WriteResult:
        session_id, key, value, init, now = op.session_id, op.key, op.value, op.init, op.now
        copied = _clone(value)
        return self._write_shared(session_id, init, now, lambda s: {**s, key: copied})

    def _write_shared(
        self,
        session_id: str,
        init: Header,
        now: str,
        change: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> WriteResult:
        """Replace ``shared`` by ``change(shared)``, refused whole when it would be too large.

        The size is checked before anything is written (a session created, or another one
        evicted), so a refused write changes nothing, on a missing session too.
        """

        def plan(s: _Session) -> tuple[int, Header, dict[str, list[str]], Set[str]]:
            merged = change(s.header["shared"])  # a new dict: the stored one is unchanged
            check_shared_size(dumps(merged))
            return 0, {**s.header, "shared": merged}, s.fetched, _NO_IDS

        return self._write(session_id, init, now, plan)

    @override
    def _update_header(self, op: UpdateHeader) -> WriteResult:
        session_id, init, now, metadata, system_prompt, set_system_prompt = (
            op.session_id,
            op.init,
            op.now,
            op.metadata,
            op.system_prompt,
            op.set_system_prompt,
        )
        fields = {
            k: v
            for k, v in _clone(dict(metadata or {})).items()
            if k not in ("message_count", "token_count")
        }

        def plan(s: _Session) -> tuple[int, Header, dict[str, list[str]], Set[str]]:
            header: Header = {**s.header, "metadata": {**s.header["metadata"], **fields}}
            if set_system_prompt:
                header["system_prompt"] = system_prompt
            return 0, header, s.fetched, _NO_IDS

        return self._write(session_id, init, now, plan)

    @override
    def _clear(self, op: ClearSession) -> bool:
        session_id, now, preserve_fetched = op.session_id, op.now, op.preserve_fetched

        def apply(s: _Session) -> bool:
            ids: set[str] = set()
            fingerprints: set[str] = set()
            expires = self._expiry()
            meta = s.header["metadata"]
            # Publish: no call before the last step.
            s.messages, s.ids, s.recall_segments, s.expires_at = [], ids, [], expires
            meta["message_count"] = meta["token_count"] = 0
            meta["timestamp"] = now
            if not preserve_fetched:
                s.fetched, s.fingerprints = {}, fingerprints
            self._sessions.move_to_end(session_id)
            return True

        return bool(self._read(session_id, apply, default=False, touch=False))

    @override
    def _replace_document(self, op: ReplaceDocument) -> WriteResult:
        session_id, header, messages, items = op.session_id, op.header, op.messages, op.items
        fresh = _Session(header)
        for m in messages:
            if m.id not in fresh.ids:
                fresh.ids.add(m.id)
                fresh.messages.append(m.json)
        for item in items:
            fresh.fingerprints.add(item.fingerprint)
            fresh.fetched.setdefault(item.source_type, []).append(item.json)
        if self.ttl_seconds is not None:
            fresh.expires_at = self._clock() + self.ttl_seconds
        expired: list[str] = []
        evicted: list[str] = []
        with self._lock:
            created = self._live(session_id, expired, touch=False) is None  # refused: no access
            if op.if_absent and not created:
                return WriteResult(created=False, added=0)
            if created:
                self._place(session_id, fresh, expired, evicted)
            else:  # the session built whole off to the side goes in with one store
                self._sessions[session_id] = fresh
                self._sessions.move_to_end(session_id)
        self._report(expired, evicted)
        return WriteResult(created=created, added=len(fresh.messages), evicted=tuple(evicted))

    @override
    def _gc(self, op: CollectGarbage) -> int:
        expired: list[str] = []
        with self._lock:
            self._drop_expired(expired)
        self._report(expired)
        return len(expired)

    def _unexpired(self, session_id: str) -> _Session | None:
        """The live session, not touched (lock held): recall segments are not an access."""
        session = self._sessions.get(session_id)
        if session is None or (
            session.expires_at is not None and session.expires_at <= self._clock()
        ):
            return None
        return session

    @override
    def _get_recall_segments(self, op: GetRecallSegments) -> list[str]:
        with self._lock:
            session = self._unexpired(op.session_id)
            return [] if session is None else list(session.recall_segments)

    @override
    def _save_recall_segments(self, op: SaveRecallSegments) -> bool:
        with self._lock:
            session = self._unexpired(op.session_id)
            if session is None:
                return False
            if op.replace:
                session.recall_segments = list(op.segments)
            else:
                session.recall_segments.extend(op.segments)
            return True

    @override
    def close(self) -> None:
        """Stop the garbage collector; every operation after this raises ``StoreError``."""
        collector, self._collector = self._collector, None
        if collector is not None:
            collector.stop()
        self._closed = True

    @property
    def gc_running(self) -> bool:
        """Whether the background garbage collector is running."""
        return self._collector is not None and self._collector.running
