"""Summarisers for :mod:`ctx_memory.compaction`: an offline extractive one and a chat prompt.

A summariser is any ``Runnable`` that takes the covered messages (a list of LangChain
messages) and returns the summary as a ``str`` or a message (its text is used).
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
from collections import Counter, OrderedDict
from typing import TYPE_CHECKING, Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import Runnable, RunnableLambda
from typing_extensions import override

from ctx_memory.assembly.compacted import RESTORABLE_PREFIX
from ctx_memory.recall import recall_terms, record_text
from ctx_memory.schema import message_to_record

if TYPE_CHECKING:
    from collections.abc import Sequence

    from langchain_core.callbacks import (
        AsyncCallbackManagerForChainRun,
        CallbackManagerForChainRun,
    )
    from langchain_core.language_models import BaseChatModel
    from langchain_core.runnables import RunnableConfig

__all__ = [
    "DEFAULT_PREFIX_INSTRUCTION",
    "DEFAULT_SUMMARY_PROMPT",
    "PREFIX_KEY",
    "ExtractiveSummarizer",
    "SentRequests",
    "chat_summarizer",
    "prefixed_request",
    "producer_of",
]

DEFAULT_SUMMARY_PROMPT = (
    "Summarise the conversation excerpt below for your own later use. Keep every name, "
    "number, date, identifier (tool-call ids, file names, URLs), decision and open question; "
    "drop greetings and repetition. Write short factual lines, oldest first, no preamble."
)
"""The prompt :func:`chat_summarizer` puts before the covered messages."""

DEFAULT_PREFIX_INSTRUCTION = (
    "Summarise messages {first} to {last} of this conversation for your own later use "
    "(counting every message above from 1, the system message included; the {after} "
    "after them are kept as they are). Keep every name, number, date, identifier "
    "(tool-call ids, file names, URLs), decision and open question; drop greetings and "
    "repetition. Write short factual lines, oldest first, no preamble; do not answer or "
    "continue the conversation."
)
"""The last user message of a summarisation request that reuses the live request's prefix.

``{first}``, ``{last}`` and ``{after}`` are filled in (see :func:`chat_summarizer`)."""

PREFIX_KEY = "ctx_memory_prefix_messages"
"""``configurable`` key: the messages the live request sent, for :func:`chat_summarizer`."""


class SentRequests:
    """The newest request assembled for each recent session: a chat summariser's prefix.

    :func:`chat_summarizer` re-sends the live request with one instruction after it, so
    the provider's prompt cache serves the summarisation request
    (:func:`prefixed_request`). The assembler keeps here what it built last for each of
    the newest ``size`` sessions (a summariser that reads no prefix keeps nothing), and
    passes it to :func:`~ctx_memory.compaction.compact` when it compacts before the next
    request or, in the background, after the reply. Thread-safe.
    """

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._sent: OrderedDict[str, tuple[list[BaseMessage], int]] = OrderedDict()

    def __repr__(self) -> str:
        return f"SentRequests(sessions={len(self._sent)}, size={self.size})"

    def put(self, session_id: str, messages: Sequence[BaseMessage], window: int) -> None:
        """Remember ``messages`` (its history ``window`` in tokens) as ``session_id``'s last."""
        with self._lock:
            self._sent[session_id] = (list(messages), window)
            self._sent.move_to_end(session_id)
            while len(self._sent) > self.size:
                self._sent.popitem(last=False)

    def get(self, session_id: str) -> tuple[list[BaseMessage], int] | None:
        """The request last built for ``session_id`` and its window (None if not kept)."""
        with self._lock:
            return self._sent.get(session_id)


def reads_prefix(summarizer: Runnable[Any, Any]) -> bool:
    """Whether ``summarizer`` may use the live request's messages (every one but ours)."""
    return not isinstance(summarizer, ExtractiveSummarizer)


_SUMMARY_OPENING = "[Summary of messages "
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_FACTY = re.compile(r"\d|\b[A-Z][a-z]+")


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if s.strip()]


def _cut(sentence: str, words: int) -> str:
    parts = sentence.split()
    return sentence if len(parts) <= words else " ".join(parts[:words]) + " …"


class ExtractiveSummarizer(Runnable[list[BaseMessage], str]):
    """A deterministic, offline summariser: the most informative sentences of each message.

    Each message's sentences are scored by the inverse document frequency of their
    recall terms (:func:`~ctx_memory.recall.recall_terms`) across the covered messages,
    plus a bonus for numbers and capitalised names, so the rare, specific sentence wins;
    the best ``per_message`` sentences of each message not already kept stay, in
    order, one line per message (``user:``, ``assistant:``, ``tool <name> [<call id>]:``), cut to
    ``words_per_sentence`` words. When the lines exceed ``max_chars`` (about 500 tokens by
    default) the most specific ones are kept, in their order, and a last line says how many
    were left out. An earlier summary among the messages (a rolling summary takes in the
    one before it) gives each of its lines as a line of its own, so what it kept competes
    with the new lines rather than shrinking to one sentence.

    Example:
        .. code-block:: python

            from langchain_core.messages import AIMessage, HumanMessage
            from ctx_memory.compaction import ExtractiveSummarizer

            text = ExtractiveSummarizer().invoke([
                HumanMessage("Hello there. My flight AF123 leaves Paris at 09:40."),
                AIMessage("Noted. I will remind you."),
            ])
            assert "AF123" in text and "09:40" in text
    """

    def __init__(
        self, *, per_message: int = 1, words_per_sentence: int = 40, max_chars: int = 2000
    ) -> None:
        self.per_message = per_message
        self.words_per_sentence = words_per_sentence
        self.max_chars = max_chars
        self.name = "ExtractiveSummarizer"

    def _units(self, messages: Sequence[BaseMessage]) -> list[tuple[str | None, str]]:
        """``(role label, text)`` per message; an earlier summary's lines as ``(None, line)``."""
        units: list[tuple[str | None, str]] = []
        for message in messages:
            record = message_to_record(message, timestamp="")
            text = record_text(record)
            if record["role"] == "user" and text.startswith(_SUMMARY_OPENING):
                lines = (line.strip() for line in text.splitlines()[1:])
                units.extend(
                    (None, line)
                    for line in lines
                    if line and not line.startswith((RESTORABLE_PREFIX, "(… "))
                )
                continue
            role = record["role"]
            if role == "tool":
                role = f"tool {record.get('name') or ''} [{record.get('tool_call_id')}]".strip()
            units.append((role, text))
        return units

    def summarize(self, messages: Sequence[BaseMessage]) -> str:
        """The summary of ``messages`` (what :meth:`invoke` returns)."""
        units = self._units(messages)
        docs = [set(recall_terms(text)) for _, text in units]
        frequency: Counter[str] = Counter(term for doc in docs for term in doc)
        n = max(len(docs), 1)
        candidates: list[tuple[float, int, str]] = []  # (best score, position, line)
        seen: set[str] = set()
        for position, (role, text) in enumerate(units):
            sentences = [text] if role is None else _sentences(text)
            scored = []
            for i, sentence in enumerate(sentences):
                terms = set(recall_terms(sentence))
                score = sum(math.log((n + 1) / frequency.get(t, 1)) for t in terms)
                score += 2.0 * len(_FACTY.findall(sentence))
                scored.append((score, -i, sentence))
            best = sorted(scored, reverse=True)[: self.per_message]
            picked = [s for _, _, s in sorted(best, key=lambda x: -x[1]) if s not in seen]
            seen.update(picked)
            if not picked:
                continue
            if role is None:
                line = picked[0]  # an earlier summary's line, as it was written
            else:
                line = f"{role}: " + " ".join(_cut(s, self.words_per_sentence) for s in picked)
            candidates.append((max(score for score, _, _ in best), position, line))
        # The most specific lines win the room (never more than max_chars), in their order.
        kept: list[tuple[int, str]] = []
        size = 0
        for _, position, line in sorted(candidates, key=lambda c: (-c[0], c[1])):
            if size + len(line) + 1 <= self.max_chars:
                kept.append((position, line))
                size += len(line) + 1
        lines = [line for _, line in sorted(kept)]
        if len(kept) < len(candidates):
            lines.append(f"(… {len(candidates) - len(kept)} less specific lines left out)")
        return "\n".join(lines)

    def _run(
        self,
        messages: list[BaseMessage],
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> str:
        return self.summarize(messages)

    async def _arun(
        self,
        messages: list[BaseMessage],
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> str:
        return self.summarize(messages)

    @override
    def invoke(
        self, input: list[BaseMessage], config: RunnableConfig | None = None, **kwargs: Any
    ) -> str:
        return self._call_with_config(self._run, input, config, **kwargs)

    @override
    async def ainvoke(
        self, input: list[BaseMessage], config: RunnableConfig | None = None, **kwargs: Any
    ) -> str:
        return await self._acall_with_config(self._arun, input, config, **kwargs)


def _transcript(messages: Sequence[BaseMessage]) -> str:
    lines = []
    for message in messages:
        record = message_to_record(message, timestamp="")
        lines.append(f"{record['role']}: {record_text(record)}")
    return "\n".join(lines)


def prefixed_request(
    prefix: Sequence[BaseMessage],
    covered: Sequence[BaseMessage],
    instruction: str = DEFAULT_PREFIX_INSTRUCTION,
) -> list[BaseMessage]:
    """A summarisation request that starts as the live request did: ``prefix``, then one ask.

    ``prefix`` is what the live request sent (system message, history as assembled,
    tail); the covered messages are found in it by id, and the last message, a user
    message, asks for a summary of them by their positions (``instruction`` formatted
    with ``first``, ``last`` and ``after``). Covered messages the prefix does not hold
    (the window had dropped them) follow in that message as a transcript. The request
    shares all of ``prefix`` with the live one, so a provider's prompt cache serves it.

    Example:
        .. code-block:: python

            from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
            from ctx_memory._compaction_summarize import prefixed_request

            live = [SystemMessage("Be brief.", id="s"), HumanMessage("I fly AF123", id="m0"),
                    AIMessage("Noted.", id="m1"), HumanMessage("Hotel?", id="m2")]
            request = prefixed_request(live, [live[1], live[2]])
            assert request[:4] == live
            assert request[4].text.startswith("Summarise messages 2 to 3 ")
    """
    positions = {str(m.id): i for i, m in enumerate(prefix) if m.id is not None}
    found = [positions[str(m.id)] for m in covered if str(m.id) in positions]
    missing = [m for m in covered if str(m.id) not in positions]
    if found:
        first, last = min(found) + 1, max(found) + 1
    else:
        first = last = len(prefix) + 1  # none shown: the transcript is all there is
    ask = instruction.format(first=first, last=last, after=max(len(prefix) - last, 0))
    if missing:
        ask += "\n\nMessages of that part not shown above:\n" + _transcript(missing)
    return [*prefix, HumanMessage(ask)]


def chat_summarizer(
    model: BaseChatModel,
    prompt: str = DEFAULT_SUMMARY_PROMPT,
    *,
    instruction: str = DEFAULT_PREFIX_INSTRUCTION,
) -> Runnable[list[BaseMessage], Any]:
    """A summariser from a chat model.

    Given the live request's messages (``config["configurable"][PREFIX_KEY]``, which
    :func:`~ctx_memory.compaction.compact` sets from its ``prefix_messages``), the
    request is those messages followed by one user message asking to summarise the
    covered ones by position (:func:`prefixed_request`), so it shares its whole prefix
    with the live request and hits the provider's prompt cache. Without it: ``prompt``
    as the system message, then the covered messages as one plain-text transcript (so
    tool calls never need their results in the summariser's own request). Its name
    records the prompts' hash, which :func:`producer_of` reports.

    Example:
        .. code-block:: python

            from langchain_core.language_models.fake_chat_models import FakeListChatModel
            from langchain_core.messages import HumanMessage
            from ctx_memory.compaction import chat_summarizer

            summarize = chat_summarizer(FakeListChatModel(responses=["user flies AF123"]))
            assert summarize.invoke([HumanMessage("I fly AF123")]).content == "user flies AF123"
    """

    def build(messages: list[BaseMessage], config: RunnableConfig) -> list[BaseMessage]:
        prefix = (config.get("configurable") or {}).get(PREFIX_KEY)
        if prefix:
            return prefixed_request(prefix, messages, instruction)
        return [SystemMessage(prompt), HumanMessage(_transcript(messages))]

    chain = RunnableLambda(build, name="summary_prompt") | model
    prompt_hash = _hash(f"{prompt}\n{instruction}")
    return chain.with_config(
        run_name=f"chat_summarizer:{type(model).__name__}",
        metadata={"ctx_memory_prompt_hash": prompt_hash, "ctx_memory_model": _model(model)},
    )


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _model(model: Any) -> str:
    for attribute in ("model_name", "model", "model_id"):
        value = getattr(model, attribute, None)
        if isinstance(value, str) and value:
            return value
    return type(model).__name__


def producer_of(summarizer: Runnable[Any, Any]) -> dict[str, str]:
    """``{name, model, prompt_hash}`` of a summariser, for a compaction's ``producer``."""
    config = getattr(summarizer, "config", None) or {}
    metadata = config.get("metadata") or {}
    if isinstance(summarizer, ExtractiveSummarizer):
        settings = (
            f"{summarizer.per_message}/{summarizer.words_per_sentence}/{summarizer.max_chars}"
        )
        return {
            "name": summarizer.name or "ExtractiveSummarizer",
            "model": "",
            "prompt_hash": _hash(settings),
        }
    name = str(config.get("run_name") or summarizer.get_name())
    return {
        "name": name,
        "model": str(metadata.get("ctx_memory_model") or _model(summarizer)),
        "prompt_hash": str(metadata.get("ctx_memory_prompt_hash") or ""),
    }
