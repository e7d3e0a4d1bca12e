"""What an assembly gives back: the prompt and its budget report.

:class:`AssembledPrompt` holds the messages and their parts; :class:`AssemblyReport`
the tokens per section and what was left out. Plain frozen dataclasses with no I/O;
:mod:`ctx_memory.display` renders both in a notebook.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from langchain_core.messages import convert_to_openai_messages
from langchain_core.prompt_values import ChatPromptValue

from ctx_memory.assembly.messages import CONTEXT_CLOSE, CONTEXT_OPEN
from ctx_memory.ranking import item_title

if TYPE_CHECKING:
    from collections.abc import Mapping

    from langchain_core.messages import BaseMessage

__all__ = ["AssembledPrompt", "AssemblyReport"]


@dataclass(frozen=True)
class AssemblyReport:
    """What an assembled prompt spends, section by section, and what it left out.

    Every ``*_tokens`` section includes its messages' chat overhead, so
    ``system_tokens + sources_tokens + history_tokens + question_tokens +
    priming_tokens == total_tokens`` and ``total_tokens`` is what
    :meth:`TokenCounter.count_chat` returns for the messages.

    Attributes:
        session_id: The session the prompt was assembled from.
        budget: ``max_tokens - reserve_tokens``; ``total_tokens`` never exceeds it.
        max_tokens: The model's context size the caller gave.
        reserve_tokens: Tokens kept free for the reply.
        total_tokens: Tokens of the whole prompt, reply priming included.
        system_tokens: The system message with system prompt and header only.
        sources_tokens: What the sources added to the prompt (stable layout: the
            pinned ones in the system message and the ranked ones on the question's
            message).
        history_tokens: The history messages included.
        question_tokens: The question message (for the agent middleware: the current
            run's messages, from the last human message on).
        priming_tokens: The reply priming the API adds to every request.
        sources_included: Sources in the prompt (pinned ones included).
        sources_truncated: Of those, how many were cut to the per-source cap.
        sources_dropped: Sources left out (over ``max_sources`` or over budget),
            pinned ones included.
        source_urls: URLs (or titles) of the sources included, in prompt order (the
            pinned ones first).
        history_messages: Stored messages in the history window.
        history_left_out_messages: Stored messages left out of the prompt.
        history_left_out_tokens: Their tokens (from cached counts).
        history_repaired_messages: Messages dropped from the window as orphan tool
            messages or tool calls without results (included in the left-out counts).
        encoding: The tiktoken encoding the counts are in.
        recalled: Older messages brought back by recall, one dict each:
            ``message_id``, ``index`` (position in the history), ``score`` (BM25),
            ``terms`` (the query terms it matched) and ``reason`` (short text). Each
            came with its whole turn (counted in ``history_messages``).
        recall_tokens: Tokens the recalled turns and their gap markers take (in
            ``history_tokens``).
        window_budget: Tokens the history window could take (what the history budget
            left after recall's share; the window holds the newest turns up to it).
        stable_prefix_tokens: Tokens of the prompt's prefix that is, by construction,
            the same as the previous request's for this session unless something in
            it changed (stable layout: the system message and the history window,
            which moves only at block trims; classic: the system message when it holds
            no sources and no current page or local time, else 0).
        layout: ``"classic"`` or ``"stable"``.
        compactions: Summary compactions used in place of the messages they cover,
            one dict each: ``id``, ``kind``, ``first_index``, ``last_index``,
            ``tokens_covered``, ``summary_tokens`` (:mod:`ctx_memory.compaction`). Each
            summary message counts as one of ``history_messages``; the messages it
            covers are not counted as left out.
        tool_outputs_cleared: Tool-call ids of tool outputs sent as a placeholder
            (``restore_tool_result`` brings them back).
        compaction_notes: What did not go as planned: a summariser that failed or
            returned nothing, a compaction not used because the history was edited.
        pinned_sources: Of ``sources_included``, the pinned ones (the first
            ``pinned_sources`` of ``source_urls``, numbered ``[1]`` on, right after the
            system prompt; in the stable layout part of ``stable_prefix_tokens``).
        pinned_source_urls: Their URLs (or titles), oldest first.
        pinned_sources_dropped: Of ``sources_dropped``, the pinned ones (pinned
            sources beyond their share of the budget or ``max_sources``: the newest go).
    """

    session_id: str
    budget: int
    max_tokens: int
    reserve_tokens: int
    total_tokens: int
    system_tokens: int
    sources_tokens: int
    history_tokens: int
    question_tokens: int
    priming_tokens: int
    sources_included: int
    sources_truncated: int
    sources_dropped: int
    source_urls: tuple[str, ...]
    history_messages: int
    history_left_out_messages: int
    history_left_out_tokens: int
    history_repaired_messages: int
    encoding: str
    recalled: list[dict[str, Any]] = field(default_factory=list)
    recall_tokens: int = 0
    window_budget: int = 0
    stable_prefix_tokens: int = 0
    layout: str = "classic"
    compactions: list[dict[str, Any]] = field(default_factory=list)
    tool_outputs_cleared: list[str] = field(default_factory=list)
    compaction_notes: list[str] = field(default_factory=list)
    pinned_sources: int = 0
    pinned_source_urls: tuple[str, ...] = ()
    pinned_sources_dropped: int = 0

    @property
    def remaining_tokens(self) -> int:
        """Budget not used by the prompt."""
        return self.budget - self.total_tokens

    def as_dict(self) -> dict[str, Any]:
        """The report as a plain, JSON-native dict.

        ``compactions``, ``tool_outputs_cleared`` and ``compaction_notes`` are left out
        when empty; ``pinned_sources``, ``pinned_source_urls`` and
        ``pinned_sources_dropped`` when the session has no pinned source.
        """
        from dataclasses import asdict  # noqa: PLC0415

        out = asdict(self)
        out["source_urls"] = list(self.source_urls)
        out["pinned_source_urls"] = list(self.pinned_source_urls)
        out["recalled"] = [dict(entry) for entry in self.recalled]
        out["remaining_tokens"] = self.remaining_tokens
        for key in ("compactions", "tool_outputs_cleared", "compaction_notes"):
            if not out[key]:
                del out[key]  # present only when compaction acted: older readers see no change
        if not self.pinned_sources and not self.pinned_sources_dropped:
            for key in ("pinned_sources", "pinned_source_urls", "pinned_sources_dropped"):
                del out[key]  # likewise, present only when something is pinned
        return out

    def _repr_html_(self) -> str | None:
        return _render_html(self)


def _render_html(value: Any) -> str | None:
    try:
        from ctx_memory import display  # noqa: PLC0415 - optional surface, built elsewhere
    except ImportError:
        return None
    render = getattr(display, "render_assembly_html", None)
    return None if render is None else cast("str", render(value))


@dataclass(frozen=True)
class AssembledPrompt:
    """An assembled prompt: the messages, the report and the sources used.

    Attributes:
        messages: System message (if any), history, then the question.
        report: Tokens per section and what was left out.
        sources: The fetched items in the prompt, numbered from 1 in this order (the
            pinned ones first).
        system: The system message text (system prompt, header and sources; in the
            stable layout, of the sources only the pinned ones).
        history: The history messages.
        question: The question message.
        head: The system prompt and header without sources.
        sources_text: The numbered sources alone: the pinned block, then the ranked
            block (``""`` for none).
        model_kwargs: Call options for the chat model (``prompt_cache_key`` with the
            ``"openai"`` cache hint): ``model.bind(**prompt.model_kwargs)``.
        settled_window: The history window's budget once recall takes its share of the
            history budget (as it does once the history outgrows it): what a compaction
            keeps the shown history under, so that what it summarises is still in the
            prompt it repeats (:meth:`~ctx_memory.compaction.CompactionPolicy.summary_range`).
        volatile: Stable layout: the header lines that change with the clock or the
            page (current page, local time), sent last (``""`` classic: in ``head``).
        recalled_text: Stable layout: the recalled turns as text, sent on the question
            (``""`` classic: they are in ``history``).
    """

    messages: list[BaseMessage]
    report: AssemblyReport
    sources: tuple[Mapping[str, Any], ...] = ()
    system: str = ""
    history: list[BaseMessage] = field(default_factory=list)
    question: BaseMessage | None = None
    head: str = ""
    sources_text: str = ""
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    settled_window: int = 0
    volatile: str = ""
    recalled_text: str = ""

    def to_prompt_value(self) -> ChatPromptValue:
        """The messages as a :class:`ChatPromptValue`, what a chat model takes."""
        return ChatPromptValue(messages=self.messages)

    def sources_used(self) -> list[dict[str, Any]]:
        """The numbered sources in the prompt, as the model saw them.

        One JSON-native dict per source, in prompt order: ``n`` (the ``[n]`` the prompt
        shows, from 1), ``url`` (``None`` for a source without one), ``title`` (as in
        the prompt's heading: the title, else the site name, else the URL) and
        ``source_type`` (its ``fetched_context`` key, e.g. ``"web_search"``).
        """
        return [
            {
                "n": n,
                "url": str(item["url"]) if item.get("url") else None,
                "title": item_title(item),
                "source_type": item.get("source_type"),
            }
            for n, item in enumerate(self.sources, 1)
        ]

    def as_dict(self) -> dict[str, Any]:
        """The prompt as JSON-native data: what a preview shows.

        ``messages`` in the OpenAI chat format (``role``, ``content``, and ``tool_calls``
        or ``tool_call_id`` where they belong; LangChain's ``convert_to_openai_messages``),
        ``sources`` (:meth:`sources_used`), ``report`` (:meth:`AssemblyReport.as_dict`)
        and ``model_kwargs``.
        """
        return {
            "messages": convert_to_openai_messages(self.messages),
            "sources": self.sources_used(),
            "report": self.report.as_dict(),
            "model_kwargs": dict(self.model_kwargs),
        }

    def to_variables(self) -> dict[str, Any]:
        """Variables for a user's own ``ChatPromptTemplate``.

        ``system`` (system prompt + header), ``sources`` (the numbered block),
        ``history`` (messages, for a ``MessagesPlaceholder``), ``question`` (text) and
        ``report``. The same for both layouts: the stable layout's volatile header lines
        are in ``system`` and its recalled turns before the question's text (in
        ``<context>`` tags, as that layout sends them), so a template written for one
        layout loses nothing with the other.
        """
        question = self.question.text if self.question is not None else ""
        if self.recalled_text:
            question = f"{CONTEXT_OPEN}\n{self.recalled_text}\n{CONTEXT_CLOSE}\n\n{question}"
        return {
            "system": "\n\n".join(p for p in (self.head, self.volatile) if p),
            "sources": self.sources_text,
            "history": list(self.history),
            "question": question,
            "report": self.report,
        }

    def _repr_html_(self) -> str | None:
        return _render_html(self)
