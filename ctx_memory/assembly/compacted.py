"""The history as a prompt sees it once compactions apply: pure, fed newest first.

:class:`CompactedView` sits between the history reads and the
:class:`~ctx_memory.assembly.window.HistoryWindow`: each stored record, with its
position, comes out as itself, as a placeholder (a tool output cleared from the prompt),
or, for a summary compaction, the whole covered range comes out as one user message
``[Summary of messages a-b]`` at position ``a``, exactly counted, whose last line names
the tool-call ids of the tool results it covers that its text does not name already
(``restore_tool_result`` brings any of them back). A compaction whose newest covered
message is no longer at ``last_index`` with ``last_id`` (history edited since) is not
used, and said so in :attr:`CompactedView.notes`. Tool outputs of the turn in progress
are never cleared by ``clear_before``: the prompt's tail when it asks a question of its
own (every stored turn is then finished), else the stored messages after the newest
user message the view reads.
Nothing here writes.

Also the pure half of :mod:`ctx_memory.compaction`'s data: the reserved key, reading the
entries from ``shared``, and the summary message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ctx_memory.records import (
    COMPACTIONS_KEY,
    RESTORABLE_PREFIX,
    summary_record,
    summary_text,
    well_formed_compaction,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from ctx_memory.tokens import TokenCounter

__all__ = [
    "COMPACTIONS_KEY",
    "RESTORABLE_PREFIX",
    "CompactedView",
    "compactions_of",
    "effective_summaries",
    "placeholder_text",
    "producer_label",
    "summary_record",
    "summary_text",
]


def compactions_of(shared: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The live compactions in a ``shared`` dict, oldest range first.

    Tombstones are skipped, and so is an entry that is not well formed
    (:func:`~ctx_memory.records.well_formed_compaction`): it is never used.
    """
    entries = (shared or {}).get(COMPACTIONS_KEY) or {}
    if not isinstance(entries, dict):
        return []
    live = [dict(e) for k, e in entries.items() if e is not None and well_formed_compaction(k, e)]
    return sorted(live, key=lambda e: (e["first_index"], e["id"]))


def effective_summaries(compactions: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The summaries a prompt uses, oldest first: the newest, then each ending before the last.

    A summary inside the range of a newer one (one that ends later, or at the same
    message and reaches further back) is never reached by the view, so it is not
    counted here either.
    """
    summaries = sorted(
        (dict(c) for c in compactions if c.get("kind") == "summary"),
        key=lambda c: (-int(c["last_index"]), int(c["first_index"])),
    )
    out: list[dict[str, Any]] = []
    below: int | None = None
    for entry in summaries:
        if below is None or int(entry["last_index"]) < below:
            out.append(entry)
            below = int(entry["first_index"])
    return out[::-1]


def producer_label(producer: object) -> str:
    """What wrote a compaction, for people: ``name (model, prompt <hash>)``.

    Example:
        .. code-block:: python

            from ctx_memory.assembly.compacted import producer_label

            assert producer_label({"name": "chat", "model": "gpt-4o", "prompt_hash": "ab12"}) == (
                "chat (gpt-4o, prompt ab12)"
            )
            assert producer_label({"name": "extractive", "model": "", "prompt_hash": ""}) == (
                "extractive"
            )
    """
    if not isinstance(producer, dict):
        return "?"
    name = str(producer.get("name") or "?")
    details = [str(producer["model"])] if producer.get("model") else []
    if producer.get("prompt_hash"):
        details.append(f"prompt {producer['prompt_hash']}")
    return f"{name} ({', '.join(details)})" if details else name


def placeholder_text(call_id: str, position: int, tokens: int) -> str:
    """What a cleared tool output is replaced by in a prompt."""
    return (
        f"[Tool output cleared from view ({tokens} tokens, message {position}). "
        f'Call restore_tool_result with tool_call_id="{call_id}", message={position} to see it.]'
    )


class CompactedView:
    """Rewrites stored records, newest first, as the prompt is to see them.

    Args:
        compactions: The session's live compactions (:func:`compactions_of`).
        counter: Counts the summary and placeholder messages exactly.
        clear_before: Tool outputs at positions below this (and of at least
            ``min_tool_tokens``) become placeholders, except those of the turn in
            progress; ``0``: none.
        min_tool_tokens: Smaller tool outputs are kept.
        tail_turn: The prompt's tail starts a turn (it holds a user message: the
            question, or an agent's current run from its input on), so that is the
            turn in progress and every stored turn is finished (stored copies of the
            tail's messages are sent from the tail, whole): a tool loop clears the
            previous run's outputs from its first step on, not from the step after
            its question is stored. ``False``: the turn in progress is the stored
            messages after the newest user message read.

    Example:
        .. code-block:: python

            from ctx_memory import TokenCounter
            from ctx_memory.assembly.compacted import CompactedView

            entry = {"id": "c1", "kind": "summary", "first_index": 0, "last_index": 1,
                     "first_id": "m0", "last_id": "m1", "summary": "said hi"}
            view = CompactedView([entry], TokenCounter())
            records = [
                {"role": "user", "content": "hi", "id": "m0", "token_count": 5},
                {"role": "assistant", "content": "hello", "id": "m1", "token_count": 5},
                {"role": "user", "content": "bye", "id": "m2", "token_count": 5},
            ]
            out = list(view.segments(reversed(records), newest=2))
            assert [(p, [r["id"] for r in rs]) for p, rs in out] == [
                (2, ["m2"]), (0, ["ctx_memory.compactions:c1"])
            ]
    """

    def __init__(
        self,
        compactions: Sequence[Mapping[str, Any]],
        counter: TokenCounter,
        *,
        clear_before: int = 0,
        min_tool_tokens: int = 0,
        tail_turn: bool = False,
    ) -> None:
        self.counter = counter
        # One summary per newest covered message: the one reaching furthest back (then
        # the newest written) when two end at the same message.
        ordered = sorted(
            (c for c in compactions if c.get("kind") == "summary"),
            key=lambda c: (-int(c["first_index"]), str(c.get("created_at") or "")),
        )
        self.summaries = {int(c["last_index"]): c for c in ordered}
        self.cleared = [
            (int(c["first_index"]), int(c["last_index"]))
            for c in compactions
            if c.get("kind") == "tool_outputs_cleared"
        ]
        self.clear_before = clear_before
        self.min_tool_tokens = min_tool_tokens
        self.used: dict[str, Mapping[str, Any]] = {}
        """Summary compactions emitted, by their message id."""
        self.replaced: dict[str, int] = {}
        """Stored tokens of each emitted message that stands for others, by its id."""
        self.cleared_calls: dict[str, str] = {}
        """Tool-call ids of placeholders emitted, by message id."""
        self.notes: list[str] = []
        self._skip_to: int | None = None  # inside a summary: positions >= this are covered
        self._resume: int | None = None
        # Tool outputs read before any user message are the turn in progress's, unless
        # the tail is that turn.
        self._turn_open = not tail_turn

    @property
    def active(self) -> bool:
        """Whether anything is to be rewritten at all."""
        return bool(self.summaries or self.cleared or self.clear_before)

    def resume_below(self, start: int) -> int:
        """Where the next read should end (exclusive): below a summary reaching past ``start``."""
        resume, self._resume = self._resume, None
        return min(start, resume) if resume is not None else start

    def _clears(self, record: Mapping[str, Any], position: int) -> bool:
        if record.get("role") != "tool" or not record.get("tool_call_id"):
            return False
        if any(a <= position <= b for a, b in self.cleared):
            return True
        if self._turn_open:
            return False  # the turn in progress keeps its tool outputs
        return position < self.clear_before and int(record["token_count"]) >= self.min_tool_tokens

    def _placeholder(self, record: Mapping[str, Any], position: int) -> dict[str, Any]:
        stored = int(record["token_count"])
        call_id = str(record["tool_call_id"])
        new = {key: record[key] for key in ("role", "id", "tool_call_id", "name") if key in record}
        new["content"] = placeholder_text(call_id, position, stored)
        new["token_count"] = self.counter.count_record(new)
        self.replaced[str(record.get("id"))] = stored
        self.cleared_calls[str(record.get("id"))] = call_id
        return new

    def recalled(self, records: Sequence[Mapping[str, Any]], start: int) -> list[Mapping[str, Any]]:
        """A recalled turn (its records from position ``start``) as the prompt is to see it.

        Tool outputs the view clears in the window are cleared here too (a recalled turn
        is never the turn in progress), so recall brings back the conversation around a
        tool call, not the output every placeholder already names: the caller restores
        that by id. Placeholders are counted exactly and noted in :attr:`cleared_calls`.
        """
        out: list[Mapping[str, Any]] = []
        for offset, record in enumerate(records):
            position = start + offset
            old = record.get("role") == "tool" and record.get("tool_call_id")
            if old and self.clears_output(position, int(record["token_count"])):
                out.append(self._placeholder(record, position))
            else:
                out.append(record)
        return out

    def verbatim_start(self, start: int) -> int:
        """Where a window starting at ``start`` begins sending messages as they are stored.

        A summary the window opens with stands for its covered range, so recall may still
        bring back turns from that range (rung (c) of the compaction ladder): only turns
        the window sends verbatim are never recalled twice.
        """
        moved = True
        while moved:
            moved = False
            for entry in self.used.values():
                if int(entry["first_index"]) <= start <= int(entry["last_index"]):
                    start, moved = int(entry["last_index"]) + 1, True
        return start

    def clears_output(self, position: int, tokens: int) -> bool:
        """Whether a recalled tool output of ``tokens`` at ``position`` is a placeholder.

        It is when it is old (before ``clear_before`` and large enough) or a compaction
        cleared it.
        """
        return any(a <= position <= b for a, b in self.cleared) or (
            position < self.clear_before and tokens >= self.min_tool_tokens
        )

    def segments(
        self, records: Iterator[Mapping[str, Any]] | Sequence[Mapping[str, Any]], *, newest: int
    ) -> Iterator[tuple[int, list[Mapping[str, Any]]]]:
        """``(position of the first, records)`` runs to feed a window, newest first."""
        run: list[Mapping[str, Any]] = []
        run_top = newest
        position = newest + 1
        for record in records:
            position -= 1
            if self._skip_to is not None:
                if position >= self._skip_to:
                    continue  # covered by the summary just emitted
                self._skip_to = None
            entry = self.summaries.get(position)
            if entry is not None and record.get("id") == entry.get("last_id"):
                if run:
                    yield run_top, run
                summary = summary_record(entry, self.counter)
                first = int(entry["first_index"])
                self.used[summary["id"]] = entry
                self.replaced[summary["id"]] = int(entry.get("tokens_covered") or 0)
                yield first, [summary]
                self._skip_to = first
                self._resume = first
                self._turn_open = False
                run, run_top = [], first - 1
                continue
            if entry is not None:
                self.notes.append(
                    f"compaction {entry['id']} not used: message {position} is no longer "
                    f"{entry.get('last_id')!r} (history edited since)"
                )
            if record.get("role") == "user":
                self._turn_open = False
            if not run:
                run_top = position
            run.append(
                self._placeholder(record, position) if self._clears(record, position) else record
            )
        if run:
            yield run_top, run
