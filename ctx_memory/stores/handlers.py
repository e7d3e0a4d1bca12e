"""A store with one method per operation: :class:`OperationStore` dispatches ``handle`` once.

Stores whose operations are plain method calls (the in-memory and SQLite stores, most
third-party stores) subclass :class:`OperationStore` and write one method per operation of
:mod:`ctx_memory.stores.ops`, each taking that operation object; the ``match`` from an
operation to its method is written here, once, and mypy checks it covers every operation.
Stores that run an operation as several requests (Redis, PostgreSQL) implement
:meth:`~ctx_memory.stores.base.BaseStore.handle` themselves.

The methods are protected hooks, like LangChain's ``_get_relevant_documents``: callers use
:meth:`~ctx_memory.stores.base.BaseStore.execute` or the store's shortcuts.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, assert_never

from typing_extensions import override

from ctx_memory.errors import StoreError
from ctx_memory.stores.base import BaseStore
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
    WriteResult,
)

if TYPE_CHECKING:
    from ctx_memory.stores.ops import Header

__all__ = ["OperationStore"]


class OperationStore(BaseStore):
    """A :class:`~ctx_memory.stores.base.BaseStore` calling one method per operation.

    A subclass whose :meth:`close` sets ``_closed`` refuses every operation after it
    with :meth:`_closed_error` (a :class:`~ctx_memory.errors.StoreError`), as the
    built-in stores do.
    """

    _closed: bool = False

    def _closed_error(self) -> StoreError:
        """The error an operation after :meth:`close` raises."""
        return StoreError(f"{self!r} is closed")

    @override
    def handle(self, op: StoreOp) -> object:  # noqa: PLR0911, PLR0912 - one case per operation
        """Call the method of ``op``'s operation (a :class:`StoreError` once closed)."""
        if self._closed:
            raise self._closed_error()
        match op:
            case AppendMessages():
                return self._append_messages(op)
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
                return self._list_sessions(op)
            case ListPage():
                return self._list_page(op)
            case CreateSession():
                return self._create(op)
            case DeleteSession():
                return self._delete(op)
            case DeleteMessages():
                return self._delete_messages(op)
            case ReplaceMessage():
                return self._replace_message(op)
            case TruncateMessages():
                return self._truncate_messages(op)
            case AppendFetched():
                return self._append_fetched(op)
            case MergeShared():
                return self._merge_shared(op)
            case SetShared():
                return self._set_shared(op)
            case UpdateHeader():
                return self._update_header(op)
            case ClearSession():
                return self._clear(op)
            case ReplaceDocument():
                checks = op.if_absent and not self.imports_if_absent
                # Looked for by listing, which is no access: a refused import is no LRU touch.
                if checks and self._list_page(ListPage(1, op.session_id)) == [op.session_id]:
                    return WriteResult(created=False, added=0)
                return self._replace_document(op)
            case CollectGarbage():
                return self._gc(op)
            case GetRecallSegments():
                return self._get_recall_segments(op)
            case SaveRecallSegments():
                return self._save_recall_segments(op)
            case _:
                assert_never(op)

    @abc.abstractmethod
    def _create(self, op: CreateSession) -> WriteResult:
        """Create the session from ``op.init`` unless it exists (then only touch it)."""

    @abc.abstractmethod
    def _exists(self, op: SessionExists) -> bool:
        """Whether the session exists and has not expired."""

    @abc.abstractmethod
    def _delete(self, op: DeleteSession) -> bool:
        """Remove the session; whether it existed."""

    @abc.abstractmethod
    def _list_sessions(self, op: ListSessions) -> list[str]:
        """Ids of all live sessions, sorted."""

    @abc.abstractmethod
    def _list_page(self, op: ListPage) -> list[str]:
        """A page of live session ids (see :class:`~ctx_memory.stores.ops.ListPage`)."""

    @abc.abstractmethod
    def _get_header(self, op: GetHeader) -> Header | None:
        """The header (fresh objects), or ``None``."""

    @abc.abstractmethod
    def _get_document(self, op: GetDocument) -> dict[str, Any] | None:
        """The whole document (fresh objects), or ``None``."""

    @abc.abstractmethod
    def _get_messages(self, op: GetMessages) -> list[dict[str, Any]]:
        """Messages ``op.start..op.end`` (``LRANGE`` rules)."""

    def _get_message_spans(self, op: GetMessageSpans) -> list[list[dict[str, Any]]]:
        """Each span's messages; this default reads them one :meth:`_get_messages` each.

        Override it to read them at once (one round trip, one snapshot).
        """
        session_id = op.session_id
        return [self._get_messages(GetMessages(session_id, a, b)) for a, b in op.spans]

    @abc.abstractmethod
    def _count_messages(self, op: CountMessages) -> int:
        """Length of the stored history (0 if absent)."""

    @abc.abstractmethod
    def _get_fetched(self, op: GetFetched) -> dict[str, list[dict[str, Any]]]:
        """Fetched items by source type."""

    @abc.abstractmethod
    def _append_messages(self, op: AppendMessages) -> WriteResult:
        """Append the messages whose ids the session does not hold."""

    @abc.abstractmethod
    def _delete_messages(self, op: DeleteMessages) -> int:
        """Remove messages by id; how many were there."""

    @abc.abstractmethod
    def _replace_message(self, op: ReplaceMessage) -> bool:
        """Replace one message in place; whether it was there."""

    @abc.abstractmethod
    def _truncate_messages(self, op: TruncateMessages) -> int | None:
        """Remove the messages after one; how many (``None``: no such id)."""

    @abc.abstractmethod
    def _append_fetched(self, op: AppendFetched) -> WriteResult:
        """Append fetched items (deduplicated if asked)."""

    @abc.abstractmethod
    def _merge_shared(self, op: MergeShared) -> WriteResult:
        """Deep-merge into ``shared``."""

    @abc.abstractmethod
    def _set_shared(self, op: SetShared) -> WriteResult:
        """Set one ``shared`` key."""

    @abc.abstractmethod
    def _update_header(self, op: UpdateHeader) -> WriteResult:
        """Set metadata keys and maybe the system prompt."""

    @abc.abstractmethod
    def _clear(self, op: ClearSession) -> bool:
        """Drop the history (and fetched context unless kept); whether it existed."""

    @abc.abstractmethod
    def _replace_document(self, op: ReplaceDocument) -> WriteResult:
        """Replace the whole session atomically (import)."""

    @abc.abstractmethod
    def _gc(self, op: CollectGarbage) -> int:
        """Remove expired sessions; how many."""

    # A store that keeps recall segments sets ``keeps_recall_segments`` and overrides both.

    def _get_recall_segments(self, op: GetRecallSegments) -> list[str]:
        """The saved recall segments; this default keeps none."""
        return []

    def _save_recall_segments(self, op: SaveRecallSegments) -> bool:
        """Save recall segments; this default keeps none (``False``: not saved)."""
        return False
