"""The operations a store executes: one frozen dataclass per operation, typed by its result.

The manager plans an operation (pure validation and encoding), hands it to
:meth:`BaseStore.execute <ctx_memory.stores.base.BaseStore.execute>` or
:meth:`~ctx_memory.stores.base.BaseStore.aexecute`, and turns the result into its return
value. A store implements :meth:`~ctx_memory.stores.base.BaseStore.handle` (and, for native
async I/O, :meth:`~ctx_memory.stores.base.BaseStore.ahandle`) with one ``match`` over
:data:`StoreOp`; mypy checks that the match covers every operation.

``Op[R]`` says what executing the operation returns, so ``store.execute(GetHeader("s1"))``
is typed ``Header | None`` and a call can be followed from the manager to the store.

Index arguments of :class:`GetMessages` follow Redis ``LRANGE``: ``start`` and ``end`` are
inclusive and may be negative (``-1`` is the last message), so the last ``k`` messages are
``GetMessages(sid, -k, -1)``.

Writes *upsert*: a write on a missing session first creates it from ``init`` (the header a
fresh session gets) and reports that with ``WriteResult.created``. Reads never create.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypedDict, TypeVar

from ctx_memory.errors import ValidationError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

R_co = TypeVar("R_co", covariant=True)

_NOT_STORABLE = re.compile("[\x00\ud800-\udfff]")
"""What a recall segment may not hold: NUL (PostgreSQL text) and lone surrogates (UTF-8)."""

__all__ = [
    "AppendFetched",
    "AppendMessages",
    "ClearSession",
    "CollectGarbage",
    "CountMessages",
    "CreateSession",
    "EncodedItem",
    "EncodedMessage",
    "DeleteMessages",
    "DeleteSession",
    "GetDocument",
    "GetFetched",
    "GetHeader",
    "GetMessageSpans",
    "GetMessages",
    "GetRecallSegments",
    "Header",
    "ListPage",
    "ListSessions",
    "MergeShared",
    "Op",
    "ReplaceDocument",
    "ReplaceMessage",
    "SaveRecallSegments",
    "SessionExists",
    "SetShared",
    "StoreOp",
    "TruncateMessages",
    "UpdateHeader",
    "may_create",
    "WriteResult",
]


# ------------------------------------------------------------------------------ values


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


# ------------------------------------------------------------------------------ operations


class Op(Generic[R_co]):
    """An operation whose execution returns ``R_co``."""

    __slots__ = ()


# ------------------------------------------------------------------------------ reads


@dataclass(frozen=True, slots=True)
class SessionExists(Op[bool]):
    """Whether the session exists and has not expired."""

    session_id: str


@dataclass(frozen=True, slots=True)
class GetDocument(Op[dict[str, Any] | None]):
    """The whole document (fresh objects), or ``None`` if absent."""

    session_id: str


@dataclass(frozen=True, slots=True)
class GetHeader(Op[Header | None]):
    """The header (fresh objects), or ``None`` if absent."""

    session_id: str


@dataclass(frozen=True, slots=True)
class GetMessages(Op[list[dict[str, Any]]]):
    """Messages ``start..end`` (inclusive, ``LRANGE`` semantics); ``[]`` if absent."""

    session_id: str
    start: int = 0
    end: int = -1


@dataclass(frozen=True, slots=True)
class GetMessageSpans(Op[list[list[dict[str, Any]]]]):
    """The messages of several spans at once: one list per ``(start, end)`` of ``spans``.

    Each span is inclusive and counted from the first message (``0 <= start <= end``); a
    span past the end of the history gives what it holds of it (``[]`` if nothing), and an
    absent session gives ``[]`` for every span. The stores read them in one round trip
    (what recall needs: a few dozen scattered turns per assembly); a store without a way
    to do that reads them as separate :class:`GetMessages`.

    Raises:
        ValidationError: A span is not two integers ``0 <= start <= end``. Raised when the
            operation is made.
    """

    session_id: str
    spans: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        for i, span in enumerate(self.spans):
            ok = isinstance(span, tuple) and len(span) == 2
            if not ok or not all(type(x) is int for x in span) or not 0 <= span[0] <= span[1]:
                msg = f"span {i} must be (start, end) with 0 <= start <= end, got {span!r}"
                raise ValidationError(msg)


@dataclass(frozen=True, slots=True)
class CountMessages(Op[int]):
    """Length of the stored history (0 if absent)."""

    session_id: str


@dataclass(frozen=True, slots=True)
class GetFetched(Op[dict[str, list[dict[str, Any]]]]):
    """Fetched items by source type (only ``source_type`` if given); ``{}`` if absent."""

    session_id: str
    source_type: str | None = None


@dataclass(frozen=True, slots=True)
class ListSessions(Op[list[str]]):
    """Ids of all live sessions, sorted."""


@dataclass(frozen=True, slots=True)
class ListPage(Op[list[str]]):
    """Up to ``limit`` live session ids starting with ``prefix``, sorted, after ``cursor``.

    Ids sort by code point (the order of their UTF-8 bytes). Pass the last id of a page as
    ``cursor`` to get the next one; a short page is the last. Costs O(limit), not
    O(sessions), on every store but the in-memory one.
    """

    limit: int
    prefix: str = ""
    cursor: str | None = None


# ------------------------------------------------------------------------------ writes


@dataclass(frozen=True, slots=True)
class CreateSession(Op[WriteResult]):
    """Create the session from ``init`` unless it exists (then only touch it)."""

    session_id: str
    init: Header


@dataclass(frozen=True, slots=True)
class DeleteSession(Op[bool]):
    """Remove the session; the result says whether it existed."""

    session_id: str


@dataclass(frozen=True, slots=True)
class AppendMessages(Op[WriteResult]):
    """Append messages, bump both counters, set ``metadata.timestamp`` to ``now``.

    A message whose id the session already holds is skipped, which makes the append safe
    to retry; appending only known ids changes nothing (not even the timestamp or TTL).
    """

    session_id: str
    messages: Sequence[EncodedMessage]
    init: Header
    now: str


@dataclass(frozen=True, slots=True)
class DeleteMessages(Op[int]):
    """Remove the messages with these ids; the result is how many were there.

    Both counters drop by what was removed; ``metadata.timestamp`` becomes ``now`` when
    anything was. The other messages keep their order.
    """

    session_id: str
    message_ids: Sequence[str]
    now: str


@dataclass(frozen=True, slots=True)
class ReplaceMessage(Op[bool]):
    """Put ``message`` (whose id is ``message_id``) in that message's place.

    ``token_count`` changes by the difference. The result says whether the message was
    there (nothing changes when it was not).
    """

    session_id: str
    message_id: str
    message: EncodedMessage
    now: str


@dataclass(frozen=True, slots=True)
class TruncateMessages(Op[int | None]):
    """Remove every message after ``message_id`` (and it too if ``inclusive``).

    The result is how many were removed, or ``None`` (nothing changed) if no message of
    the session has that id.
    """

    session_id: str
    message_id: str
    inclusive: bool
    now: str


@dataclass(frozen=True, slots=True)
class AppendFetched(Op[WriteResult]):
    """Append fetched items; with ``dedupe``, skip items whose fingerprint is stored."""

    session_id: str
    items: Sequence[EncodedItem]
    init: Header
    now: str
    dedupe: bool = False


@dataclass(frozen=True, slots=True)
class MergeShared(Op[WriteResult]):
    """Recursively merge ``partial`` into ``shared`` (see ``deep_merge``)."""

    session_id: str
    partial: Mapping[str, Any]
    init: Header
    now: str


@dataclass(frozen=True, slots=True)
class SetShared(Op[WriteResult]):
    """Set ``shared[key] = value``, replacing what was there."""

    session_id: str
    key: str
    value: Any
    init: Header
    now: str


@dataclass(frozen=True, slots=True)
class UpdateHeader(Op[WriteResult]):
    """Set metadata keys (shallow) and, if ``set_system_prompt``, the system prompt.

    ``message_count`` and ``token_count`` are the store's own counters and are never taken
    from ``metadata``.
    """

    session_id: str
    init: Header
    now: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    system_prompt: str | None = None
    set_system_prompt: bool = False


@dataclass(frozen=True, slots=True)
class ClearSession(Op[bool]):
    """Drop the history (and fetched context unless preserved); reset both counters.

    System prompt, other metadata and ``shared`` stay. The result says whether the session
    existed.
    """

    session_id: str
    now: str
    preserve_fetched: bool = False


@dataclass(frozen=True, slots=True)
class ReplaceDocument(Op[WriteResult]):
    """Atomically replace the whole session (import). Counters come from ``header``.

    ``if_absent``: write only if the session does not exist, in the same atomic step
    (``created`` is then false when it existed and nothing was written).
    """

    session_id: str
    header: Header
    messages: Sequence[EncodedMessage]
    items: Sequence[EncodedItem]
    if_absent: bool = False


@dataclass(frozen=True, slots=True)
class CollectGarbage(Op[int]):
    """Remove expired sessions now; the result is how many were removed."""


# ------------------------------------------------------------------------------ recall index


@dataclass(frozen=True, slots=True)
class GetRecallSegments(Op[list[str]]):
    """The session's saved recall-index segments, oldest first (``[]``: none, or no session).

    Segments are opaque text written by :mod:`ctx_memory.recall` (derived data: each is
    the index of a run of the history). A read of them is not an access: no TTL refresh,
    no LRU touch.
    """

    session_id: str


@dataclass(frozen=True, slots=True)
class SaveRecallSegments(Op[bool]):
    """Append ``segments`` to the session's saved ones (``replace``: instead of them all).

    ``replace`` with no segments drops them. Returns ``False``, and writes nothing, when
    the session does not exist (never creates one). Not an access: no TTL refresh, no
    LRU touch, no event. A store that keeps segments drops them, in the same atomic step,
    with every write that removes or changes stored messages (delete, replace, truncate,
    clear, import) and with the session (delete, expiry, eviction); they may also expire
    earlier than the session (they are rebuilt from the history).

    Raises:
        ValidationError: A segment is not a ``str``, or holds a NUL character or a lone
            surrogate (text every store keeps: JSON escapes both). Raised when the
            operation is made, before anything is written.
    """

    session_id: str
    segments: tuple[str, ...]
    replace: bool = False

    def __post_init__(self) -> None:
        for i, segment in enumerate(self.segments):
            if not isinstance(segment, str):
                msg = f"recall segment {i} is a {type(segment).__name__}, not a str"
                raise ValidationError(msg)
            if segment.isascii() and "\x00" not in segment:
                continue  # the common case, checked at C speed (the regex is 100x slower)
            bad = _NOT_STORABLE.search(segment)
            if bad is not None:
                kind = "a NUL character" if bad.group() == "\x00" else "a lone surrogate"
                msg = f"recall segment {i} holds {kind} at index {bad.start()}"
                raise ValidationError(msg)


StoreOp = (
    AppendMessages
    | GetMessages
    | GetMessageSpans
    | GetHeader
    | GetDocument
    | GetFetched
    | CountMessages
    | SessionExists
    | ListSessions
    | ListPage
    | CreateSession
    | DeleteSession
    | DeleteMessages
    | ReplaceMessage
    | TruncateMessages
    | AppendFetched
    | MergeShared
    | SetShared
    | UpdateHeader
    | ClearSession
    | ReplaceDocument
    | CollectGarbage
    | GetRecallSegments
    | SaveRecallSegments
)
"""Every operation: what :meth:`~ctx_memory.stores.base.BaseStore.handle` must cover."""


def may_create(op: Op[Any]) -> bool:
    """Whether ``op`` may create its session (a write carrying an init header, an import)."""
    return isinstance(op, (CreateSession, ReplaceDocument)) or hasattr(op, "init")
