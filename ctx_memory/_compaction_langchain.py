"""LangChain's ``SummarizationMiddleware`` summaries, read as compactions: pure helpers.

``SummarizationMiddleware`` rewrites the agent state before a model call: it removes every
message (``RemoveMessage(REMOVE_ALL_MESSAGES)``) and puts back one ``HumanMessage``
(``"Here is a summary of the conversation to date:"`` and the text, ``additional_kwargs
{"lc_source": "summarization"}``) followed by the messages it kept. Beside
:class:`~ctx_memory.middleware.ContextMiddleware`, that summary is not a user turn: the
middleware stores it as a compaction (:func:`~ctx_memory.compaction.add_compaction`)
covering the stored messages it replaced, and the prompt then sends the summary *instead
of* them, once.

The covered range runs from the state's first message when the agent run began (recorded
by the middleware's ``before_agent`` as :data:`STATE_START_KEY`; if that message was an
earlier LangChain summary, from the start of its compaction) to the stored message just
before the first kept one. Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from langchain_core.messages import BaseMessage, HumanMessage

from ctx_memory.assembly.compacted import COMPACTIONS_KEY, compactions_of

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "PRODUCER_NAME",
    "STATE_START_KEY",
    "SUMMARY_PREFIX",
    "compaction_id_for",
    "is_langchain_summary",
    "known",
    "producer_for",
    "split_summaries",
    "summary_body",
    "summary_span",
]

PRODUCER_NAME = "langchain.SummarizationMiddleware"
"""The ``producer.name`` of compactions read from LangChain summaries."""

SUMMARY_PREFIX = "Here is a summary of the conversation to date:"
"""How ``SummarizationMiddleware`` opens its summary message."""

STATE_START_KEY = "ctx_memory_state_start"
"""Agent-state key: the id of the state's first message when the agent run began."""


def is_langchain_summary(message: BaseMessage) -> bool:
    """Whether ``message`` is a summary ``SummarizationMiddleware`` put into the state.

    Known by its tag (``additional_kwargs["lc_source"] == "summarization"``, set since
    LangChain 1.2.4), never by its text: a user may well type LangChain's opening line.
    """
    return (
        isinstance(message, HumanMessage)
        and message.additional_kwargs.get("lc_source") == "summarization"
    )


def split_summaries(
    messages: Sequence[BaseMessage],
) -> tuple[list[BaseMessage], list[BaseMessage]]:
    """``(summaries, the other messages)``, each in order."""
    summaries = [m for m in messages if is_langchain_summary(m)]
    return summaries, [m for m in messages if not is_langchain_summary(m)]


def summary_body(message: BaseMessage) -> str:
    """The summary text without LangChain's opening line."""
    return str(message.text).removeprefix(SUMMARY_PREFIX).strip()


def compaction_id_for(message: BaseMessage) -> str:
    """The compaction id of a summary message (one compaction per summary, ever)."""
    return f"lc-summary-{message.id}"


def known(shared: Mapping[str, Any] | None, compaction_id: str) -> bool:
    """Whether ``shared`` holds ``compaction_id``, live or removed (a removal is respected)."""
    entries = (shared or {}).get(COMPACTIONS_KEY) or {}
    return isinstance(entries, dict) and compaction_id in entries


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _model_name(model: Any) -> str:
    for attribute in ("model_name", "model", "model_id"):
        value = getattr(model, attribute, None)
        if isinstance(value, str) and value:
            return value
    return type(model).__name__ if model is not None else ""


def producer_for(middleware: Any | None) -> dict[str, str]:
    """``{name, model, prompt_hash}`` for a summary of ``middleware`` (if known).

    The model is the one that wrote the summary (its ``summarizer`` when that is a
    chat model or Runnable, else its ``model``); the prompt hash is of its
    ``summary_prompt`` when a chat model wrote it.
    """
    if middleware is None:
        return {"name": PRODUCER_NAME, "model": "", "prompt_hash": ""}
    custom = getattr(middleware, "summarizer", None)
    if custom is not None:
        return {"name": PRODUCER_NAME, "model": _model_name(custom), "prompt_hash": ""}
    model = getattr(middleware, "_summary_chat_model", None) or getattr(middleware, "model", None)
    prompt = getattr(middleware, "summary_prompt", "")
    return {
        "name": PRODUCER_NAME,
        "model": _model_name(model),
        "prompt_hash": _hash(prompt) if isinstance(prompt, str) and prompt else "",
    }


def summarised_from(shared: Mapping[str, Any] | None, state_start: str | None) -> str | None:
    """Where a summary's range starts: ``state_start``, or the summary that replaced it.

    A run that began from a LangChain summary keeps that summary's id as its start; when
    LangChain summarises again within the run, the first re-summary's compaction replaces
    that summary's, and each later one takes in the one before it (each entry lists what
    it took in, transitively: its ``replaces``). So when the start's compaction was
    recorded but is no longer live, the range starts where the live LangChain compaction
    that took it in starts (its summary id is returned). With none (the user removed it),
    ``state_start`` as it is: a removed compaction stays removed.
    """
    start = f"lc-summary-{state_start}"
    if state_start is None or not known(shared, start):
        return state_start
    live = [
        c for c in compactions_of(shared) if (c.get("producer") or {}).get("name") == PRODUCER_NAME
    ]
    took_in = [c for c in live if start in (c.get("replaces") or ())]
    if any(c["id"] == start for c in live) or not took_in:
        return state_start
    newest = max(took_in, key=lambda c: int(c["last_index"]))
    return str(newest["id"]).removeprefix("lc-summary-")


def summary_span(
    records: Sequence[Mapping[str, Any]],
    kept: Sequence[BaseMessage],
    state_start: str | None,
    compactions: Sequence[Mapping[str, Any]],
) -> tuple[int, int] | None:
    """The stored positions ``(first, last)`` a summary replaced, or None if unknown.

    Args:
        records: The session's stored messages, oldest first.
        kept: The state's messages after the summary (what ``SummarizationMiddleware``
            kept).
        state_start: The id of the state's first message when the run began.
        compactions: The session's live compactions.

    ``last`` is the stored message before the first kept one that is stored (the
    newest stored message if none is); ``first`` is where ``state_start`` is stored,
    or the start of its compaction when it was an earlier LangChain summary. None when
    ``state_start`` is neither (its messages were never stored: nothing to stand for).
    """
    if not records or not state_start:
        return None
    positions = {str(r.get("id")): i for i, r in enumerate(records)}
    last = len(records) - 1
    for message in kept:
        if message.id is not None and str(message.id) in positions:
            last = positions[str(message.id)] - 1
            break
    first: int | None = positions.get(state_start)
    if first is None:
        earlier = f"lc-summary-{state_start}"
        first = next((int(c["first_index"]) for c in compactions if c["id"] == earlier), None)
    if first is None or last < first:
        return None
    return first, last
