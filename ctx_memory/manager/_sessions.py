"""Sessions as a whole: creating, metadata, shared state, listing, stats, export and import.

Seed 000's API (``create_session``, ``set_context``, ``update_partial_context``,
``get_context``, ``delete_context``) and the session-level half of seed 001's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ctx_memory.errors import (
    CtxMemoryError,
    DocumentImportError,
    SessionExistsError,
    SessionNotFoundError,
    ValidationError,
)
from ctx_memory.events import EventType
from ctx_memory.records import (
    COMPACTIONS_KEY,
    bad_field,
    check_compaction_entry,
    encode_document,
    metadata_fields,
    session_stats,
)
from ctx_memory.schema import (
    ContextMode,
    check_json_native,
    check_key,
    check_position,
    check_text,
    dumps,
    exported,
    now_iso,
    parse_document,
    validate_session_id,
)
from ctx_memory.stores.base import Header, check_shared_size
from ctx_memory.stores.ops import (
    ClearSession,
    CollectGarbage,
    CreateSession,
    DeleteSession,
    GetDocument,
    GetFetched,
    GetHeader,
    ListPage,
    ListSessions,
    MergeShared,
    ReplaceDocument,
    SessionExists,
    SetShared,
    UpdateHeader,
)

if TYPE_CHECKING:
    from datetime import datetime

    from ctx_memory.stores.base import WriteResult

from ctx_memory.manager._core import ManagerCore
from ctx_memory.manager._edits import live_compactions


class SessionMethods(ManagerCore):
    """Whole-session operations (see :class:`~ctx_memory.manager.ContextManager`)."""

    def _plan_header(
        self,
        session_id: str,
        fields: Mapping[str, Any],
        system_prompt: str | None = None,
        *,
        set_system_prompt: bool = False,
    ) -> UpdateHeader:
        validate_session_id(session_id)
        checked = metadata_fields(fields)
        if set_system_prompt:
            check_text(system_prompt, "system prompt", optional=True)
            tokens = self.token_counter.count(system_prompt) if system_prompt else 0
            checked["system_prompt_tokens"] = tokens
        now = now_iso()
        return UpdateHeader(
            session_id,
            self._init(session_id, now),
            now,
            checked,
            system_prompt,
            set_system_prompt,
        )

    def _plan_create(
        self, session_id: str, system_prompt: str | None, metadata: Mapping[str, Any] | None
    ) -> tuple[CreateSession, list[str]]:
        """The creation, and the fields it sets beyond a fresh header's (for the event).

        The system prompt and metadata go into the header the session is created with, so
        a session that exists already is left exactly as it is.
        """
        validate_session_id(session_id)
        init = self._init(session_id, now_iso())
        fields: list[str] = []
        if metadata:
            checked = metadata_fields(metadata)
            init["metadata"].update(checked)
            fields += sorted(checked)
        if system_prompt is not None:
            check_text(system_prompt, "system prompt", optional=True)
            init["system_prompt"] = system_prompt
            tokens = self.token_counter.count(system_prompt) if system_prompt else 0
            init["metadata"]["system_prompt_tokens"] = tokens
            fields.append("system_prompt")
        return CreateSession(session_id, init), fields

    def _finish_create(self, op: CreateSession, result: WriteResult, fields: list[str]) -> bool:
        self._created(op.session_id, result)
        if result.created and fields:
            self.events.emit(EventType.METADATA_UPDATED, op.session_id, fields=fields)
        return result.created

    def _finish_header(self, op: UpdateHeader, result: WriteResult) -> None:
        self._created(op.session_id, result)
        changed = sorted(k for k in op.metadata if k != "system_prompt_tokens")
        if op.set_system_prompt:
            changed.append("system_prompt")
        self.events.emit(EventType.METADATA_UPDATED, op.session_id, fields=changed)

    def create_session(
        self,
        session_id: str,
        *,
        system_prompt: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> bool:
        """Create a session; return whether it was created.

        ``system_prompt`` and ``metadata`` are the new session's. A session that exists
        already keeps its prompt, metadata and content (use :meth:`set_system_prompt` and
        :meth:`update_metadata` to change them); it is only touched (its ``timestamp`` and
        TTL renewed, like any write), and ``False`` is returned.
        """
        op, fields = self._plan_create(session_id, system_prompt, metadata)
        return self._finish_create(op, self._execute(op), fields)

    async def acreate_session(
        self,
        session_id: str,
        *,
        system_prompt: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> bool:
        """Async :meth:`create_session`."""
        op, fields = self._plan_create(session_id, system_prompt, metadata)
        return self._finish_create(op, await self._aexecute(op), fields)

    @staticmethod
    def _metadata_given(
        mode: ContextMode | str | None,
        current_url: str | None,
        user_timezone: str | None,
        user_time: str | datetime | None,
        extra: Mapping[str, Any],
    ) -> dict[str, Any]:
        named = {
            "mode": mode,
            "current_url": current_url,
            "user_timezone": user_timezone,
            "user_time": user_time,
        }
        return {**{k: v for k, v in named.items() if v is not None}, **extra}

    def update_metadata(
        self,
        session_id: str,
        *,
        mode: ContextMode | str | None = None,
        current_url: str | None = None,
        user_timezone: str | None = None,
        user_time: str | datetime | None = None,
        **extra: Any,
    ) -> None:
        """Set metadata fields (seed 001); ``None`` arguments leave a field unchanged.

        Extra keyword arguments are stored as extra metadata keys. Counters, timestamps
        and ``session_id`` belong to ctx_memory and are rejected.
        """
        fields = self._metadata_given(mode, current_url, user_timezone, user_time, extra)
        op = self._plan_header(session_id, fields)
        self._finish_header(op, self._execute(op))

    async def aupdate_metadata(
        self,
        session_id: str,
        *,
        mode: ContextMode | str | None = None,
        current_url: str | None = None,
        user_timezone: str | None = None,
        user_time: str | datetime | None = None,
        **extra: Any,
    ) -> None:
        """Async :meth:`update_metadata`."""
        fields = self._metadata_given(mode, current_url, user_timezone, user_time, extra)
        op = self._plan_header(session_id, fields)
        self._finish_header(op, await self._aexecute(op))

    def set_system_prompt(self, session_id: str, prompt: str | None) -> None:
        """Set (or with ``None`` remove) the session's system prompt."""
        op = self._plan_header(session_id, {}, prompt, set_system_prompt=True)
        self._finish_header(op, self._execute(op))

    async def aset_system_prompt(self, session_id: str, prompt: str | None) -> None:
        """Async :meth:`set_system_prompt`."""
        op = self._plan_header(session_id, {}, prompt, set_system_prompt=True)
        self._finish_header(op, await self._aexecute(op))

    def _plan_set_context(self, session_id: str, key: str, value: Any) -> SetShared:
        validate_session_id(session_id)
        _check_top_keys([key])
        _refuse_reserved([key], reserved=False)
        _check_shared_values({key: value})
        check_shared_size(dumps({key: value}))  # a new session holds just this
        now = now_iso()
        return SetShared(session_id, key, value, self._init(session_id, now), now)

    def _plan_merge(
        self, session_id: str, partial: Mapping[str, Any], reserved: bool
    ) -> MergeShared:
        validate_session_id(session_id)
        if not isinstance(partial, Mapping):
            msg = f"partial context must be a mapping, got {type(partial).__name__}"
            raise ValidationError(msg)
        _check_top_keys(partial)
        _refuse_reserved(partial, reserved=reserved)
        if COMPACTIONS_KEY in partial:  # a reserved write: whole entries or tombstones
            entries = partial[COMPACTIONS_KEY]
            if not isinstance(entries, Mapping):
                raise bad_field("entries", f"must be a mapping, got {type(entries).__name__}")
            for key, entry in entries.items():
                check_compaction_entry(key, entry)
        _check_shared_values(partial)
        check_shared_size(dumps(dict(partial)))  # a new session holds just this
        now = now_iso()
        return MergeShared(session_id, dict(partial), self._init(session_id, now), now)

    def _finish_shared(self, op: SetShared | MergeShared, result: WriteResult) -> None:
        self._created(op.session_id, result)
        keys = [op.key] if isinstance(op, SetShared) else sorted(op.partial)
        self.events.emit(EventType.CONTEXT_UPDATED, op.session_id, keys=keys)

    def set_context(self, session_id: str, key: str, value: Any) -> None:
        """Set ``shared[key] = value`` (seed 000), creating the session if needed."""
        op = self._plan_set_context(session_id, key, value)
        self._finish_shared(op, self._execute(op))

    async def aset_context(self, session_id: str, key: str, value: Any) -> None:
        """Async :meth:`set_context`."""
        op = self._plan_set_context(session_id, key, value)
        self._finish_shared(op, await self._aexecute(op))

    def update_partial_context(
        self, session_id: str, partial_context: Mapping[str, Any], *, reserved: bool = False
    ) -> None:
        """Recursively merge ``partial_context`` into the session's ``shared`` state.

        Nested dicts merge key by key; any other value (lists included) replaces what was
        there. Atomic: concurrent merges of different keys never lose each other.

        Top-level keys starting with ``ctx_memory.`` belong to ctx_memory's own features
        (``ctx_memory.compactions``, see :mod:`ctx_memory.compaction`) and are refused
        unless ``reserved`` is true, which only those features pass.

        Raises:
            ValidationError: A value every store would refuse, or a reserved key.
        """
        op = self._plan_merge(session_id, partial_context, reserved)
        self._finish_shared(op, self._execute(op))

    async def aupdate_partial_context(
        self, session_id: str, partial_context: Mapping[str, Any], *, reserved: bool = False
    ) -> None:
        """Async :meth:`update_partial_context`."""
        op = self._plan_merge(session_id, partial_context, reserved)
        self._finish_shared(op, await self._aexecute(op))

    def get_context(self, session_id: str) -> dict[str, Any]:
        """The whole session document as a dict; ``{}`` if the session does not exist."""
        validate_session_id(session_id, existing=True)
        return self._execute(GetDocument(session_id)) or {}

    async def aget_context(self, session_id: str) -> dict[str, Any]:
        """Async :meth:`get_context`."""
        validate_session_id(session_id, existing=True)
        return await self._aexecute(GetDocument(session_id)) or {}

    def _finish_delete(self, session_id: str, existed: bool) -> bool:
        if existed:
            self.events.emit(EventType.SESSION_DELETED, session_id)
        return existed

    def delete_context(self, session_id: str) -> bool:
        """Delete the session; return whether it existed."""
        validate_session_id(session_id, existing=True)
        return self._finish_delete(session_id, self._execute(DeleteSession(session_id)))

    async def adelete_context(self, session_id: str) -> bool:
        """Async :meth:`delete_context`."""
        validate_session_id(session_id, existing=True)
        return self._finish_delete(session_id, await self._aexecute(DeleteSession(session_id)))

    # Seed 000 spells its async twins ``async_*``.
    async_create_session = acreate_session

    async_set_context = aset_context

    async_update_partial_context = aupdate_partial_context

    async_get_context = aget_context

    async_delete_context = adelete_context

    def get_header(self, session_id: str) -> Header | None:
        """System prompt, metadata and shared state without history or sources."""
        validate_session_id(session_id, existing=True)
        return self._execute(GetHeader(session_id))

    async def aget_header(self, session_id: str) -> Header | None:
        """Async :meth:`get_header`."""
        validate_session_id(session_id, existing=True)
        return await self._aexecute(GetHeader(session_id))

    def get_metadata(self, session_id: str) -> dict[str, Any]:
        """The ``metadata`` section; ``{}`` if the session does not exist."""
        header = self.get_header(session_id)
        return header["metadata"] if header else {}

    async def aget_metadata(self, session_id: str) -> dict[str, Any]:
        """Async :meth:`get_metadata`."""
        header = await self.aget_header(session_id)
        return header["metadata"] if header else {}

    def get_system_prompt(self, session_id: str) -> str | None:
        """The session's system prompt, or ``None``."""
        header = self.get_header(session_id)
        return header["system_prompt"] if header else None

    async def aget_system_prompt(self, session_id: str) -> str | None:
        """Async :meth:`get_system_prompt`."""
        header = await self.aget_header(session_id)
        return header["system_prompt"] if header else None

    def _finish_clear(self, op: ClearSession, existed: bool) -> bool:
        if existed:
            self.events.emit(
                EventType.SESSION_CLEARED, op.session_id, preserve_fetched=op.preserve_fetched
            )
        return existed

    @staticmethod
    def _plan_clear(session_id: str, preserve_fetched: bool) -> ClearSession:
        validate_session_id(session_id, existing=True)
        return ClearSession(session_id, now_iso(), preserve_fetched)

    def clear(self, session_id: str, preserve_fetched: bool = False) -> bool:
        """Drop the history (and fetched context unless ``preserve_fetched``).

        System prompt, metadata and shared state stay; counters restart at zero. The
        compactions of the history (:mod:`ctx_memory.compaction`: summaries of its text)
        go with it: removed before the history, so that a clear cut short leaves the
        history as it was without them, and once more after it (one written meanwhile).
        Returns whether the session existed.
        """
        op = self._plan_clear(session_id, preserve_fetched)
        self._remove_compactions(session_id)
        existed = self._execute(op)
        if existed:
            self._remove_compactions(session_id)
        return self._finish_clear(op, existed)

    async def aclear(self, session_id: str, preserve_fetched: bool = False) -> bool:
        """Async :meth:`clear`."""
        op = self._plan_clear(session_id, preserve_fetched)
        await self._aremove_compactions(session_id)
        existed = await self._aexecute(op)
        if existed:
            await self._aremove_compactions(session_id)
        return self._finish_clear(op, existed)

    def _remove_compactions(self, session_id: str) -> None:
        """Tombstone every live compaction of the session (the history is going)."""
        if tombstones := live_compactions(self.get_header(session_id)):
            self.update_partial_context(session_id, {COMPACTIONS_KEY: tombstones}, reserved=True)

    async def _aremove_compactions(self, session_id: str) -> None:
        """Async :meth:`_remove_compactions`."""
        if tombstones := live_compactions(await self.aget_header(session_id)):
            await self.aupdate_partial_context(
                session_id, {COMPACTIONS_KEY: tombstones}, reserved=True
            )

    def session_exists(self, session_id: str) -> bool:
        """Whether the session exists (and has not expired)."""
        validate_session_id(session_id, existing=True)
        return self._execute(SessionExists(session_id))

    async def asession_exists(self, session_id: str) -> bool:
        """Async :meth:`session_exists`."""
        validate_session_id(session_id, existing=True)
        return await self._aexecute(SessionExists(session_id))

    @staticmethod
    def _plan_list(prefix: str, limit: int | None, cursor: str | None) -> ListSessions | ListPage:
        check_key(prefix, "prefix")
        check_key(cursor, "cursor", optional=True)
        if limit is None:
            return ListSessions()
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            msg = f"limit must be a positive int or None, got {limit!r}"
            raise ValidationError(msg)
        return ListPage(check_position(limit, "limit"), prefix, cursor)

    @staticmethod
    def _finish_list(ids: list[str], prefix: str, cursor: str | None) -> list[str]:
        return [s for s in ids if s.startswith(prefix) and (cursor is None or s > cursor)]

    def list_sessions(
        self, prefix: str = "", *, limit: int | None = None, cursor: str | None = None
    ) -> list[str]:
        """Ids of live sessions, sorted; those starting with ``prefix``; a page with ``limit``.

        Paging: ``list_sessions(limit=50)`` is the first page; pass its last id as
        ``cursor`` for the next (a page shorter than ``limit`` is the last). A page costs
        O(limit) on SQLite and Redis, whatever the number of sessions.
        """
        op = self._plan_list(prefix, limit, cursor)
        return self._finish_list(self._execute(op), prefix, cursor)

    async def alist_sessions(
        self, prefix: str = "", *, limit: int | None = None, cursor: str | None = None
    ) -> list[str]:
        """Async :meth:`list_sessions`."""
        op = self._plan_list(prefix, limit, cursor)
        return self._finish_list(await self._aexecute(op), prefix, cursor)

    def gc(self) -> int:
        """Remove expired sessions now; return how many."""
        return self._execute(CollectGarbage())

    async def agc(self) -> int:
        """Async :meth:`gc`."""
        return await self._aexecute(CollectGarbage())

    def _store_stats(self, sessions: list[str]) -> dict[str, Any]:
        return {
            "store": self.store.name,
            "session_count": len(sessions),
            # The store's own limits (a store passed in need not follow the settings).
            "max_sessions": getattr(self.store, "max_sessions", self.settings.max_sessions),
            "ttl_seconds": getattr(self.store, "ttl_seconds", self.settings.ttl_seconds),
            "token_encoding": self.token_counter.encoding_name,
            "event_emission": self.events.enabled,
            "sessions_expired": self._lifecycle_counts["session_expired"],
            "sessions_evicted": self._lifecycle_counts["session_evicted"],
        }

    def get_memory_stats(self, session_id: str | None = None) -> dict[str, Any]:
        """Statistics for one session (from cached counts), or for the store if ``None``."""
        if session_id is None:
            return self._store_stats(self._execute(ListSessions()))
        header = self.get_header(session_id)
        fetched = {} if header is None else self._execute(GetFetched(session_id))
        return session_stats(session_id, header, fetched, self.store.name)

    async def aget_memory_stats(self, session_id: str | None = None) -> dict[str, Any]:
        """Async :meth:`get_memory_stats`."""
        if session_id is None:
            return self._store_stats(await self._aexecute(ListSessions()))
        header = await self.aget_header(session_id)
        fetched = {} if header is None else await self._aexecute(GetFetched(session_id))
        return session_stats(session_id, header, fetched, self.store.name)

    @staticmethod
    def _exported(session_id: str, document: dict[str, Any], indent: int | None) -> str:
        if not document:
            raise SessionNotFoundError(session_id)
        return json.dumps(exported(document), ensure_ascii=False, indent=indent)

    def export_session(self, session_id: str, *, indent: int | None = 2) -> str:
        """The session document as JSON text, with its ``format_version``.

        Raises:
            SessionNotFoundError: No such session.
        """
        return self._exported(session_id, self.get_context(session_id), indent)

    async def aexport_session(self, session_id: str, *, indent: int | None = 2) -> str:
        """Async :meth:`export_session`."""
        return self._exported(session_id, await self.aget_context(session_id), indent)

    def _plan_import(
        self, data: str | bytes | Mapping[str, Any], session_id: str | None, overwrite: bool
    ) -> ReplaceDocument:
        document = parse_document(data)
        target = session_id if session_id is not None else document.metadata.session_id
        try:
            validate_session_id(target)
        except CtxMemoryError as e:
            msg = f"invalid session document at metadata.session_id: {e}"
            raise DocumentImportError("metadata.session_id", msg) from e
        header, messages, items = encode_document(document, target, self.token_counter)
        return ReplaceDocument(target, header, messages, items, if_absent=not overwrite)

    def _finish_import(self, op: ReplaceDocument, result: WriteResult) -> str:
        if op.if_absent and not result.created:  # checked and refused in the write itself
            raise SessionExistsError(op.session_id)
        self._created(op.session_id, result)
        self.events.emit(EventType.CONTEXT_UPDATED, op.session_id, imported=True)
        return op.session_id

    def import_session(
        self,
        data: str | bytes | Mapping[str, Any],
        *,
        session_id: str | None = None,
        overwrite: bool = True,
    ) -> str:
        """Validate an exported document and store it whole; return its session id.

        Token counts are recomputed with this manager's encoding, so imported counts are
        always exact. Nothing is written unless the whole document is valid.

        Raises:
            DocumentImportError: Malformed JSON or a wrong shape (names the field), or
                (:class:`~ctx_memory.errors.SessionExistsError`) the session exists and
                ``overwrite`` is false: checked in the same atomic write, so of imports of
                one new id at once exactly one succeeds.
        """
        op = self._plan_import(data, session_id, overwrite)
        return self._finish_import(op, self._execute(op))

    async def aimport_session(
        self,
        data: str | bytes | Mapping[str, Any],
        *,
        session_id: str | None = None,
        overwrite: bool = True,
    ) -> str:
        """Async :meth:`import_session`."""
        op = self._plan_import(data, session_id, overwrite)
        return self._finish_import(op, await self._aexecute(op))


RESERVED_PREFIX = "ctx_memory."
"""Top-level ``shared`` keys with this prefix are written only by ctx_memory's own features."""


def _refuse_reserved(keys: Iterable[object], *, reserved: bool) -> None:
    if reserved:
        return
    for key in keys:
        if isinstance(key, str) and key.startswith(RESERVED_PREFIX):
            msg = (
                f"shared key {key!r} is reserved: keys starting with {RESERVED_PREFIX!r} belong"
                " to ctx_memory's own features (compactions)"
            )
            raise ValidationError(msg)


def _check_top_keys(keys: Iterable[object]) -> None:
    """A key of ``shared`` itself is a non-empty str (``set_context`` could not name ``""``)."""
    for key in keys:
        if not isinstance(key, str) or not key:
            msg = f"context key must be a non-empty str, got {key!r}"
            raise ValidationError(msg)


def _check_shared_values(values: Mapping[str, Any]) -> None:
    """Keys of ``shared`` and their values, checked alike by ``set_context`` and a merge.

    A value's depth counts from the value itself, so ``set_context(sid, k, v)`` and
    ``update_partial_context(sid, {k: v})`` take the same ``v``.
    """
    for key, value in values.items():
        check_text(key, "shared key")
        check_json_native(value, f"shared.{key}")
