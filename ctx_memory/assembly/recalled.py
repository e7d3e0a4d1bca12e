"""Recalled turns: which older turns to bring back, how they look, what they cost.

Pure, like the rest of :mod:`ctx_memory.assembly`. :func:`choose_turns` asks a
:class:`~ctx_memory.recall.RecallIndex` for the messages before the history window
that best match the question and expands each to its whole turn (a user message and
everything up to the next one, so tool calls keep their results), best first, while
their cached token counts fit the recall budget. The assembler reads the
:attr:`RecallChoice.reads` ranges and hands them to :meth:`RecallChoice.turn_records`;
:func:`fit_recalled` then repairs tool pairs, recounts exactly and drops the weakest
turns until what is left fits, and :func:`gap_messages` gives the visible markers for
what lies between (``[… 37 earlier messages not shown …]``).

:func:`recall_step` runs the choice for an assembly and :func:`finish_recalled` turns
what was read into messages (classic layout) or text on the question's message (stable).

Hits are ranked by BM25 in context (each message's BM25 plus
:data:`~ctx_memory.recall.CONTEXT_WEIGHT` times its neighbours'). Given the question's
vector (hybrid recall: the assembler's ``embeddings=``), they come from
:meth:`~ctx_memory.recall.RecallIndex.hybrid_search`, which fuses that ranking with cosine
similarity by reciprocal rank fusion; without one, nothing differs.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from langchain_core.messages import BaseMessage, HumanMessage

from ctx_memory.assembly.messages import attach_context, records_to_messages
from ctx_memory.assembly.sources import format_sources
from ctx_memory.assembly.window import (
    HistoryChunks,
    call_ids,
    group_tool_results,
    repair_tool_pairs,
)
from ctx_memory.recall import CONTEXT_WEIGHT, format_turns, gap_text

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping, Sequence

    from ctx_memory.assembly.compacted import CompactedView
    from ctx_memory.assembly.plan import PromptPlan
    from ctx_memory.assembly.window import HistoryWindow
    from ctx_memory.recall import RecallIndex
    from ctx_memory.tokens import TokenCounter

__all__ = [
    "GAP_ID_PREFIX",
    "RECALL_HEADING",
    "RecallChoice",
    "RecalledPart",
    "RecalledTurn",
    "borrow_results",
    "choose_turns",
    "count_markers",
    "finish_recalled",
    "fit_recalled",
    "gap_messages",
    "marker_message",
    "recall_beside_window",
    "recall_step",
    "recalled_entries",
    "recency_start",
]

GAP_ID_PREFIX = "ctx_memory-gap-"
"""The id prefix of gap marker messages (they are never stored)."""

MAX_HITS = 64
"""Most matching messages considered per assembly."""

RECALL_HEADING = "Recalled from earlier in this conversation (oldest first):"
"""Opens the stable layout's recalled turns (text on the question's message)."""

_MARKER_ESTIMATE = 16  # a gap marker as a user message, upper bound for choosing
_PLACEHOLDER_ESTIMATE = 48  # a cleared tool output's placeholder, upper bound for choosing
# For choosing, in the stable layout (the exact count decides): per recalled message, its
# ``[position role]`` label less the per-message overhead its cached count includes
# (about 1 token); per turn that touches no other recalled turn, the gap line before it.
_TEXT_OVERHEAD = 1
_GAP_LINE = 11
# The stable layout chooses this share more than the estimates say fits, and the exact
# count drops the weakest turns: a budget left unused costs coverage.
_SPARE_SHARE = 0.02


@dataclass(frozen=True)
class RecalledTurn:
    """One whole turn brought back.

    Attributes:
        start: Position of its first message.
        stop: Position after its last message.
        score: Its best hit's score (BM25; hybrid recall: the fused score).
        hits: ``(position, score, terms)`` of the messages in it that matched.
        cost: Cached tokens of its messages.
        signals: Hybrid recall only: ``(position, BM25 score, cosine similarity)`` of
            each hit, the similarity ``None`` where the vector ranking did not count
            (no vector, or not among the nearest).
    """

    start: int
    stop: int
    score: float
    hits: tuple[tuple[int, float, tuple[str, ...]], ...]
    cost: int
    signals: tuple[tuple[int, float, float | None], ...] = ()


@dataclass(frozen=True)
class RecallChoice:
    """The turns chosen to recall, oldest first, and the reads they need.

    Attributes:
        turns: The turns, in history order.
        budget: Tokens they may take.
        ids: Message ids by position (from the index), for the report.
        spent: Their estimated tokens (cached counts and overheads, as chosen).
    """

    turns: tuple[RecalledTurn, ...]
    budget: int
    ids: Mapping[int, str | None]
    spent: int = 0

    @property
    def reads(self) -> list[tuple[int, int]]:
        """Inclusive ``(start, stop)`` ranges to read: one per turn."""
        return [(t.start, t.stop - 1) for t in self.turns]

    @property
    def spans(self) -> list[tuple[int, int]]:
        """:attr:`reads` joined where turns are adjacent: one read per run of turns.

        Recall in context often picks a turn and the one beside it; on a networked store
        each read is a round trip. :meth:`split` gives the records back per turn.
        """
        spans: list[tuple[int, int]] = []
        for start, stop in self.reads:
            if spans and spans[-1][1] + 1 == start:
                spans[-1] = (spans[-1][0], stop)
            else:
                spans.append((start, stop))
        return spans

    def split(
        self, spans_read: Sequence[Sequence[Mapping[str, Any]]]
    ) -> list[Sequence[Mapping[str, Any]]]:
        """The records read for :attr:`spans`, one list per turn (as :attr:`reads`).

        A span read short (the history was shortened meanwhile) gives its turns what it
        holds of them, as reading each turn would have.
        """
        out: list[Sequence[Mapping[str, Any]]] = []
        spans = self.spans
        at = 0
        for start, stop in self.reads:
            while spans[at][1] < stop:
                at += 1
            first = spans[at][0]
            out.append(list(spans_read[at][start - first : stop - first + 1]))
        return out

    def turn_records(
        self, reads: Sequence[Sequence[Mapping[str, Any]]]
    ) -> list[tuple[RecalledTurn, list[Mapping[str, Any]]]]:
        """Each turn with the records read for it (in :attr:`reads` order)."""
        return [(turn, list(records)) for turn, records in zip(self.turns, reads, strict=True)]


def choose_turns(
    index: RecallIndex,
    query: str,
    *,
    before: int,
    budget: int,
    overhead: int,
    gap: int = 0,
    skip_ids: frozenset[str] = frozenset(),
    query_vector: Sequence[float] | None = None,
    cost: Callable[[int, int], int] | None = None,
) -> RecallChoice:
    """The best-matching whole turns before position ``before`` within ``budget``.

    ``cost(start, stop)`` prices a turn (default: its messages' cached tokens,
    :meth:`RecallIndex.cost <ctx_memory.recall.RecallIndex.cost>`).

    Each turn's cost is its cached tokens, plus ``overhead`` per message (the text a
    layout adds to each), plus ``gap`` (a gap marker) unless it touches a turn already
    chosen. Turns are taken best first; one that does not fit is passed over for a
    smaller one. :attr:`RecallChoice.spent` is what the chosen turns cost so. Messages
    whose id is in ``skip_ids`` are never recalled. With ``query_vector`` (and vectors
    in the index) the hits are those of
    :meth:`~ctx_memory.recall.RecallIndex.hybrid_search`, else of BM25 alone; both in
    context (:data:`~ctx_memory.recall.CONTEXT_WEIGHT`).
    """
    chosen: dict[int, list[Any]] = {}
    starts: set[int] = set()
    stops: set[int] = set()
    spent = 0
    signals: dict[int, tuple[float, float | None]] = {}
    if query_vector is not None and index.vector_count:
        found: list[tuple[int, float, tuple[str, ...]]] = []
        hits = index.hybrid_search(
            query, query_vector, k=MAX_HITS, before=before, context=CONTEXT_WEIGHT
        )
        for hit in hits:
            found.append((hit.position, hit.score, hit.terms))
            similarity = hit.similarity if hit.vector_rank is not None else None
            signals[hit.position] = (hit.bm25, similarity)
    else:
        found = index.search(query, k=MAX_HITS, before=before, context=CONTEXT_WEIGHT)
    for position, score, terms in found:
        start, stop = index.turn(position)
        stop = min(stop, before)
        entry = chosen.get(start)
        if entry is not None:
            entry[3].append((position, score, terms))
            continue
        if skip_ids and any(index.ids[p] in skip_ids for p in range(start, stop)):
            continue
        price = index.cost(start, stop) if cost is None else cost(start, stop)
        extra = overhead * (stop - start) + (0 if start in stops or stop in starts else gap)
        if spent + price + extra > budget:
            continue
        spent += price + extra
        starts.add(start)
        stops.add(stop)
        chosen[start] = [start, stop, score, [(position, score, terms)], price]
    turns = tuple(
        RecalledTurn(
            s,
            e,
            score,
            tuple(hits),
            priced,
            tuple((p, *signals[p]) for p, _, _ in hits if p in signals),
        )
        for s, e, score, hits, priced in (chosen[key] for key in sorted(chosen))
    )
    ids = {p: index.ids[p] for t in turns for p, _, _ in t.hits}
    return RecallChoice(turns, budget, ids, spent)


def gap_messages(turns: Sequence[tuple[int, int]], window_start: int) -> list[tuple[int, str]]:
    """``(position, marker text)`` for each gap before, between and after ``turns``.

    ``turns`` are ``(start, stop)`` in history order; the last gap runs to
    ``window_start`` (where the recent window begins).
    """
    gaps: list[tuple[int, str]] = []
    previous = 0
    for start, stop in [*turns, (window_start, window_start)]:
        if start > previous:
            gaps.append((start, gap_text(start - previous)))
        previous = max(previous, stop)
    return gaps


def fit_recalled(
    turns: Sequence[tuple[RecalledTurn, list[Mapping[str, Any]]]],
    *,
    budget: int,
    measure: Callable[[Sequence[tuple[RecalledTurn, list[Mapping[str, Any]]]]], int],
) -> tuple[list[tuple[RecalledTurn, list[Mapping[str, Any]]]], int, int]:
    """Repair each turn's tool pairs, then drop the weakest turns until ``measure`` fits.

    ``measure`` gives the exact tokens the turns add to the prompt (markers included).
    Over budget, the weakest turns whose cached costs cover the excess go at once and
    ``measure`` decides again (a recount per batch, not per turn).

    Returns:
        ``(kept turns, their exact tokens, messages dropped by the tool-pair repair)``.
    """
    repaired: list[tuple[RecalledTurn, list[Mapping[str, Any]]]] = []
    dropped = 0
    for turn, records in turns:
        kept, lost = repair_tool_pairs(records)
        dropped += len(lost)
        if kept:
            repaired.append((turn, group_tool_results(kept)))
    while repaired:
        tokens = measure(repaired)
        if tokens <= budget:
            return repaired, tokens, dropped
        # Drop the weakest turns whose estimated costs cover the excess, all at once:
        # one recount per batch, not per turn (the recount decides again).
        excess, freed, drop = tokens - budget, 0, set()
        for i in sorted(range(len(repaired)), key=lambda i: (repaired[i][0].score, -i)):
            drop.add(i)
            freed += max(repaired[i][0].cost, 1)
            if freed >= excess:
                break
        repaired = [turn for i, turn in enumerate(repaired) if i not in drop]
    return [], 0, dropped


def marker_message(position: int, text: str) -> BaseMessage:
    """A gap marker as a user message (never stored; its id says what it is)."""
    return HumanMessage(content=text, id=f"{GAP_ID_PREFIX}{position}")


def recalled_entries(
    turns: Sequence[tuple[RecalledTurn, Sequence[Mapping[str, Any]]]],
    ids: Mapping[int, str | None],
    shown: Collection[int] | None = None,
) -> list[dict[str, Any]]:
    """The report's ``recalled`` list: one JSON-native dict per matching message.

    ``shown``: the positions of the messages sent (a hit the tool-pair repair dropped is
    not listed); ``None``: every hit of the turns.

    ``message_id``, ``index``, ``score``, ``terms`` and ``reason``
    (``"BM25 3.20 on passport, number; whole turn 4-5 (2 messages)"``). A hybrid hit's
    ``score`` is its fused score, with ``bm25`` and ``similarity`` (cosine, ``None``
    where the vector ranking did not count) beside it, and its reason says which
    ranking found it (``"BM25 3.20 on passport + vector 0.81 (fused 0.0325); …"``,
    ``"vector 0.77 (fused 0.0164); …"``).
    """
    out: list[dict[str, Any]] = []
    for turn, records in turns:
        signals = {p: (bm25, similarity) for p, bm25, similarity in turn.signals}
        whole = f"whole turn {turn.start}-{turn.stop - 1} ({len(records)} messages)"
        for position, score, terms in turn.hits:
            if shown is not None and position not in shown:
                continue
            entry: dict[str, Any] = {
                "message_id": ids.get(position),
                "index": position,
                "score": round(score, 4),
                "terms": list(terms),
            }
            if position not in signals:
                found_by = (
                    f"BM25 {score:.2f} on {', '.join(terms)}"
                    if terms
                    else f"BM25 {score:.2f} from the messages beside it"
                )
                entry["reason"] = f"{found_by}; {whole}"
                out.append(entry)
                continue
            bm25, similarity = signals[position]
            found = []
            if terms:
                found.append(f"BM25 {bm25:.2f} on {', '.join(terms)}")
            elif bm25 > 0.0:
                found.append(f"BM25 {bm25:.2f} from the messages beside it")
            if similarity is not None:
                found.append(f"vector {similarity:.2f}")
            entry["bm25"] = round(bm25, 4)
            entry["similarity"] = round(similarity, 4) if similarity is not None else None
            entry["reason"] = f"{' + '.join(found)} (fused {score:.4f}); {whole}"
            out.append(entry)
    return out


def count_markers(counter: TokenCounter, gaps: Sequence[tuple[int, str]]) -> int:
    """Exact tokens of the gap markers as user messages."""
    return sum(counter.count_message("user", text) for _, text in gaps)


def recency_start(index: RecallIndex, end: int, budget: int) -> int:
    """Where a window of the newest whole turns within ``budget`` would start (from the index)."""
    tokens, spent, position = index.tokens, 0, min(end, len(index))
    while position > 0 and spent + tokens[position - 1] <= budget:
        position -= 1
        spent += tokens[position]
    users = index.user_positions
    at = bisect_left(users, position)
    return users[at] if at < len(users) and users[at] < end else end


def recall_step(
    plan: PromptPlan,
    index: RecallIndex | None,
    *,
    query_vector: Sequence[float] | None = None,
) -> tuple[RecallChoice | None, HistoryChunks]:
    """The older turns to recall, and the window to read with what they leave.

    Turns are chosen (from the index alone) before where the recency window would
    start, within the recall budget. In the classic layout what recall did not use
    goes back to the window; in the stable layout the window's budget stays as planned
    (its start must not depend on the question). Turns the window ends up holding are
    passed over when finishing. ``query_vector``: the question's vector, for hybrid
    recall (:func:`choose_turns`).
    """
    if index is None or not plan.recalls or plan.draft.layout != "classic":
        return None, plan.history  # stable: recall_beside_window, once the window is read
    window_budget = plan.history_budget - plan.recall_budget
    before = recency_start(index, plan.end, window_budget)
    choice = choose_turns(
        index,
        plan.query,
        before=before,
        budget=plan.recall_budget - _MARKER_ESTIMATE,  # the marker between recall and window
        overhead=0,
        gap=_MARKER_ESTIMATE,
        skip_ids=plan.skip_ids,
        query_vector=query_vector,
        cost=_view_cost(index, plan.history.view),
    )
    # What recall does not use goes back to the window: all of it when nothing matched.
    used = choice.spent + _MARKER_ESTIMATE if choice.turns else 0
    chunks = HistoryChunks(
        plan.draft.metadata,
        plan.history_budget - used,
        counter=plan.history.counter,
        end=plan.end,
        skip_ids=plan.skip_ids,
        view=plan.history.view,  # compactions apply to the resized window too
    )
    return (choice if choice.turns else None), chunks


def recall_beside_window(
    plan: PromptPlan,
    index: RecallIndex | None,
    window: HistoryWindow,
    *,
    query_vector: Sequence[float] | None = None,
) -> RecallChoice | None:
    """Stable layout: the older turns to recall, chosen once the window is read.

    The window's size does not depend on the question, so it is read first; recall then
    gets everything of the history budget the window left (a window trimmed in blocks
    is between half full and full), at most ``recall_max_tokens``, and reaches every
    turn before where the window really starts. It chooses 2 % more than the
    estimates say fits; the exact count in :func:`finish_recalled` drops the weakest.
    ``None`` in the classic layout (:func:`recall_step` chose before the window) or when
    nothing is recalled.
    """
    if index is None or not plan.recalls or plan.draft.layout != "stable":
        return None
    budget = plan.recall_room(window.tokens)
    before = window.start if window.start is not None else plan.end
    if plan.history.view is not None:
        before = plan.history.view.verbatim_start(before)  # a summary's range stays in reach
    choice = choose_turns(
        index,
        plan.query,
        before=before,
        budget=int((budget - _MARKER_ESTIMATE) * (1 + _SPARE_SHARE)),  # less the heading
        overhead=_TEXT_OVERHEAD,
        gap=_GAP_LINE,
        skip_ids=plan.skip_ids,
        query_vector=query_vector,
        cost=_view_cost(index, plan.history.view),
    )
    return choice if choice.turns else None


def _view_cost(index: RecallIndex, view: CompactedView | None) -> Callable[[int, int], int] | None:
    """A turn's price when compactions clear its old tool outputs (None: no view)."""
    if view is None:
        return None
    tokens, roles = index.tokens, index.roles

    def cost(start: int, stop: int) -> int:
        return sum(
            _PLACEHOLDER_ESTIMATE
            if roles[p] == "tool" and view.clears_output(p, tokens[p])
            else tokens[p]
            for p in range(start, stop)
        )

    return cost


@dataclass(frozen=True)
class RecalledPart:
    """What recall adds to a finished prompt.

    Attributes:
        turns: The turns kept, each with its (repaired) records, in history order.
        tokens: Their exact tokens in the prompt (markers or text included).
        repaired: Messages dropped by the tool-pair repair.
        messages: Classic layout: markers and turns as messages, before the window.
        tail: The tail to send (stable layout: with the recalled text attached).
        borrowed: Tool results the window had dropped (their call is in a recalled
            turn) that are sent with that turn.
        shown: Positions in the history of the recalled messages sent.
        text: Stable layout: the recalled turns' text as attached to the question.
    """

    turns: list[tuple[RecalledTurn, list[Mapping[str, Any]]]]
    tokens: int
    repaired: int
    messages: list[BaseMessage] = field(default_factory=list)
    tail: list[BaseMessage] = field(default_factory=list)
    borrowed: int = 0
    shown: frozenset[int] = frozenset()
    text: str = ""


def borrow_results(
    turns: Sequence[tuple[RecalledTurn, list[Mapping[str, Any]]]],
    results: Sequence[tuple[int, Mapping[str, Any]]],
) -> tuple[list[tuple[RecalledTurn, list[Mapping[str, Any]]]], dict[int, int]]:
    """Each turn with the ``(position, record)`` tool ``results`` that answer its calls.

    Another writer's message between an AI tool call and its results starts a new turn,
    so a recalled turn can hold a call whose result is in the window's first turn; the
    window drops that result (its call is not in the window) and the turn's repair would
    drop the call. Given the window's dropped records, the turn gets them back (after its
    own records; the repair groups each after its call), so the pair is sent once, whole.

    Returns:
        ``(turns, positions)``: ``positions`` maps ``id(record)`` of every record in the
        turns to its position in the history.
    """
    positions = {id(r): t.start + i for t, records in turns for i, r in enumerate(records)}
    waiting = {
        str(record["tool_call_id"]): (position, record)
        for position, record in results
        if record.get("role") == "tool" and record.get("tool_call_id")
    }
    if not waiting:
        return list(turns), positions
    out: list[tuple[RecalledTurn, list[Mapping[str, Any]]]] = []
    for turn, records in turns:
        extra = [waiting.pop(c) for r in records for c in call_ids(r) if c in waiting]
        positions.update((id(record), position) for position, record in extra)
        out.append((turn, [*records, *(record for _, record in extra)]))
    return out, positions


def finish_recalled(
    plan: PromptPlan,
    window_start: int,
    budget: int,
    choice: RecallChoice | None,
    recalled: Sequence[Sequence[Mapping[str, Any]]],
    *,
    counter: TokenCounter,
    cost: Callable[[Mapping[str, Any]], int],
    borrow: Sequence[tuple[int, Mapping[str, Any]]] = (),
) -> RecalledPart:
    """The recalled turns read, repaired and cut to ``budget`` counted exactly.

    Turns the window holds (from ``window_start`` on) are passed over. ``borrow``: the
    ``(position, record)`` pairs the window's repair dropped; a turn takes back the
    results of its own calls among them (:func:`borrow_results`). Classic layout:
    each turn as messages, a gap marker before it and before the window where messages
    are not shown. Stable layout: the turns as text (:func:`~ctx_memory.recall.format_turns`)
    after the ranked sources on the question's message (the volatile lines go last:
    :func:`~ctx_memory.assembly.messages.attach_context`).
    """
    draft = plan.draft
    turns = choice.turn_records(recalled) if choice is not None else []
    turns = [(t, r) for t, r in turns if t.stop <= window_start]  # never twice
    plain = turns
    turns, positions = borrow_results(turns, borrow)
    lent = {id(record) for _, record in borrow}
    stable = draft.layout == "stable"
    context = format_sources(plan.sources.chosen)

    built: list[list[BaseMessage]] = []  # the stable tail last measured (it is then kept)
    texts: list[str] = [""]  # and its recalled text

    def stable_tail(
        kept: Sequence[tuple[RecalledTurn, list[Mapping[str, Any]]]],
    ) -> list[BaseMessage]:
        text = format_turns(
            [(t.start, r) for t, r in kept],
            heading=RECALL_HEADING,
            positions=[[positions[id(record)] for record in r] for _, r in kept],
        )
        texts[0] = text
        joined = "\n\n".join(p for p in (context, text) if p)
        return attach_context(draft.tail, joined, draft.volatile)

    def measure(kept: Sequence[tuple[RecalledTurn, list[Mapping[str, Any]]]]) -> int:
        if stable:
            built[:] = [stable_tail(kept)]
            return sum(counter.count_lc_message(m) for m in built[0]) - plan.tail_tokens
        gaps = gap_messages([(t.start, t.stop) for t, _ in kept], window_start)
        return sum(cost(r) for _, records in kept for r in records) + count_markers(counter, gaps)

    if not turns:
        return RecalledPart([], 0, 0, [], list(plan.tail))
    kept, tokens, repaired = fit_recalled(turns, budget=budget, measure=measure)
    borrowed = sum(1 for _, records in kept for record in records if id(record) in lent)
    if any(len(a) != len(b) for (_, a), (_, b) in zip(turns, plain, strict=True)):
        # A turn with the results it took back may no longer fit where it did without
        # them (repaired down to its question): keep whichever choice sends more.
        fitted = fit_recalled(plain, budget=budget, measure=measure)
        if fitted[1] > tokens:
            (kept, tokens, repaired), borrowed = fitted, 0
        elif stable and kept:
            measure(kept)  # the stable tail of the choice kept
    if not kept:
        return RecalledPart([], 0, repaired, [], list(plan.tail))
    shown = frozenset(positions[id(record)] for _, records in kept for record in records)
    if stable:  # the turns kept are the last measured
        return RecalledPart(kept, tokens, repaired, [], built[0], borrowed, shown, texts[0])
    gaps = dict(gap_messages([(t.start, t.stop) for t, _ in kept], window_start))
    messages: list[BaseMessage] = []
    for turn, records in kept:
        if turn.start in gaps:
            messages.append(marker_message(turn.start, gaps[turn.start]))
        messages.extend(records_to_messages(records))
    if window_start in gaps:
        messages.append(marker_message(window_start, gaps[window_start]))
    return RecalledPart(kept, tokens, repaired, messages, list(plan.tail), borrowed, shown)
