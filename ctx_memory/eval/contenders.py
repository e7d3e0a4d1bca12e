"""The systems the eval compares, behind one small interface.

A contender sees every message of a session as it is written (:meth:`Contender.observe`,
messages carrying the id the store gave them) and, at each model call, builds the
request (:meth:`Contender.prompt`) from what it has seen plus the ``tail`` (the question,
or an agent's current run). All contenders get the same system text: the session's
system prompt and the header the classic layout shows (the user's local time at the
simulated clock), and the same budget: the request's exact token count.

* :class:`AssemblerContender`: :class:`~ctx_memory.prompt.ContextPromptAssembler` on the
  session's :class:`~ctx_memory.manager.ContextManager` (one per layout and budget).
* :class:`TrimContender`: langchain-core's ``trim_messages(strategy="last",
  include_system=True, start_on="human")`` with the exact tiktoken counter
  (:meth:`TokenCounter.count_chat <ctx_memory.tokens.TokenCounter.count_chat>`). It is
  handed the newest messages whose tokens exceed the budget, not the whole history: a
  ``"last"`` trim keeps a suffix, so its output is the same, and the run is not spent
  re-encoding messages it would drop anyway.
* :class:`LlamaMemoryContender`: LlamaIndex's ``Memory`` (llama-index-core) on its
  default in-memory SQLite store, ``token_limit`` = the budget less the system message
  and a 64-token question allowance, all of it for chat history
  (``chat_history_token_ratio=1.0``), flushing 10 % of the limit at a time (its default
  ratio), tokens counted with the same tiktoken encoding. It counts message text only
  (no per-message overhead), so its requests may exceed the budget by that overhead:
  the recount reports it.
"""

from __future__ import annotations

import inspect
import itertools
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    trim_messages,
)

from ctx_memory.assembly.sources import format_header
from ctx_memory.eval.data import BENCH_INSTALL_HINT
from ctx_memory.eval.metrics import recalled_ids
from ctx_memory.prompt import ContextPromptAssembler

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import datetime

    from ctx_memory.manager import ContextManager
    from ctx_memory.tokens import TokenCounter

__all__ = [
    "CLASSIC",
    "CLASSIC_RECALL",
    "QUESTION_ALLOWANCE",
    "STABLE",
    "STABLE_RECALL",
    "AssemblerContender",
    "Contender",
    "LlamaMemoryContender",
    "Prompt",
    "TrimContender",
    "assembler_variants",
    "supports_layouts",
]

QUESTION_ALLOWANCE = 64
"""Tokens LlamaIndex's limit leaves for the question (it never sees the question)."""


def supports_layouts() -> bool:
    """Whether this ctx_memory's assembler takes ``layout`` and ``recall_share``."""
    params = inspect.signature(ContextPromptAssembler.__init__).parameters
    return "layout" in params and "recall_share" in params


CLASSIC = "ctx_memory classic (recency)"
CLASSIC_RECALL = "ctx_memory classic + recall"
STABLE_RECALL = "ctx_memory stable + recall"
STABLE = "ctx_memory stable (recency)"


def assembler_variants() -> list[tuple[str, dict[str, Any]]]:
    """The assembler configurations the eval runs: a name and constructor options each.

    ``classic (recency)`` is the recency-only layout (``layout="classic",
    recall_share=0.0``; on a ctx_memory without those parameters, the assembler as it
    is). With them, also ``stable + recall`` (``layout="stable"``, the default recall
    share), ``stable (recency)`` (``layout="stable", recall_share=0.0``: what the
    layout alone does for the prefix, apart from what per-question recall costs it)
    and, when the default layout is classic with recall, ``classic + recall`` (the
    constructor's defaults).
    """
    if not supports_layouts():
        return [(CLASSIC, {})]
    params = inspect.signature(ContextPromptAssembler.__init__).parameters
    out: list[tuple[str, dict[str, Any]]] = [(CLASSIC, {"layout": "classic", "recall_share": 0.0})]
    if params["layout"].default == "classic" and params["recall_share"].default:
        out.append((CLASSIC_RECALL, {"layout": "classic"}))
    out.append((STABLE_RECALL, {"layout": "stable"}))
    out.append((STABLE, {"layout": "stable", "recall_share": 0.0}))
    return out


@dataclass(frozen=True)
class Prompt:
    """One request a contender built.

    Attributes:
        messages: The request's messages.
        recalled: Stored message ids the contender recalled, best first (``None`` when
            it has no recall).
        reported_tokens: The tokens the contender says the request has (``None`` when
            it does not say).
        stable_prefix_tokens: The stable prefix it reports (``None`` when it does not).
    """

    messages: list[BaseMessage]
    recalled: list[str] | None = None
    reported_tokens: int | None = None
    stable_prefix_tokens: int | None = None


class Contender(Protocol):
    """What the replay drives."""

    name: str
    budget: int

    def observe(self, messages: Sequence[BaseMessage]) -> None:
        """Messages just written to the session (with their stored ids)."""

    def prompt(self, tail: Sequence[BaseMessage], query: str, now: datetime) -> Prompt:
        """The request for a model call: history, then ``tail``."""


def system_text(system_prompt: str, metadata: Mapping[str, Any], now: datetime) -> str:
    """The system message the baselines send: what the classic layout's holds."""
    header = format_header(metadata, now=now)
    return f"{system_prompt}\n\n{header}" if header else system_prompt


class AssemblerContender:
    """ctx_memory's assembler over the session the replay writes to."""

    def __init__(
        self,
        name: str,
        manager: ContextManager,
        session_id: str,
        budget: int,
        options: Mapping[str, Any],
    ) -> None:
        self.name = name
        self.budget = budget
        self.session_id = session_id
        self.assembler = ContextPromptAssembler(
            manager, max_tokens=budget, reserve_tokens=0, max_sources=0, **options
        )

    def observe(self, messages: Sequence[BaseMessage]) -> None:
        """The replay writes to the manager; nothing to do."""

    def prompt(self, tail: Sequence[BaseMessage], query: str, now: datetime) -> Prompt:
        """``ContextPromptAssembler.build`` with ``tail`` and its stored ids skipped."""
        skip = frozenset(m.id for m in tail if m.id)
        result = self.assembler.build(self.session_id, tail, query=query, skip_ids=skip, now=now)
        report = result.report
        recalled = getattr(report, "recalled", None)
        stable = getattr(report, "stable_prefix_tokens", None)
        return Prompt(
            messages=list(result.messages),
            recalled=recalled_ids(recalled) if recalled is not None else None,
            reported_tokens=report.total_tokens,
            stable_prefix_tokens=stable if isinstance(stable, int) else None,
        )


class TrimContender:
    """``trim_messages(strategy="last")`` with the exact tiktoken counter."""

    def __init__(
        self,
        budget: int,
        counter: TokenCounter,
        system_prompt: str,
        metadata: Mapping[str, Any],
    ) -> None:
        self.name = "trim_messages"
        self.budget = budget
        self.counter = counter
        self.system_prompt = system_prompt
        self.metadata = dict(metadata)
        self.history: list[BaseMessage] = []
        self.counts: list[int] = []

    def observe(self, messages: Sequence[BaseMessage]) -> None:
        """Keep the messages and their tokens."""
        self.history.extend(messages)
        self.counts.extend(self.counter.count_lc_message(m) for m in messages)

    def prompt(self, tail: Sequence[BaseMessage], query: str, now: datetime) -> Prompt:
        """Trim system + history + tail to the budget, keeping the newest."""
        system = SystemMessage(system_text(self.system_prompt, self.metadata, now))
        skip = {m.id for m in tail if m.id}
        fixed = self.counter.count_chat([system, *tail])
        start, total = len(self.history), fixed
        while start > 0 and total <= self.budget:  # the newest messages past the budget
            start -= 1
            total += self.counts[start]
        history = [m for m in self.history[start:] if m.id not in skip]
        trimmed = trim_messages(
            [system, *history, *tail],
            max_tokens=self.budget,
            strategy="last",
            token_counter=self.counter.count_chat,
            include_system=True,
            start_on="human",
        )
        return Prompt(messages=list(trimmed))


_ROLES = {"human": "user", "ai": "assistant", "tool": "tool", "system": "system"}


class LlamaMemoryContender:
    """LlamaIndex ``Memory`` fed every message, its ``get()`` as the history."""

    _sessions = itertools.count()

    def __init__(
        self,
        budget: int,
        counter: TokenCounter,
        system_prompt: str,
        metadata: Mapping[str, Any],
        now: datetime,
    ) -> None:
        try:
            from llama_index.core.memory import Memory  # noqa: PLC0415 - bench group only
        except ImportError as e:
            raise ImportError(BENCH_INSTALL_HINT) from e
        import tiktoken  # noqa: PLC0415

        self.name = "LlamaIndex Memory"
        self.budget = budget
        self.counter = counter
        self.system_prompt = system_prompt
        self.metadata = dict(metadata)
        encoding = tiktoken.get_encoding(counter.encoding_name)
        allowance = counter.count_chat([SystemMessage(system_text(system_prompt, metadata, now))])
        limit = max(1, budget - allowance - QUESTION_ALLOWANCE)
        self.token_limit = limit
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.memory = Memory.from_defaults(
                session_id=f"eval-{next(self._sessions)}",
                token_limit=limit,
                tokenizer_fn=encoding.encode_ordinary,
                chat_history_token_ratio=1.0,
                token_flush_size=max(1, limit // 10),
            )

    def observe(self, messages: Sequence[BaseMessage]) -> None:
        """``Memory.put`` each message (tool calls and call ids in ``additional_kwargs``)."""
        from llama_index.core.llms import ChatMessage  # noqa: PLC0415

        for message in messages:
            extra: dict[str, Any] = {"id": message.id}
            if isinstance(message, AIMessage) and message.tool_calls:
                extra["tool_calls"] = [dict(call) for call in message.tool_calls]
            if isinstance(message, ToolMessage):
                extra["tool_call_id"] = message.tool_call_id
                extra["name"] = message.name
            self.memory.put(
                ChatMessage(
                    role=_ROLES[message.type], content=message.text, additional_kwargs=extra
                )
            )

    def prompt(self, tail: Sequence[BaseMessage], query: str, now: datetime) -> Prompt:
        """System + ``Memory.get()`` (without the tail's stored messages) + tail."""
        system = SystemMessage(system_text(self.system_prompt, self.metadata, now))
        skip = {m.id for m in tail if m.id}
        window = [_to_langchain(m) for m in self.memory.get()]
        history = [m for m in window if m.id not in skip]
        return Prompt(messages=[system, *history, *tail])


def _to_langchain(message: Any) -> BaseMessage:
    extra = dict(message.additional_kwargs or {})
    role = str(getattr(message.role, "value", message.role))
    content = str(message.content or "")
    message_id = extra.get("id")
    if role == "user":
        return HumanMessage(content, id=message_id)
    if role == "tool":
        return ToolMessage(
            content,
            tool_call_id=str(extra.get("tool_call_id")),
            name=extra.get("name"),
            id=message_id,
        )
    if role == "system":
        return SystemMessage(content, id=message_id)
    return AIMessage(content, tool_calls=extra.get("tool_calls") or [], id=message_id)
