"""The in-memory store: one process, thread-safe, with TTL, LRU and a garbage collector."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
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
    from collections.abc import Callable, Sequence

__all__ = ["InMemoryStore"]

logger = logging.getLogger(__name__)


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

    def _upsert(
        self,
        session_id: str,
        init: Header,
        expired: list[str],
        evicted: list[str],
        *,
        touch: bool = True,
    ) -> tuple[_Session, bool]:
        session = self._live(session_id, expired, touch=touch)
        if session is not None:
            return session, False
        session = _Session(init)
        self._sessions[session_id] = session
        if self.max_sessions is not None and len(self._sessions) > self.max_sessions:
            self._drop_expired(expired)  # the limit counts live sessions only
            while len(self._sessions) > self.max_sessions:
                victim, _ = self._sessions.popitem(last=False)
                evicted.append(victim)
        return session, True

    def _drop_expired(self, expired: list[str]) -> None:
        """Delete every expired session (lock held), reporting each as expired."""
        now = self._clock()
        for session_id, session in list(self._sessions.items()):
            if session.expires_at is not None and session.expires_at <= now:
                del self._sessions[session_id]
                expired.append(session_id)

    def _touch(self, session: _Session, now: str) -> None:
        session.header["metadata"]["timestamp"] = now
        if self.ttl_seconds is not None:
            session.expires_at = self._clock() + self.ttl_seconds

    def _report(self, expired: list[str], evicted: Sequence[str] = ()) -> None:
        for session_id in expired:
            self._notify("session_expired", session_id)
        for session_id in evicted:
            self._notify("session_evicted", session_id)

    def _write(
        self,
        session_id: str,
        init: Header,
        now: str,
        apply: Callable[[_Session], int],
    ) -> WriteResult:
        expired: list[str] = []
        evicted: list[str] = []
        with self._lock:
            session, created = self._upsert(session_id, init, expired, evicted)
            added = apply(session)
            self._touch(session, now)
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
        return self._write(session_id, init, init["metadata"]["timestamp"], lambda _s: 0)

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
        # in-memory append costs beyond encoding the message.
        expired: list[str] = []
        evicted: list[str] = []
        with self._lock:
            # Touched (moved to the LRU end) only if it changes: appending only known ids
            # is no access, as on the other stores.
            s, created = self._upsert(op.session_id, op.init, expired, evicted, touch=False)
            ids, stored = s.ids, s.messages
            added = tokens = 0
            for m in op.messages:
                if m.id not in ids:  # a stored id is skipped: appends are idempotent by id
                    ids.add(m.id)
                    stored.append(m.json)
                    added += 1
                    tokens += m.tokens
            if added or created:  # appending only known ids is a no-op
                self._sessions.move_to_end(op.session_id)
                meta = s.header["metadata"]
                meta["message_count"] += added
                meta["token_count"] += tokens
                self._touch(s, op.now)
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
            tokens = 0
            for raw in s.messages:
                record = json.loads(raw)
                if record.get("id") in gone:
                    tokens += int(record.get("token_count", 0))
                else:
                    kept.append(raw)
            s.messages = kept
            s.ids -= gone
            self._counted(session_id, s, -len(gone), -tokens, now)
            return len(gone)

        return int(self._read(session_id, edit, default=0, touch=False))

    @override
    def _replace_message(self, op: ReplaceMessage) -> bool:
        session_id, message_id, message, now = op.session_id, op.message_id, op.message, op.now

        def edit(s: _Session) -> bool:
            found = _position(s, message_id)
            if found is None:
                return False
            index, old = found
            s.messages[index] = message.json
            self._counted(session_id, s, 0, message.tokens - int(old.get("token_count", 0)), now)
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
            del s.messages[cut:]
            s.ids -= {r.get("id") for r in removed}
            if removed:
                tokens = sum(int(r.get("token_count", 0)) for r in removed)
                self._counted(session_id, s, -len(removed), -tokens, now)
            return len(removed)

        result: int | None = self._read(session_id, edit, default=None, touch=False)
        return result

    def _counted(self, session_id: str, s: _Session, messages: int, tokens: int, now: str) -> None:
        """Counters and touch after a history edit (which drops the recall segments).

        The edit is what makes the session recently used: an edit that finds nothing
        to change (an unknown message id) is no access, as on the other stores.
        """
        self._sessions.move_to_end(session_id)
        s.recall_segments = []
        meta = s.header["metadata"]
        meta["message_count"] += messages
        meta["token_count"] += tokens
        self._touch(s, now)

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

        def apply(s: _Session) -> int:
            added = 0
            for item in items:
                if dedupe and item.fingerprint in s.fingerprints:
                    continue
                s.fingerprints.add(item.fingerprint)
                s.fetched.setdefault(item.source_type, []).append(item.json)
                added += 1
            return added

        return self._write(session_id, init, now, apply)

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

        The size is checked before the session is created (or another one evicted), so a
        refused write changes nothing, on a missing session too.
        """
        expired: list[str] = []
        evicted: list[str] = []
        try:
            with self._lock:
                current = self._live(session_id, expired, touch=False)  # refused: no access
                merged = change(current.header["shared"] if current else _clone(init["shared"]))
                check_shared_size(dumps(merged))
                session, created = self._upsert(session_id, init, expired, evicted)
                session.header["shared"] = merged
                self._touch(session, now)
        finally:
            self._report(expired, evicted)
        return WriteResult(created=created, evicted=tuple(evicted))

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

        def apply(s: _Session) -> int:
            s.header["metadata"].update(fields)
            if set_system_prompt:
                s.header["system_prompt"] = system_prompt
            return 0

        return self._write(session_id, init, now, apply)

    @override
    def _clear(self, op: ClearSession) -> bool:
        session_id, now, preserve_fetched = op.session_id, op.now, op.preserve_fetched

        def apply(s: _Session) -> bool:
            s.messages = []
            s.ids = set()
            s.recall_segments = []
            s.header["metadata"]["message_count"] = 0
            s.header["metadata"]["token_count"] = 0
            if not preserve_fetched:
                s.fetched = {}
                s.fingerprints = set()
            self._touch(s, now)
            return True

        return bool(self._read(session_id, apply, default=False))

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
            self._sessions[session_id] = fresh
            self._sessions.move_to_end(session_id)
            if self.max_sessions is not None and len(self._sessions) > self.max_sessions:
                self._drop_expired(expired)
                while len(self._sessions) > self.max_sessions:
                    victim, _ = self._sessions.popitem(last=False)
                    evicted.append(victim)
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
