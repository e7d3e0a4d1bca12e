"""One prompt assembly, decided without I/O: what is fixed, which sources, which history.

:meth:`ContextPromptAssembler.build <ctx_memory.prompt.ContextPromptAssembler.build>`
and its async twin read the session through the manager's public API and hand each
result to these steps, which touch no store:

1. :func:`begin_prompt` takes the header: the head (an agent's own system prompt, the
   session's system prompt and header) and the tail (the question, or an agent's current
   run) are counted, and :class:`~ctx_memory.errors.BudgetExceededError` is raised if
   they alone do not fit. The :class:`PromptDraft` says whether sources are to be read.
2. :func:`plan_prompt` takes the fetched sources: the pinned ones first, oldest first
   (:func:`~ctx_memory.assembly.sources.plan_pinned`), then the others ranked against the
   question, cut and chosen within what is left of their share
   (:func:`~ctx_memory.assembly.sources.plan_sources`), then the
   :class:`~ctx_memory.assembly.window.HistoryChunks` to read for the rest.
3. :func:`~ctx_memory.assembly.recalled.recall_step` (only when recall is on and the
   history does not fit) takes the session's :class:`~ctx_memory.recall.RecallIndex`:
   the older whole turns to read, and the window to read with what they leave
   (:mod:`ctx_memory.assembly.recalled`).
4. :func:`finish_prompt` takes the history window, the recalled turns read (and, when
   the newest stored messages are the question itself, those): the messages and the
   :class:`AssemblyReport`.

Two layouts. ``"classic"``: system prompt, header, pinned sources and the ranked sources
in the system message; recalled turns as messages before the window, a gap marker for
each gap. ``"stable"``: only what rarely changes (an agent's system prompt, the
session's system prompt and mode, the pinned sources) in the system message, then the
history window trimmed in blocks
(:meth:`HistoryWindow.finish <ctx_memory.assembly.window.HistoryWindow.finish>`), then
the tail: the question with what belongs to it (ranked sources, recalled turns as text),
an agent's run after it, and last the parts that change with the clock or the page
(current page, local time) in a user message of their own
(:func:`~ctx_memory.assembly.messages.attach_context`). The prompt's prefix stays the same
from request to request, and each step of a tool loop begins with the whole previous one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.messages import SystemMessage

from ctx_memory.assembly.hints import anthropic_breakpoints, prompt_cache_key
from ctx_memory.assembly.messages import attach_context, records_to_messages
from ctx_memory.assembly.recalled import finish_recalled, recalled_entries
from ctx_memory.assembly.report import AssembledPrompt, AssemblyReport
from ctx_memory.assembly.sources import (
    ChosenSources,
    SourcePlan,
    format_header,
    format_sources,
    head_text,
    plan_pinned,
    plan_sources,
    sources_block,
    split_pinned,
)
from ctx_memory.assembly.window import HistoryChunks
from ctx_memory.errors import BudgetExceededError
from ctx_memory.ranking import item_title, rank_sources
from ctx_memory.tokens import REPLY_PRIMING

if TYPE_CHECKING:
    from collections import Counter
    from collections.abc import Mapping, MutableMapping, Sequence

    from langchain_core.messages import BaseMessage

    from ctx_memory.assembly.compacted import CompactedView
    from ctx_memory.assembly.recalled import RecallChoice, RecalledTurn
    from ctx_memory.assembly.window import HistoryWindow
    from ctx_memory.ranking import Tokenizer
    from ctx_memory.tokens import TokenCounter

__all__ = [
    "Layout",
    "PromptDraft",
    "PromptPlan",
    "begin_prompt",
    "block_size",
    "finish_prompt",
    "plan_prompt",
]

Layout = Literal["classic", "stable"]
"""Where the volatile parts go: in the system message, or last (see the module docstring)."""

_QUESTION_SHARE = 0.1  # stable layout without sources: kept back for the question


def block_size(budget: int, share: float) -> int:
    """Tokens per trimming block: ``share`` of the window's ``budget``, a power of two.

    Counted in tokens of the stored history, not in messages: a block boundary is where
    the history's running token count crosses a multiple of it
    (:meth:`HistoryWindow.finish <ctx_memory.assembly.window.HistoryWindow.finish>`), so
    the boundaries depend on the stored messages and the budget alone, never on the
    question or the session's average message size, and stay where they are from one
    request to the next. Rounded to the nearest power of two, so a small change of the
    budget does not move them. ``0`` (no block trimming) when ``share`` is.
    """
    wanted = share * budget
    return 2 ** round(math.log2(wanted)) if wanted >= 1 else 0


@dataclass(frozen=True)
class PromptDraft:
    """An assembly once the header is known: the parts that are never dropped.

    Attributes:
        session_id: The session.
        metadata: The session's metadata (``{}`` for a session that does not exist).
        head: The system message without sources (agent prefix, system prompt, header).
        head_tokens: Its tokens (0 without a head).
        tail: The messages sent after the history (the question, or an agent's run).
        tail_tokens: Their tokens.
        budget: Tokens the whole prompt may use.
        reads_sources: Whether the session's fetched sources are to be read.
        layout: ``"classic"`` or ``"stable"``.
        volatile: The stable layout's volatile header lines (current page, local
            time), sent with the tail; ``""`` otherwise.
    """

    session_id: str
    metadata: Mapping[str, Any]
    head: str
    head_tokens: int
    tail: Sequence[BaseMessage]
    tail_tokens: int
    budget: int
    reads_sources: bool
    layout: Layout = "classic"
    volatile: str = ""

    @property
    def fixed_tokens(self) -> int:
        """Head, tail and the reply priming: what the prompt spends whatever else fits."""
        return REPLY_PRIMING + self.head_tokens + self.tail_tokens


def begin_prompt(
    session_id: str,
    header: Mapping[str, Any] | None,
    tail: Sequence[BaseMessage],
    *,
    counter: TokenCounter,
    budget: int,
    max_tokens: int,
    reserve_tokens: int,
    include_header: bool,
    with_sources: bool,
    system_prefix: str = "",
    now: datetime | None = None,
    layout: Layout = "classic",
) -> PromptDraft:
    """Count the head and the tail once the session's header (or ``None``) is read.

    In the stable layout the head holds the system prompts and the mode only; the
    current page and local time are counted with the tail they are attached to.

    Raises:
        BudgetExceededError: The head and ``tail`` alone exceed ``budget``.
    """
    meta: Mapping[str, Any] = header["metadata"] if header else {}
    system_prompt = header["system_prompt"] if header else None
    moment = now or datetime.now(UTC)
    volatile = ""
    if not include_header:
        header_text = ""
    elif layout == "stable":
        header_text = format_header(meta, now=moment, part="stable")
        volatile = format_header(meta, now=moment, part="volatile")
    else:
        header_text = format_header(meta, now=moment)
    session_head = head_text(system_prompt, header_text)
    head = "\n\n".join(part for part in (system_prefix, session_head) if part)
    tail_tokens = sum(counter.count_lc_message(m) for m in attach_context(tail, "", volatile))
    head_tokens = counter.count_message("system", head) if head else 0
    fixed = REPLY_PRIMING + head_tokens + tail_tokens
    if fixed > budget:
        question = sum(counter.count_lc_message(m) for m in tail) if volatile else tail_tokens
        moved = (  # the stable layout's page and time lines ride on the question's message
            f", {tail_tokens - question} of them the page and time lines sent with the question"
            if tail_tokens > question
            else ""
        )
        msg = (
            f"the system prompt and header ({head_tokens + tail_tokens - question} tokens{moved}) "
            f"and the question ({question} tokens) need {fixed} tokens with the reply priming, "
            f"over the budget of {budget} (max_tokens={max_tokens} - "
            f"reserve_tokens={reserve_tokens}); shorten them or raise max_tokens"
        )
        raise BudgetExceededError(msg)
    reads_sources = with_sources and header is not None
    return PromptDraft(
        session_id,
        meta,
        head,
        head_tokens,
        tail,
        tail_tokens,
        budget,
        reads_sources,
        layout,
        volatile,
    )


@dataclass(frozen=True)
class PromptPlan:
    """An assembly once its sources are chosen: the history still to read.

    Attributes:
        draft: The head and tail (:func:`begin_prompt`).
        sources: The sources chosen and the system message holding them.
        history: What to read for the history window, and its decoder.
        stored: Messages the session holds.
        end: Messages before this index are history; those from it on are the question
            itself (``exclude_last``), read only for the report.
        tail: The messages sent after the history (the stable layout's volatile
            parts attached).
        tail_tokens: Their exact tokens.
        history_budget: Tokens for the window and recalled turns together.
        recall_budget: Of those, reserved for recalled turns (``0``: no recall).
        query: What recall searches for.
        skip_ids: Stored messages never sent from the history.
        recall_max_tokens: The most tokens recalled turns take (``None``: no cap).
        settled_window: The window's budget once recall takes its share (it does once
            the history outgrows the budget; the window's budget until then is more).
    """

    draft: PromptDraft
    sources: SourcePlan
    history: HistoryChunks
    stored: int
    end: int
    tail: Sequence[BaseMessage] = ()
    tail_tokens: int = 0
    history_budget: int = 0
    recall_budget: int = 0
    query: str = ""
    skip_ids: frozenset[str] = frozenset()
    recall_max_tokens: int | None = None
    settled_window: int = 0

    @property
    def recalls(self) -> bool:
        """Whether older turns are to be recalled (the session's index is needed)."""
        return self.recall_budget > 0

    def recall_room(self, window_tokens: int) -> int:
        """What recalled turns may take beside a window of ``window_tokens``.

        The history budget the window leaves, at most ``recall_max_tokens``.
        """
        room = self.history_budget - window_tokens
        cap = self.recall_max_tokens
        return room if cap is None else min(room, cap)

    def newest_range(self) -> tuple[int, int] | None:
        """Classic layout with recall: the newest messages to read before recall chooses.

        The window's first read (a quarter more: recall may leave it room) and the
        messages after ``end``: the index takes what it lacks from them, the window and
        the report what they need (one read where there were three). ``None`` with a
        compaction view (its reads skip summarised ranges) or without recall.
        """
        first = self.history.first_range() if self.recalls else None
        if first is None or self.draft.layout != "classic":
            return None
        start, stop = first
        return max(0, start - (stop - start + 1) // 4), self.stored - 1

    @property
    def reads_excluded(self) -> bool:
        """Whether messages ``end`` to ``stored - 1`` are to be read (for the report)."""
        return self.end < self.stored


def plan_prompt(
    draft: PromptDraft,
    fetched: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    query: str,
    counter: TokenCounter,
    max_sources: int | None,
    source_types: Sequence[str] | None,
    sources_share: float,
    source_token_cap: int,
    tokenizer: Tokenizer | None,
    term_cache: MutableMapping[tuple[Any, ...], tuple[Counter[str], int]],
    cut_cache: MutableMapping[tuple[Any, ...], str],
    exclude_last: int = 0,
    skip_ids: frozenset[str] = frozenset(),
    recall_share: float = 0.0,
    trim_block: float = 0.0,
    view: CompactedView | None = None,
    pinned_source_types: Sequence[str] = (),
    recall_max_tokens: int | None = None,
) -> PromptPlan:
    """Choose the sources within their share, then size the history to the rest.

    ``fetched`` is the session's fetched context by source type (``{}`` when not read).
    Pinned items (``"pinned": true`` in their ``extracted_data``, or of a type in
    ``pinned_source_types``, read whatever ``source_types`` says) go first, in the system
    message, oldest first, within the sources' share of the budget left after the head
    (not the question, so which are pinned does not change from question to question;
    never more than the question leaves); the other sources are ranked against
    ``query`` and take what is left of the sources' share. The newest ``exclude_last``
    stored messages are left out of the history, and so are stored messages whose id is
    in ``skip_ids``. When the stored history does not fit, ``recall_share`` of the
    history budget, at most ``recall_max_tokens`` (``None``: no cap), is kept for
    recalled turns (:func:`~ctx_memory.assembly.recalled.recall_step`); what the cap
    leaves goes to the window. In the stable layout the window
    is trimmed in blocks of ``trim_block`` of its budget, in tokens (:func:`block_size`). With
    ``view``, the history is read as compactions rewrite it
    (:mod:`ctx_memory.assembly.compacted`).
    """
    items: list[Mapping[str, Any]] = []
    for source_type, entries in fetched.items():
        wanted = source_types is None or source_type in source_types
        if wanted or source_type in pinned_source_types:
            items.extend(entries)
    pinned_items, others = split_pinned(items, pinned_source_types)
    scored = rank_sources(query, others, cache=term_cache, tokenizer=tokenizer)
    ranked = [item for _, item in scored]
    free = int((draft.budget - draft.fixed_tokens) * sources_share)
    pinned = None
    if pinned_items:
        # The question's size must not decide which sources are pinned, or the prefix
        # would move: their share is of what the head leaves (at most what the tail leaves).
        steady_free = int((draft.budget - REPLY_PRIMING - draft.head_tokens) * sources_share)
        pinned = plan_pinned(
            draft.head,
            pinned_items,
            counter=counter,
            allowance=draft.head_tokens + min(steady_free, draft.budget - draft.fixed_tokens),
            per_source_tokens=source_token_cap,
            max_sources=max_sources,
            cache=cut_cache,
        )
    if draft.layout == "stable":
        sources, tail, tail_tokens = _stable_sources(
            draft,
            ranked,
            counter=counter,
            allowance=free,
            cap=source_token_cap,
            max_sources=max_sources,
            cut_cache=cut_cache,
            pinned=pinned,
        )
    else:
        sources = plan_sources(
            draft.head,
            ranked,
            counter=counter,
            allowance=draft.head_tokens + free,
            per_source_tokens=source_token_cap,
            max_sources=max_sources,
            cache=cut_cache,
            pinned=pinned,
        )
        tail, tail_tokens = list(draft.tail), draft.tail_tokens
    history_budget = draft.budget - REPLY_PRIMING - sources.system_tokens - tail_tokens
    meta = draft.metadata
    stored = int(meta.get("message_count", 0))
    end = max(stored - max(exclude_last, 0), 0)
    stored_tokens = int(meta.get("token_count", 0))
    block = 0
    if draft.layout == "stable":
        # The window's size must not depend on the question or its sources, or its start
        # (and so the prompt's prefix) would move from one request to the next.
        # What the tail may take is set aside whatever this question and its sources are:
        # the sources' share when the session has sources to rank, else a tenth for the
        # question. The system message (head and pinned sources) does not depend on it.
        kept_back = sources_share if others else _QUESTION_SHARE
        steady = int((draft.budget - REPLY_PRIMING - sources.system_tokens) * (1 - kept_back))
        recalls = recall_share > 0 and stored_tokens > min(steady, history_budget) and end > 0
        settled = int(steady * (1 - recall_share))
        if recall_max_tokens is not None:
            settled = max(settled, steady - recall_max_tokens)
        window_budget = min(settled if recalls else steady, history_budget)
        recall_budget = history_budget - window_budget if recalls else 0
        if recall_max_tokens is not None:
            recall_budget = min(recall_budget, recall_max_tokens)
        # Blocks of what the window holds once settled, not of this request's budget: a
        # long run's tail shrinks the window for a while, not the blocks it moves by.
        block = block_size(settled, trim_block)
    else:
        recalls = recall_share > 0 and stored_tokens > history_budget and end > 0
        share = int(history_budget * recall_share)
        settled = history_budget - (
            share if recall_max_tokens is None else min(share, recall_max_tokens)
        )
        recall_budget = history_budget - settled if recalls else 0
        window_budget = history_budget - recall_budget
    history = HistoryChunks(
        meta, window_budget, counter=counter, end=end, skip_ids=skip_ids, block=block, view=view
    )
    return PromptPlan(
        draft,
        sources,
        history,
        stored,
        end,
        tail,
        tail_tokens,
        history_budget,
        recall_budget,
        query,
        skip_ids,
        recall_max_tokens,
        min(settled, history_budget),
    )


def _stable_sources(
    draft: PromptDraft,
    ranked: Sequence[Mapping[str, Any]],
    *,
    counter: TokenCounter,
    allowance: int,
    cap: int,
    max_sources: int | None,
    cut_cache: MutableMapping[tuple[Any, ...], str],
    pinned: SourcePlan | None = None,
) -> tuple[SourcePlan, list[BaseMessage], int]:
    """The stable layout's sources: ranked, cut, and attached to the tail with the header.

    The system message holds the head and the ``pinned`` sources (:func:`plan_pinned`),
    the same for every question. The ranked sources block is chosen within what
    ``allowance`` leaves after the pinned ones (as if it were a system message of its
    own), numbered on after them, then attached with the volatile header lines to the
    tail, which is counted exactly; the least relevant source goes until the system
    message and tail leave room for no history at all at worst.
    """
    first = pinned.chosen if pinned is not None else ()
    system_tokens = pinned.system_tokens if pinned is not None else draft.head_tokens
    block_plan = plan_sources(
        "",
        ranked,
        counter=counter,
        allowance=allowance - (system_tokens - draft.head_tokens),
        per_source_tokens=cap,
        max_sources=None if max_sources is None else max(max_sources - len(first), 0),
        cache=cut_cache,
    )
    chosen = list(block_plan.chosen)
    while True:
        pairs = ChosenSources([*first, *chosen], len(first))
        tail = attach_context(draft.tail, format_sources(pairs), draft.volatile)
        tail_tokens = sum(counter.count_lc_message(m) for m in tail)
        fixed = REPLY_PRIMING + system_tokens + tail_tokens
        if fixed <= draft.budget or not chosen:
            break
        chosen.pop()
    dropped = block_plan.dropped + len(block_plan.chosen) - len(chosen)
    truncated = sum(1 for item, text in chosen if text != (item.get("content") or "").strip())
    if pinned is None:
        sources = SourcePlan(pairs, truncated, dropped, draft.head_tokens, draft.head)
    else:
        sources = SourcePlan(
            pairs,
            truncated + pinned.truncated,
            dropped + pinned.dropped,
            system_tokens,
            pinned.text,
            pinned.pinned_dropped,
        )
    return sources, tail, tail_tokens


def finish_prompt(
    plan: PromptPlan,
    window: HistoryWindow,
    excluded: Sequence[Mapping[str, Any]],
    *,
    counter: TokenCounter,
    max_tokens: int,
    reserve_tokens: int,
    choice: RecallChoice | None = None,
    recalled: Sequence[Sequence[Mapping[str, Any]]] = (),
    cache_hints: frozenset[str] = frozenset(),
    notes: Sequence[str] = (),
) -> AssembledPrompt:
    """The messages and the report, from the plan and what was read for it.

    ``excluded`` holds the stored messages from ``plan.end`` on (the question itself
    when it was recorded before assembling); they count as neither history nor left out.
    ``choice`` and ``recalled`` are the turns
    :func:`~ctx_memory.assembly.recalled.recall_step` chose and the records
    read for them (one list per turn); they are repaired, counted exactly and cut to
    what the window left of the history budget (at most ``recall_max_tokens``), weakest
    first. ``cache_hints`` holds
    ``"anthropic"`` (``cache_control`` on the system message and the last history
    message) and/or ``"openai"`` (``prompt_cache_key`` in
    :attr:`AssembledPrompt.model_kwargs`). ``notes`` are reported as
    :attr:`AssemblyReport.compaction_notes` (e.g. a summariser that failed), with the
    history view's own.
    """
    draft, sources = plan.draft, plan.sources
    meta = draft.metadata
    same_encoding = meta.get("token_encoding") in (None, counter.encoding_name)
    chosen = window.chosen
    history = records_to_messages(chosen)
    view = plan.history.view
    window_start = window.start if window.start is not None else plan.end
    if view is not None:
        window_start = view.verbatim_start(window_start)
    if view is not None and choice is not None:
        # Recalled turns clear old tool outputs as the window does (restorable by id).
        recalled = [
            view.recalled(records, turn.start)
            for turn, records in zip(choice.turns, recalled, strict=True)
        ]
    part = finish_recalled(
        plan,
        window_start,
        plan.recall_room(window.tokens),
        choice,
        recalled,
        counter=counter,
        cost=_cached_cost if same_encoding else counter.count_record,
        borrow=list(zip(window.dropped_at, window.dropped, strict=True)),
    )
    kept, recall_messages, tail = part.turns, part.messages, part.tail
    stable = draft.layout == "stable"

    messages: list[BaseMessage] = []
    if sources.text:
        messages.append(SystemMessage(content=sources.text))
    messages.extend(recall_messages)
    messages.extend(history)
    messages.extend(tail)
    if "anthropic" in cache_hints:
        messages = anthropic_breakpoints(
            messages,
            has_system=bool(sources.text),
            history=len(recall_messages) + len(history),
            run_end=_run_end(draft, len(messages)),
        )
    model_kwargs: dict[str, Any] = {}
    if "openai" in cache_hints:
        model_kwargs["prompt_cache_key"] = prompt_cache_key(draft.session_id)

    # Recalled messages a window summary also stands for are left out once, not twice.
    only_recalled = [r for t, records in kept for r in _outside(t, records, plan.history.view)]
    recalled_count = len(only_recalled)
    recalled_cached = sum(int(r.get("token_count") or 0) for r in only_recalled)
    left_out_tokens = int(meta.get("token_count", 0)) - window.tokens - window.skipped_tokens
    left_out_tokens -= sum(int(r["token_count"]) for r in excluded) + recalled_cached
    compacted = _compaction_parts(view, chosen)
    left_out_tokens -= compacted.saved_tokens
    if view is not None:  # a recalled placeholder stands for its whole stored output
        for _, records in kept:
            for record in records:
                record_id = str(record.get("id"))
                stored_tokens = view.replaced.get(record_id)
                if stored_tokens is not None and record_id not in view.used:
                    left_out_tokens -= stored_tokens - int(record["token_count"])
    # What the sources add to the system message (the pinned ones; all of them, classic)
    sources_tokens = sources.system_tokens - draft.head_tokens
    question_tokens = draft.tail_tokens
    if stable:
        sources_tokens += plan.tail_tokens - draft.tail_tokens  # the ranked ones, last
        prefix = sources.system_tokens + window.tokens  # the pinned sources included
    else:
        volatile_head = any(meta.get(k) for k in ("current_url", "user_time", "user_timezone"))
        ranked_in_system = len(sources.chosen) > sources.pinned
        prefix = sources.system_tokens if not ranked_in_system and not volatile_head else 0
    history_tokens = window.tokens + part.tokens
    report = AssemblyReport(
        session_id=draft.session_id,
        budget=draft.budget,
        max_tokens=max_tokens,
        reserve_tokens=reserve_tokens,
        total_tokens=REPLY_PRIMING
        + draft.head_tokens
        + sources_tokens
        + history_tokens
        + question_tokens,
        system_tokens=draft.head_tokens,
        sources_tokens=sources_tokens,
        history_tokens=history_tokens,
        question_tokens=question_tokens,
        priming_tokens=REPLY_PRIMING,
        sources_included=len(sources.chosen),
        sources_truncated=sources.truncated,
        sources_dropped=sources.dropped,
        source_urls=tuple(str(item.get("url") or item_title(item)) for item, _ in sources.chosen),
        pinned_sources=sources.pinned,
        pinned_source_urls=tuple(
            str(item.get("url") or item_title(item)) for item, _ in sources.chosen[: sources.pinned]
        ),
        pinned_sources_dropped=sources.pinned_dropped,
        history_messages=len(chosen) + recalled_count,
        history_left_out_messages=max(
            plan.end - len(chosen) - window.skipped - recalled_count - compacted.extra_messages, 0
        ),
        history_left_out_tokens=max(left_out_tokens, 0) if same_encoding else 0,
        history_repaired_messages=len(window.dropped) - part.borrowed + part.repaired,
        encoding=counter.encoding_name,
        recalled=recalled_entries(kept, choice.ids if choice is not None else {}, part.shown),
        recall_tokens=part.tokens,
        window_budget=plan.history.window.budget,
        stable_prefix_tokens=prefix,
        layout=draft.layout,
        compactions=compacted.entries,
        tool_outputs_cleared=compacted.cleared,
        compaction_notes=[*notes, *(plan.history.view.notes if plan.history.view else ())],
    )
    return AssembledPrompt(
        messages=messages,
        report=report,
        sources=tuple(item for item, _ in sources.chosen),
        system=sources.text,
        history=[*recall_messages, *history],
        question=draft.tail[-1] if draft.tail else None,
        head=draft.head,
        sources_text=sources_block(sources.chosen),
        model_kwargs=model_kwargs,
        settled_window=plan.settled_window,
        volatile=draft.volatile,
        recalled_text=part.text,
    )


def _run_end(draft: PromptDraft, count: int) -> int | None:
    """Where a tool loop's run ends among the prompt's ``count`` messages (stable layout).

    A step of a tool loop sends the question, then calls and their results: the index of
    its last message (the volatile part, when there is one, follows it); ``None`` when
    the tail is the question alone or the layout is classic.
    """
    if draft.layout != "stable" or len(draft.tail) < 2:
        return None
    return count - (2 if draft.volatile else 1)


def _outside(
    turn: RecalledTurn, records: Sequence[Mapping[str, Any]], view: CompactedView | None
) -> Sequence[Mapping[str, Any]]:
    """The records of a recalled turn that no summary the window used covers.

    A turn whose tool pairs were repaired no longer maps to positions: it counts whole.
    """
    if view is None or not view.used or len(records) != turn.stop - turn.start:
        return records
    start = turn.start
    covered = [(int(e["first_index"]), int(e["last_index"])) for e in view.used.values()]
    return [
        record
        for i, record in enumerate(records)
        if not any(a <= start + i <= b for a, b in covered)
    ]


def _cached_cost(record: Mapping[str, Any]) -> int:
    return int(record["token_count"])


@dataclass(frozen=True)
class _Compacted:
    entries: list[dict[str, Any]]
    cleared: list[str]
    saved_tokens: int
    extra_messages: int


def _compaction_parts(
    view: CompactedView | None, chosen: Sequence[Mapping[str, Any]]
) -> _Compacted:
    """What the compactions the window used stand for (for the report)."""
    if view is None:
        return _Compacted([], [], 0, 0)
    entries: list[dict[str, Any]] = []
    cleared: list[str] = []
    saved = extra = 0
    for record in chosen:
        message_id = str(record.get("id"))
        stored = view.replaced.get(message_id)
        if stored is None:
            continue
        saved += stored - int(record["token_count"])
        if (entry := view.used.get(message_id)) is not None:
            extra += int(entry["last_index"]) - int(entry["first_index"])
            entries.append(
                {
                    key: entry.get(key)
                    for key in (
                        "id",
                        "kind",
                        "first_index",
                        "last_index",
                        "tokens_covered",
                        "summary_tokens",
                    )
                }
            )
        else:
            cleared.append(view.cleared_calls[message_id])
    return _Compacted(entries, cleared, saved, extra)
