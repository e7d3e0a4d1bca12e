"""The history window: the newest whole turns of a session that fit a token budget.

Pure, like a decoder: :class:`HistoryWindow` is fed stored records newest first and keeps
the longest suffix of whole turns (each starting at a user message) whose cached
``token_count`` values fit, then repairs tool traffic (:func:`repair_tool_pairs`,
:func:`group_tool_results`) so no orphan tool message and no AI tool call without its
results is ever sent. :class:`HistoryChunks` says which index ranges to read, newest
first and doubling in size, and takes what each read gave back.

The two read loops at the end, :func:`read_history_window` and
:func:`aread_history_window`, are the only I/O: they feed a :class:`HistoryChunks` from
:meth:`~ctx_memory.manager.ContextManager.get_message_range` (or its async twin) and
differ by ``await`` alone.
"""

from __future__ import annotations

import itertools
import operator
from typing import TYPE_CHECKING, Any, TypeVar

from langchain_core.messages import BaseMessage

from ctx_memory.assembly.compacted import summary_record
from ctx_memory.records import held_range

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

    from ctx_memory.assembly.compacted import CompactedView
    from ctx_memory.manager import ContextManager
    from ctx_memory.tokens import TokenCounter

__all__ = [
    "HistoryChunks",
    "HistoryWindow",
    "aread_history_window",
    "call_ids",
    "group_tool_results",
    "history_chunks",
    "read_history_window",
    "repair_tool_pairs",
]


class HistoryWindow:
    """Chooses the newest whole turns of a history that fit a token budget.

    Feed records newest first (in any number of chunks); the window keeps the longest
    suffix that starts at a user message and whose cached ``token_count`` values add up
    to at most ``budget``. At the very start of the history, leading messages before the
    first user message are kept too if they fit. The result is then passed through
    :func:`repair_tool_pairs`, so it never holds an orphan tool message nor an AI tool
    call without all its results, and :func:`group_tool_results`, so each result
    follows its call.

    Args:
        budget: Tokens available for history.
        cost: Tokens of one record (default: its cached ``token_count``).
        skip: Returns true for records to pass over entirely (e.g. messages the caller
            sends anyway); they neither count nor end a turn.
        stored: Tokens a record stands for in the stored history (default: its cached
            ``token_count``; a placeholder or summary stands for more): what block
            boundaries count (:meth:`finish`).

    Fed with positions (``newest=`` in :meth:`feed`), it also knows :attr:`start`, the
    position of the oldest record chosen; :meth:`finish` can trim in blocks of tokens.

    Example:
        .. code-block:: python

            from ctx_memory.assembly.window import HistoryWindow

            history = [
                {"role": "user", "content": "a", "token_count": 5},
                {"role": "assistant", "content": "b", "token_count": 5},
                {"role": "user", "content": "c", "token_count": 5},
                {"role": "assistant", "content": "d", "token_count": 5},
            ]
            window = HistoryWindow(budget=12)
            window.feed(reversed(history))
            kept = window.finish(at_start=True)
            assert [r["content"] for r in kept] == ["c", "d"]
    """

    def __init__(
        self,
        budget: int,
        *,
        cost: Callable[[Mapping[str, Any]], int] | None = None,
        skip: Callable[[Mapping[str, Any]], bool] | None = None,
        stored: Callable[[Mapping[str, Any]], int] | None = None,
    ) -> None:
        self.budget = max(budget, 0)
        self._cost = cost or _cached_cost
        self._skip = skip
        self._stored = stored
        self.seen = 0
        self.seen_tokens = 0
        self.skipped = 0
        self.skipped_tokens = 0
        self.done = False
        self._pending: list[Mapping[str, Any]] = []
        self._pending_tokens = 0
        self._selected: list[Mapping[str, Any]] = []
        self.tokens = 0
        self.dropped: list[Mapping[str, Any]] = []
        self.dropped_at: list[int] = []  # positions of ``dropped`` (when fed with positions)
        self.chosen: list[Mapping[str, Any]] = []
        self._tool_traffic = False
        self.start: int | None = None
        self._pos = 0
        self._pending_pos: list[int] = []
        self._selected_pos: list[int] = []
        self._pending_cost: list[int] = []
        self._selected_cost: list[int] = []
        self._skipped_at: list[tuple[int, int]] = []  # (position, stored tokens), newest first
        self._waiting: dict[str, int] = {}  # tool results fed whose call is not yet: their cost

    def feed(self, records: Iterable[Mapping[str, Any]], *, newest: int | None = None) -> bool:
        """Consume records, newest first; return true once no older record can fit.

        ``newest`` is the position in the history of the first record fed (the chunk
        loops pass it), so that :attr:`start` and block trimming know positions.
        """
        if self.done:
            return True
        if newest is not None:
            self._pos = newest
        cost_of, skip, budget = self._cost, self._skip, self.budget
        pending, pending_pos, pending_cost = self._pending, self._pending_pos, self._pending_cost
        for record in records:
            position = self._pos
            self._pos -= 1
            if skip is not None and skip(record):
                self.skipped += 1
                tokens = int(record.get("token_count") or 0)
                self.skipped_tokens += tokens
                stored = tokens if self._stored is None else self._stored(record)
                self._skipped_at.append((position, stored))
                continue
            cost = int(record["token_count"]) if cost_of is _cached_cost else cost_of(record)
            self.seen += 1
            self.seen_tokens += cost
            role = record["role"]
            if role == "tool" or (role == "assistant" and record.get("tool_calls")):
                self._tool_traffic = True
                cost = self._paired_cost(record, role, cost)
            if self.tokens + self._pending_tokens + cost > budget:
                self.done = True
                return True
            pending.append(record)
            pending_pos.append(position)
            pending_cost.append(cost)
            self._pending_tokens += cost
            if role == "user":
                self._commit()
        return False

    def _paired_cost(self, record: Mapping[str, Any], role: str, cost: int) -> int:
        """What ``record`` adds to the window once the tool results it pairs with are counted.

        A tool result (fed before its call, newest first) costs nothing until its call
        comes: the repair drops a result whose call the window does not reach (another
        writer's message between them can put the call in an older turn), so counting it
        then would leave its tokens unused. The call pays for the results it answers; a
        call that some result never answers (still pending, or lost) is dropped by the
        repair with every result it has, so it and they cost nothing.
        """
        waiting = self._waiting
        if role == "tool":
            call_id = record.get("tool_call_id")
            if isinstance(call_id, str) and call_id and call_id not in waiting:
                waiting[call_id] = cost
                return 0
            return cost
        calls = call_ids(record)
        answered = bool(calls) and all(call_id in waiting for call_id in calls)
        paid = sum(waiting.pop(call_id, 0) for call_id in calls)
        return cost + paid if answered else 0

    def _commit(self) -> None:
        self._selected.extend(self._pending)
        self._selected_pos.extend(self._pending_pos)
        self._selected_cost.extend(self._pending_cost)
        self.tokens += self._pending_tokens
        self._pending.clear()
        self._pending_pos.clear()
        self._pending_cost.clear()
        self._pending_tokens = 0

    def _above(self) -> list[int]:
        """Stored tokens from the newest record fed down to each chosen one, it included.

        Chosen records are newest first; records passed over count where they were.
        """
        selected = self._selected
        if self._stored is None:
            stored = list(map(int, map(_TOKEN_COUNT, selected)))
        else:
            stored = list(map(self._stored, selected))
        if self._skipped_at:
            skipped = iter(self._skipped_at)  # newest first, like the chosen records
            pending = next(skipped, None)
            for i, position in enumerate(self._selected_pos):
                while pending is not None and pending[0] > position:
                    stored[i] += pending[1]
                    pending = next(skipped, None)
        return list(itertools.accumulate(stored))

    def _trim_to_block(self, block: int, total: int) -> None:
        """Drop the oldest turns so the window starts at or after a multiple of ``block`` tokens.

        Boundaries count the stored history's tokens from its first message (``total``:
        those up to the newest record fed), so they are fixed once written: the start
        then moves only when the window, full, crosses the next one, never back while
        the budget stays, and about ``block`` tokens go at once, whatever the messages'
        sizes. The prefix of the prompt stays the same over many requests.
        """
        if block <= 0 or not self._selected:
            return
        above = self._above()
        oldest = total - above[-1]  # stored tokens before the oldest record kept
        floor = -(-oldest // block) * block
        if floor == oldest and self._selected[-1]["role"] == "user":
            return
        limit = total - floor  # a record at or after the boundary has at most this above it
        for i in range(len(above) - 1, -1, -1):  # oldest first
            if above[i] <= limit and self._selected[i]["role"] == "user":
                cut = sum(self._selected_cost[i + 1 :])
                if 4 * (self.tokens - cut) < self.budget:
                    # The boundary falls inside a large turn: cutting there would leave
                    # the window less than a quarter full (a block cut leaves about half).
                    # Kept whole (it starts at a turn).
                    return
                self.tokens -= cut
                del self._selected[i + 1 :], self._selected_pos[i + 1 :]
                del self._selected_cost[i + 1 :]
                return

    def finish(self, *, at_start: bool, block: int = 0, total: int = 0) -> list[Mapping[str, Any]]:
        """The chosen records, oldest first.

        Args:
            at_start: The oldest record fed was the first of the history, so messages
                before the first user message (a greeting, say) may be kept.
            block: When the window is full (older records did not fit), start it at the
                first user message at or after the next block boundary: where the
                stored history's tokens before a record (see ``stored``) reach a
                multiple of ``block``; ``0``: no trimming.
            total: The stored tokens of the history from its first message up to the
                newest record fed, so boundaries are counted from the first message
                and are the same from one request to the next.
        """
        if at_start and not self.done and self._pending:
            self._commit()
        elif block and self.done:
            self._trim_to_block(block, total)
        self._pending = []
        self._pending_pos = []
        self._pending_cost = []
        self._pending_tokens = 0
        if self._selected_pos:
            self.start = self._selected_pos[-1]
        chosen = list(reversed(self._selected))
        if not self._tool_traffic:
            return chosen
        kept, dropped = repair_tool_pairs(chosen)
        if dropped:
            self.dropped = dropped
            if self._selected_pos:
                at = {id(r): p for r, p in zip(self._selected, self._selected_pos, strict=True)}
                self.dropped_at = [at[id(r)] for r in dropped]
        # What is sent: a result that waited for its call was counted when the call came,
        # so the kept records' own costs add up to at most what the window counted.
        cost = self._cost
        self.tokens = sum(int(r["token_count"]) if cost is _cached_cost else cost(r) for r in kept)
        return group_tool_results(kept)


def _cached_cost(record: Mapping[str, Any]) -> int:
    return int(record["token_count"])


_TOKEN_COUNT = operator.itemgetter("token_count")


def _stored_tokens(view: CompactedView) -> Callable[[Mapping[str, Any]], int]:
    """The stored tokens a record the view fed stands for (a summary: those it covers)."""
    replaced = view.replaced

    def stored(record: Mapping[str, Any]) -> int:
        tokens = replaced.get(str(record.get("id")))
        return int(record["token_count"]) if tokens is None else tokens

    return stored


def _calls_of(message: Mapping[str, Any] | BaseMessage) -> list[Any]:
    """An AI message's tool calls; a LangChain message's malformed ones count too.

    Chat APIs send ``invalid_tool_calls`` as calls (``ChatOpenAI`` does) and LangChain's
    agent answers each with an error result in the request, so in a request's tail they
    pair like any call. A stored message's are never sent
    (:func:`~ctx_memory.assembly.messages.records_to_messages`), so a record's do not.
    """
    if isinstance(message, BaseMessage):
        calls = list(getattr(message, "tool_calls", None) or ())
        calls += getattr(message, "invalid_tool_calls", None) or ()
        return calls
    return list(message.get("tool_calls") or ())


def call_ids(message: Mapping[str, Any] | BaseMessage) -> list[str]:
    """The ids of the tool calls an AI message (record or LangChain message) makes."""
    return [str(c.get("id")) for c in _calls_of(message) if c.get("id")]


def _has_tool_calls(message: Mapping[str, Any] | BaseMessage) -> bool:
    return bool(_calls_of(message))


def _role_of(message: Mapping[str, Any] | BaseMessage) -> str:
    if isinstance(message, BaseMessage):
        return {"human": "user", "ai": "assistant"}.get(message.type, message.type)
    return str(message.get("role"))


def _tool_call_id_of(message: Mapping[str, Any] | BaseMessage) -> str | None:
    if isinstance(message, BaseMessage):
        value = getattr(message, "tool_call_id", None)
    else:
        value = message.get("tool_call_id")
    return str(value) if value else None


M = TypeVar("M", "Mapping[str, Any]", BaseMessage)


def _answers(messages: Sequence[M]) -> dict[int, list[int]]:
    """Each AI tool-call message's results: ``{its index: [result indexes, in order]}``.

    A result answers the latest call of its id before it that no earlier result answered:
    ids can repeat (a retried write stored again with new message ids, a model reusing an
    id in a later turn, a tool result stored twice), and each call gets at most one result
    per time it was made. A result no call waits for answers nothing.
    """
    answers: dict[int, list[int]] = {}
    waiting: dict[str, list[int]] = {}  # call id -> indexes of the AI messages still waiting
    for index, message in enumerate(messages):
        role = _role_of(message)
        if role == "assistant" and _has_tool_calls(message):
            answers[index] = []
            for call in call_ids(message):
                waiting.setdefault(call, []).append(index)
        elif role == "tool" and (answered := _tool_call_id_of(message)):
            callers = waiting.get(answered)
            if callers:
                answers[callers.pop()].append(index)
    return answers


def repair_tool_pairs(messages: Sequence[M]) -> tuple[list[M], list[M]]:
    """Drop orphan tool messages and AI tool calls without all their results.

    Works on stored records and on LangChain messages alike. An AI message whose tool
    calls are not all answered by later tool messages is dropped, and so is every tool
    message that answers no kept call (see :func:`_answers` for repeated call ids).

    Returns:
        ``(kept, dropped)``, both in the original order.
    """
    if not any(_role_of(m) == "tool" or _has_tool_calls(m) for m in messages):
        return list(messages), []  # the common case: no tool traffic at all
    answers = _answers(messages)
    kept_results: set[int] = set()
    dropped_calls: set[int] = set()
    for index, results in answers.items():
        calls = call_ids(messages[index])
        if calls and len(results) == len(calls):
            kept_results.update(results)
        else:
            dropped_calls.add(index)
    kept: list[M] = []
    dropped: list[M] = []
    for index, message in enumerate(messages):
        if index in dropped_calls or (_role_of(message) == "tool" and index not in kept_results):
            dropped.append(message)
        else:
            kept.append(message)
    return kept, dropped


def group_tool_results(messages: Sequence[M]) -> list[M]:
    """Move each tool result right after the AI message that called it.

    A shared session can hold other messages between an AI tool call and its results
    (an agent used as a tool writes its own turn there; so can any writer while a tool
    runs). Chat APIs want the results right after the call (here in the order of the
    calls), so the messages in between move after the results; nothing is dropped. Run
    after :func:`repair_tool_pairs`.
    """
    answers = _answers(messages)
    if not any(answers.values()):
        return list(messages)
    placed = {index for results in answers.values() for index in results}
    out: list[M] = []
    for index, message in enumerate(messages):
        if index in placed:
            continue
        out.append(message)
        results = answers.get(index)
        if results:
            order = {call_id: n for n, call_id in reversed(list(enumerate(call_ids(message))))}
            ranked = sorted(
                results, key=lambda r: order.get(_tool_call_id_of(messages[r]) or "", 0)
            )
            out.extend(messages[r] for r in ranked)
    return out


def history_chunks(end: int, first: int) -> Iterator[tuple[int, int]]:
    """Inclusive ``(start, stop)`` index ranges from ``end - 1`` down to 0, doubling."""
    size = max(first, 1)
    while end > 0:
        start = max(0, end - size)
        yield start, end - 1
        end = start
        size *= 2


class HistoryChunks:
    """Which ranges of a session to read for a :class:`HistoryWindow`, and what came back.

    The read loops (:func:`read_history_window`, :func:`aread_history_window`) ask for
    :meth:`ranges`, read each and :meth:`feed` it here until it says stop; no I/O here.
    ``metadata`` is the session's (for ``message_count``, ``token_count`` and
    ``token_encoding``); the first range is sized from the average message so one read
    usually suffices. Messages before index ``end`` (default: all) are considered.
    With ``block``, a full window is trimmed in blocks of that many tokens of the stored
    history, counted from its first message (:meth:`HistoryWindow.finish`); the messages
    from ``end`` on are then read first, for their tokens.
    Cached counts are used unless the session was counted in another encoding. Stored
    messages whose ``id`` is in ``skip_ids`` are passed over. With ``view`` (a
    :class:`~ctx_memory.assembly.compacted.CompactedView`), records are fed as the view
    rewrites them (a summary for a compacted range, placeholders for cleared tool
    outputs) and the reads skip the ranges a summary covers.

    Example:
        .. code-block:: python

            from ctx_memory import ContextManager
            from ctx_memory.assembly.window import HistoryChunks, read_history_window

            manager = ContextManager()
            for i in range(10):
                manager.add_user_message("s1", f"question {i}")
                manager.add_assistant_message("s1", f"answer {i}")
            header = manager.get_header("s1")
            chunks = HistoryChunks(header["metadata"], 40, counter=manager.token_counter)
            window = read_history_window(manager, "s1", chunks)
            assert window.chosen[-1]["content"] == "answer 9"
            assert window.tokens <= 40
    """

    def __init__(
        self,
        metadata: Mapping[str, Any],
        budget: int,
        *,
        counter: TokenCounter,
        end: int | None = None,
        skip_ids: frozenset[str] = frozenset(),
        block: int = 0,
        view: CompactedView | None = None,
    ) -> None:
        stored = int(metadata.get("message_count", 0))
        self.block = block
        self.view = view if view is not None and view.active else None
        self.counter = counter
        self.end = stored if end is None else min(end, stored)
        self.stored = stored
        # The stored tokens before ``end``: the block boundaries count from the first
        # message. Those of the messages from ``end`` on are taken off once read.
        self._total = int(metadata.get("token_count", 0))
        self._after = bool(block) and self.end < stored  # to read first, for their tokens
        same_encoding = metadata.get("token_encoding") in (None, counter.encoding_name)
        self.window = HistoryWindow(
            budget,
            cost=None if same_encoding else counter.count_record,
            skip=(lambda r: r.get("id") in skip_ids) if skip_ids else None,
            stored=_stored_tokens(self.view) if self.view is not None else None,
        )
        average = max(int(metadata.get("token_count", 0)) // max(stored, 1), 1)
        self._first = budget // average + 8 + len(skip_ids)
        self._reached = self.end
        self.reads: list[tuple[int, Sequence[Mapping[str, Any]]]] = []  # as read, by start
        # The newest summary is pinned: its tokens are set aside before the window fills,
        # so it stands in front of the window even when the window does not reach back to
        # it (once its newest message is checked, by one read, to be the one it covered).
        self._pin: tuple[int, dict[str, Any]] | None = None
        self._pin_state = "none"  # none | unchecked | kept | dropped | reached
        if self.view is not None:
            positions = [p for p in self.view.summaries if p < self.end]
            if positions:
                last = max(positions)
                record = summary_record(self.view.summaries[last], counter)
                if record["token_count"] <= budget * 3 // 4:  # the window keeps a quarter
                    self._pin, self._pin_state = (last, record), "unchecked"

    def first_range(self) -> tuple[int, int] | None:
        """The first range :meth:`ranges` gives, when it does not depend on a view."""
        if self.view is not None or self.end <= 0:
            return None
        return max(0, self.end - max(self._first, 1)), self.end - 1

    def ranges(self) -> Iterator[tuple[int, int]]:
        """Inclusive ``(start, stop)`` ranges to read, newest first (:func:`history_chunks`).

        With a view, a range a summary covers is not read. Trimming in blocks, the
        messages from ``end`` on come first.
        """
        if self._after:
            yield self.end, self.stored - 1
        if self.view is None:
            yield from history_chunks(self.end, self._first)
        else:
            yield from self._view_ranges(self.view)

    def _view_ranges(self, view: CompactedView) -> Iterator[tuple[int, int]]:
        if self._pin is not None:
            yield self._pin[0], self._pin[0]  # the pinned summary's newest covered message
        end, size = self.end, max(self._first, 1)
        while end > 0:
            start = max(0, end - size)
            yield start, end - 1
            end = view.resume_below(start)
            size *= 2

    def feed(self, start: int, records: Sequence[Mapping[str, Any]]) -> bool:
        """Take the records read from ``start`` on; return true once no more are needed.

        What is fed is kept in :attr:`reads` (the stable layout brings the recall index up
        to date from it instead of reading the newest messages again).
        """
        self.reads.append((start, records))
        if self._after and start == self.end:  # not history: only their tokens count
            self._after = False
            self._total -= sum(int(r.get("token_count") or 0) for r in records)
            return False
        if self._pin_state == "unchecked" and self._pin is not None:
            position, summary = self._pin
            entry = self.view.summaries[position] if self.view is not None else {}
            if records and records[0].get("id") == entry.get("last_id"):
                self._pin_state = "kept"
                self.window.budget -= int(summary["token_count"])
            else:  # edited since: the view says so when the window gets there
                self._pin_state = "dropped"
            return False
        self._reached = start
        newest = start + len(records) - 1
        if self.view is None:
            return self.window.feed(reversed(records), newest=newest) or not records
        for top, run in self.view.segments(reversed(records), newest=newest):
            self._reached = min(self._reached, top - len(run) + 1)
            pinned = self._pin[1] if self._pin_state == "kept" and self._pin else None
            if pinned is not None and run[0].get("id") == pinned["id"]:  # reached it after all
                self._pin_state = "reached"
                self.window.budget += int(pinned["token_count"])
            if self.window.feed(run, newest=top):
                return True
        return not records

    def finish(self) -> HistoryWindow:
        """The finished window; its ``chosen`` records are oldest first."""
        window = self.window
        window.chosen = window.finish(
            at_start=self._reached == 0, block=self.block, total=self._total
        )
        if window.start is None:
            window.start = self.end
        if self._pin_state == "kept" and self._pin is not None and self.view is not None:
            summary = self._pin[1]
            entry = self.view.summaries[self._pin[0]]
            window.chosen.insert(0, summary)
            window.tokens += int(summary["token_count"])
            self.view.used[summary["id"]] = entry
            self.view.replaced[summary["id"]] = int(entry.get("tokens_covered") or 0)
        return window


def read_history_window(
    manager: ContextManager,
    session_id: str,
    chunks: HistoryChunks,
    *,
    known: Sequence[tuple[int, Sequence[Mapping[str, Any]]]] = (),
) -> HistoryWindow:
    """Read the newest whole turns that fit, newest first in chunks (see :class:`HistoryChunks`).

    A chunk that ``known`` reads (``(position, records)``) hold whole is not read again.
    """
    for start, stop in chunks.ranges():
        records = held_range(known, start, stop)
        if records is None:
            records = manager.get_message_range(session_id, start, stop)
        if chunks.feed(start, records):
            break
    return chunks.finish()


async def aread_history_window(
    manager: ContextManager,
    session_id: str,
    chunks: HistoryChunks,
    *,
    known: Sequence[tuple[int, Sequence[Mapping[str, Any]]]] = (),
) -> HistoryWindow:
    """Async :func:`read_history_window` (the store's native async reads)."""
    for start, stop in chunks.ranges():
        records = held_range(known, start, stop)
        if records is None:
            records = await manager.aget_message_range(session_id, start, stop)
        if chunks.feed(start, records):
            break
    return chunks.finish()
