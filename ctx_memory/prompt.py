"""ContextPromptAssembler: a Runnable that builds a token-budgeted prompt from a session.

The assembled prompt is, in order::

    SystemMessage   system prompt + a short header (mode, current URL, user's local time)
                    + pinned sources, oldest first, whatever the question
                    + numbered sources (title, URL), most relevant to the question first,
                      each cut to a per-source token cap
    ...history      as much stored history as fits, newest first, whole turns (a turn
                    starts at a user message), never an orphan tool message nor an AI
                    tool call without its results
    HumanMessage    the question

Counted the way the chat API counts (:meth:`TokenCounter.count_chat
<ctx_memory.tokens.TokenCounter.count_chat>`), it never exceeds
``max_tokens - reserve_tokens``. The system prompt and the question are never dropped: if
they alone do not fit, :class:`~ctx_memory.errors.BudgetExceededError` is raised.

Stored history is never re-encoded: each message's ``token_count`` was cached when it was
written, so choosing the history window adds integers. History is read newest first in
chunks sized from the session's average message size, so assembling from a 10,000-message
session reads about as many messages as fit.

This module is the Runnable plumbing only. The assembly's parts are pure and live in
:mod:`ctx_memory.assembly` (header and sources, history window, messages, report, and the
steps that join them); ranking is :mod:`ctx_memory.ranking`.
:meth:`ContextPromptAssembler.build` and :meth:`ContextPromptAssembler.abuild` read the
session through the manager's public methods (``get_header``, ``get_fetched_context``,
``get_message_range`` or their async twins) and hand each result to those pure steps;
the two differ by ``await`` alone. The names the assembly modules export stay importable
from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from langchain_core.embeddings import Embeddings
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.prompt_values import ChatPromptValue
from langchain_core.runnables import Runnable
from langchain_core.runnables.utils import ConfigurableFieldSpec
from typing_extensions import override

from ctx_memory import tracing
from ctx_memory._compaction_summarize import SentRequests, reads_prefix
from ctx_memory.assembly.compacted import CompactedView, compactions_of
from ctx_memory.assembly.options import check_options
from ctx_memory.assembly.plan import begin_prompt, finish_prompt, plan_prompt
from ctx_memory.assembly.recalled import recall_beside_window, recall_step
from ctx_memory.assembly.report import AssembledPrompt, AssemblyReport
from ctx_memory.assembly.sources import SourcePlan, format_header, format_sources, plan_sources
from ctx_memory.assembly.window import (
    HistoryWindow,
    aread_history_window,
    read_history_window,
    repair_tool_pairs,
)
from ctx_memory.compaction import CompactionOutcome, CompactionPolicy, acompact, compact
from ctx_memory.errors import ValidationError
from ctx_memory.ranking import bm25_scores, rank_sources, tokenize
from ctx_memory.recall import Recall, recall_for
from ctx_memory.records import held_range

if TYPE_CHECKING:
    from collections import Counter
    from collections.abc import Mapping, Sequence
    from datetime import datetime

    from langchain_core.callbacks import (
        AsyncCallbackManagerForChainRun,
        CallbackManagerForChainRun,
    )
    from langchain_core.runnables import RunnableConfig

    from ctx_memory.assembly.plan import PromptDraft, PromptPlan
    from ctx_memory.assembly.recalled import RecallChoice
    from ctx_memory.manager import ContextManager
    from ctx_memory.ranking import Tokenizer

__all__ = [
    "AssembledPrompt",
    "AssemblyReport",
    "ContextPromptAssembler",
    "HistoryWindow",
    "PromptInput",
    "Question",
    "SESSION_ID_SPEC",
    "SourcePlan",
    "bm25_scores",
    "format_header",
    "format_sources",
    "parse_question",
    "plan_sources",
    "rank_sources",
    "repair_tool_pairs",
    "session_id_from",
    "tokenize",
]

PromptInput = str | BaseMessage | dict[str, Any]
"""What the assembler accepts: a question, a HumanMessage, or a dict holding one."""

SESSION_ID_SPEC = ConfigurableFieldSpec(
    id="session_id",
    annotation=str,
    name="Session ID",
    description="The ctx_memory session to read and write.",
    default="",
    is_shared=True,
)
"""``config["configurable"]["session_id"]``, declared the way LangChain's own
history-aware runnables declare it (visible in ``config_specs``)."""


def session_id_from(
    config: RunnableConfig | None,
    default: str | None = None,
    *,
    payload: Any = None,
    owner: str = "ctx_memory",
) -> str:
    """The session id for a run: ``payload["session_id"]``, else the config's, else default.

    The config's id is ``config["configurable"]["session_id"]``, as LangChain's own
    history-aware runnables take it.

    Raises:
        ValidationError: No session id anywhere (the message says where to put one).
    """
    if isinstance(payload, dict) and payload.get("session_id"):
        return str(payload["session_id"])
    configurable = (config or {}).get("configurable") or {}
    session_id = configurable.get("session_id") or default
    if not session_id:
        msg = (
            f"{owner} needs a session id: pass session_id= to the constructor or "
            'config={"configurable": {"session_id": "..."}} when invoking'
        )
        raise ValidationError(msg)
    return str(session_id)


class Question(NamedTuple):
    """A question as the message sent and its plain text."""

    message: BaseMessage
    text: str


def parse_question(value: Any, input_key: str = "question") -> Question:
    """The question as a message and as text, from a str, a message or a dict."""
    if isinstance(value, dict):
        if input_key not in value:
            msg = f"the input dict has no {input_key!r} key (keys: {sorted(value)})"
            raise ValidationError(msg)
        value = value[input_key]
    if isinstance(value, BaseMessage):
        return Question(value, value.text)
    if isinstance(value, str):
        return Question(HumanMessage(content=value), value)
    msg = f"question must be a str, a message or a dict, got {type(value).__name__}"
    raise ValidationError(msg)


class ContextPromptAssembler(Runnable[PromptInput, ChatPromptValue]):
    """A Runnable that builds a token-budgeted prompt from a session.

    Input: a question (``str``), a ``HumanMessage``, or a dict with the question under
    ``input_key`` (and optionally ``"session_id"``). The session id comes from the input
    dict, else ``config["configurable"]["session_id"]``, else ``session_id``. Output: a
    :class:`ChatPromptValue` of system message (system prompt + header + numbered
    sources), history (newest whole turns that fit) and the question. Use
    :meth:`assemble` for the messages together with an :class:`AssemblyReport`, and
    :meth:`as_variables` to feed your own ``ChatPromptTemplate``.

    Args:
        manager: Where sessions live.
        max_tokens: The model's context size.
        reserve_tokens: Tokens kept free for the reply; the prompt gets
            ``max_tokens - reserve_tokens``.
        session_id: Default session id.
        max_sources: Most sources to include (``0`` for none, ``None`` for no limit).
        source_token_cap: Tokens each source's text is cut to.
        sources_share: At most this share of the budget left after system prompt and
            question goes to sources, so history keeps room.
        source_types: Only these fetched-context types (default: all).
        pinned_source_types: Pin every fetched item of these types (read whatever
            ``source_types`` says). An item is also pinned by ``"pinned": True`` in its
            ``extracted_data``
            (``manager.add_fetched_context(sid, "docs", text, extracted_data={"pinned": True})``).
            Pinned sources are sent first, right after the system prompt and header, in
            the system message in both layouts (in the stable layout, so part of the
            cached prefix), oldest first and never re-ranked, each cut to
            ``source_token_cap``, within ``sources_share`` of the budget left after the
            system prompt (the newest go if they do not all fit; reported in
            ``sources_dropped`` and ``pinned_sources_dropped``) and within
            ``max_sources``; the sources ranked for the question take what is left and
            never repeat a pinned one.
        include_header: Add the mode / current URL / local time header.
        input_key: The question's key in dict input.
        tokenizer: Splits the question and the sources into terms for ranking (any
            ``str -> list[str]``); default :func:`ctx_memory.ranking.tokenize`
            (folded words, bigrams for Chinese, Japanese, Korean and Thai).
        layout: ``"classic"`` (default; the layout of earlier versions: sources and
            local time in the system message) or ``"stable"`` (system prompt first,
            history trimmed in blocks, the question's sources and recalled turns on
            it, the page and local time last, so consecutive prompts share their
            prefix, the steps of a tool loop all of it; see
            :mod:`ctx_memory.assembly.plan`).
        recall_share: When the stored history does not fit, this share of the
            history budget (default 0.5) goes to older whole turns matching the
            question (:mod:`ctx_memory.recall`); ``0`` keeps the pure recency window.
        recall_max_tokens: At most this many tokens go to recalled turns, whatever
            the share gives (default 4,000; ``None``: no cap). What the cap leaves goes
            to the recency window. Recalled turns change with every question, so they
            are never part of a cacheable prefix: the cap keeps what a large budget
            pays for them at full price bounded.
        trim_block: Stable layout: when the window is full it moves in blocks of
            about this share of its budget (default 0.5; tokens of the stored history,
            so its start never moves back while the budget stays), rather than a turn
            at a time; ``0`` moves it a turn at a time.
        cache_hints: Provider prompt-cache hints to emit: ``"anthropic"``
            (``cache_control`` on the system message and the last history message)
            and/or ``"openai"`` (``prompt_cache_key`` derived from the session id, in
            :attr:`AssembledPrompt.model_kwargs`). None by default.
        recall: The index cache to use (default: the manager's shared one,
            :func:`ctx_memory.recall.recall_for`).
        embeddings: A LangChain ``Embeddings`` (e.g. ``OpenAIEmbeddings()``) for hybrid
            recall: each message is embedded once, when it is indexed
            (``embed_documents``, batched; ``aembed_documents`` on the async path), the
            question once per assembly that recalls (``embed_query`` /
            ``aembed_query``), and older turns are ranked by BM25 and cosine similarity
            fused (reciprocal rank fusion,
            :meth:`~ctx_memory.recall.RecallIndex.hybrid_search`), so a turn sharing no
            word with the question can be recalled. A failing call makes that assembly's
            recall lexical, logs a warning and adds a line to the report's
            ``compaction_notes``. The index cache is then
            ``recall_for(manager, embeddings)`` (or ``recall``'s, whose ``embeddings``
            this must be). Default ``None``: BM25 alone, as before.
        compaction: A :class:`~ctx_memory.compaction.CompactionPolicy`: stored
            compactions are then used in place of the messages they cover, old tool
            outputs are cleared from the prompt, and each build first summarises the
            next range when the policy's trigger fires (:func:`ctx_memory.compaction.compact`).
            A summariser other than the extractive one is given the request this
            assembler built last for the session (kept in :attr:`sent`) as
            ``prefix_messages``, so a :func:`~ctx_memory.compaction.chat_summarizer`
            request repeats it and the provider's prompt cache serves it.
            ``None`` (default): stored compactions are ignored and nothing is written.

    Example:
        .. code-block:: python

            from ctx_memory import ContextManager, ContextPromptAssembler, TokenCounter

            manager = ContextManager()
            manager.set_system_prompt("s1", "You are terse.")
            manager.update_metadata("s1", current_url="https://airline.example/paris")
            manager.add_fetched_context(
                "s1", "web_search", "Book 6-8 weeks ahead for the lowest fares.",
                url="https://travel.example/guide", extracted_data={"title": "Guide"},
            )
            manager.add_user_message("s1", "Hi")
            manager.add_assistant_message("s1", "Hello! Where to?")

            assembler = ContextPromptAssembler(manager, max_tokens=2000, reserve_tokens=500)
            prompt = assembler.invoke(
                "When should I book?", config={"configurable": {"session_id": "s1"}}
            )
            assert [m.type for m in prompt.messages] == ["system", "human", "ai", "human"]
            assert "[1] Guide" in prompt.messages[0].content

            result = assembler.assemble("s1", "When should I book?")
            assert result.report.total_tokens == TokenCounter().count_chat(result.messages)
            assert result.report.total_tokens <= 1500
    """

    def __init__(
        self,
        manager: ContextManager,
        *,
        max_tokens: int = 8000,
        reserve_tokens: int = 1000,
        session_id: str | None = None,
        max_sources: int | None = 8,
        source_token_cap: int = 400,
        sources_share: float = 0.5,
        source_types: Sequence[str] | None = None,
        include_header: bool = True,
        input_key: str = "question",
        name: str | None = None,
        tokenizer: Tokenizer | None = None,
        layout: Literal["classic", "stable"] = "classic",
        recall_share: float = 0.5,
        recall_max_tokens: int | None = 4000,
        trim_block: float = 0.5,
        cache_hints: Sequence[Literal["anthropic", "openai"]] = (),
        recall: Recall | None = None,
        compaction: CompactionPolicy | None = None,
        pinned_source_types: Sequence[str] = (),
        embeddings: Embeddings | None = None,
    ) -> None:
        check_options(
            max_tokens=max_tokens, reserve_tokens=reserve_tokens, sources_share=sources_share,
            layout=layout, recall_share=recall_share, recall_max_tokens=recall_max_tokens,
            trim_block=trim_block, cache_hints=cache_hints, pinned_source_types=pinned_source_types,
        )  # fmt: skip
        self.manager = manager
        self.max_tokens = max_tokens
        self.reserve_tokens = reserve_tokens
        self.session_id = session_id
        self.max_sources = max_sources
        self.source_token_cap = source_token_cap
        self.sources_share = sources_share
        self.source_types = tuple(source_types) if source_types is not None else None
        self.pinned_source_types = tuple(pinned_source_types)
        self.include_header = include_header
        self.input_key = input_key
        self.name = name
        self.tokenizer = tokenizer
        self.layout = layout
        self.recall_share = recall_share
        self.recall_max_tokens = recall_max_tokens
        self.trim_block = trim_block
        self.cache_hints = frozenset(cache_hints)
        if embeddings is not None and not isinstance(embeddings, Embeddings):
            msg = f"embeddings must be a LangChain Embeddings, got {type(embeddings).__name__}"
            raise ValidationError(msg)
        if recall is not None and embeddings is not None and recall.embeddings is not embeddings:
            msg = "recall= was made with other embeddings: pass embeddings to Recall(...) only"
            raise ValidationError(msg)
        self.embeddings = embeddings if recall is None else recall.embeddings
        self._recall = recall
        if compaction is not None and not isinstance(compaction, CompactionPolicy):
            msg = f"compaction must be a CompactionPolicy or None, got {type(compaction).__name__}"
            raise ValidationError(msg)
        self.compaction = compaction
        self.sent = SentRequests()
        self._term_cache: dict[tuple[Any, ...], tuple[Counter[str], int]] = {}
        self._cut_cache: dict[tuple[Any, ...], str] = {}

    def __repr__(self) -> str:
        return (
            f"ContextPromptAssembler(max_tokens={self.max_tokens}, "
            f"reserve_tokens={self.reserve_tokens}, max_sources={self.max_sources}, "
            f"layout={self.layout!r}, recall_share={self.recall_share})"
        )

    @property
    def recall(self) -> Recall:
        """The session index cache recall uses (the manager's shared one by default)."""
        if self._recall is None:
            self._recall = recall_for(self.manager, self.embeddings)
        return self._recall

    @property
    def budget(self) -> int:
        """Tokens the prompt may use: ``max_tokens - reserve_tokens``."""
        return self.max_tokens - self.reserve_tokens

    # ------------------------------------------------------------ build: I/O twins

    def build(
        self,
        session_id: str,
        tail: Sequence[BaseMessage],
        *,
        query: str,
        exclude_last: int = 0,
        skip_ids: frozenset[str] = frozenset(),
        system_prefix: str = "",
        budget: int | None = None,
        now: datetime | None = None,
    ) -> AssembledPrompt:
        """Assemble the system message, sources, history, then ``tail``.

        ``tail`` (the question, or an agent's current run) is never dropped and sources
        are ranked against ``query``. Reads only: the header, the fetched sources (when
        any are wanted), the history newest first in chunks, and the excluded newest
        messages (for the report); each read's result goes to the pure steps of
        :mod:`ctx_memory.assembly.plan`.

        Args:
            session_id: The session.
            tail: The messages after the history: the question, or an agent's run.
            query: What sources are ranked against.
            exclude_last: Leave out this many newest stored messages (e.g. the question
                itself when it was recorded before assembling).
            skip_ids: Stored messages with these ids are passed over (the caller sends
                them in ``tail``).
            system_prefix: An agent's own system prompt, before the session's.
            budget: Override ``max_tokens - reserve_tokens``.
            now: The current time (for the header's local time); default: now. A
                naive datetime is UTC, whatever the host's zone.

        Raises:
            BudgetExceededError: The system prompt, header and ``tail`` alone exceed the
                budget.
        """
        with tracing.assembly_span(session_id) as span:
            prompt = self._build(
                session_id, tail, query=query, exclude_last=exclude_last, skip_ids=skip_ids,
                system_prefix=system_prefix, budget=budget, now=now,
            )  # fmt: skip
            tracing.report_attributes(span, prompt.report.as_dict)
            self._remember(session_id, prompt)
            return prompt

    def _build(
        self,
        session_id: str,
        tail: Sequence[BaseMessage],
        *,
        query: str,
        exclude_last: int,
        skip_ids: frozenset[str],
        system_prefix: str,
        budget: int | None,
        now: datetime | None,
    ) -> AssembledPrompt:
        header = self.manager.get_header(session_id)
        outcome = None
        sent = self.sent.get(session_id)  # the request before: the summary's prefix
        if self._summarizes(header, sent):
            prefix, live = sent if sent is not None else (None, None)
            outcome = compact(
                self.manager, session_id, self._policy, prefix_messages=prefix, window_tokens=live
            )
            if outcome.entry is not None:
                header = self.manager.get_header(session_id)
        draft = self._begin(session_id, header, tail, prefix=system_prefix, budget=budget, now=now)
        fetched = self.manager.get_fetched_context(session_id) if draft.reads_sources else {}
        plan = self._plan(
            draft, fetched, query=query, exclude_last=exclude_last, skip_ids=skip_ids,
            view=self._view(header, tail),
        )  # fmt: skip
        notes: list[str] = []
        index, vector = None, None
        newest = plan.newest_range()
        known: list[tuple[int, Sequence[Mapping[str, Any]]]] = (
            [(newest[0], self.manager.get_message_range(session_id, *newest))] if newest else []
        )
        if plan.recalls and plan.draft.layout == "classic":  # chosen before the window
            index = self.recall.index(self.manager, session_id, header, notes=notes, known=known)
            vector = self.recall.embed_query(plan.query, index, notes=notes)
        choice, chunks = recall_step(plan, index, query_vector=vector)
        window = read_history_window(self.manager, session_id, chunks, known=known)
        excluded = held_range([*known, *chunks.reads], plan.end, plan.stored - 1)
        if excluded is None:
            excluded = self.manager.get_message_range(session_id, plan.end, plan.stored - 1)
        if plan.recalls and index is None:  # stable: the newest messages are read already
            known = [*chunks.reads, (plan.end, excluded)]
            index = self.recall.index(self.manager, session_id, header, notes=notes, known=known)
            vector = self.recall.embed_query(plan.query, index, notes=notes)
        choice = choice or recall_beside_window(plan, index, window, query_vector=vector)
        spans = choice.spans if choice is not None else []
        read = self.manager.get_message_spans(session_id, spans)
        recalled = choice.split(read) if choice is not None else []
        return self._finish(plan, window, excluded, choice, recalled, outcome, notes)

    async def abuild(
        self,
        session_id: str,
        tail: Sequence[BaseMessage],
        *,
        query: str,
        exclude_last: int = 0,
        skip_ids: frozenset[str] = frozenset(),
        system_prefix: str = "",
        budget: int | None = None,
        now: datetime | None = None,
    ) -> AssembledPrompt:
        """Async :meth:`build` (the store's native async reads)."""
        with tracing.assembly_span(session_id) as span:
            prompt = await self._abuild(
                session_id, tail, query=query, exclude_last=exclude_last, skip_ids=skip_ids,
                system_prefix=system_prefix, budget=budget, now=now,
            )  # fmt: skip
            tracing.report_attributes(span, prompt.report.as_dict)
            self._remember(session_id, prompt)
            return prompt

    async def _abuild(
        self,
        session_id: str,
        tail: Sequence[BaseMessage],
        *,
        query: str,
        exclude_last: int,
        skip_ids: frozenset[str],
        system_prefix: str,
        budget: int | None,
        now: datetime | None,
    ) -> AssembledPrompt:
        header = await self.manager.aget_header(session_id)
        outcome = None
        sent = self.sent.get(session_id)  # the request before: the summary's prefix
        if self._summarizes(header, sent):
            prefix, live = sent if sent is not None else (None, None)
            outcome = await acompact(
                self.manager, session_id, self._policy, prefix_messages=prefix, window_tokens=live
            )
            if outcome.entry is not None:
                header = await self.manager.aget_header(session_id)
        draft = self._begin(session_id, header, tail, prefix=system_prefix, budget=budget, now=now)
        fetched = await self.manager.aget_fetched_context(session_id) if draft.reads_sources else {}
        plan = self._plan(
            draft, fetched, query=query, exclude_last=exclude_last, skip_ids=skip_ids,
            view=self._view(header, tail),
        )  # fmt: skip
        notes: list[str] = []
        index, vector = None, None
        newest = plan.newest_range()
        known: list[tuple[int, Sequence[Mapping[str, Any]]]] = (
            [(newest[0], await self.manager.aget_message_range(session_id, *newest))]
            if newest
            else []
        )
        if plan.recalls and plan.draft.layout == "classic":  # chosen before the window
            index = await self.recall.aindex(
                self.manager, session_id, header, notes=notes, known=known
            )
            vector = await self.recall.aembed_query(plan.query, index, notes=notes)
        choice, chunks = recall_step(plan, index, query_vector=vector)
        window = await aread_history_window(self.manager, session_id, chunks, known=known)
        excluded = held_range([*known, *chunks.reads], plan.end, plan.stored - 1)
        if excluded is None:
            excluded = await self.manager.aget_message_range(session_id, plan.end, plan.stored - 1)
        if plan.recalls and index is None:  # stable: the newest messages are read already
            known = [*chunks.reads, (plan.end, excluded)]
            index = await self.recall.aindex(
                self.manager, session_id, header, notes=notes, known=known
            )
            vector = await self.recall.aembed_query(plan.query, index, notes=notes)
        choice = choice or recall_beside_window(plan, index, window, query_vector=vector)
        spans = choice.spans if choice is not None else []
        read = await self.manager.aget_message_spans(session_id, spans)
        recalled = choice.split(read) if choice is not None else []
        return self._finish(plan, window, excluded, choice, recalled, outcome, notes)

    # ------------------------------------------------------------ build: pure steps

    @property
    def _policy(self) -> CompactionPolicy:
        assert self.compaction is not None
        return self.compaction

    def _remember(self, session_id: str, prompt: AssembledPrompt) -> None:
        """Keep the request for the next compaction's prefix (a chat summariser's cache hit)."""
        if self.compaction is not None and reads_prefix(self.compaction.summarizer):
            self.sent.put(session_id, prompt.messages, prompt.settled_window)

    def _summarizes(
        self, header: Mapping[str, Any] | None, sent: tuple[Any, int] | None = None
    ) -> bool:
        """Whether the policy's summary trigger fires for this header (no I/O)."""
        if self.compaction is None or header is None:
            return False
        entries = compactions_of(header["shared"])
        window = None if sent is None else sent[1]
        return self.compaction.summary_range(header["metadata"], entries, window) is not None

    def _view(
        self, header: Mapping[str, Any] | None, tail: Sequence[BaseMessage]
    ) -> CompactedView | None:
        if self.compaction is None or header is None:
            return None
        return CompactedView(
            compactions_of(header["shared"]),
            self.manager.token_counter,
            clear_before=self.compaction.clear_before(header["metadata"]),
            min_tool_tokens=self.compaction.tool_output_min_tokens,
            # A question (or a run from its input on) is the turn in progress: the stored
            # turns' outputs are cleared from a run's first step on, not from its second
            # (once its question is stored), so the steps share their prefix.
            tail_turn=any(isinstance(m, HumanMessage) for m in tail),
        )

    def _begin(
        self,
        session_id: str,
        header: Mapping[str, Any] | None,
        tail: Sequence[BaseMessage],
        *,
        prefix: str,
        budget: int | None,
        now: datetime | None,
    ) -> PromptDraft:
        return begin_prompt(
            session_id,
            header,
            tail,
            counter=self.manager.token_counter,
            budget=self.budget if budget is None else budget,
            max_tokens=self.max_tokens,
            reserve_tokens=self.reserve_tokens,
            include_header=self.include_header,
            with_sources=self.max_sources != 0,
            system_prefix=prefix,
            now=now,
            layout=self.layout,
        )

    def _plan(
        self,
        draft: PromptDraft,
        fetched: Mapping[str, Sequence[Mapping[str, Any]]],
        *,
        query: str,
        exclude_last: int,
        skip_ids: frozenset[str],
        view: CompactedView | None = None,
    ) -> PromptPlan:
        return plan_prompt(
            draft,
            fetched,
            query=query,
            counter=self.manager.token_counter,
            max_sources=self.max_sources,
            source_types=self.source_types,
            sources_share=self.sources_share,
            source_token_cap=self.source_token_cap,
            tokenizer=self.tokenizer,
            term_cache=self._bounded_terms(),
            cut_cache=self._bounded_cuts(),
            exclude_last=exclude_last,
            skip_ids=skip_ids,
            recall_share=self.recall_share,
            recall_max_tokens=self.recall_max_tokens,
            trim_block=self.trim_block,
            view=view,
            pinned_source_types=self.pinned_source_types,
        )

    def _finish(  # noqa: PLR0917 - the read results, in build order
        self,
        plan: PromptPlan,
        window: HistoryWindow,
        excluded: Sequence[Mapping[str, Any]],
        choice: RecallChoice | None,
        recalled: Sequence[Sequence[Mapping[str, Any]]],
        outcome: CompactionOutcome | None = None,
        recall_notes: Sequence[str] = (),
    ) -> AssembledPrompt:
        notes = [outcome.reason] if outcome is not None and outcome.failed else []
        notes.extend(recall_notes)
        return finish_prompt(
            plan,
            window,
            excluded,
            counter=self.manager.token_counter,
            max_tokens=self.max_tokens,
            reserve_tokens=self.reserve_tokens,
            choice=choice,
            recalled=recalled,
            cache_hints=self.cache_hints,
            notes=notes,
        )

    def _bounded_terms(self) -> dict[tuple[Any, ...], tuple[Counter[str], int]]:
        if len(self._term_cache) > 4096:
            self._term_cache.clear()
        return self._term_cache

    def _bounded_cuts(self) -> dict[tuple[Any, ...], str]:
        if len(self._cut_cache) > 4096:
            self._cut_cache.clear()
        return self._cut_cache

    # ------------------------------------------------------------ plain calls

    def assemble(
        self,
        session_id: str,
        question: PromptInput,
        *,
        exclude_last: int = 0,
    ) -> AssembledPrompt:
        """Assemble a prompt for ``question``: messages, report and sources.

        Args:
            session_id: The session.
            question: The question (as for :meth:`invoke`).
            exclude_last: Leave out this many newest stored messages (e.g. the question
                itself when it was recorded before assembling).

        Raises:
            BudgetExceededError: The system prompt, header and question alone exceed
                the budget.
        """
        parsed = parse_question(question, self.input_key)
        return self.build(
            session_id, [parsed.message], query=parsed.text, exclude_last=exclude_last
        )

    async def aassemble(
        self,
        session_id: str,
        question: PromptInput,
        *,
        exclude_last: int = 0,
    ) -> AssembledPrompt:
        """Async :meth:`assemble` (the store's native async reads)."""
        parsed = parse_question(question, self.input_key)
        return await self.abuild(
            session_id, [parsed.message], query=parsed.text, exclude_last=exclude_last
        )

    # ------------------------------------------------------------ Runnable

    def _session(self, input_: Any, config: RunnableConfig | None) -> str:
        return session_id_from(
            config, self.session_id, payload=input_, owner="ContextPromptAssembler"
        )

    def _run(
        self, input_: PromptInput, run_manager: CallbackManagerForChainRun, config: RunnableConfig
    ) -> ChatPromptValue:
        return self.assemble(self._session(input_, config), input_).to_prompt_value()

    async def _arun(
        self,
        input_: PromptInput,
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> ChatPromptValue:
        return (await self.aassemble(self._session(input_, config), input_)).to_prompt_value()

    @override
    def invoke(
        self, input: PromptInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> ChatPromptValue:
        return self._call_with_config(self._run, input, config, run_type="prompt", **kwargs)

    @override
    async def ainvoke(
        self, input: PromptInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> ChatPromptValue:
        return await self._acall_with_config(self._arun, input, config, run_type="prompt", **kwargs)

    @property
    @override
    def config_specs(self) -> list[ConfigurableFieldSpec]:
        return [SESSION_ID_SPEC]

    def as_variables(self) -> Runnable[PromptInput, dict[str, Any]]:
        """A Runnable giving template variables instead of messages.

        Its output dict has ``system``, ``sources``, ``history`` (messages), ``question``
        and ``report`` (see :meth:`AssembledPrompt.to_variables
        <ctx_memory.assembly.report.AssembledPrompt.to_variables>`), so a user's own
        ``ChatPromptTemplate`` with a ``MessagesPlaceholder("history")`` and a
        ``{sources}`` variable can follow it with ``|``. Text the template adds around
        the variables is not in the budget: keep ``reserve_tokens`` large enough for it.
        """
        return _AssemblerVariables(self)


class _AssemblerVariables(Runnable[PromptInput, dict[str, Any]]):
    """:meth:`ContextPromptAssembler.as_variables` as its own traced Runnable."""

    def __init__(self, assembler: ContextPromptAssembler) -> None:
        self.assembler = assembler
        self.name = "ContextPromptVariables"

    @property
    @override
    def config_specs(self) -> list[ConfigurableFieldSpec]:
        return [SESSION_ID_SPEC]

    def _run(
        self, input_: PromptInput, run_manager: CallbackManagerForChainRun, config: RunnableConfig
    ) -> dict[str, Any]:
        a = self.assembler
        return a.assemble(a._session(input_, config), input_).to_variables()

    async def _arun(
        self,
        input_: PromptInput,
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> dict[str, Any]:
        a = self.assembler
        return (await a.aassemble(a._session(input_, config), input_)).to_variables()

    @override
    def invoke(
        self, input: PromptInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        return self._call_with_config(self._run, input, config, run_type="prompt", **kwargs)

    @override
    async def ainvoke(
        self, input: PromptInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        return await self._acall_with_config(self._arun, input, config, run_type="prompt", **kwargs)
