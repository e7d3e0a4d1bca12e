"""The history edits' pure parts: finding a message by id in pages, stale summaries.

:class:`~ctx_memory.manager._history.HistoryMethods` reads and writes; these decide.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ctx_memory.errors import MessageNotFoundError
from ctx_memory.records import COMPACTIONS_KEY, well_formed_compaction
from ctx_memory.stores.base import BaseStore
from ctx_memory.stores.ops import DeleteMessages, ReplaceMessage, TruncateMessages

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ctx_memory.stores.base import Header

__all__ = [
    "FIND_PAGE",
    "INTERRUPTED",
    "Edit",
    "count_of",
    "edit_of",
    "edited",
    "in_worker_thread",
    "pages",
    "position_of",
    "stale_summaries",
    "live_compactions",
    "summaries_of",
    "with_id",
]

FIND_PAGE = 256
"""Messages :meth:`HistoryMethods.get_message` reads per step, newest first."""


def with_id(page: list[dict[str, Any]], message_id: str) -> dict[str, Any] | None:
    """The record of ``page`` with ``message_id`` (the newest, were two to share it)."""
    position = position_of(page, 0, message_id)
    return None if position is None else page[position]


def count_of(header: Header | None) -> int:
    """The message count of a header (``0`` for a session that is gone)."""
    return int(header["metadata"]["message_count"]) if header else 0


Edit = DeleteMessages | ReplaceMessage | TruncateMessages
INTERRUPTED = (KeyboardInterrupt, asyncio.CancelledError)  # (the task: an event loop's end)


def in_worker_thread(store: BaseStore, async_operations: bool) -> bool:
    """Whether an async call runs ``store``'s sync code in a worker thread.

    So with ``ASYNC_OPERATIONS=false``, and for a store without an async path of its own
    (SQLite). Such a write lands whatever its awaiting caller does: a cancelled caller
    (an event loop's end) cannot wait for it.
    """
    own = type(store).ahandle is not BaseStore.ahandle
    return not async_operations or (not own and store.offload)


def edit_of(op: Edit) -> tuple[str, str]:
    """``(action, message id)`` of a history edit, as ``history_edited`` reports it."""
    if isinstance(op, DeleteMessages):
        return "delete", op.message_ids[0]
    return ("replace" if isinstance(op, ReplaceMessage) else "truncate"), op.message_id


def edited(op: Edit, result: int | bool | None) -> int:
    """How many messages a history edit's store result says it changed.

    Raises:
        MessageNotFoundError: A replacement or truncation found no message with the id.
    """
    if isinstance(op, DeleteMessages):
        return int(result or 0)
    if result is None or result is False:
        raise MessageNotFoundError(op.session_id, op.message_id)
    return 1 if isinstance(op, ReplaceMessage) else int(result)


def live_compactions(header: Header | None) -> dict[str, None]:
    """Tombstones for every live compaction in a header's ``shared`` (``{}``: none)."""
    shared: Mapping[str, Any] = (header["shared"] if header else None) or {}
    entries = shared.get(COMPACTIONS_KEY)
    if not isinstance(entries, dict):
        return {}
    return {str(k): None for k, e in entries.items() if e is not None}


def summaries_of(header: Header | None) -> list[Mapping[str, Any]]:
    """The summary compactions stored in a header's ``shared`` (tombstones skipped)."""
    shared: Mapping[str, Any] = (header["shared"] if header else None) or {}
    entries = shared.get(COMPACTIONS_KEY) or {}
    if not isinstance(entries, dict):
        return []
    return [
        e
        for k, e in entries.items()
        if isinstance(e, dict) and e.get("kind") == "summary" and well_formed_compaction(k, e)
    ]


def pages(count: int, low: int) -> list[tuple[int, int]]:
    """``(start, end)`` pages of :data:`FIND_PAGE` positions, from ``count - 1`` down to ``low``."""
    return [(max(end - FIND_PAGE + 1, low), end) for end in range(count - 1, low - 1, -FIND_PAGE)]


def position_of(page: list[dict[str, Any]], start: int, message_id: str) -> int | None:
    """Where in the history the record of ``page`` (read from ``start``) with the id is."""
    for offset in range(len(page) - 1, -1, -1):
        if page[offset].get("id") == message_id:
            return start + offset
    return None


def stale_summaries(
    summaries: Sequence[Mapping[str, Any]],
    ends: Sequence[Sequence[Mapping[str, Any]]],
    position: int | None,
) -> dict[str, None]:
    """Tombstones for the summaries an edit made stale.

    ``ends[i]`` holds the message read, after the edit, at summary ``i``'s newest covered
    position (none past the history's end). A summary is stale when that message is not the
    one it covered (a deletion or truncation moved or removed it) or when it covers
    ``position``, where a replaced message is (its text summarises what that message no
    longer says).
    """
    stale: dict[str, None] = {}
    for entry, end in zip(summaries, ends, strict=True):
        moved = not end or end[0].get("id") != entry.get("last_id")
        covers = position is not None and (
            int(entry["first_index"]) <= position <= int(entry["last_index"])
        )
        if moved or covers:
            stale[str(entry["id"])] = None
    return stale
