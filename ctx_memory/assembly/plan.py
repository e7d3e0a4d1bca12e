"""One prompt assembly, decided without I/O: what is fixed, which sources, which history.

:meth:`ContextPromptAssembler.build <ctx_memory.prompt.ContextPromptAssembler.build>`
and its async twin read the session through the manager's public API and hand each
result to these steps, which touch no store:

1. :func:`begin_prompt` takes the header: the head (an agent's own system prompt, the
   session's system prompt and header) and the tail (the question, or an agent's current
   run) are counted, and :class:`~ctx_memory.errors.BudgetExceededError` is raised if
   they alone do not fit. The :class:`PromptDraft` says whether sources are to be read.
2. :func:`plan_prompt` takes the fetched sources: ranked against the question, cut and
   chosen within their share of what is left (:func:`~ctx_memory.assembly.sources.plan_sources`),
   then the :class:`~ctx_memory.assembly.window.HistoryChunks` to read for the rest.
3. :func:`finish_prompt` takes the history window (and, when the newest stored messages
   are the question itself, those): the messages and the :class:`AssemblyReport`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from langchain_core.messages import SystemMessage

from ctx_memory.assembly.messages import records_to_messages
from ctx_memory.assembly.report import AssembledPrompt, AssemblyReport
from ctx_memory.assembly.sources import format_header, format_sources, head_text, plan_sources
from ctx_memory.assembly.window import HistoryChunks
from ctx_memory.errors import BudgetExceededError
from ctx_memory.ranking import item_title, rank_sources
from ctx_memory.tokens import REPLY_PRIMING

if TYPE_CHECKING:
    from collections import Counter
    from collections.abc import Mapping, MutableMapping, Sequence

    from langchain_core.messages import BaseMessage

    from ctx_memory.assembly.sources import SourcePlan
    from ctx_memory.assembly.window import HistoryWindow
    from ctx_memory.ranking import Tokenizer
    from ctx_memory.tokens import TokenCounter

__all__ = ["PromptDraft", "PromptPlan", "begin_prompt", "finish_prompt", "plan_prompt"]


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
    """

    session_id: str
    metadata: Mapping[str, Any]
    head: str
    head_tokens: int
    tail: Sequence[BaseMessage]
    tail_tokens: int
    budget: int
    reads_sources: bool

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
) -> PromptDraft:
    """Count the head and the tail once the session's header (or ``None``) is read.

    Raises:
        BudgetExceededError: The head and ``tail`` alone exceed ``budget``.
    """
    meta: Mapping[str, Any] = header["metadata"] if header else {}
    system_prompt = header["system_prompt"] if header else None
    session_head = head_text(
        system_prompt,
        format_header(meta, now=now or datetime.now(UTC)) if include_header else "",
    )
    head = "\n\n".join(part for part in (system_prefix, session_head) if part)
    tail_tokens = sum(counter.count_lc_message(m) for m in tail)
    head_tokens = counter.count_message("system", head) if head else 0
    fixed = REPLY_PRIMING + head_tokens + tail_tokens
    if fixed > budget:
        msg = (
            f"the system prompt and header ({head_tokens} tokens) and the question "
            f"({tail_tokens} tokens) need {fixed} tokens with the reply priming, "
            f"over the budget of {budget} (max_tokens={max_tokens} - "
            f"reserve_tokens={reserve_tokens}); shorten them or raise max_tokens"
        )
        raise BudgetExceededError(msg)
    reads_sources = with_sources and header is not None
    return PromptDraft(
        session_id, meta, head, head_tokens, tail, tail_tokens, budget, reads_sources
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
    """

    draft: PromptDraft
    sources: SourcePlan
    history: HistoryChunks
    stored: int
    end: int

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
) -> PromptPlan:
    """Choose the sources within their share, then size the history to the rest.

    ``fetched`` is the session's fetched context by source type (``{}`` when not read);
    sources are ranked against ``query``. The newest ``exclude_last`` stored messages
    are left out of the history, and so are stored messages whose id is in ``skip_ids``.
    """
    items: list[Mapping[str, Any]] = []
    for source_type, entries in fetched.items():
        if source_types is None or source_type in source_types:
            items.extend(entries)
    ranked = [item for _, item in rank_sources(query, items, cache=term_cache, tokenizer=tokenizer)]
    allowance = draft.head_tokens + int((draft.budget - draft.fixed_tokens) * sources_share)
    sources = plan_sources(
        draft.head,
        ranked,
        counter=counter,
        allowance=allowance,
        per_source_tokens=source_token_cap,
        max_sources=max_sources,
        cache=cut_cache,
    )
    history_budget = draft.budget - REPLY_PRIMING - sources.system_tokens - draft.tail_tokens
    stored = int(draft.metadata.get("message_count", 0))
    end = max(stored - max(exclude_last, 0), 0)
    history = HistoryChunks(
        draft.metadata, history_budget, counter=counter, end=end, skip_ids=skip_ids
    )
    return PromptPlan(draft, sources, history, stored, end)


def finish_prompt(
    plan: PromptPlan,
    window: HistoryWindow,
    excluded: Sequence[Mapping[str, Any]],
    *,
    counter: TokenCounter,
    max_tokens: int,
    reserve_tokens: int,
) -> AssembledPrompt:
    """The messages and the report, from the plan and the history window read for it.

    ``excluded`` holds the stored messages from ``plan.end`` on (the question itself
    when it was recorded before assembling); they count as neither history nor left out.
    """
    draft, sources = plan.draft, plan.sources
    meta = draft.metadata
    same_encoding = meta.get("token_encoding") in (None, counter.encoding_name)
    chosen = window.chosen
    history = records_to_messages(chosen)

    messages: list[BaseMessage] = []
    if sources.text:
        messages.append(SystemMessage(content=sources.text))
    messages.extend(history)
    messages.extend(draft.tail)
    left_out_tokens = int(meta.get("token_count", 0)) - window.tokens - window.skipped_tokens
    left_out_tokens -= sum(int(r["token_count"]) for r in excluded)
    report = AssemblyReport(
        session_id=draft.session_id,
        budget=draft.budget,
        max_tokens=max_tokens,
        reserve_tokens=reserve_tokens,
        total_tokens=REPLY_PRIMING + sources.system_tokens + window.tokens + draft.tail_tokens,
        system_tokens=draft.head_tokens,
        sources_tokens=sources.system_tokens - draft.head_tokens,
        history_tokens=window.tokens,
        question_tokens=draft.tail_tokens,
        priming_tokens=REPLY_PRIMING,
        sources_included=len(sources.chosen),
        sources_truncated=sources.truncated,
        sources_dropped=sources.dropped,
        source_urls=tuple(str(item.get("url") or item_title(item)) for item, _ in sources.chosen),
        history_messages=len(chosen),
        history_left_out_messages=max(plan.end - len(chosen) - window.skipped, 0),
        history_left_out_tokens=max(left_out_tokens, 0) if same_encoding else 0,
        history_repaired_messages=len(window.dropped),
        encoding=counter.encoding_name,
    )
    return AssembledPrompt(
        messages=messages,
        report=report,
        sources=tuple(item for item, _ in sources.chosen),
        system=sources.text,
        history=history,
        question=draft.tail[-1] if draft.tail else None,
        head=draft.head,
        sources_text=format_sources(sources.chosen),
    )
