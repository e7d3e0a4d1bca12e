"""The ContextManager: both seeds' API on top of any store.

Every public operation is written once, as a *flow*: a generator that validates and
encodes its input (pure, before anything is written), yields the store calls it needs and
turns their results into the return value and events. :meth:`ContextManager._drive` runs
a flow with the store's sync methods and :meth:`ContextManager._adrive` with its async
twins, so ``x`` and ``ax`` differ by one ``await`` and never by a copied body.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from langchain_core.messages import BaseMessage

from ctx_memory.config import Settings, load_settings, setting_differences, with_overrides
from ctx_memory.errors import (
    ConfigurationError,
    CtxMemoryError,
    DocumentImportError,
    InvalidMessageError,
    MessageNotFoundError,
    SessionNotFoundError,
    ValidationError,
)
from ctx_memory.events import EventEmitter, EventType
from ctx_memory.schema import (
    ContextMode,
    check_json_native,
    check_text,
    dumps,
    fingerprint,
    message_to_record,
    now_iso,
    parse_document,
    record_to_message,
    validate_record,
    validate_role,
    validate_session_id,
)
from ctx_memory.stores import create_store
from ctx_memory.stores.base import (
    Closeable,
    EncodedItem,
    EncodedMessage,
    Header,
    check_shared_size,
    new_header,
)
from ctx_memory.tokens import TokenCounter

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    from ctx_memory.events import Event
    from ctx_memory.stores.base import BaseStore, WriteResult

__all__ = ["ContextManager", "get_context_manager", "reset_context_manager"]

R = TypeVar("R")

logger = logging.getLogger("ctx_memory")

_RESERVED_METADATA = frozenset(
    {
        "session_id",
        "created_at",
        "timestamp",
        "message_count",
        "token_count",
        "token_encoding",
        "system_prompt_tokens",
    }
)


class _Op(NamedTuple):
    """One store call a flow needs: the sync method's name and its arguments."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}  # noqa: RUF012 - NamedTuple default, never mutated


def _iso(value: str | datetime | None) -> str:
    if value is None:
        return now_iso()
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.isoformat()
    if isinstance(value, str):
        return value
    msg = f"timestamp must be an ISO-8601 str or a datetime, got {type(value).__name__}"
    raise ValidationError(msg)


def _validate_content(content: object, where: str) -> None:
    if isinstance(content, str):
        check_text(content, where)
        return
    if isinstance(content, list):
        check_json_native(content, where)
        return
    msg = f"{where} must be a str or a list of content blocks, got {type(content).__name__}"
    raise ValidationError(msg)


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

    def _on_lifecycle(self, event_type: str, session_id: str) -> None:
        if event_type in self._lifecycle_counts:
            self._lifecycle_counts[event_type] += 1
            why = "expired (TTL)" if event_type == "session_expired" else "evicted (LRU)"
            logger.info("ctx_memory: session %r %s on %s store", session_id, why, self.store.name)
        self.events.emit(event_type, session_id)

    def _drive(self, flow: Generator[_Op, Any, R]) -> R:
        try:
            op = next(flow)
            while True:
                op = flow.send(getattr(self.store, op.method)(*op.args, **op.kwargs))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    async def _adrive(self, flow: Generator[_Op, Any, R]) -> R:
        try:
            op = next(flow)
            while True:
                if self.async_enabled:
                    call = getattr(self.store, "a" + op.method)
                    result = await call(*op.args, **op.kwargs)
                else:
                    call = getattr(self.store, op.method)
                    result = await asyncio.to_thread(call, *op.args, **op.kwargs)
                op = flow.send(result)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

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

    # ----------------------------------------------------------------- encoding

    def _encode_record(self, record: dict[str, Any], where: str = "message") -> EncodedMessage:
        message_id = record.get("id")
        if message_id is None:
            message_id = record["id"] = str(uuid.uuid4())
        elif not isinstance(message_id, str) or not message_id:
            msg = f"{where}.id must be a non-empty str or None, got {message_id!r}"
            raise InvalidMessageError(f"{where}.id", msg)
        record["token_count"] = self.token_counter.count_record(record)
        return EncodedMessage(dumps(record), record["token_count"], message_id)

    def _build_record(
        self,
        role: object,
        content: object,
        *,
        metadata: Mapping[str, Any] | None,
        timestamp: str | datetime | None,
        name: str | None = None,
    ) -> dict[str, Any]:
        checked_role = validate_role(role)
        _validate_content(content, "content")
        check_text(name, "name", optional=True)
        record: dict[str, Any] = {
            "role": checked_role,
            "content": content,
            "timestamp": _iso(timestamp),
            "metadata": dict(metadata or {}),
            "token_count": 0,
        }
        if name is not None:
            record["name"] = name
        check_json_native(record["metadata"], "metadata")
        return record

    def _encode_item(
        self,
        source_type: str,
        content: str,
        *,
        url: str | None,
        extracted_data: Mapping[str, Any] | None,
        timestamp: str | datetime | None,
    ) -> tuple[EncodedItem, dict[str, Any]]:
        if not isinstance(source_type, str) or not source_type.strip():
            msg = f"source_type must be a non-empty str, got {source_type!r}"
            raise ValidationError(msg)
        check_text(source_type, "source_type")
        check_text(content, "content")
        check_text(url, "url", optional=True)
        extracted = dict(extracted_data or {})
        check_json_native(extracted, "extracted_data")
        tokens = self.token_counter.count(content)
        item: dict[str, Any] = {
            "source_type": source_type,
            "content": content,
            "url": url,
            "timestamp": _iso(timestamp),
            "extracted_data": extracted,
            "token_count": tokens,
        }
        encoded = EncodedItem(
            source_type, dumps(item), tokens, fingerprint(source_type, url, content)
        )
        return encoded, item

    # ----------------------------------------------------------------- seed 000 flows

    def _create_flow(
        self,
        session_id: str,
        system_prompt: str | None,
        metadata: Mapping[str, Any] | None,
    ) -> Generator[_Op, Any, bool]:
        validate_session_id(session_id)
        now = now_iso()
        init = self._init(session_id, now)
        if system_prompt is None and not metadata:
            result = yield _Op("create", (session_id, init))
            self._created(session_id, result)
            return bool(result.created)
        prompt = None if system_prompt is None else self._system_prompt_kwargs(system_prompt)
        return (yield from self._metadata_flow(session_id, metadata or {}, prompt))

    def create_session(
        self,
        session_id: str,
        *,
        system_prompt: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> bool:
        """Create a session (no change if it exists); return whether it was created."""
        return self._drive(self._create_flow(session_id, system_prompt, metadata))

    async def acreate_session(
        self,
        session_id: str,
        *,
        system_prompt: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> bool:
        """Async :meth:`create_session`."""
        return await self._adrive(self._create_flow(session_id, system_prompt, metadata))

    def _set_context_flow(self, session_id: str, key: str, value: Any) -> Generator[_Op, Any, None]:
        validate_session_id(session_id)
        if not isinstance(key, str) or not key:
            msg = f"context key must be a non-empty str, got {key!r}"
            raise ValidationError(msg)
        check_text(key, "shared key")
        check_json_native(value, f"shared.{key}")
        check_shared_size(dumps({key: value}))  # a new session holds just this
        now = now_iso()
        result = yield _Op(
            "set_shared",
            (session_id, key, value),
            {"init": self._init(session_id, now), "now": now},
        )
        self._created(session_id, result)
        self.events.emit(EventType.CONTEXT_UPDATED, session_id, keys=[key])

    def set_context(self, session_id: str, key: str, value: Any) -> None:
        """Set ``shared[key] = value`` (seed 000), creating the session if needed."""
        self._drive(self._set_context_flow(session_id, key, value))

    async def aset_context(self, session_id: str, key: str, value: Any) -> None:
        """Async :meth:`set_context`."""
        await self._adrive(self._set_context_flow(session_id, key, value))

    def _partial_flow(
        self, session_id: str, partial: Mapping[str, Any]
    ) -> Generator[_Op, Any, None]:
        validate_session_id(session_id)
        if not isinstance(partial, Mapping):
            msg = f"partial context must be a mapping, got {type(partial).__name__}"
            raise ValidationError(msg)
        check_json_native(dict(partial), "shared")
        check_shared_size(dumps(dict(partial)))  # a new session holds just this
        now = now_iso()
        result = yield _Op(
            "merge_shared",
            (session_id, dict(partial)),
            {"init": self._init(session_id, now), "now": now},
        )
        self._created(session_id, result)
        self.events.emit(EventType.CONTEXT_UPDATED, session_id, keys=sorted(partial))

    def update_partial_context(self, session_id: str, partial_context: Mapping[str, Any]) -> None:
        """Recursively merge ``partial_context`` into the session's ``shared`` state.

        Nested dicts merge key by key; any other value (lists included) replaces what was
        there. Atomic: concurrent merges of different keys never lose each other.
        """
        self._drive(self._partial_flow(session_id, partial_context))

    async def aupdate_partial_context(
        self, session_id: str, partial_context: Mapping[str, Any]
    ) -> None:
        """Async :meth:`update_partial_context`."""
        await self._adrive(self._partial_flow(session_id, partial_context))

    def _get_context_flow(self, session_id: str) -> Generator[_Op, Any, dict[str, Any]]:
        validate_session_id(session_id, existing=True)
        document = yield _Op("get_document", (session_id,))
        return document or {}

    def get_context(self, session_id: str) -> dict[str, Any]:
        """The whole session document as a dict; ``{}`` if the session does not exist."""
        return self._drive(self._get_context_flow(session_id))

    async def aget_context(self, session_id: str) -> dict[str, Any]:
        """Async :meth:`get_context`."""
        return await self._adrive(self._get_context_flow(session_id))

    def _delete_flow(self, session_id: str) -> Generator[_Op, Any, bool]:
        validate_session_id(session_id, existing=True)
        existed = yield _Op("delete", (session_id,))
        if existed:
            self.events.emit(EventType.SESSION_DELETED, session_id)
        return bool(existed)

    def delete_context(self, session_id: str) -> bool:
        """Delete the session; return whether it existed."""
        return self._drive(self._delete_flow(session_id))

    async def adelete_context(self, session_id: str) -> bool:
        """Async :meth:`delete_context`."""
        return await self._adrive(self._delete_flow(session_id))

    # Seed 000 spells its async twins ``async_*``.
    async_create_session = acreate_session
    async_set_context = aset_context
    async_update_partial_context = aupdate_partial_context
    async_get_context = aget_context
    async_delete_context = adelete_context

    # ----------------------------------------------------------------- metadata

    @staticmethod
    def _metadata_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, given in fields.items():
            if key in _RESERVED_METADATA:
                msg = f"metadata.{key} is maintained by ctx_memory and cannot be set"
                raise ValidationError(msg)
            value = given
            if key == "mode" and given is not None:
                try:
                    value = ContextMode(given).value
                except ValueError:
                    modes = ", ".join(m.value for m in ContextMode)
                    msg = f"unknown mode {given!r}: expected one of {modes}"
                    raise ValidationError(msg) from None
            elif key == "user_time" and isinstance(given, datetime):
                value = given.isoformat()
            out[key] = value
        check_json_native(out, "metadata")
        return out

    def _system_prompt_kwargs(self, prompt: str | None) -> dict[str, Any]:
        check_text(prompt, "system prompt", optional=True)
        tokens = self.token_counter.count(prompt) if prompt else 0
        return {"system_prompt": prompt, "set_system_prompt": True, "system_prompt_tokens": tokens}

    def _metadata_flow(
        self,
        session_id: str,
        fields: Mapping[str, Any],
        system_prompt: dict[str, Any] | None = None,
    ) -> Generator[_Op, Any, bool]:
        validate_session_id(session_id)
        checked = self._metadata_fields(fields)
        kwargs: dict[str, Any] = {"metadata": checked}
        if system_prompt is not None:
            kwargs["metadata"] = {
                **checked,
                "system_prompt_tokens": system_prompt.pop("system_prompt_tokens"),
            }
            kwargs.update(system_prompt)
        now = now_iso()
        result = yield _Op(
            "update_header",
            (session_id,),
            {"init": self._init(session_id, now), "now": now, **kwargs},
        )
        self._created(session_id, result)
        changed = sorted(checked) + (["system_prompt"] if system_prompt is not None else [])
        self.events.emit(EventType.METADATA_UPDATED, session_id, fields=changed)
        return bool(result.created)

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
        fields = {
            k: v
            for k, v in {
                "mode": mode,
                "current_url": current_url,
                "user_timezone": user_timezone,
                "user_time": user_time,
            }.items()
            if v is not None
        }
        self._drive(self._metadata_flow(session_id, {**fields, **extra}))

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
        fields = {
            k: v
            for k, v in {
                "mode": mode,
                "current_url": current_url,
                "user_timezone": user_timezone,
                "user_time": user_time,
            }.items()
            if v is not None
        }
        await self._adrive(self._metadata_flow(session_id, {**fields, **extra}))

    def set_system_prompt(self, session_id: str, prompt: str | None) -> None:
        """Set (or with ``None`` remove) the session's system prompt."""
        self._drive(self._metadata_flow(session_id, {}, self._system_prompt_kwargs(prompt)))

    async def aset_system_prompt(self, session_id: str, prompt: str | None) -> None:
        """Async :meth:`set_system_prompt`."""
        await self._adrive(self._metadata_flow(session_id, {}, self._system_prompt_kwargs(prompt)))

    # ----------------------------------------------------------------- history writes

    def _append_flow(
        self, session_id: str, records: list[dict[str, Any]]
    ) -> Generator[_Op, Any, list[dict[str, Any]]]:
        validate_session_id(session_id)
        encoded = [self._encode_record(r, f"messages[{i}]") for i, r in enumerate(records)]
        if not encoded:
            return []
        now = now_iso()
        result = yield _Op(
            "append_messages",
            (session_id, encoded),
            {"init": self._init(session_id, now), "now": now},
        )
        self._created(session_id, result)
        if result.added:
            self.events.emit(
                EventType.MESSAGE_ADDED,
                session_id,
                count=result.added,
                roles=[r["role"] for r in records],
                tokens=sum(m.tokens for m in encoded),
            )
        return records

    def _assistant_record(
        self,
        content: object,
        *,
        model: str | None,
        response_time_ms: float | None,
        sources_used: Sequence[Any] | None,
        tools_used: Sequence[str] | None,
        metadata: Mapping[str, Any] | None,
        timestamp: str | datetime | None,
    ) -> dict[str, Any]:
        given = {
            "model": model,
            "response_time_ms": response_time_ms,
            "sources_used": list(sources_used) if sources_used is not None else None,
            "tools_used": list(tools_used) if tools_used is not None else None,
        }
        meta = {**(metadata or {}), **{k: v for k, v in given.items() if v is not None}}
        return self._build_record("assistant", content, metadata=meta, timestamp=timestamp)

    def _lc_records(
        self,
        messages: Sequence[BaseMessage | Mapping[str, Any]],
        metadata: Mapping[str, Any] | None,
    ) -> list[dict[str, Any]]:
        now = now_iso()
        records = []
        for index, message in enumerate(messages):
            if isinstance(message, BaseMessage):
                record = message_to_record(message, timestamp=now, metadata=metadata)
            elif isinstance(message, Mapping):
                where = f"messages[{index}]"
                own_metadata = message.get("metadata") or {}
                if not isinstance(own_metadata, Mapping):
                    msg = f"{where}.metadata must be a dict, got {type(own_metadata).__name__}"
                    raise InvalidMessageError(f"{where}.metadata", msg)
                extra = {
                    k: v
                    for k, v in message.items()
                    if k not in ("role", "content", "metadata", "timestamp", "name", "token_count")
                }
                record = self._build_record(
                    message.get("role"),
                    message.get("content"),
                    metadata={**(metadata or {}), **own_metadata},
                    timestamp=message.get("timestamp"),
                    name=message.get("name"),
                )
                record.update(extra)
                validate_record(record, where)
            else:
                kind = type(message).__name__
                msg = f"messages[{index}] must be a BaseMessage or a dict, got {kind}"
                raise ValidationError(msg)
            records.append(record)
        return records

    def add_message(
        self,
        session_id: str,
        role: str,
        content: str | list[str | dict[str, Any]],
        *,
        metadata: Mapping[str, Any] | None = None,
        name: str | None = None,
        timestamp: str | datetime | None = None,
    ) -> dict[str, Any]:
        """Append one message with any role; return the stored record."""
        record = self._build_record(
            role, content, metadata=metadata, timestamp=timestamp, name=name
        )
        return self._drive(self._append_flow(session_id, [record]))[0]

    async def aadd_message(
        self,
        session_id: str,
        role: str,
        content: str | list[str | dict[str, Any]],
        *,
        metadata: Mapping[str, Any] | None = None,
        name: str | None = None,
        timestamp: str | datetime | None = None,
    ) -> dict[str, Any]:
        """Async :meth:`add_message`."""
        record = self._build_record(
            role, content, metadata=metadata, timestamp=timestamp, name=name
        )
        return (await self._adrive(self._append_flow(session_id, [record])))[0]

    def add_user_message(
        self,
        session_id: str,
        content: str | list[str | dict[str, Any]],
        *,
        metadata: Mapping[str, Any] | None = None,
        timestamp: str | datetime | None = None,
    ) -> dict[str, Any]:
        """Append the user's message (seed 001); return the stored record."""
        return self.add_message(session_id, "user", content, metadata=metadata, timestamp=timestamp)

    async def aadd_user_message(
        self,
        session_id: str,
        content: str | list[str | dict[str, Any]],
        *,
        metadata: Mapping[str, Any] | None = None,
        timestamp: str | datetime | None = None,
    ) -> dict[str, Any]:
        """Async :meth:`add_user_message`."""
        return await self.aadd_message(
            session_id, "user", content, metadata=metadata, timestamp=timestamp
        )

    def add_assistant_message(
        self,
        session_id: str,
        content: str | list[str | dict[str, Any]],
        *,
        model: str | None = None,
        response_time_ms: float | None = None,
        sources_used: Sequence[Any] | None = None,
        tools_used: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        timestamp: str | datetime | None = None,
    ) -> dict[str, Any]:
        """Append the assistant's reply with what produced it (seed 001)."""
        record = self._assistant_record(
            content,
            model=model,
            response_time_ms=response_time_ms,
            sources_used=sources_used,
            tools_used=tools_used,
            metadata=metadata,
            timestamp=timestamp,
        )
        return self._drive(self._append_flow(session_id, [record]))[0]

    async def aadd_assistant_message(
        self,
        session_id: str,
        content: str | list[str | dict[str, Any]],
        *,
        model: str | None = None,
        response_time_ms: float | None = None,
        sources_used: Sequence[Any] | None = None,
        tools_used: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        timestamp: str | datetime | None = None,
    ) -> dict[str, Any]:
        """Async :meth:`add_assistant_message`."""
        record = self._assistant_record(
            content,
            model=model,
            response_time_ms=response_time_ms,
            sources_used=sources_used,
            tools_used=tools_used,
            metadata=metadata,
            timestamp=timestamp,
        )
        return (await self._adrive(self._append_flow(session_id, [record])))[0]

    def add_messages(
        self,
        session_id: str,
        messages: Sequence[BaseMessage | Mapping[str, Any]],
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Append LangChain messages (or message dicts) atomically, in order."""
        return self._drive(self._append_flow(session_id, self._lc_records(messages, metadata)))

    async def aadd_messages(
        self,
        session_id: str,
        messages: Sequence[BaseMessage | Mapping[str, Any]],
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Async :meth:`add_messages`."""
        return await self._adrive(
            self._append_flow(session_id, self._lc_records(messages, metadata))
        )

    # ----------------------------------------------------------------- history edits

    def _delete_message_flow(self, session_id: str, message_id: str) -> Generator[_Op, Any, bool]:
        validate_session_id(session_id, existing=True)
        check_text(message_id, "message_id")
        removed = yield _Op("delete_messages", (session_id, [message_id]), {"now": now_iso()})
        if removed:
            self.events.emit(
                EventType.HISTORY_EDITED,
                session_id,
                action="delete",
                message_id=message_id,
                count=1,
            )
        return bool(removed)

    def delete_message(self, session_id: str, message_id: str) -> bool:
        """Remove one message by id, atomically (counters follow); return whether it was there."""
        return self._drive(self._delete_message_flow(session_id, message_id))

    async def adelete_message(self, session_id: str, message_id: str) -> bool:
        """Async :meth:`delete_message`."""
        return await self._adrive(self._delete_message_flow(session_id, message_id))

    def _replace_message_flow(
        self,
        session_id: str,
        message_id: str,
        message: BaseMessage | Mapping[str, Any],
        metadata: Mapping[str, Any] | None,
    ) -> Generator[_Op, Any, dict[str, Any]]:
        validate_session_id(session_id, existing=True)
        check_text(message_id, "message_id")
        (record,) = self._lc_records([message], metadata)
        record["id"] = message_id  # the replacement takes the message's place and identity
        encoded = self._encode_record(record, "message")
        found = yield _Op("replace_message", (session_id, message_id, encoded), {"now": now_iso()})
        if not found:
            raise MessageNotFoundError(session_id, message_id)
        self.events.emit(
            EventType.HISTORY_EDITED, session_id, action="replace", message_id=message_id, count=1
        )
        return record

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
        return self._drive(self._replace_message_flow(session_id, message_id, message, metadata))

    async def areplace_message(
        self,
        session_id: str,
        message_id: str,
        message: BaseMessage | Mapping[str, Any],
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Async :meth:`replace_message`."""
        return await self._adrive(
            self._replace_message_flow(session_id, message_id, message, metadata)
        )

    def _truncate_flow(
        self, session_id: str, message_id: str, inclusive: bool
    ) -> Generator[_Op, Any, int]:
        validate_session_id(session_id, existing=True)
        check_text(message_id, "message_id")
        removed = yield _Op(
            "truncate_messages",
            (session_id, message_id),
            {"inclusive": inclusive, "now": now_iso()},
        )
        if removed is None:
            raise MessageNotFoundError(session_id, message_id)
        if removed:
            self.events.emit(
                EventType.HISTORY_EDITED,
                session_id,
                action="truncate",
                message_id=message_id,
                count=removed,
            )
        return int(removed)

    def truncate_after(self, session_id: str, message_id: str, *, inclusive: bool = False) -> int:
        """Remove every message after ``message_id`` (and it too with ``inclusive``).

        For a chat UI: regenerate an answer (truncate after the question, then ask again)
        or edit the last question (:meth:`replace_message`, then truncate after it).
        Atomic, counters follow. Returns how many messages were removed.

        Raises:
            MessageNotFoundError: No message of the session has that id.
        """
        return self._drive(self._truncate_flow(session_id, message_id, inclusive))

    async def atruncate_after(
        self, session_id: str, message_id: str, *, inclusive: bool = False
    ) -> int:
        """Async :meth:`truncate_after`."""
        return await self._adrive(self._truncate_flow(session_id, message_id, inclusive))

    # ----------------------------------------------------------------- fetched context

    def _fetched_flow(
        self, session_id: str, encoded: list[tuple[EncodedItem, dict[str, Any]]], dedupe: bool
    ) -> Generator[_Op, Any, int]:
        validate_session_id(session_id)
        if not encoded:
            return 0
        now = now_iso()
        result = yield _Op(
            "append_fetched",
            (session_id, [e for e, _ in encoded]),
            {"init": self._init(session_id, now), "now": now, "dedupe": dedupe},
        )
        self._created(session_id, result)
        if result.added:
            self.events.emit(
                EventType.FETCHED_ADDED,
                session_id,
                count=result.added,
                source_types=sorted({e.source_type for e, _ in encoded}),
            )
        return int(result.added)

    def _encode_items(
        self, items: Sequence[Mapping[str, Any]]
    ) -> list[tuple[EncodedItem, dict[str, Any]]]:
        out = []
        for index, item in enumerate(items):
            if not isinstance(item, Mapping):
                msg = f"items[{index}] must be a mapping, got {type(item).__name__}"
                raise ValidationError(msg)
            out.append(
                self._encode_item(
                    item.get("source_type", ""),
                    item.get("content"),  # type: ignore[arg-type]
                    url=item.get("url"),
                    extracted_data=item.get("extracted_data"),
                    timestamp=item.get("timestamp"),
                )
            )
        return out

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
        pair = self._encode_item(
            source_type, content, url=url, extracted_data=extracted_data, timestamp=timestamp
        )
        self._drive(self._fetched_flow(session_id, [pair], dedupe))
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
        pair = self._encode_item(
            source_type, content, url=url, extracted_data=extracted_data, timestamp=timestamp
        )
        await self._adrive(self._fetched_flow(session_id, [pair], dedupe))
        return pair[1]

    def add_fetched_items(
        self, session_id: str, items: Sequence[Mapping[str, Any]], *, dedupe: bool = False
    ) -> int:
        """Append several fetched items (dicts shaped like stored items) atomically.

        Returns:
            How many were added (fewer than given when ``dedupe`` skipped some).
        """
        return self._drive(self._fetched_flow(session_id, self._encode_items(items), dedupe))

    async def aadd_fetched_items(
        self, session_id: str, items: Sequence[Mapping[str, Any]], *, dedupe: bool = False
    ) -> int:
        """Async :meth:`add_fetched_items`."""
        return await self._adrive(self._fetched_flow(session_id, self._encode_items(items), dedupe))

    # ----------------------------------------------------------------- reads

    def _history_flow(
        self, session_id: str, last_k: int | None
    ) -> Generator[_Op, Any, list[dict[str, Any]]]:
        validate_session_id(session_id, existing=True)
        if last_k is not None and (not isinstance(last_k, int) or last_k < 0):
            msg = f"last_k must be a non-negative int or None, got {last_k!r}"
            raise ValidationError(msg)
        if last_k == 0:
            return []
        start = 0 if last_k is None else -last_k
        records = yield _Op("get_messages", (session_id, start, -1))
        return list(records)

    def get_history(self, session_id: str, last_k: int | None = None) -> list[dict[str, Any]]:
        """Stored message records, oldest first; only the last ``last_k`` if given (O(k))."""
        return self._drive(self._history_flow(session_id, last_k))

    async def aget_history(
        self, session_id: str, last_k: int | None = None
    ) -> list[dict[str, Any]]:
        """Async :meth:`get_history`."""
        return await self._adrive(self._history_flow(session_id, last_k))

    def get_messages(self, session_id: str, last_k: int | None = None) -> list[BaseMessage]:
        """The history as LangChain messages, exactly as they were added."""
        return [record_to_message(r) for r in self.get_history(session_id, last_k)]

    async def aget_messages(self, session_id: str, last_k: int | None = None) -> list[BaseMessage]:
        """Async :meth:`get_messages`."""
        return [record_to_message(r) for r in await self.aget_history(session_id, last_k)]

    def get_message_range(self, session_id: str, start: int, end: int) -> list[dict[str, Any]]:
        """Records ``start..end`` inclusive, negative indices from the end (LRANGE)."""
        validate_session_id(session_id, existing=True)
        return self.store.get_messages(session_id, start, end)

    async def aget_message_range(
        self, session_id: str, start: int, end: int
    ) -> list[dict[str, Any]]:
        """Async :meth:`get_message_range`."""
        validate_session_id(session_id, existing=True)
        return await self.store.aget_messages(session_id, start, end)

    def _header_flow(self, session_id: str) -> Generator[_Op, Any, Header | None]:
        validate_session_id(session_id, existing=True)
        header = yield _Op("get_header", (session_id,))
        return header  # type: ignore[no-any-return]

    def get_metadata(self, session_id: str) -> dict[str, Any]:
        """The ``metadata`` section; ``{}`` if the session does not exist."""
        header = self._drive(self._header_flow(session_id))
        return header["metadata"] if header else {}

    async def aget_metadata(self, session_id: str) -> dict[str, Any]:
        """Async :meth:`get_metadata`."""
        header = await self._adrive(self._header_flow(session_id))
        return header["metadata"] if header else {}

    def get_header(self, session_id: str) -> Header | None:
        """System prompt, metadata and shared state without history or sources."""
        return self._drive(self._header_flow(session_id))

    async def aget_header(self, session_id: str) -> Header | None:
        """Async :meth:`get_header`."""
        return await self._adrive(self._header_flow(session_id))

    def get_system_prompt(self, session_id: str) -> str | None:
        """The session's system prompt, or ``None``."""
        header = self._drive(self._header_flow(session_id))
        return header["system_prompt"] if header else None

    async def aget_system_prompt(self, session_id: str) -> str | None:
        """Async :meth:`get_system_prompt`."""
        header = await self._adrive(self._header_flow(session_id))
        return header["system_prompt"] if header else None

    def _fetched_read_flow(
        self, session_id: str, source_type: str | None
    ) -> Generator[_Op, Any, dict[str, list[dict[str, Any]]]]:
        validate_session_id(session_id, existing=True)
        fetched = yield _Op("get_fetched", (session_id, source_type))
        return fetched  # type: ignore[no-any-return]

    def get_fetched_context(
        self, session_id: str, source_type: str | None = None
    ) -> dict[str, list[dict[str, Any]]]:
        """Fetched items by source type (only ``source_type`` if given)."""
        return self._drive(self._fetched_read_flow(session_id, source_type))

    async def aget_fetched_context(
        self, session_id: str, source_type: str | None = None
    ) -> dict[str, list[dict[str, Any]]]:
        """Async :meth:`get_fetched_context`."""
        return await self._adrive(self._fetched_read_flow(session_id, source_type))

    def _formatted_flow(
        self, session_id: str, last_k: int | None
    ) -> Generator[_Op, Any, list[dict[str, Any]]]:
        header = yield from self._header_flow(session_id)
        if header is None:
            return []
        records = yield from self._history_flow(session_id, last_k)
        out: list[dict[str, Any]] = []
        if header["system_prompt"]:
            out.append({"role": "system", "content": header["system_prompt"]})
        out.extend(_api_message(r) for r in records)
        return out

    def get_formatted_messages_for_api(
        self, session_id: str, last_k: int | None = None
    ) -> list[dict[str, Any]]:
        """OpenAI-style messages: the system prompt first, then the history (seed 001).

        Each is ``{"role", "content"}`` plus ``name``, ``tool_calls`` (OpenAI function
        format) or ``tool_call_id`` where the stored message has them.
        """
        return self._drive(self._formatted_flow(session_id, last_k))

    async def aget_formatted_messages_for_api(
        self, session_id: str, last_k: int | None = None
    ) -> list[dict[str, Any]]:
        """Async :meth:`get_formatted_messages_for_api`."""
        return await self._adrive(self._formatted_flow(session_id, last_k))

    # ----------------------------------------------------------------- lifecycle

    def _clear_flow(self, session_id: str, preserve_fetched: bool) -> Generator[_Op, Any, bool]:
        validate_session_id(session_id, existing=True)
        existed = yield _Op(
            "clear", (session_id,), {"now": now_iso(), "preserve_fetched": preserve_fetched}
        )
        if existed:
            self.events.emit(
                EventType.SESSION_CLEARED, session_id, preserve_fetched=preserve_fetched
            )
        return bool(existed)

    def clear(self, session_id: str, preserve_fetched: bool = False) -> bool:
        """Drop the history (and fetched context unless ``preserve_fetched``).

        System prompt, metadata and shared state stay; counters restart at zero.
        Returns whether the session existed.
        """
        return self._drive(self._clear_flow(session_id, preserve_fetched))

    async def aclear(self, session_id: str, preserve_fetched: bool = False) -> bool:
        """Async :meth:`clear`."""
        return await self._adrive(self._clear_flow(session_id, preserve_fetched))

    def _exists_flow(self, session_id: str) -> Generator[_Op, Any, bool]:
        validate_session_id(session_id, existing=True)
        exists = yield _Op("exists", (session_id,))
        return bool(exists)

    def session_exists(self, session_id: str) -> bool:
        """Whether the session exists (and has not expired)."""
        return self._drive(self._exists_flow(session_id))

    async def asession_exists(self, session_id: str) -> bool:
        """Async :meth:`session_exists`."""
        return await self._adrive(self._exists_flow(session_id))

    def _list_flow(
        self, prefix: str, limit: int | None, cursor: str | None
    ) -> Generator[_Op, Any, list[str]]:
        check_text(prefix, "prefix")
        check_text(cursor, "cursor", optional=True)
        if limit is None:
            sessions = yield _Op("list_sessions")
            return [s for s in sessions if s.startswith(prefix) and (cursor is None or s > cursor)]
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            msg = f"limit must be a positive int or None, got {limit!r}"
            raise ValidationError(msg)
        page = yield _Op("list_page", (), {"prefix": prefix, "cursor": cursor, "limit": limit})
        return list(page)

    def list_sessions(
        self, prefix: str = "", *, limit: int | None = None, cursor: str | None = None
    ) -> list[str]:
        """Ids of live sessions, sorted; those starting with ``prefix``; a page with ``limit``.

        Paging: ``list_sessions(limit=50)`` is the first page; pass its last id as
        ``cursor`` for the next (a page shorter than ``limit`` is the last). A page costs
        O(limit) on SQLite and Redis, whatever the number of sessions.
        """
        return self._drive(self._list_flow(prefix, limit, cursor))

    async def alist_sessions(
        self, prefix: str = "", *, limit: int | None = None, cursor: str | None = None
    ) -> list[str]:
        """Async :meth:`list_sessions`."""
        return await self._adrive(self._list_flow(prefix, limit, cursor))

    def _gc_flow(self) -> Generator[_Op, Any, int]:
        removed = yield _Op("gc")
        return int(removed)

    def gc(self) -> int:
        """Remove expired sessions now; return how many."""
        return self._drive(self._gc_flow())

    # ----------------------------------------------------------------- stats

    def _stats_flow(self, session_id: str | None) -> Generator[_Op, Any, dict[str, Any]]:
        if session_id is None:
            sessions = yield _Op("list_sessions")
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
        header = yield from self._header_flow(session_id)
        if header is None:
            return {"session_id": session_id, "exists": False}
        fetched = yield _Op("get_fetched", (session_id, None))
        meta = header["metadata"]
        fetched_items = {t: len(items) for t, items in fetched.items()}
        fetched_tokens = {
            t: sum(int(i.get("token_count", 0)) for i in items) for t, items in fetched.items()
        }
        system_tokens = int(meta.get("system_prompt_tokens", 0))
        history_tokens = int(meta["token_count"])
        return {
            "session_id": session_id,
            "exists": True,
            "mode": meta.get("mode"),
            "created_at": meta.get("created_at"),
            "last_updated": meta.get("timestamp"),
            "message_count": int(meta["message_count"]),
            "token_count": history_tokens,
            "token_encoding": meta.get("token_encoding"),
            "system_prompt_tokens": system_tokens,
            "fetched_items": fetched_items,
            "fetched_tokens": fetched_tokens,
            "fetched_item_count": sum(fetched_items.values()),
            "total_tokens": system_tokens + history_tokens + sum(fetched_tokens.values()),
            "shared_keys": sorted(header["shared"]),
            "store": self.store.name,
        }

    def get_memory_stats(self, session_id: str | None = None) -> dict[str, Any]:
        """Statistics for one session (from cached counts), or for the store if ``None``."""
        return self._drive(self._stats_flow(session_id))

    async def aget_memory_stats(self, session_id: str | None = None) -> dict[str, Any]:
        """Async :meth:`get_memory_stats`."""
        return await self._adrive(self._stats_flow(session_id))

    # ----------------------------------------------------------------- export / import

    def _export_flow(self, session_id: str) -> Generator[_Op, Any, dict[str, Any]]:
        document = yield from self._get_context_flow(session_id)
        if not document:
            raise SessionNotFoundError(session_id)
        return document

    def export_session(self, session_id: str, *, indent: int | None = 2) -> str:
        """The session document as JSON text.

        Raises:
            SessionNotFoundError: No such session.
        """
        document = self._drive(self._export_flow(session_id))
        return json.dumps(document, ensure_ascii=False, indent=indent)

    async def aexport_session(self, session_id: str, *, indent: int | None = 2) -> str:
        """Async :meth:`export_session`."""
        document = await self._adrive(self._export_flow(session_id))
        return json.dumps(document, ensure_ascii=False, indent=indent)

    def _import_flow(
        self,
        data: str | bytes | Mapping[str, Any],
        session_id: str | None,
        overwrite: bool,
    ) -> Generator[_Op, Any, str]:
        document = parse_document(data)
        target = session_id if session_id is not None else document.metadata.session_id
        try:
            validate_session_id(target)
        except CtxMemoryError as e:
            msg = f"invalid session document at metadata.session_id: {e}"
            raise DocumentImportError("metadata.session_id", msg) from e
        counter = self.token_counter
        messages: list[EncodedMessage] = []
        seen: set[str] = set()
        for index, record in enumerate(document.conversation_history):
            plain = record.model_dump(exclude_none=True)
            plain.setdefault("metadata", {})
            encoded = self._encode_record(plain, f"conversation_history.{index}")
            if encoded.id not in seen:  # a message id is stored once, as appends do
                seen.add(encoded.id)
                messages.append(encoded)
        items: list[EncodedItem] = []
        for source_type, entries in document.fetched_context.items():
            for entry in entries:
                plain = entry.model_dump()
                plain["token_count"] = counter.count(entry.content)
                items.append(
                    EncodedItem(
                        source_type,
                        dumps(plain),
                        plain["token_count"],
                        fingerprint(source_type, entry.url, entry.content),
                    )
                )
        metadata = document.metadata.model_dump(mode="json")
        metadata.update(
            session_id=target,
            message_count=len(messages),
            token_count=sum(m.tokens for m in messages),
            token_encoding=counter.encoding_name,
            system_prompt_tokens=counter.count(document.system_prompt)
            if document.system_prompt
            else 0,
        )
        try:
            check_shared_size(dumps(document.shared))
        except ValidationError as e:
            msg = f"invalid session document at shared: {e}"
            raise DocumentImportError("shared", msg) from None
        header: Header = {
            "system_prompt": document.system_prompt,
            "metadata": metadata,
            "shared": document.shared,
        }
        if not overwrite:
            exists = yield _Op("exists", (target,))
            if exists:
                msg = f"session {target!r} already exists (pass overwrite=True to replace it)"
                raise DocumentImportError("metadata.session_id", msg)
        result = yield _Op("replace_document", (target, header, messages, items))
        self._created(target, result)
        self.events.emit(EventType.CONTEXT_UPDATED, target, imported=True)
        return target

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
        return self._drive(self._import_flow(data, session_id, overwrite))

    async def aimport_session(
        self,
        data: str | bytes | Mapping[str, Any],
        *,
        session_id: str | None = None,
        overwrite: bool = True,
    ) -> str:
        """Async :meth:`import_session`."""
        return await self._adrive(self._import_flow(data, session_id, overwrite))

    # ----------------------------------------------------------------- closing

    def close(self) -> None:
        """Close the store (stops the garbage collector, releases connections)."""
        self._remove_hook()
        self.store.close()

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        self._remove_hook()
        await self.store.aclose()


def _api_message(record: Mapping[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": record["role"], "content": record["content"]}
    if record.get("name"):
        message["name"] = record["name"]
    if record.get("tool_calls"):
        message["tool_calls"] = [
            {
                "id": call.get("id"),
                "type": "function",
                "function": {
                    "name": call.get("name"),
                    "arguments": json.dumps(call.get("args", {})),
                },
            }
            for call in record["tool_calls"]
        ]
    if record.get("tool_call_id"):
        message["tool_call_id"] = record["tool_call_id"]
    return message


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
