"""The ContextManager: both seeds' API on top of any store.

Each public method is three steps: *plan* (validate and encode the input into one typed
operation of :mod:`ctx_memory.stores.ops`, pure, before anything is written), *execute*
(one call of :meth:`BaseStore.execute <ctx_memory.stores.base.BaseStore.execute>`, or
:meth:`~ctx_memory.stores.base.BaseStore.aexecute` in the async twin) and *finish* (turn
the result into the return value and events, pure). The sync and async twins share the
plan and finish helpers and differ only by ``await`` (a test checks that).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ctx_memory.config import Settings, load_settings, setting_differences, with_overrides
from ctx_memory.errors import (
    ConfigurationError,
    CtxMemoryError,
    DocumentImportError,
    MessageNotFoundError,
    SessionNotFoundError,
    ValidationError,
)
from ctx_memory.events import EventEmitter, EventType
from ctx_memory.records import (
    api_message,
    assistant_record,
    build_record,
    encode_document,
    encode_item,
    encode_items,
    encode_record,
    metadata_fields,
    records_from,
    session_stats,
)
from ctx_memory.schema import (
    ContextMode,
    check_json_native,
    check_text,
    dumps,
    exported,
    now_iso,
    parse_document,
    record_to_message,
    validate_session_id,
)
from ctx_memory.stores import create_store
from ctx_memory.stores.base import Closeable, EncodedItem, Header, check_shared_size, new_header
from ctx_memory.stores.ops import (
    AppendFetched,
    AppendMessages,
    ClearSession,
    CollectGarbage,
    CreateSession,
    DeleteMessages,
    DeleteSession,
    GetDocument,
    GetFetched,
    GetHeader,
    GetMessages,
    ListPage,
    ListSessions,
    MergeShared,
    Op,
    ReplaceDocument,
    ReplaceMessage,
    SessionExists,
    SetShared,
    TruncateMessages,
    UpdateHeader,
)
from ctx_memory.tokens import TokenCounter

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from langchain_core.messages import BaseMessage

    from ctx_memory.events import Event
    from ctx_memory.stores.base import BaseStore, WriteResult

__all__ = ["ContextManager", "get_context_manager", "reset_context_manager"]

R = TypeVar("R")

logger = logging.getLogger("ctx_memory")

Content = str | list[str | dict[str, Any]]


class ContextManager(Closeable):
    """Per-session context for LLM apps: history, fetched sources, metadata, shared state.

    Both seeds' APIs on one object. Settings come from Dynaconf (``settings.toml``,
    ``.secrets.toml``, ``CTX_MEMORY_*``); keyword arguments override them; ``store``
    overrides the backend the settings would pick.

    Args:
        settings: Validated settings (default: :func:`~ctx_memory.config.load_settings`).
        store: A store to use instead of the one settings select, or a backend name
            (``"memory"``, ``"sqlite"``, ``"redis"``) overriding the ``STORE`` setting.
        counter: A token counter to use instead of the one settings select.
        events: An event emitter to share (default: a new one).
        **overrides: Setting values by name, e.g. ``max_sessions=500``.

    Example:
        .. code-block:: python

            from ctx_memory import ContextManager, ContextMode

            with ContextManager() as cm:
                cm.update_metadata("s1", mode=ContextMode.THINKING, current_url="https://a.example")
                cm.add_user_message("s1", "How do I book a flight?")
                cm.add_assistant_message("s1", "Pick a date first.", model="gpt-4o-mini")
                messages = cm.get_formatted_messages_for_api("s1")
                assert [m["role"] for m in messages] == ["user", "assistant"]
                assert cm.get_memory_stats("s1")["message_count"] == 2
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        store: BaseStore | str | None = None,
        counter: TokenCounter | None = None,
        events: EventEmitter | None = None,
        **overrides: Any,
    ) -> None:
        if isinstance(store, str):
            overrides["store"] = store
            store = None
        if settings is None:
            settings = load_settings(**overrides)
        elif overrides:
            settings = with_overrides(settings, **overrides)
        self.settings = settings
        self.events = events or EventEmitter(enabled=settings.event_emission)
        self.store = store if store is not None else create_store(settings)
        self._lifecycle_counts = {"session_expired": 0, "session_evicted": 0}
        self._remove_hook = self.store.add_lifecycle_hook(self._on_lifecycle, key=self.events)
        self._store_listeners = self.store.event_listeners()
        for listener in self._store_listeners:
            self.events.on(None, listener)
        self._token_counter = counter
        self._counter_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ContextManager(store={self.store!r})"

    # ----------------------------------------------------------------- plumbing

    @property
    def async_enabled(self) -> bool:
        """Whether async twins use the store's native async I/O (``ASYNC_OPERATIONS``).

        When false the async methods still work: they run the sync store call in a
        worker thread.
        """
        return self.settings.async_operations

    @property
    def token_counter(self) -> TokenCounter:
        """The counter used for every write (built on first use from settings)."""
        if self._token_counter is None:
            with self._counter_lock:
                if self._token_counter is None:
                    s = self.settings
                    self._token_counter = TokenCounter(
                        s.default_model,
                        encoding=s.token_encoding,
                        approximate=s.token_counter == "approximate",
                    )
        return self._token_counter

    def _execute(self, op: Op[R]) -> R:
        return self.store.execute(op)

    async def _aexecute(self, op: Op[R]) -> R:
        if self.settings.async_operations:
            return await self.store.aexecute(op)
        return await asyncio.to_thread(self.store.execute, op)

    def _on_lifecycle(self, event_type: str, session_id: str) -> None:
        if event_type in self._lifecycle_counts:
            self._lifecycle_counts[event_type] += 1
            why = "expired (TTL)" if event_type == "session_expired" else "evicted (LRU)"
            logger.info("ctx_memory: session %r %s on %s store", session_id, why, self.store.name)
        self.events.emit(event_type, session_id)

    def _init(self, session_id: str, now: str) -> Header:
        return new_header(session_id, now=now, encoding=self.token_counter.encoding_name)

    def _created(self, session_id: str, result: WriteResult) -> None:
        if result.created:
            self.events.emit(EventType.SESSION_CREATED, session_id)

    def on(
        self, event_type: EventType | str | None, listener: Callable[[Event], None]
    ) -> Callable[[], None]:
        """Register an event listener (``None``/``"*"`` for all); returns an unsubscriber."""
        return self.events.on(event_type, listener)

    def add_event_listener(
        self, listener: Callable[[Event], None], event_type: EventType | str | None = None
    ) -> Callable[[], None]:
        """Seed 000's name for :meth:`on` (listener first; all events by default)."""
        return self.events.on(event_type, listener)

    def remove_event_listener(
        self, listener: Callable[[Event], None], event_type: EventType | str | None = None
    ) -> None:
        """Remove a listener added with :meth:`add_event_listener`."""
        self.events.off(event_type, listener)

    # ----------------------------------------------------------------- header writes

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
    ) -> CreateSession | UpdateHeader:
        if system_prompt is None and not metadata:
            validate_session_id(session_id)
            return CreateSession(session_id, self._init(session_id, now_iso()))
        return self._plan_header(
            session_id,
            metadata or {},
            system_prompt,
            set_system_prompt=system_prompt is not None,
        )

    def _finish_header(self, op: CreateSession | UpdateHeader, result: WriteResult) -> bool:
        self._created(op.session_id, result)
        if isinstance(op, UpdateHeader):
            changed = sorted(k for k in op.metadata if k != "system_prompt_tokens")
            if op.set_system_prompt:
                changed.append("system_prompt")
            self.events.emit(EventType.METADATA_UPDATED, op.session_id, fields=changed)
        return result.created

    def create_session(
        self,
        session_id: str,
        *,
        system_prompt: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> bool:
        """Create a session (no change if it exists); return whether it was created."""
        op = self._plan_create(session_id, system_prompt, metadata)
        return self._finish_header(op, self._execute(op))

    async def acreate_session(
        self,
        session_id: str,
        *,
        system_prompt: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> bool:
        """Async :meth:`create_session`."""
        op = self._plan_create(session_id, system_prompt, metadata)
        return self._finish_header(op, await self._aexecute(op))

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

    # ----------------------------------------------------------------- shared state

    def _plan_set_context(self, session_id: str, key: str, value: Any) -> SetShared:
        validate_session_id(session_id)
        if not isinstance(key, str) or not key:
            msg = f"context key must be a non-empty str, got {key!r}"
            raise ValidationError(msg)
        check_text(key, "shared key")
        check_json_native(value, f"shared.{key}")
        check_shared_size(dumps({key: value}))  # a new session holds just this
        now = now_iso()
        return SetShared(session_id, key, value, self._init(session_id, now), now)

    def _plan_merge(self, session_id: str, partial: Mapping[str, Any]) -> MergeShared:
        validate_session_id(session_id)
        if not isinstance(partial, Mapping):
            msg = f"partial context must be a mapping, got {type(partial).__name__}"
            raise ValidationError(msg)
        check_json_native(dict(partial), "shared")
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

    def update_partial_context(self, session_id: str, partial_context: Mapping[str, Any]) -> None:
        """Recursively merge ``partial_context`` into the session's ``shared`` state.

        Nested dicts merge key by key; any other value (lists included) replaces what was
        there. Atomic: concurrent merges of different keys never lose each other.
        """
        op = self._plan_merge(session_id, partial_context)
        self._finish_shared(op, self._execute(op))

    async def aupdate_partial_context(
        self, session_id: str, partial_context: Mapping[str, Any]
    ) -> None:
        """Async :meth:`update_partial_context`."""
        op = self._plan_merge(session_id, partial_context)
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

    # ----------------------------------------------------------------- history writes

    def _plan_append(self, session_id: str, records: list[dict[str, Any]]) -> AppendMessages | None:
        validate_session_id(session_id)
        counter = self.token_counter
        encoded = [encode_record(r, counter, f"messages[{i}]") for i, r in enumerate(records)]
        if not encoded:
            return None
        now = now_iso()
        return AppendMessages(session_id, encoded, self._init(session_id, now), now)

    def _finish_append(
        self, op: AppendMessages, result: WriteResult, records: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        self._created(op.session_id, result)
        if result.added:
            self.events.emit(
                EventType.MESSAGE_ADDED,
                op.session_id,
                count=result.added,
                roles=[r["role"] for r in records],
                tokens=sum(m.tokens for m in op.messages),
            )
        return records

    def _append(self, session_id: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        op = self._plan_append(session_id, records)
        if op is None:
            return records
        return self._finish_append(op, self._execute(op), records)

    async def _aappend(
        self, session_id: str, records: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        op = self._plan_append(session_id, records)
        if op is None:
            return records
        return self._finish_append(op, await self._aexecute(op), records)

    def add_message(
        self,
        session_id: str,
        role: str,
        content: Content,
        *,
        metadata: Mapping[str, Any] | None = None,
        name: str | None = None,
        timestamp: str | datetime | None = None,
    ) -> dict[str, Any]:
        """Append one message with any role; return the stored record."""
        record = build_record(role, content, metadata=metadata, timestamp=timestamp, name=name)
        return self._append(session_id, [record])[0]

    async def aadd_message(
        self,
        session_id: str,
        role: str,
        content: Content,
        *,
        metadata: Mapping[str, Any] | None = None,
        name: str | None = None,
        timestamp: str | datetime | None = None,
    ) -> dict[str, Any]:
        """Async :meth:`add_message`."""
        record = build_record(role, content, metadata=metadata, timestamp=timestamp, name=name)
        return (await self._aappend(session_id, [record]))[0]

    def add_user_message(
        self,
        session_id: str,
        content: Content,
        *,
        metadata: Mapping[str, Any] | None = None,
        timestamp: str | datetime | None = None,
    ) -> dict[str, Any]:
        """Append the user's message (seed 001); return the stored record."""
        record = build_record("user", content, metadata=metadata, timestamp=timestamp)
        return self._append(session_id, [record])[0]

    async def aadd_user_message(
        self,
        session_id: str,
        content: Content,
        *,
        metadata: Mapping[str, Any] | None = None,
        timestamp: str | datetime | None = None,
    ) -> dict[str, Any]:
        """Async :meth:`add_user_message`."""
        record = build_record("user", content, metadata=metadata, timestamp=timestamp)
        return (await self._aappend(session_id, [record]))[0]

    def add_assistant_message(
        self,
        session_id: str,
        content: Content,
        *,
        model: str | None = None,
        response_time_ms: float | None = None,
        sources_used: Sequence[Any] | None = None,
        tools_used: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        timestamp: str | datetime | None = None,
    ) -> dict[str, Any]:
        """Append the assistant's reply with what produced it (seed 001)."""
        record = assistant_record(
            content,
            model=model,
            response_time_ms=response_time_ms,
            sources_used=sources_used,
            tools_used=tools_used,
            metadata=metadata,
            timestamp=timestamp,
        )
        return self._append(session_id, [record])[0]

    async def aadd_assistant_message(
        self,
        session_id: str,
        content: Content,
        *,
        model: str | None = None,
        response_time_ms: float | None = None,
        sources_used: Sequence[Any] | None = None,
        tools_used: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        timestamp: str | datetime | None = None,
    ) -> dict[str, Any]:
        """Async :meth:`add_assistant_message`."""
        record = assistant_record(
            content,
            model=model,
            response_time_ms=response_time_ms,
            sources_used=sources_used,
            tools_used=tools_used,
            metadata=metadata,
            timestamp=timestamp,
        )
        return (await self._aappend(session_id, [record]))[0]

    def add_messages(
        self,
        session_id: str,
        messages: Sequence[BaseMessage | Mapping[str, Any]],
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Append LangChain messages (or message dicts) atomically, in order."""
        return self._append(session_id, records_from(messages, metadata))

    async def aadd_messages(
        self,
        session_id: str,
        messages: Sequence[BaseMessage | Mapping[str, Any]],
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Async :meth:`add_messages`."""
        return await self._aappend(session_id, records_from(messages, metadata))

    # ----------------------------------------------------------------- history edits

    @staticmethod
    def _plan_delete_message(session_id: str, message_id: str) -> DeleteMessages:
        validate_session_id(session_id, existing=True)
        check_text(message_id, "message_id")
        return DeleteMessages(session_id, [message_id], now_iso())

    def _finish_edit(self, session_id: str, action: str, message_id: str, count: int) -> None:
        if count:
            self.events.emit(
                EventType.HISTORY_EDITED,
                session_id,
                action=action,
                message_id=message_id,
                count=count,
            )

    def delete_message(self, session_id: str, message_id: str) -> bool:
        """Remove one message by id, atomically (counters follow); return whether it was there."""
        op = self._plan_delete_message(session_id, message_id)
        removed = self._execute(op)
        self._finish_edit(session_id, "delete", message_id, removed)
        return bool(removed)

    async def adelete_message(self, session_id: str, message_id: str) -> bool:
        """Async :meth:`delete_message`."""
        op = self._plan_delete_message(session_id, message_id)
        removed = await self._aexecute(op)
        self._finish_edit(session_id, "delete", message_id, removed)
        return bool(removed)

    def _plan_replace(
        self,
        session_id: str,
        message_id: str,
        message: BaseMessage | Mapping[str, Any],
        metadata: Mapping[str, Any] | None,
    ) -> tuple[ReplaceMessage, dict[str, Any]]:
        validate_session_id(session_id, existing=True)
        check_text(message_id, "message_id")
        (record,) = records_from([message], metadata)
        record["id"] = message_id  # the replacement takes the message's place and identity
        encoded = encode_record(record, self.token_counter, "message")
        return ReplaceMessage(session_id, message_id, encoded, now_iso()), record

    def _finish_replace(self, op: ReplaceMessage, found: bool) -> None:
        if not found:
            raise MessageNotFoundError(op.session_id, op.message_id)
        self._finish_edit(op.session_id, "replace", op.message_id, 1)

    def replace_message(
        self,
        session_id: str,
        message_id: str,
        message: BaseMessage | Mapping[str, Any],
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Put ``message`` in the place of the message with ``message_id``; return the record.

        The replacement keeps the id (and the position) of the message it replaces, so an
        edited question is still the same turn; ``token_count`` follows. Atomic.

        Raises:
            MessageNotFoundError: No message of the session has that id.
        """
        op, record = self._plan_replace(session_id, message_id, message, metadata)
        self._finish_replace(op, self._execute(op))
        return record

    async def areplace_message(
        self,
        session_id: str,
        message_id: str,
        message: BaseMessage | Mapping[str, Any],
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Async :meth:`replace_message`."""
        op, record = self._plan_replace(session_id, message_id, message, metadata)
        self._finish_replace(op, await self._aexecute(op))
        return record

    @staticmethod
    def _plan_truncate(session_id: str, message_id: str, inclusive: bool) -> TruncateMessages:
        validate_session_id(session_id, existing=True)
        check_text(message_id, "message_id")
        return TruncateMessages(session_id, message_id, inclusive, now_iso())

    def _finish_truncate(self, op: TruncateMessages, removed: int | None) -> int:
        if removed is None:
            raise MessageNotFoundError(op.session_id, op.message_id)
        self._finish_edit(op.session_id, "truncate", op.message_id, removed)
        return removed

    def truncate_after(self, session_id: str, message_id: str, *, inclusive: bool = False) -> int:
        """Remove every message after ``message_id`` (and it too with ``inclusive``).

        For a chat UI: regenerate an answer (truncate after the question, then ask again)
        or edit the last question (:meth:`replace_message`, then truncate after it).
        Atomic, counters follow. Returns how many messages were removed.

        Raises:
            MessageNotFoundError: No message of the session has that id.
        """
        op = self._plan_truncate(session_id, message_id, inclusive)
        return self._finish_truncate(op, self._execute(op))

    async def atruncate_after(
        self, session_id: str, message_id: str, *, inclusive: bool = False
    ) -> int:
        """Async :meth:`truncate_after`."""
        op = self._plan_truncate(session_id, message_id, inclusive)
        return self._finish_truncate(op, await self._aexecute(op))

    # ----------------------------------------------------------------- fetched context

    def _plan_fetched(
        self, session_id: str, encoded: Sequence[tuple[EncodedItem, dict[str, Any]]], dedupe: bool
    ) -> AppendFetched | None:
        validate_session_id(session_id)
        if not encoded:
            return None
        now = now_iso()
        items = [e for e, _ in encoded]
        return AppendFetched(session_id, items, self._init(session_id, now), now, dedupe)

    def _finish_fetched(self, op: AppendFetched, result: WriteResult) -> int:
        self._created(op.session_id, result)
        if result.added:
            self.events.emit(
                EventType.FETCHED_ADDED,
                op.session_id,
                count=result.added,
                source_types=sorted({e.source_type for e in op.items}),
            )
        return result.added

    def add_fetched_context(
        self,
        session_id: str,
        source_type: str,
        content: str,
        *,
        url: str | None = None,
        extracted_data: Mapping[str, Any] | None = None,
        timestamp: str | datetime | None = None,
        dedupe: bool = False,
    ) -> dict[str, Any]:
        """File fetched material under ``fetched_context[source_type]``; return the item.

        With ``dedupe=True`` an item with the same source type, URL and content as one
        already stored is skipped.
        """
        pair = encode_item(
            self.token_counter,
            source_type,
            content,
            url=url,
            extracted_data=extracted_data,
            timestamp=timestamp,
        )
        op = self._plan_fetched(session_id, [pair], dedupe)
        if op is not None:
            self._finish_fetched(op, self._execute(op))
        return pair[1]

    async def aadd_fetched_context(
        self,
        session_id: str,
        source_type: str,
        content: str,
        *,
        url: str | None = None,
        extracted_data: Mapping[str, Any] | None = None,
        timestamp: str | datetime | None = None,
        dedupe: bool = False,
    ) -> dict[str, Any]:
        """Async :meth:`add_fetched_context`."""
        pair = encode_item(
            self.token_counter,
            source_type,
            content,
            url=url,
            extracted_data=extracted_data,
            timestamp=timestamp,
        )
        op = self._plan_fetched(session_id, [pair], dedupe)
        if op is not None:
            self._finish_fetched(op, await self._aexecute(op))
        return pair[1]

    def add_fetched_items(
        self, session_id: str, items: Sequence[Mapping[str, Any]], *, dedupe: bool = False
    ) -> int:
        """Append several fetched items (dicts shaped like stored items) atomically.

        Returns:
            How many were added (fewer than given when ``dedupe`` skipped some).
        """
        op = self._plan_fetched(session_id, encode_items(self.token_counter, items), dedupe)
        if op is None:
            return 0
        return self._finish_fetched(op, self._execute(op))

    async def aadd_fetched_items(
        self, session_id: str, items: Sequence[Mapping[str, Any]], *, dedupe: bool = False
    ) -> int:
        """Async :meth:`add_fetched_items`."""
        op = self._plan_fetched(session_id, encode_items(self.token_counter, items), dedupe)
        if op is None:
            return 0
        return self._finish_fetched(op, await self._aexecute(op))

    # ----------------------------------------------------------------- reads

    @staticmethod
    def _plan_history(session_id: str, last_k: int | None) -> GetMessages | None:
        validate_session_id(session_id, existing=True)
        if last_k is not None and (not isinstance(last_k, int) or last_k < 0):
            msg = f"last_k must be a non-negative int or None, got {last_k!r}"
            raise ValidationError(msg)
        if last_k == 0:
            return None
        return GetMessages(session_id, 0 if last_k is None else -last_k, -1)

    def get_history(self, session_id: str, last_k: int | None = None) -> list[dict[str, Any]]:
        """Stored message records, oldest first; only the last ``last_k`` if given (O(k))."""
        op = self._plan_history(session_id, last_k)
        if op is None:
            return []
        return self._execute(op)

    async def aget_history(
        self, session_id: str, last_k: int | None = None
    ) -> list[dict[str, Any]]:
        """Async :meth:`get_history`."""
        op = self._plan_history(session_id, last_k)
        if op is None:
            return []
        return await self._aexecute(op)

    def get_messages(self, session_id: str, last_k: int | None = None) -> list[BaseMessage]:
        """The history as LangChain messages, exactly as they were added."""
        return [record_to_message(r) for r in self.get_history(session_id, last_k)]

    async def aget_messages(self, session_id: str, last_k: int | None = None) -> list[BaseMessage]:
        """Async :meth:`get_messages`."""
        return [record_to_message(r) for r in await self.aget_history(session_id, last_k)]

    def get_message_range(self, session_id: str, start: int, end: int) -> list[dict[str, Any]]:
        """Records ``start..end`` inclusive, negative indices from the end (LRANGE)."""
        validate_session_id(session_id, existing=True)
        return self._execute(GetMessages(session_id, start, end))

    async def aget_message_range(
        self, session_id: str, start: int, end: int
    ) -> list[dict[str, Any]]:
        """Async :meth:`get_message_range`."""
        validate_session_id(session_id, existing=True)
        return await self._aexecute(GetMessages(session_id, start, end))

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

    def get_fetched_context(
        self, session_id: str, source_type: str | None = None
    ) -> dict[str, list[dict[str, Any]]]:
        """Fetched items by source type (only ``source_type`` if given)."""
        validate_session_id(session_id, existing=True)
        return self._execute(GetFetched(session_id, source_type))

    async def aget_fetched_context(
        self, session_id: str, source_type: str | None = None
    ) -> dict[str, list[dict[str, Any]]]:
        """Async :meth:`get_fetched_context`."""
        validate_session_id(session_id, existing=True)
        return await self._aexecute(GetFetched(session_id, source_type))

    @staticmethod
    def _formatted(header: Header | None, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if header and header["system_prompt"]:
            out.append({"role": "system", "content": header["system_prompt"]})
        out.extend(api_message(r) for r in records)
        return out

    def get_formatted_messages_for_api(
        self, session_id: str, last_k: int | None = None
    ) -> list[dict[str, Any]]:
        """OpenAI-style messages: the system prompt first, then the history (seed 001).

        Each is ``{"role", "content"}`` plus ``name``, ``tool_calls`` (OpenAI function
        format) or ``tool_call_id`` where the stored message has them.
        """
        header = self.get_header(session_id)
        if header is None:
            return []
        return self._formatted(header, self.get_history(session_id, last_k))

    async def aget_formatted_messages_for_api(
        self, session_id: str, last_k: int | None = None
    ) -> list[dict[str, Any]]:
        """Async :meth:`get_formatted_messages_for_api`."""
        header = await self.aget_header(session_id)
        if header is None:
            return []
        return self._formatted(header, await self.aget_history(session_id, last_k))

    # ----------------------------------------------------------------- lifecycle

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

        System prompt, metadata and shared state stay; counters restart at zero.
        Returns whether the session existed.
        """
        op = self._plan_clear(session_id, preserve_fetched)
        return self._finish_clear(op, self._execute(op))

    async def aclear(self, session_id: str, preserve_fetched: bool = False) -> bool:
        """Async :meth:`clear`."""
        op = self._plan_clear(session_id, preserve_fetched)
        return self._finish_clear(op, await self._aexecute(op))

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
        check_text(prefix, "prefix")
        check_text(cursor, "cursor", optional=True)
        if limit is None:
            return ListSessions()
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            msg = f"limit must be a positive int or None, got {limit!r}"
            raise ValidationError(msg)
        return ListPage(limit, prefix, cursor)

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

    # ----------------------------------------------------------------- stats

    def _store_stats(self, sessions: list[str]) -> dict[str, Any]:
        return {
            "store": self.store.name,
            "session_count": len(sessions),
            "max_sessions": self.settings.max_sessions,
            "ttl_seconds": self.settings.ttl_seconds,
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

    # ----------------------------------------------------------------- export / import

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
        self, data: str | bytes | Mapping[str, Any], session_id: str | None
    ) -> ReplaceDocument:
        document = parse_document(data)
        target = session_id if session_id is not None else document.metadata.session_id
        try:
            validate_session_id(target)
        except CtxMemoryError as e:
            msg = f"invalid session document at metadata.session_id: {e}"
            raise DocumentImportError("metadata.session_id", msg) from e
        header, messages, items = encode_document(document, target, self.token_counter)
        return ReplaceDocument(target, header, messages, items)

    @staticmethod
    def _refuse_existing(op: ReplaceDocument, exists: bool) -> None:
        if exists:
            msg = f"session {op.session_id!r} already exists (pass overwrite=True to replace it)"
            raise DocumentImportError("metadata.session_id", msg)

    def _finish_import(self, op: ReplaceDocument, result: WriteResult) -> str:
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
            DocumentImportError: Malformed JSON or a wrong shape (names the field), or the
                session exists and ``overwrite`` is false.
        """
        op = self._plan_import(data, session_id)
        if not overwrite:
            self._refuse_existing(op, self._execute(SessionExists(op.session_id)))
        return self._finish_import(op, self._execute(op))

    async def aimport_session(
        self,
        data: str | bytes | Mapping[str, Any],
        *,
        session_id: str | None = None,
        overwrite: bool = True,
    ) -> str:
        """Async :meth:`import_session`."""
        op = self._plan_import(data, session_id)
        if not overwrite:
            self._refuse_existing(op, await self._aexecute(SessionExists(op.session_id)))
        return self._finish_import(op, await self._aexecute(op))

    # ----------------------------------------------------------------- closing

    def _detach(self) -> None:
        self._remove_hook()
        for listener in self._store_listeners:
            self.events.off(None, listener)

    def close(self) -> None:
        """Close the store (stops the garbage collector, releases connections)."""
        self._detach()
        self.store.close()

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        self._detach()
        await self.store.aclose()


_default_manager: ContextManager | None = None
_default_lock = threading.Lock()


def get_context_manager(**overrides: Any) -> ContextManager:
    """The process-wide ContextManager, built from settings on first call (seed 001).

    The first call builds it with ``overrides`` (the keyword arguments of
    :class:`ContextManager`). A later call returns the same manager when it passes nothing,
    or only what that manager already has (``store="memory"`` on a memory manager, the
    same store object); one asking for anything else is refused rather than silently
    given a manager that ignores it.

    Raises:
        ConfigurationError: ``overrides`` differ from the manager already built (the
            message says what differs): call :func:`reset_context_manager` first to build
            another. Also for invalid settings, as ``ContextManager(...)`` raises.
    """
    global _default_manager  # noqa: PLW0603 - the seed's process-wide singleton
    with _default_lock:
        if _default_manager is None:
            _default_manager = ContextManager(**overrides)
            return _default_manager
        manager = _default_manager
    asked = {key: value for key, value in overrides.items() if value is not None}
    differences: list[tuple[str, str]] = []
    for name, own in (
        ("store", manager.store),
        ("counter", manager._token_counter),
        ("events", manager.events),
    ):
        part = asked.get(name)
        if part is not None and not isinstance(part, str):
            del asked[name]
            if part is not own:
                differences.append((name.upper(), f"{name}=another {type(part).__name__} object"))
    base = asked.pop("settings", None) or manager.settings
    if asked or base is not manager.settings:
        differences += setting_differences(manager.settings, with_overrides(base, **asked))
    if differences:
        listed = "; ".join(text for _, text in differences)
        msg = (
            f"get_context_manager() already built the process-wide manager, which differs"
            f" from this call's arguments: {listed}. Call reset_context_manager() first to"
            " build another"
        )
        raise ConfigurationError(differences[0][0], msg)
    return manager


def reset_context_manager() -> None:
    """Close and forget the process-wide manager (tests, or after changing settings)."""
    global _default_manager  # noqa: PLW0603
    with _default_lock:
        if _default_manager is not None:
            _default_manager.close()
        _default_manager = None
