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
import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

from typing_extensions import ParamSpec, override

from ctx_memory.errors import InvalidTTLError, SharedStateTooLargeError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from types import TracebackType
    from typing import Self

P = ParamSpec("P")
T = TypeVar("T")

__all__ = [
    "BaseStore",
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
]


class Header(TypedDict):
    """The small, mutable part of a session."""

    system_prompt: str | None
    metadata: dict[str, Any]
    shared: dict[str, Any]


@dataclass(frozen=True, slots=True)
class EncodedMessage:
    """A validated message, already JSON-encoded, with its cached token count and its id.

    ``id`` is the message's ``id`` field (the LangChain message's, or one the manager
    generated). A store appends a message only if no message with this id is already in
    the session's history, which makes every append safe to retry.
    """

    json: str
    tokens: int
    id: str


@dataclass(frozen=True, slots=True)
class EncodedItem:
    """A validated fetched item, JSON-encoded, with its source type, tokens and identity."""

    source_type: str
    json: str
    tokens: int
    fingerprint: str


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a write did beyond its own effect.

    Attributes:
        created: The session did not exist and was created by this write.
        added: How many messages or fetched items were appended (after deduplication).
        evicted: Sessions evicted by LRU because this write created one too many.
    """

    created: bool = False
    added: int = 0
    evicted: tuple[str, ...] = field(default_factory=tuple)


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
        ValueError: ``max_sessions`` is below 1.
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
    if max_sessions is not None and max_sessions < 1:
        msg = f"max_sessions must be at least 1, got {max_sessions!r}"
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


class BaseStore(Closeable):
    """One storage backend. Sync methods and their ``a``-prefixed async twins.

    Constructor arguments every store accepts (beyond its own connection settings):
    ``ttl_seconds`` (``None``: sessions never expire; the TTL slides, refreshed on every
    write) and ``max_sessions`` (``None``: unbounded; else the least recently used
    session — read or written — is evicted when one more is created).

    Index arguments of :meth:`get_messages` follow Redis ``LRANGE``: ``start`` and ``end``
    are inclusive and may be negative (``-1`` is the last message), so the last ``k``
    messages are ``get_messages(sid, -k, -1)``.
    """

    name: str = "base"
    lifecycle_hook: Callable[[str, str], None] | None = None
    _lifecycle_hooks: dict[object, Callable[[str, str], None]] | None = None

    def add_lifecycle_hook(
        self, hook: Callable[[str, str], None], *, key: object = None
    ) -> Callable[[], None]:
        """Also report lifecycle events to ``hook``; returns a function that removes it.

        Every manager sharing this store registers one, so each hears every expiry and
        eviction whichever manager's call (or the garbage collector) found it. Hooks
        registered with the same ``key`` replace each other (one per event emitter).
        """
        hooks = self._lifecycle_hooks
        if hooks is None:
            hooks = self._lifecycle_hooks = {}
        slot = key if key is not None else hook
        hooks[slot] = hook

        def remove() -> None:
            if hooks.get(slot) is hook:
                del hooks[slot]

        return remove

    def _notify(self, event_type: str, session_id: str) -> None:
        """Report a lifecycle event (``session_expired``/``session_evicted``) to every hook.

        Part of the subclassing interface: a store calls it once per session it removed
        because its TTL ran out or because it was the least recently used, after the
        removal is stored (outside its locks), whichever call or thread found it.
        """
        if self.lifecycle_hook is not None:
            self.lifecycle_hook(event_type, session_id)
        if self._lifecycle_hooks:
            for hook in list(self._lifecycle_hooks.values()):
                hook(event_type, session_id)

    # ---------------------------------------------------------------- sync API

    @abc.abstractmethod
    def create(self, session_id: str, init: Header) -> WriteResult:
        """Create the session from ``init`` unless it exists (then only touch it)."""

    @abc.abstractmethod
    def exists(self, session_id: str) -> bool:
        """Whether the session exists and has not expired."""

    @abc.abstractmethod
    def delete(self, session_id: str) -> bool:
        """Remove the session; return whether it existed."""

    @abc.abstractmethod
    def list_sessions(self) -> list[str]:
        """Ids of all live sessions, sorted."""

    @abc.abstractmethod
    def get_document(self, session_id: str) -> dict[str, Any] | None:
        """The whole document (fresh objects), or ``None`` if absent."""

    @abc.abstractmethod
    def get_header(self, session_id: str) -> Header | None:
        """The header (fresh objects), or ``None`` if absent."""

    @abc.abstractmethod
    def get_messages(self, session_id: str, start: int = 0, end: int = -1) -> list[dict[str, Any]]:
        """Messages ``start..end`` (inclusive, LRANGE semantics); ``[]`` if absent."""

    @abc.abstractmethod
    def count_messages(self, session_id: str) -> int:
        """Length of the stored history (0 if absent)."""

    @abc.abstractmethod
    def get_fetched(
        self, session_id: str, source_type: str | None = None
    ) -> dict[str, list[dict[str, Any]]]:
        """Fetched items by source type (one type if given); ``{}`` if absent."""

    @abc.abstractmethod
    def append_messages(
        self, session_id: str, messages: Sequence[EncodedMessage], *, init: Header, now: str
    ) -> WriteResult:
        """Append messages, bump both counters, set ``metadata.timestamp`` to ``now``."""

    @abc.abstractmethod
    def delete_messages(self, session_id: str, message_ids: Sequence[str], *, now: str) -> int:
        """Remove the messages with these ids; return how many were there.

        Both counters drop by what was removed; ``metadata.timestamp`` becomes ``now`` when
        anything was. The other messages keep their order.
        """

    @abc.abstractmethod
    def replace_message(
        self, session_id: str, message_id: str, message: EncodedMessage, *, now: str
    ) -> bool:
        """Put ``message`` (whose id is ``message_id``) in that message's place.

        ``token_count`` changes by the difference. Returns whether the message was there
        (nothing changes when it was not).
        """

    @abc.abstractmethod
    def truncate_messages(
        self, session_id: str, message_id: str, *, inclusive: bool, now: str
    ) -> int | None:
        """Remove every message after ``message_id`` (and it too if ``inclusive``).

        Returns how many were removed, or ``None`` (nothing changed) if no message of the
        session has that id.
        """

    @abc.abstractmethod
    def list_page(self, *, prefix: str = "", cursor: str | None = None, limit: int) -> list[str]:
        """Up to ``limit`` live session ids starting with ``prefix``, sorted, after ``cursor``.

        Ids sort by code point (the order of their UTF-8 bytes). Pass the last id of a page
        as ``cursor`` to get the next one; a short page is the last. Costs O(limit), not
        O(sessions), on every store but the in-memory one.
        """

    @abc.abstractmethod
    def append_fetched(
        self,
        session_id: str,
        items: Sequence[EncodedItem],
        *,
        init: Header,
        now: str,
        dedupe: bool = False,
    ) -> WriteResult:
        """Append fetched items; with ``dedupe``, skip items whose fingerprint is stored."""

    @abc.abstractmethod
    def merge_shared(
        self, session_id: str, partial: Mapping[str, Any], *, init: Header, now: str
    ) -> WriteResult:
        """Recursively merge ``partial`` into ``shared`` (see :func:`deep_merge`)."""

    @abc.abstractmethod
    def set_shared(
        self, session_id: str, key: str, value: Any, *, init: Header, now: str
    ) -> WriteResult:
        """Set ``shared[key] = value``, replacing what was there."""

    @abc.abstractmethod
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
        """Set metadata keys (shallow) and, if ``set_system_prompt``, the system prompt.

        ``message_count`` and ``token_count`` are the store's own counters and are never
        taken from ``metadata``.
        """

    @abc.abstractmethod
    def clear(self, session_id: str, *, now: str, preserve_fetched: bool = False) -> bool:
        """Drop the history (and fetched context unless preserved); reset both counters.

        System prompt, other metadata and ``shared`` stay. Returns whether it existed.
        """

    @abc.abstractmethod
    def replace_document(
        self,
        session_id: str,
        header: Header,
        messages: Sequence[EncodedMessage],
        items: Sequence[EncodedItem],
    ) -> WriteResult:
        """Atomically replace the whole session (import). Counters come from ``header``."""

    @abc.abstractmethod
    def gc(self) -> int:
        """Remove expired sessions now; return how many were removed."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections and background threads. Idempotent."""

    # ---------------------------------------------------------------- async API

    @abc.abstractmethod
    async def acreate(self, session_id: str, init: Header) -> WriteResult:
        """Async :meth:`create`."""

    @abc.abstractmethod
    async def aexists(self, session_id: str) -> bool:
        """Async :meth:`exists`."""

    @abc.abstractmethod
    async def adelete(self, session_id: str) -> bool:
        """Async :meth:`delete`."""

    @abc.abstractmethod
    async def alist_sessions(self) -> list[str]:
        """Async :meth:`list_sessions`."""

    @abc.abstractmethod
    async def aget_document(self, session_id: str) -> dict[str, Any] | None:
        """Async :meth:`get_document`."""

    @abc.abstractmethod
    async def aget_header(self, session_id: str) -> Header | None:
        """Async :meth:`get_header`."""

    @abc.abstractmethod
    async def aget_messages(
        self, session_id: str, start: int = 0, end: int = -1
    ) -> list[dict[str, Any]]:
        """Async :meth:`get_messages`."""

    @abc.abstractmethod
    async def acount_messages(self, session_id: str) -> int:
        """Async :meth:`count_messages`."""

    @abc.abstractmethod
    async def aget_fetched(
        self, session_id: str, source_type: str | None = None
    ) -> dict[str, list[dict[str, Any]]]:
        """Async :meth:`get_fetched`."""

    @abc.abstractmethod
    async def aappend_messages(
        self, session_id: str, messages: Sequence[EncodedMessage], *, init: Header, now: str
    ) -> WriteResult:
        """Async :meth:`append_messages`."""

    @abc.abstractmethod
    async def adelete_messages(
        self, session_id: str, message_ids: Sequence[str], *, now: str
    ) -> int:
        """Async :meth:`delete_messages`."""

    @abc.abstractmethod
    async def areplace_message(
        self, session_id: str, message_id: str, message: EncodedMessage, *, now: str
    ) -> bool:
        """Async :meth:`replace_message`."""

    @abc.abstractmethod
    async def atruncate_messages(
        self, session_id: str, message_id: str, *, inclusive: bool, now: str
    ) -> int | None:
        """Async :meth:`truncate_messages`."""

    @abc.abstractmethod
    async def alist_page(
        self, *, prefix: str = "", cursor: str | None = None, limit: int
    ) -> list[str]:
        """Async :meth:`list_page`."""

    @abc.abstractmethod
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

    @abc.abstractmethod
    async def amerge_shared(
        self, session_id: str, partial: Mapping[str, Any], *, init: Header, now: str
    ) -> WriteResult:
        """Async :meth:`merge_shared`."""

    @abc.abstractmethod
    async def aset_shared(
        self, session_id: str, key: str, value: Any, *, init: Header, now: str
    ) -> WriteResult:
        """Async :meth:`set_shared`."""

    @abc.abstractmethod
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

    @abc.abstractmethod
    async def aclear(self, session_id: str, *, now: str, preserve_fetched: bool = False) -> bool:
        """Async :meth:`clear`."""

    @abc.abstractmethod
    async def areplace_document(
        self,
        session_id: str,
        header: Header,
        messages: Sequence[EncodedMessage],
        items: Sequence[EncodedItem],
    ) -> WriteResult:
        """Async :meth:`replace_document`."""

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        self.close()


class SyncBackedStore(BaseStore):
    """A store whose async twins call its sync operations.

    The in-memory store holds its lock for microseconds, so calling the sync method on the
    event loop is cheaper than a thread hop. Stores that do blocking I/O (SQLite) set
    ``_offload = True`` to run each call in the default executor instead.
    """

    _offload: bool = False

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self._offload:
            return await asyncio.to_thread(fn, *args, **kwargs)
        return fn(*args, **kwargs)

    @override
    async def acreate(self, session_id: str, init: Header) -> WriteResult:
        return await self._run(self.create, session_id, init)

    @override
    async def aexists(self, session_id: str) -> bool:
        return await self._run(self.exists, session_id)

    @override
    async def adelete(self, session_id: str) -> bool:
        return await self._run(self.delete, session_id)

    @override
    async def alist_sessions(self) -> list[str]:
        return await self._run(self.list_sessions)

    @override
    async def aget_document(self, session_id: str) -> dict[str, Any] | None:
        return await self._run(self.get_document, session_id)

    @override
    async def aget_header(self, session_id: str) -> Header | None:
        return await self._run(self.get_header, session_id)

    @override
    async def aget_messages(
        self, session_id: str, start: int = 0, end: int = -1
    ) -> list[dict[str, Any]]:
        return await self._run(self.get_messages, session_id, start, end)

    @override
    async def acount_messages(self, session_id: str) -> int:
        return await self._run(self.count_messages, session_id)

    @override
    async def aget_fetched(
        self, session_id: str, source_type: str | None = None
    ) -> dict[str, list[dict[str, Any]]]:
        return await self._run(self.get_fetched, session_id, source_type)

    @override
    async def aappend_messages(
        self, session_id: str, messages: Sequence[EncodedMessage], *, init: Header, now: str
    ) -> WriteResult:
        return await self._run(self.append_messages, session_id, messages, init=init, now=now)

    @override
    async def adelete_messages(
        self, session_id: str, message_ids: Sequence[str], *, now: str
    ) -> int:
        return await self._run(self.delete_messages, session_id, message_ids, now=now)

    @override
    async def areplace_message(
        self, session_id: str, message_id: str, message: EncodedMessage, *, now: str
    ) -> bool:
        return await self._run(self.replace_message, session_id, message_id, message, now=now)

    @override
    async def atruncate_messages(
        self, session_id: str, message_id: str, *, inclusive: bool, now: str
    ) -> int | None:
        return await self._run(
            self.truncate_messages, session_id, message_id, inclusive=inclusive, now=now
        )

    @override
    async def alist_page(
        self, *, prefix: str = "", cursor: str | None = None, limit: int
    ) -> list[str]:
        return await self._run(self.list_page, prefix=prefix, cursor=cursor, limit=limit)

    @override
    async def aappend_fetched(
        self,
        session_id: str,
        items: Sequence[EncodedItem],
        *,
        init: Header,
        now: str,
        dedupe: bool = False,
    ) -> WriteResult:
        return await self._run(
            self.append_fetched,
            session_id,
            items,
            init=init,
            now=now,
            dedupe=dedupe,
        )

    @override
    async def amerge_shared(
        self, session_id: str, partial: Mapping[str, Any], *, init: Header, now: str
    ) -> WriteResult:
        return await self._run(self.merge_shared, session_id, partial, init=init, now=now)

    @override
    async def aset_shared(
        self, session_id: str, key: str, value: Any, *, init: Header, now: str
    ) -> WriteResult:
        return await self._run(self.set_shared, session_id, key, value, init=init, now=now)

    @override
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
        return await self._run(
            self.update_header,
            session_id,
            init=init,
            now=now,
            metadata=metadata,
            system_prompt=system_prompt,
            set_system_prompt=set_system_prompt,
        )

    @override
    async def aclear(self, session_id: str, *, now: str, preserve_fetched: bool = False) -> bool:
        return await self._run(self.clear, session_id, now=now, preserve_fetched=preserve_fetched)

    @override
    async def areplace_document(
        self,
        session_id: str,
        header: Header,
        messages: Sequence[EncodedMessage],
        items: Sequence[EncodedItem],
    ) -> WriteResult:
        return await self._run(self.replace_document, session_id, header, messages, items)


SyncBackedAsyncMixin = SyncBackedStore
"""Former name of :class:`SyncBackedStore`, kept for subclasses written against it."""
