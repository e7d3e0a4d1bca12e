"""A session's history and fetched context: appends, edits and reads."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ctx_memory.errors import (
    ValidationError,
)
from ctx_memory.events import EventType
from ctx_memory.records import (
    COMPACTIONS_KEY,
    api_message,
    assistant_record,
    build_record,
    encode_item,
    encode_items,
    encode_record,
    records_from,
)
from ctx_memory.schema import (
    check_key,
    check_message_id,
    check_position,
    now_iso,
    record_to_message,
    validate_session_id,
)
from ctx_memory.stores.ops import (
    AppendFetched,
    AppendMessages,
    DeleteMessages,
    GetFetched,
    GetMessages,
    GetMessageSpans,
    MergeShared,
    ReplaceMessage,
    TruncateMessages,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import datetime

    from langchain_core.messages import BaseMessage

    from ctx_memory.stores.base import EncodedItem, Header, WriteResult

from ctx_memory.manager._edits import (
    FIND_PAGE,
    INTERRUPTED,
    Edit,
    count_of,
    edit_of,
    edited,
    in_worker_thread,
    pages,
    position_of,
    stale_summaries,
    summaries_of,
    with_id,
)
from ctx_memory.manager._sessions import SessionMethods

Content = str | list[str | dict[str, Any]]


class HistoryMethods(SessionMethods):
    """History and fetched-context operations (see :class:`~ctx_memory.manager.ContextManager`)."""

    def _plan_append(
        self, session_id: str, records: list[dict[str, Any]], now: str
    ) -> AppendMessages | None:
        """The append of ``records`` at ``now`` (the clock read once for the whole write)."""
        validate_session_id(session_id)
        counter = self.token_counter
        encoded = [encode_record(r, counter, "messages", i) for i, r in enumerate(records)]
        if not encoded:
            return None
        return AppendMessages(session_id, encoded, self._init(session_id, now), now)

    def _finish_append(
        self, op: AppendMessages, result: WriteResult, records: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        self._created(op.session_id, result)
        if result.added and self.events.listens(EventType.MESSAGE_ADDED):
            # Messages already stored (re-sent by a retry or an agent's state) are skipped:
            # the new ones are the call's last ``added`` (re-sent ones come first).
            new = slice(len(records) - result.added, None)
            self.events.emit(
                EventType.MESSAGE_ADDED,
                op.session_id,
                count=result.added,
                roles=[r["role"] for r in records[new]],
                tokens=sum(m.tokens for m in op.messages[new]),
            )
        return records

    def _append(
        self, session_id: str, records: list[dict[str, Any]], now: str
    ) -> list[dict[str, Any]]:
        op = self._plan_append(session_id, records, now)
        if op is None:
            return records
        return self._finish_append(op, self._execute(op), records)

    async def _aappend(
        self, session_id: str, records: list[dict[str, Any]], now: str
    ) -> list[dict[str, Any]]:
        op = self._plan_append(session_id, records, now)
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
        now = now_iso()
        record = build_record(
            role, content, metadata=metadata, timestamp=timestamp, name=name, now=now
        )
        return self._append(session_id, [record], now)[0]

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
        now = now_iso()
        record = build_record(
            role, content, metadata=metadata, timestamp=timestamp, name=name, now=now
        )
        return (await self._aappend(session_id, [record], now))[0]

    def add_user_message(
        self,
        session_id: str,
        content: Content,
        *,
        metadata: Mapping[str, Any] | None = None,
        timestamp: str | datetime | None = None,
    ) -> dict[str, Any]:
        """Append the user's message (seed 001); return the stored record."""
        now = now_iso()
        record = build_record("user", content, metadata=metadata, timestamp=timestamp, now=now)
        return self._append(session_id, [record], now)[0]

    async def aadd_user_message(
        self,
        session_id: str,
        content: Content,
        *,
        metadata: Mapping[str, Any] | None = None,
        timestamp: str | datetime | None = None,
    ) -> dict[str, Any]:
        """Async :meth:`add_user_message`."""
        now = now_iso()
        record = build_record("user", content, metadata=metadata, timestamp=timestamp, now=now)
        return (await self._aappend(session_id, [record], now))[0]

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
        now = now_iso()
        record = assistant_record(
            content,
            model=model,
            response_time_ms=response_time_ms,
            sources_used=sources_used,
            tools_used=tools_used,
            metadata=metadata,
            timestamp=timestamp,
            now=now,
        )
        return self._append(session_id, [record], now)[0]

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
        now = now_iso()
        record = assistant_record(
            content,
            model=model,
            response_time_ms=response_time_ms,
            sources_used=sources_used,
            tools_used=tools_used,
            metadata=metadata,
            timestamp=timestamp,
            now=now,
        )
        return (await self._aappend(session_id, [record], now))[0]

    def add_messages(
        self,
        session_id: str,
        messages: Sequence[BaseMessage | Mapping[str, Any]],
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Append LangChain messages (or message dicts) atomically, in order."""
        now = now_iso()
        return self._append(session_id, records_from(messages, metadata, now), now)

    async def aadd_messages(
        self,
        session_id: str,
        messages: Sequence[BaseMessage | Mapping[str, Any]],
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Async :meth:`add_messages`."""
        now = now_iso()
        return await self._aappend(session_id, records_from(messages, metadata, now), now)

    def _add_counted(
        self, session_id: str, messages: Sequence[BaseMessage | Mapping[str, Any]]
    ) -> tuple[list[dict[str, Any]], int]:
        """:meth:`add_messages`, and how many were added (the others' ids were held)."""
        now = now_iso()
        records = records_from(messages, None, now)
        op = self._plan_append(session_id, records, now)
        if op is None:
            return records, 0
        result = self._execute(op)
        return self._finish_append(op, result, records), result.added

    async def _aadd_counted(
        self, session_id: str, messages: Sequence[BaseMessage | Mapping[str, Any]]
    ) -> tuple[list[dict[str, Any]], int]:
        """Async :meth:`_add_counted`."""
        now = now_iso()
        records = records_from(messages, None, now)
        op = self._plan_append(session_id, records, now)
        if op is None:
            return records, 0
        result = await self._aexecute(op)
        return self._finish_append(op, result, records), result.added

    def get_message(self, session_id: str, message_id: str) -> dict[str, Any] | None:
        """The stored message with ``message_id``, or ``None`` if the session holds none.

        Looked for from the newest message back, :data:`FIND_PAGE` messages per read: a
        recent message costs one read, an old one a read per page before it. Past the
        first page the pages are read by position from the start (the header's count): a
        deletion of newer messages meanwhile does not move older ones, so none is passed
        over (read from the end, they would move into a page already read).
        """
        check_message_id(message_id, "message_id")
        page = self.get_message_range(session_id, -FIND_PAGE, -1)
        found = with_id(page, message_id)
        if found is not None or len(page) < FIND_PAGE:
            return found
        for start, end in pages(count_of(self.get_header(session_id)), 0):
            found = with_id(self.get_message_range(session_id, start, end), message_id)
            if found is not None:
                return found
        return None

    async def aget_message(self, session_id: str, message_id: str) -> dict[str, Any] | None:
        """Async :meth:`get_message`."""
        check_message_id(message_id, "message_id")
        page = await self.aget_message_range(session_id, -FIND_PAGE, -1)
        found = with_id(page, message_id)
        if found is not None or len(page) < FIND_PAGE:
            return found
        for start, end in pages(count_of(await self.aget_header(session_id)), 0):
            found = with_id(await self.aget_message_range(session_id, start, end), message_id)
            if found is not None:
                return found
        return None

    @staticmethod
    def _plan_delete_message(session_id: str, message_id: str) -> DeleteMessages:
        validate_session_id(session_id, existing=True)
        check_message_id(message_id, "message_id")
        return DeleteMessages(session_id, [message_id], now_iso())

    def _edit(self, op: Edit, replaced: str | None = None) -> int:
        """Run a history edit whole: see :meth:`_edit_steps` (async: :meth:`_aedit`)."""
        return self._edit_steps(op, replaced)

    async def _aedit(self, op: Edit, replaced: str | None = None) -> int:
        """Async :meth:`_edit`: the steps in a task a cancelled caller does not stop.

        An edit cancelled after it was stored (SQLite's thread or the server finish it)
        would keep the summaries it made stale, a redacted text among them: the task runs
        the removal too (:meth:`~ctx_memory.manager._core.ManagerCore._run_whole`).
        """
        return await self._run_whole(self._aedit_steps(op, replaced))

    def _edit_steps(self, op: Edit, replaced: str | None) -> int:
        """Execute ``op``, emit ``history_edited``, remove the summaries it made stale.

        The removal runs whatever lands after the store call (a ``KeyboardInterrupt``
        just after it returned, or while a listener or the removal itself runs): the edit
        may be stored, so its stale summaries must go. An interrupted removal is run
        again (an event loop's end cancels a task once). ``replaced``: the id of a
        message whose text changed (summaries covering it are stale).
        """
        count = 0
        try:
            result = self._execute(op)
            count = edited(op, result)
            self._emit_edited(op, count)
            if count:
                self._drop_stale_summaries(op.session_id, replaced)
        except INTERRUPTED:  # landed or not (SQLite's thread finishes it): what is stale goes
            self._drop_stale_summaries(op.session_id, replaced)
            raise
        except BaseException:  # a listener's error (or the removal's: tried once more)
            if count:
                self._drop_stale_summaries(op.session_id, replaced)
            raise
        return count

    def _emit_edited(self, op: Edit, count: int) -> None:
        if count:
            action, message_id = edit_of(op)
            self.events.emit(
                EventType.HISTORY_EDITED,
                op.session_id,
                action=action,
                message_id=message_id,
                count=count,
            )

    async def _aedit_steps(self, op: Edit, replaced: str | None) -> int:
        """Async :meth:`_edit_steps`.

        When the store call runs in a worker thread (SQLite), that thread also removes the
        stale summaries, after the edit: a cancelled caller (an event loop's end) cannot
        wait for the edit to land, and before it lands nothing is stale yet. The events
        are emitted here, in the caller's thread and in the sync order (``history_edited``,
        then the removal's ``context_updated``).
        """
        count = 0
        threaded = in_worker_thread(self.store, self.settings.async_operations)
        retry = True  # whether a failed removal is tried once more here
        try:
            if threaded:
                result, dropped = await asyncio.to_thread(self._edit_then_drop, op, replaced)
                count = edited(op, result)
                self._emit_edited(op, count)
                if isinstance(dropped, Exception):  # tried twice in the thread
                    retry = False
                    raise dropped
                if dropped is not None:
                    self._finish_shared(*dropped)
            else:
                count = edited(op, await self._aexecute(op))
                self._emit_edited(op, count)
                if count:
                    await self._adrop_stale_summaries(op.session_id, replaced)
        except INTERRUPTED:  # landed or not: what is stale goes (in the thread: after it)
            if not threaded:
                await self._adrop_stale_summaries(op.session_id, replaced)
            raise
        except BaseException:  # a listener's error (or the removal's: tried once more)
            if count and retry:
                await self._adrop_stale_summaries(op.session_id, replaced)
            raise
        return count

    def _edit_then_drop(
        self, op: Edit, replaced: str | None
    ) -> tuple[int | bool | None, tuple[MergeShared, WriteResult] | Exception | None]:
        """In a worker thread: execute ``op``, then remove the summaries it made stale.

        Returns the edit's result and the removal (:meth:`_remove_stale_summaries`: the
        merge and its result, for the caller's ``context_updated``), or what the removal
        raised twice (the edit is stored: the caller reports it first, then raises it).
        """
        result = self._execute(op)
        if not edited(op, result):
            return result, None
        try:
            return result, self._remove_stale_summaries(op.session_id, replaced)
        except Exception:  # noqa: BLE001 - tried once more, as :meth:`_edit_steps` does
            try:
                return result, self._remove_stale_summaries(op.session_id, replaced)
            except Exception as e:  # noqa: BLE001 - the caller raises it after the event
                return result, e

    def _drop_stale_summaries(self, session_id: str, replaced: str | None = None) -> None:
        """After an edit: remove the summary compactions it made stale (:func:`stale_summaries`).

        A summary of text the history no longer holds (a redacted message, say) must not
        reach the model, nor stay in the document. ``context_updated`` reports a removal.
        """
        removed = self._remove_stale_summaries(session_id, replaced)
        if removed is not None:
            self._finish_shared(*removed)

    def _remove_stale_summaries(
        self, session_id: str, replaced: str | None = None
    ) -> tuple[MergeShared, WriteResult] | None:
        """:meth:`_drop_stale_summaries` without its event: the merge made, and its result.

        Reads each summary's newest covered message (one read) and, for a replacement,
        the history from the newest message back to the replaced one, a page at a time,
        no further back than the summaries.
        """
        header = self.get_header(session_id)
        summaries = summaries_of(header)
        if header is None or not summaries:
            return None
        lasts = [(int(e["last_index"]), int(e["last_index"])) for e in summaries]
        ends = self.get_message_spans(session_id, lasts)
        position = None
        low = min(int(e["first_index"]) for e in summaries)
        for start, end in pages(int(header["metadata"]["message_count"]), low):
            if replaced is None or position is not None:
                break
            page = self.get_message_range(session_id, start, end)
            position = position_of(page, start, replaced)
        stale = stale_summaries(summaries, ends, position)
        if not stale:
            return None
        merge = self._plan_merge(session_id, {COMPACTIONS_KEY: stale}, reserved=True)
        return merge, self._execute(merge)

    async def _adrop_stale_summaries(self, session_id: str, replaced: str | None = None) -> None:
        """Async :meth:`_drop_stale_summaries`."""
        removed = await self._aremove_stale_summaries(session_id, replaced)
        if removed is not None:
            self._finish_shared(*removed)

    async def _aremove_stale_summaries(
        self, session_id: str, replaced: str | None = None
    ) -> tuple[MergeShared, WriteResult] | None:
        """Async :meth:`_remove_stale_summaries`."""
        header = await self.aget_header(session_id)
        summaries = summaries_of(header)
        if header is None or not summaries:
            return None
        lasts = [(int(e["last_index"]), int(e["last_index"])) for e in summaries]
        ends = await self.aget_message_spans(session_id, lasts)
        position = None
        low = min(int(e["first_index"]) for e in summaries)
        for start, end in pages(int(header["metadata"]["message_count"]), low):
            if replaced is None or position is not None:
                break
            page = await self.aget_message_range(session_id, start, end)
            position = position_of(page, start, replaced)
        stale = stale_summaries(summaries, ends, position)
        if not stale:
            return None
        merge = self._plan_merge(session_id, {COMPACTIONS_KEY: stale}, reserved=True)
        return merge, await self._aexecute(merge)

    def delete_message(self, session_id: str, message_id: str) -> bool:
        """Remove one message by id, atomically (counters follow); return whether it was there.

        Summary compactions whose range the deletion changed are removed
        (:mod:`ctx_memory.compaction`).
        """
        return bool(self._edit(self._plan_delete_message(session_id, message_id)))

    async def adelete_message(self, session_id: str, message_id: str) -> bool:
        """Async :meth:`delete_message`."""
        return bool(await self._aedit(self._plan_delete_message(session_id, message_id)))

    def _plan_replace(
        self,
        session_id: str,
        message_id: str,
        message: BaseMessage | Mapping[str, Any],
        metadata: Mapping[str, Any] | None,
    ) -> tuple[ReplaceMessage, dict[str, Any]]:
        validate_session_id(session_id, existing=True)
        check_message_id(message_id, "message_id")
        (record,) = records_from([message], metadata)
        record["id"] = message_id  # the replacement takes the message's place and identity
        encoded = encode_record(record, self.token_counter, "message")
        return ReplaceMessage(session_id, message_id, encoded, now_iso()), record

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
        edited question is still the same turn; ``token_count`` follows. Atomic. Summary
        compactions covering the message are then removed: they summarise its old text.

        Raises:
            MessageNotFoundError: No message of the session has that id.
        """
        op, record = self._plan_replace(session_id, message_id, message, metadata)
        self._edit(op, message_id)
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
        await self._aedit(op, message_id)
        return record

    @staticmethod
    def _plan_truncate(session_id: str, message_id: str, inclusive: bool) -> TruncateMessages:
        validate_session_id(session_id, existing=True)
        check_message_id(message_id, "message_id")
        return TruncateMessages(session_id, message_id, inclusive, now_iso())

    def truncate_after(self, session_id: str, message_id: str, *, inclusive: bool = False) -> int:
        """Remove every message after ``message_id`` (and it too with ``inclusive``).

        For a chat UI: regenerate an answer (truncate after the question, then ask again)
        or edit the last question (:meth:`replace_message`, then truncate after it).
        Atomic, counters follow; summary compactions reaching past the cut are then
        removed. Returns how many messages were removed.

        Raises:
            MessageNotFoundError: No message of the session has that id.
        """
        return self._edit(self._plan_truncate(session_id, message_id, inclusive))

    async def atruncate_after(
        self, session_id: str, message_id: str, *, inclusive: bool = False
    ) -> int:
        """Async :meth:`truncate_after`."""
        return await self._aedit(self._plan_truncate(session_id, message_id, inclusive))

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

    @staticmethod
    def _plan_history(session_id: str, last_k: int | None) -> GetMessages | None:
        validate_session_id(session_id, existing=True)
        if last_k is not None and (isinstance(last_k, bool) or not isinstance(last_k, int)):
            msg = f"last_k must be a non-negative int or None, got {last_k!r}"
            raise ValidationError(msg)
        if last_k is not None:
            last_k = check_position(last_k, "last_k", minimum=0)
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
        return self._execute(self._plan_range(session_id, start, end))

    @staticmethod
    def _plan_range(session_id: str, start: int, end: int) -> GetMessages:
        validate_session_id(session_id, existing=True)
        return GetMessages(session_id, check_position(start, "start"), check_position(end, "end"))

    async def aget_message_range(
        self, session_id: str, start: int, end: int
    ) -> list[dict[str, Any]]:
        """Async :meth:`get_message_range`."""
        return await self._aexecute(self._plan_range(session_id, start, end))

    def get_message_spans(
        self, session_id: str, spans: Sequence[tuple[int, int]]
    ) -> list[list[dict[str, Any]]]:
        """The records of each ``(start, end)`` span, read at once.

        Spans are inclusive, ``0 <= start <= end``; one store round trip however many
        there are (what recall reads).
        """
        op = self._plan_spans(session_id, spans)
        return self._execute(op) if op.spans else []

    @staticmethod
    def _plan_spans(session_id: str, spans: Sequence[tuple[int, int]]) -> GetMessageSpans:
        validate_session_id(session_id, existing=True)
        checked = []
        for index, span in enumerate(spans):
            if not isinstance(span, (tuple, list)) or len(span) != 2:
                msg = f"spans[{index}] must be a (start, end) pair, got {span!r}"
                raise ValidationError(msg)
            start = check_position(span[0], f"spans[{index}][0]", minimum=0)
            end = check_position(span[1], f"spans[{index}][1]", minimum=start)
            checked.append((start, end))
        return GetMessageSpans(session_id, tuple(checked))

    async def aget_message_spans(
        self, session_id: str, spans: Sequence[tuple[int, int]]
    ) -> list[list[dict[str, Any]]]:
        """Async :meth:`get_message_spans`."""
        op = self._plan_spans(session_id, spans)
        return await self._aexecute(op) if op.spans else []

    def get_fetched_context(
        self, session_id: str, source_type: str | None = None
    ) -> dict[str, list[dict[str, Any]]]:
        """Fetched items by source type (only ``source_type`` if given)."""
        return self._execute(self._plan_get_fetched(session_id, source_type))

    @staticmethod
    def _plan_get_fetched(session_id: str, source_type: str | None) -> GetFetched:
        validate_session_id(session_id, existing=True)
        check_key(source_type, "source_type", optional=True)
        return GetFetched(session_id, source_type)

    async def aget_fetched_context(
        self, session_id: str, source_type: str | None = None
    ) -> dict[str, list[dict[str, Any]]]:
        """Async :meth:`get_fetched_context`."""
        return await self._aexecute(self._plan_get_fetched(session_id, source_type))

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
