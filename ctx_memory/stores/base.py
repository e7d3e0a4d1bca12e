"""The store interface every backend implements, and the pure helpers they share.

A store keeps sessions as three parts:

* a **header**: ``{"system_prompt": str | None, "metadata": {...}, "shared": {...}}``;
* the **history**: an append-only list of message dicts (stored as JSON text);
* the **fetched context**: per source type, an append-only list of item dicts.

The manager validates and encodes everything before calling a store, so a store only
moves JSON text, keeps two counters (``metadata.message_count`` and
``metadata.token_count``) and enforces TTL and LRU. Every mutating call is atomic: it
either happens whole or not at all, and concurrent callers never lose each other's writes.

Writes *upsert*: a write on a missing session first creates it from ``init`` (the header a
fresh session gets), and reports that with ``WriteResult.created``. Reads never create.

Lifecycle events the store alone can see (``session_expired``, ``session_evicted``) are
reported to every hook added with :meth:`BaseStore.add_lifecycle_hook` (each manager on
the store adds one) and to :attr:`BaseStore.lifecycle_hook`, callables taking the event
type and the session id. Each fact is reported once: by the call that removed the
session.

A store knows nothing of LangChain.
"""

from __future__ import annotations

import abc
import asyncio
import contextvars
import copy
import threading
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from ctx_memory import tracing
from ctx_memory.errors import InvalidTTLError, SharedStateTooLargeError
from ctx_memory.schema import now_iso
from ctx_memory.stores import ops
from ctx_memory.stores.ops import EncodedItem, EncodedMessage, Header, WriteResult

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from types import TracebackType
    from typing import Self

    from ctx_memory.events import Event
    from ctx_memory.stores._publisher import EventPublisher
    from ctx_memory.stores.ops import Op, StoreOp

R = TypeVar("R")

__all__ = [
    "BaseStore",
    "lifecycle_time",
    "Closeable",
    "EncodedItem",
    "EncodedMessage",
    "Header",
    "MAX_SHARED_BYTES",
    "MAX_TTL_SECONDS",
    "SyncBackedAsyncMixin",
    "SyncBackedStore",
    "WriteResult",
    "assemble_document",
    "check_limits",
    "check_shared_size",
    "deep_merge",
    "new_header",
    "shared_result",
]


def new_header(session_id: str, *, now: str, encoding: str) -> Header:
    """The header of a freshly created session."""
    return {
        "system_prompt": None,
        "metadata": {
            "session_id": session_id,
            "created_at": now,
            "timestamp": now,
            "mode": "normal",
            "current_url": None,
            "user_timezone": None,
            "user_time": None,
            "token_count": 0,
            "token_encoding": encoding,
            "message_count": 0,
            "system_prompt_tokens": 0,
        },
        "shared": {},
    }


_SHARED_RESULTS: dict[int, WriteResult] = {}


def shared_result(created: bool, added: int, evicted: Sequence[str] = ()) -> WriteResult:
    """The :class:`WriteResult` of a write; one that evicted nothing is shared (immutable).

    Nearly every write evicts nothing, so its result is taken from a small cache rather
    than built again (a frozen dataclass costs more to build than a store's append).
    """
    if evicted:
        return WriteResult(created=created, added=added, evicted=tuple(evicted))
    key = added * 2 + created
    result = _SHARED_RESULTS.get(key)
    if result is None:
        result = WriteResult(created=created, added=added)
        if 0 <= key < 2048:
            _SHARED_RESULTS[key] = result
    return result


def deep_merge(target: dict[str, Any], partial: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``partial`` into ``target`` in place and return ``target``.

    Dict values merge key by key; any other value (lists included) replaces what was there.
    ``partial`` is deep-copied, so ``target`` never aliases the caller's objects.
    """
    for key, value in partial.items():
        current = target.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            deep_merge(current, value)
        else:
            target[key] = copy.deepcopy(value)
    return target


MAX_TTL_SECONDS = 10 * 366 * 86_400
"""Longest accepted TTL (ten years): every store, Redis's ``PEXPIRE`` included, can keep it."""


MAX_SHARED_BYTES = 1 << 20
"""Largest ``shared`` state of a session, in bytes of compact UTF-8 JSON (1 MiB)."""


def check_shared_size(shared_json: str) -> None:
    """Raise unless ``shared_json`` (compact JSON) fits :data:`MAX_SHARED_BYTES`.

    Raises:
        SharedStateTooLargeError: It does not.
    """
    if len(shared_json) > MAX_SHARED_BYTES // 4:  # else it fits whatever its characters
        size = len(shared_json.encode("utf-8"))
        if size > MAX_SHARED_BYTES:
            raise SharedStateTooLargeError(size, MAX_SHARED_BYTES)


def check_limits(ttl_seconds: float | None, max_sessions: int | None) -> float | None:
    """Validate a store's TTL and session limit; return the TTL (``None`` for none).

    Raises:
        InvalidTTLError: ``ttl_seconds`` is negative, not a finite number, a bool, or
            longer than :data:`MAX_TTL_SECONDS`.
        ValueError: ``max_sessions`` is not an int (a bool is not) of at least 1.
    """
    if ttl_seconds is not None and (
        isinstance(ttl_seconds, bool)
        or not isinstance(ttl_seconds, (int, float))
        or not 0 <= ttl_seconds <= MAX_TTL_SECONDS
    ):
        msg = (
            f"ttl_seconds must be a number from 0 to {MAX_TTL_SECONDS} (ten years) or None, "
            f"got {ttl_seconds!r}"
        )
        raise InvalidTTLError(msg)
    if max_sessions is not None and (
        isinstance(max_sessions, bool) or not isinstance(max_sessions, int) or max_sessions < 1
    ):
        msg = f"max_sessions must be an int of at least 1 or None, got {max_sessions!r}"
        raise ValueError(msg)
    return ttl_seconds or None


def assemble_document(
    header: Header,
    messages: list[dict[str, Any]],
    fetched: dict[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    """The full session document from its three parts, in the documented key order."""
    return {
        "system_prompt": header["system_prompt"],
        "metadata": header["metadata"],
        "fetched_context": fetched,
        "conversation_history": messages,
        "shared": header["shared"],
    }


S = TypeVar("S", bound="_Stoppable")
_SUBSCRIBING = threading.Lock()


class _Stoppable(Protocol):
    @property
    def closed(self) -> bool: ...

    def close(self) -> None: ...


class Closeable(abc.ABC):
    """``with`` / ``async with`` support for anything with ``close`` and ``aclose``."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release what the object holds. Idempotent."""

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


_REPORTED_AT: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "ctx_memory_lifecycle_at", default=None
)


def lifecycle_time() -> str:
    """When the lifecycle event being reported (in a lifecycle hook) was found, else now.

    Every hook of one report sees the same time, so every manager's event and the copy
    published to other processes carry one timestamp.
    """
    return _REPORTED_AT.get() or now_iso()


class BaseStore(Closeable):
    """One storage backend: it executes the typed operations of :mod:`ctx_memory.stores.ops`.

    A backend implements :meth:`handle` (one ``match`` over :data:`~ctx_memory.stores.ops.StoreOp`)
    and :meth:`close`; a backend with native async I/O also implements :meth:`ahandle`,
    else async callers run :meth:`handle` in a worker thread (or on the event loop when
    ``offload`` is false: the in-memory store holds its lock for microseconds). Callers use
    :meth:`execute` / :meth:`aexecute`, typed by the operation's result, or the one-line
    shortcuts below (``store.get_header(sid)`` is ``store.execute(GetHeader(sid))``).

    Constructor arguments every store accepts (beyond its own connection settings):
    ``ttl_seconds`` (``None``: sessions never expire; the TTL slides, refreshed on every
    write) and ``max_sessions`` (``None``: unbounded; else the least recently used
    session — read or written — is evicted when one more is created).

    :mod:`ctx_memory.testing` holds the contract suite every backend must pass.
    """

    name: str = "base"
    keeps_recall_segments: bool = False
    """Whether the store keeps :mod:`ctx_memory.recall`'s index segments
    (:class:`~ctx_memory.stores.ops.GetRecallSegments`,
    :class:`~ctx_memory.stores.ops.SaveRecallSegments`); a store that does not answers
    ``[]`` and ``False``, and each process rebuilds its indexes from the history."""
    imports_if_absent: bool = False
    """Whether the store's :class:`~ctx_memory.stores.ops.ReplaceDocument` honours
    ``if_absent`` in its own atomic step; if not, :class:`~ctx_memory.stores.handlers.
    OperationStore` checks :class:`~ctx_memory.stores.ops.SessionExists` first (two
    imports of one new id at once may then both write)."""
    offload: bool = True
    """Whether the default :meth:`ahandle` runs :meth:`handle` in a worker thread."""

    lifecycle_hook: Callable[[str, str], None] | None = None
    _lifecycle_hooks: dict[object, list[Callable[[str, str], bool | None]]] | None = None

    def add_lifecycle_hook(
        self, hook: Callable[[str, str], bool | None], *, key: object = None
    ) -> Callable[[], None]:
        """Also report lifecycle events to ``hook``; returns a function that removes it.

        Every manager sharing this store registers one, so each hears every expiry and
        eviction whichever manager's call (or the garbage collector) found it. Of the hooks
        registered with the same ``key`` (managers sharing one event emitter) one hears
        each event: the newest whose call does not answer ``False`` (a hook whose manager
        is gone answers ``False``, and the next one hears it).
        """
        hooks = self._lifecycle_hooks
        if hooks is None:
            hooks = self._lifecycle_hooks = {}
        slot = key if key is not None else hook
        hooks[slot] = [hook, *hooks.get(slot, ())]

        def remove() -> None:
            found = hooks.get(slot, [])
            if hook in found:
                if self.publisher is not None:  # what EVENT_EMISSION says, while it is here
                    self.publisher.remember_emission()
                rest = [h for h in found if h is not hook]
                if rest:
                    hooks[slot] = rest
                else:
                    del hooks[slot]

        return remove

    def _notify(self, event_type: str, session_id: str) -> None:
        """Report a lifecycle event (``session_expired``/``session_evicted``) to every hook.

        Part of the subclassing interface: a store calls it once per session it removed
        because its TTL ran out or because it was the least recently used, after the
        removal is stored (outside its locks), whichever call or thread found it.
        """
        reported = _REPORTED_AT.set(now_iso())  # one time for every hook: lifecycle_time()
        try:
            if self.lifecycle_hook is not None:
                self.lifecycle_hook(event_type, session_id)
            if self._lifecycle_hooks:
                for same_key in list(self._lifecycle_hooks.values()):
                    for hook in same_key:
                        if hook(event_type, session_id) is not False:
                            break
        finally:
            _REPORTED_AT.reset(reported)

    # ---------------------------------------------------------------- the interface

    @abc.abstractmethod
    def handle(self, op: StoreOp) -> object:
        """Execute one operation; return what its ``Op[R]`` type says.

        Every mutating operation is atomic: it happens whole or not at all, and concurrent
        callers never lose each other's writes.
        """

    async def ahandle(self, op: StoreOp) -> object:
        """Async :meth:`handle`: in a worker thread (or inline if not :attr:`offload`)."""
        if self.offload:
            return await asyncio.to_thread(self.handle, op)
        return self.handle(op)

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections and background threads. Idempotent."""

    publisher: EventPublisher | None = None
    """What publishes this store's events to other processes, if anything (see
    ``ctx_memory.stores._publisher``); set with :meth:`_publish_with`."""

    def _subscribed(self, subscription: S) -> S:
        """``subscription``, kept so that this store's ``close()`` stops it too.

        A listener's thread outlives the object ``subscribe_events`` returned when a caller
        drops it (the docs' examples do): the store holds it until it closes.
        """
        with _SUBSCRIBING:
            kept = [s for s in self.__dict__.get("_subscriptions", ()) if not s.closed]
            kept.append(subscription)
            self.__dict__["_subscriptions"] = kept  # those the caller closed are let go
        return subscription

    def _stop_subscriptions(self) -> None:
        """Close the event subscriptions made through this store (each close is idempotent).

        Every one is closed even if closing another fails; the first failure is raised
        after.
        """
        with _SUBSCRIBING:
            subscriptions = self.__dict__.pop("_subscriptions", [])
        failure: BaseException | None = None
        for subscription in subscriptions:
            try:
                subscription.close()
            except BaseException as e:  # noqa: BLE001 - the others are closed first
                failure = failure or e
        if failure is not None:
            raise failure

    def _publish_with(self, publisher: EventPublisher | None) -> None:
        """Publish events with ``publisher``: managers add it, lifecycle events reach it once.

        Part of the subclassing interface, for a store that publishes events (Redis pub/sub,
        PostgreSQL ``NOTIFY``); such a store closes it in :meth:`close`.
        """
        self.publisher = publisher
        if publisher is not None:  # expiries and evictions: once per store, not per manager
            self.add_lifecycle_hook(publisher.lifecycle, key=publisher)
            publisher.watch(self._lifecycle_hooks or {})  # EVENT_EMISSION: managers' emitters

    def event_listeners(self) -> tuple[Callable[[Event], None], ...]:
        """Listeners every manager on this store adds to its emitter: its publisher, if any."""
        return () if self.publisher is None else (self.publisher,)

    def execute(self, op: Op[R]) -> R:
        """Execute ``op`` and return its result (in a span if :mod:`~ctx_memory.tracing` is on)."""
        if not tracing.instrumented():
            return cast("R", self.handle(cast("StoreOp", op)))
        with tracing.store_span(self, cast("StoreOp", op)):
            return cast("R", self.handle(cast("StoreOp", op)))

    async def aexecute(self, op: Op[R]) -> R:
        """Async :meth:`execute`."""
        if not tracing.instrumented():
            return cast("R", await self.ahandle(cast("StoreOp", op)))
        with tracing.store_span(self, cast("StoreOp", op)):
            return cast("R", await self.ahandle(cast("StoreOp", op)))

    # ---------------------------------------------------------------- shortcuts

    def create(self, session_id: str, init: Header) -> WriteResult:
        """Execute :class:`~ctx_memory.stores.ops.CreateSession`."""
        return self.execute(ops.CreateSession(session_id, init))

    def exists(self, session_id: str) -> bool:
        """Execute :class:`~ctx_memory.stores.ops.SessionExists`."""
        return self.execute(ops.SessionExists(session_id))

    def delete(self, session_id: str) -> bool:
        """Execute :class:`~ctx_memory.stores.ops.DeleteSession`."""
        return self.execute(ops.DeleteSession(session_id))

    def list_sessions(self) -> list[str]:
        """Execute :class:`~ctx_memory.stores.ops.ListSessions`."""
        return self.execute(ops.ListSessions())

    def list_page(self, *, prefix: str = "", cursor: str | None = None, limit: int) -> list[str]:
        """Execute :class:`~ctx_memory.stores.ops.ListPage`."""
        return self.execute(ops.ListPage(limit, prefix, cursor))

    def get_document(self, session_id: str) -> dict[str, Any] | None:
        """Execute :class:`~ctx_memory.stores.ops.GetDocument`."""
        return self.execute(ops.GetDocument(session_id))

    def get_header(self, session_id: str) -> Header | None:
        """Execute :class:`~ctx_memory.stores.ops.GetHeader`."""
        return self.execute(ops.GetHeader(session_id))

    def get_messages(self, session_id: str, start: int = 0, end: int = -1) -> list[dict[str, Any]]:
        """Execute :class:`~ctx_memory.stores.ops.GetMessages`."""
        return self.execute(ops.GetMessages(session_id, start, end))

    def get_message_spans(
        self, session_id: str, spans: Sequence[tuple[int, int]]
    ) -> list[list[dict[str, Any]]]:
        """Execute :class:`~ctx_memory.stores.ops.GetMessageSpans`."""
        return self.execute(ops.GetMessageSpans(session_id, tuple(spans)))

    def count_messages(self, session_id: str) -> int:
        """Execute :class:`~ctx_memory.stores.ops.CountMessages`."""
        return self.execute(ops.CountMessages(session_id))

    def get_fetched(
        self, session_id: str, source_type: str | None = None
    ) -> dict[str, list[dict[str, Any]]]:
        """Execute :class:`~ctx_memory.stores.ops.GetFetched`."""
        return self.execute(ops.GetFetched(session_id, source_type))

    def append_messages(
        self, session_id: str, messages: Sequence[EncodedMessage], *, init: Header, now: str
    ) -> WriteResult:
        """Execute :class:`~ctx_memory.stores.ops.AppendMessages`."""
        return self.execute(ops.AppendMessages(session_id, messages, init, now))

    def delete_messages(self, session_id: str, message_ids: Sequence[str], *, now: str) -> int:
        """Execute :class:`~ctx_memory.stores.ops.DeleteMessages`."""
        return self.execute(ops.DeleteMessages(session_id, message_ids, now))

    def replace_message(
        self, session_id: str, message_id: str, message: EncodedMessage, *, now: str
    ) -> bool:
        """Execute :class:`~ctx_memory.stores.ops.ReplaceMessage`."""
        return self.execute(ops.ReplaceMessage(session_id, message_id, message, now))

    def truncate_messages(
        self, session_id: str, message_id: str, *, inclusive: bool, now: str
    ) -> int | None:
        """Execute :class:`~ctx_memory.stores.ops.TruncateMessages`."""
        return self.execute(ops.TruncateMessages(session_id, message_id, inclusive, now))

    def append_fetched(
        self,
        session_id: str,
        items: Sequence[EncodedItem],
        *,
        init: Header,
        now: str,
        dedupe: bool = False,
    ) -> WriteResult:
        """Execute :class:`~ctx_memory.stores.ops.AppendFetched`."""
        return self.execute(ops.AppendFetched(session_id, items, init, now, dedupe))

    def merge_shared(
        self, session_id: str, partial: Mapping[str, Any], *, init: Header, now: str
    ) -> WriteResult:
        """Execute :class:`~ctx_memory.stores.ops.MergeShared`."""
        return self.execute(ops.MergeShared(session_id, partial, init, now))

    def set_shared(
        self, session_id: str, key: str, value: Any, *, init: Header, now: str
    ) -> WriteResult:
        """Execute :class:`~ctx_memory.stores.ops.SetShared`."""
        return self.execute(ops.SetShared(session_id, key, value, init, now))

    def update_header(
        self,
        session_id: str,
        *,
        init: Header,
        now: str,
        metadata: Mapping[str, Any] | None = None,
        system_prompt: str | None = None,
        set_system_prompt: bool = False,
    ) -> WriteResult:
        """Execute :class:`~ctx_memory.stores.ops.UpdateHeader`."""
        return self.execute(
            ops.UpdateHeader(
                session_id, init, now, metadata or {}, system_prompt, set_system_prompt
            )
        )

    def clear(self, session_id: str, *, now: str, preserve_fetched: bool = False) -> bool:
        """Execute :class:`~ctx_memory.stores.ops.ClearSession`."""
        return self.execute(ops.ClearSession(session_id, now, preserve_fetched))

    def replace_document(
        self,
        session_id: str,
        header: Header,
        messages: Sequence[EncodedMessage],
        items: Sequence[EncodedItem],
        *,
        if_absent: bool = False,
    ) -> WriteResult:
        """Execute :class:`~ctx_memory.stores.ops.ReplaceDocument`."""
        return self.execute(ops.ReplaceDocument(session_id, header, messages, items, if_absent))

    def gc(self) -> int:
        """Execute :class:`~ctx_memory.stores.ops.CollectGarbage`."""
        return self.execute(ops.CollectGarbage())

    def get_recall_segments(self, session_id: str) -> list[str]:
        """Execute :class:`~ctx_memory.stores.ops.GetRecallSegments`."""
        return self.execute(ops.GetRecallSegments(session_id))

    def save_recall_segments(
        self, session_id: str, segments: Sequence[str], *, replace: bool = False
    ) -> bool:
        """Execute :class:`~ctx_memory.stores.ops.SaveRecallSegments`."""
        return self.execute(ops.SaveRecallSegments(session_id, tuple(segments), replace))

    async def acreate(self, session_id: str, init: Header) -> WriteResult:
        """Async :meth:`create`."""
        return await self.aexecute(ops.CreateSession(session_id, init))

    async def aexists(self, session_id: str) -> bool:
        """Async :meth:`exists`."""
        return await self.aexecute(ops.SessionExists(session_id))

    async def adelete(self, session_id: str) -> bool:
        """Async :meth:`delete`."""
        return await self.aexecute(ops.DeleteSession(session_id))

    async def alist_sessions(self) -> list[str]:
        """Async :meth:`list_sessions`."""
        return await self.aexecute(ops.ListSessions())

    async def alist_page(
        self, *, prefix: str = "", cursor: str | None = None, limit: int
    ) -> list[str]:
        """Async :meth:`list_page`."""
        return await self.aexecute(ops.ListPage(limit, prefix, cursor))

    async def aget_document(self, session_id: str) -> dict[str, Any] | None:
        """Async :meth:`get_document`."""
        return await self.aexecute(ops.GetDocument(session_id))

    async def aget_header(self, session_id: str) -> Header | None:
        """Async :meth:`get_header`."""
        return await self.aexecute(ops.GetHeader(session_id))

    async def aget_messages(
        self, session_id: str, start: int = 0, end: int = -1
    ) -> list[dict[str, Any]]:
        """Async :meth:`get_messages`."""
        return await self.aexecute(ops.GetMessages(session_id, start, end))

    async def aget_message_spans(
        self, session_id: str, spans: Sequence[tuple[int, int]]
    ) -> list[list[dict[str, Any]]]:
        """Async :meth:`get_message_spans`."""
        return await self.aexecute(ops.GetMessageSpans(session_id, tuple(spans)))

    async def acount_messages(self, session_id: str) -> int:
        """Async :meth:`count_messages`."""
        return await self.aexecute(ops.CountMessages(session_id))

    async def aget_fetched(
        self, session_id: str, source_type: str | None = None
    ) -> dict[str, list[dict[str, Any]]]:
        """Async :meth:`get_fetched`."""
        return await self.aexecute(ops.GetFetched(session_id, source_type))

    async def aappend_messages(
        self, session_id: str, messages: Sequence[EncodedMessage], *, init: Header, now: str
    ) -> WriteResult:
        """Async :meth:`append_messages`."""
        return await self.aexecute(ops.AppendMessages(session_id, messages, init, now))

    async def adelete_messages(
        self, session_id: str, message_ids: Sequence[str], *, now: str
    ) -> int:
        """Async :meth:`delete_messages`."""
        return await self.aexecute(ops.DeleteMessages(session_id, message_ids, now))

    async def areplace_message(
        self, session_id: str, message_id: str, message: EncodedMessage, *, now: str
    ) -> bool:
        """Async :meth:`replace_message`."""
        return await self.aexecute(ops.ReplaceMessage(session_id, message_id, message, now))

    async def atruncate_messages(
        self, session_id: str, message_id: str, *, inclusive: bool, now: str
    ) -> int | None:
        """Async :meth:`truncate_messages`."""
        return await self.aexecute(ops.TruncateMessages(session_id, message_id, inclusive, now))

    async def aappend_fetched(
        self,
        session_id: str,
        items: Sequence[EncodedItem],
        *,
        init: Header,
        now: str,
        dedupe: bool = False,
    ) -> WriteResult:
        """Async :meth:`append_fetched`."""
        return await self.aexecute(ops.AppendFetched(session_id, items, init, now, dedupe))

    async def amerge_shared(
        self, session_id: str, partial: Mapping[str, Any], *, init: Header, now: str
    ) -> WriteResult:
        """Async :meth:`merge_shared`."""
        return await self.aexecute(ops.MergeShared(session_id, partial, init, now))

    async def aset_shared(
        self, session_id: str, key: str, value: Any, *, init: Header, now: str
    ) -> WriteResult:
        """Async :meth:`set_shared`."""
        return await self.aexecute(ops.SetShared(session_id, key, value, init, now))

    async def aupdate_header(
        self,
        session_id: str,
        *,
        init: Header,
        now: str,
        metadata: Mapping[str, Any] | None = None,
        system_prompt: str | None = None,
        set_system_prompt: bool = False,
    ) -> WriteResult:
        """Async :meth:`update_header`."""
        return await self.aexecute(
            ops.UpdateHeader(
                session_id, init, now, metadata or {}, system_prompt, set_system_prompt
            )
        )

    async def aclear(self, session_id: str, *, now: str, preserve_fetched: bool = False) -> bool:
        """Async :meth:`clear`."""
        return await self.aexecute(ops.ClearSession(session_id, now, preserve_fetched))

    async def areplace_document(
        self,
        session_id: str,
        header: Header,
        messages: Sequence[EncodedMessage],
        items: Sequence[EncodedItem],
        *,
        if_absent: bool = False,
    ) -> WriteResult:
        """Async :meth:`replace_document`."""
        return await self.aexecute(
            ops.ReplaceDocument(session_id, header, messages, items, if_absent)
        )

    async def agc(self) -> int:
        """Async :meth:`gc`."""
        return await self.aexecute(ops.CollectGarbage())

    async def aget_recall_segments(self, session_id: str) -> list[str]:
        """Async :meth:`get_recall_segments`."""
        return await self.aexecute(ops.GetRecallSegments(session_id))

    async def asave_recall_segments(
        self, session_id: str, segments: Sequence[str], *, replace: bool = False
    ) -> bool:
        """Async :meth:`save_recall_segments`."""
        return await self.aexecute(ops.SaveRecallSegments(session_id, tuple(segments), replace))


SyncBackedStore = BaseStore
"""Former base of stores whose async twins call the sync ones; now every store's default."""

SyncBackedAsyncMixin = BaseStore
"""Former name of :class:`BaseStore` for stores without native async I/O."""
