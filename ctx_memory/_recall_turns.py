"""Recalled turns as text, and which turns the ``recall`` tool shows (pure: no I/O).

Re-exported by :mod:`ctx_memory.recall`, which documents them.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ctx_memory._recall_index import CONTEXT_WEIGHT, ECHO_TOOLS, record_text

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ctx_memory._recall_index import RecallIndex

__all__ = ["format_turns", "gap_text", "tool_ranges"]


def _line(position: int, record: Mapping[str, Any]) -> str:
    role = str(record.get("role"))
    text = record_text({**record, "tool_calls": None, "name": None})
    if role == "tool" and record.get("name") in ECHO_TOOLS:  # its lines are stored anyway
        return f"[{position} tool result ({record.get('name')})] (an earlier answer of the tool)"
    if role == "tool":
        label = f"tool result ({record.get('name') or record.get('tool_call_id') or 'tool'})"
        return f"[{position} {label}] {text}"
    calls = record.get("tool_calls") or ()
    if calls:
        called = ", ".join(
            f"{c.get('name')}({json.dumps(c.get('args') or {}, ensure_ascii=False)})" for c in calls
        )
        text = f"{text} [calls {called}]".strip()
    return f"[{position} {role}] {text}"


def format_turns(
    turns: Sequence[tuple[int, Sequence[Mapping[str, Any]]]],
    *,
    heading: str = "",
    positions: Sequence[Sequence[int]] | None = None,
) -> str:
    """Recalled turns as text: ``(start position, records)`` pairs, oldest first.

    Each message is a line labelled with its position and role (``[120 user] …``); a gap
    between turns (or before the first) is shown as ``[… n earlier messages not shown …]``.
    A turn's records are at ``start``, ``start + 1``, ... unless ``positions`` (one
    sequence per turn) says where each is: a turn whose tool pairs were repaired (some
    records left out, a result moved after its call) keeps its true positions.
    """
    lines = [heading] if heading else []
    previous = 0
    for i, (start, records) in enumerate(turns):
        at = range(start, start + len(records)) if positions is None else positions[i]
        first = min(at, default=start)
        if first > previous:
            lines.append(gap_text(first - previous))
        lines.extend(_line(p, r) for p, r in zip(at, records, strict=True))
        previous = max(previous, max(at, default=start - 1) + 1)
    return "\n".join(lines)


def gap_text(count: int) -> str:
    """The visible marker for ``count`` messages not shown."""
    noun = "message" if count == 1 else "messages"
    return f"[… {count} earlier {noun} not shown …]"


def tool_ranges(
    index: RecallIndex,
    query: str,
    k: int,
    budget: int,
    *,
    query_vector: Sequence[float] | None = None,
    best_first: bool = False,
    before: int | None = None,
) -> list[tuple[int, int]]:
    """The whole turns to show for ``query``: best first, within ``budget``, oldest first.

    ``(start, stop)`` pairs, ``stop`` exclusive; at most ``k`` turns whose cached
    tokens add up to at most ``budget``. With ``query_vector`` (and vectors in the
    index), hits are ranked by :meth:`RecallIndex.hybrid_search`, else by BM25 alone;
    both in context (:data:`~ctx_memory.recall.CONTEXT_WEIGHT`). ``best_first``: in the
    order they were chosen, not in history order. ``before``: only turns of the
    messages below this position (the turn in progress, which is in view, is not shown).
    """
    chosen: list[tuple[int, int]] = []
    spent = 0
    found = index.ranked(
        query, k * 4, query_vector=query_vector, context=CONTEXT_WEIGHT, before=before
    )
    for position, _, _ in found:
        start, stop = index.turn(position)
        if before is not None:
            stop = min(stop, before)
        if (start, stop) in chosen:
            continue
        cost = index.cost(start, stop)
        if spent + cost > budget:
            continue
        chosen.append((start, stop))
        spent += cost
        if len(chosen) >= k:
            break
    return chosen if best_first else sorted(chosen)
