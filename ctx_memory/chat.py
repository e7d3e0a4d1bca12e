"""ContextualChat: one Runnable for seed 001's whole request flow.

assemble a token-budgeted prompt (system prompt + header, sources, history, question) →
call any chat model → record the question and the reply (with the model name, response
time, sources and tools used) in one write → return the ``AIMessage``.

It is the package's answer to the deprecated ``RunnableWithMessageHistory``: history is
never trimmed in storage, only in the prompt, and every reply is stored with what
produced it. A turn lands whole or not at all: a model error, a question over the budget
or a stream that does not finish writes nothing, and the question and reply carry ids
that a retry of the chat reuses, so it records one turn. The async methods do the same
with the store's native async path.

What the caller gets back is the model's message plus ``response_metadata["ctx_memory"]``
(:data:`METADATA_KEY`): the numbered sources the prompt held, which of them the reply
cites as ``[n]``, and the assembly's budget report (:func:`reply_metadata`). The assembly
runs as a child run of the chat's run, so tracers and callbacks see the same report.

With ``compaction=`` and ``compaction_mode="background"`` the summarising rung runs after
the turn is recorded, not before the prompt, so no reply waits for the summariser.
"""

from __future__ import annotations

import copy
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    message_chunk_to_message,
)
from langchain_core.messages.base import BaseMessageChunk
from langchain_core.runnables import Runnable
from langchain_core.runnables.config import patch_config
from typing_extensions import override

from ctx_memory._compaction_background import (
    BackgroundCompactions,
    BackgroundCompactor,
    CompactionMode,
    check_mode,
    prompt_policy,
)
from ctx_memory.errors import ValidationError
from ctx_memory.prompt import (
    SESSION_ID_SPEC,
    ContextPromptAssembler,
    PromptInput,
    parse_question,
    session_id_from,
)
from ctx_memory.schema import message_to_record, now_iso, record_to_message

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Sequence

    from langchain_core.callbacks import (
        AsyncCallbackManagerForChainRun,
        CallbackManagerForChainRun,
    )
    from langchain_core.callbacks.manager import BaseRunManager
    from langchain_core.language_models import LanguageModelInput
    from langchain_core.runnables import RunnableConfig
    from langchain_core.runnables.utils import ConfigurableFieldSpec

    from ctx_memory.assembly.report import AssembledPrompt
    from ctx_memory.manager import ContextManager

__all__ = ["METADATA_KEY", "ContextualChat", "cited_sources", "reply_metadata"]

METADATA_KEY = "ctx_memory"
"""The key of ctx_memory's part of a reply's ``response_metadata``."""

_REPLAY_WINDOW = 64
"""Newest messages a retried turn looks through for the reply an earlier attempt stored."""

_REPORT_LEFT_OUT = frozenset({"session_id", "source_urls"})  # said once, elsewhere
_CITATION = re.compile(r"\[(\d+(?:\s*(?:[,;]|[-\u2013])\s*\d+)*)\]")
_CITATION_PART = re.compile(r"(\d+)(?:\s*[-\u2013]\s*(\d+))?")


def cited_sources(text: str, count: int) -> list[int]:
    """The source numbers a reply cites, ascending, each once.

    A citation is a bracketed number or list of numbers: ``[2]``, ``[1, 3]``,
    ``[1][3]``, ``[1-3]`` (a range). Only numbers of a source in the prompt
    (``1..count``) count, so a bracketed year such as ``[2024]`` is passed over.
    """
    cited: set[int] = set()
    for group in _CITATION.findall(text):
        for first, last in _CITATION_PART.findall(group):
            low = int(first)
            high = int(last) if last else low
            if high - low > count:  # not a range of sources
                continue
            cited.update(n for n in range(low, high + 1) if 1 <= n <= count)
    return sorted(cited)


def reply_metadata(prompt: AssembledPrompt, reply: BaseMessage | None = None) -> dict[str, Any]:
    """``response_metadata["ctx_memory"]`` for a reply to ``prompt`` (JSON-native).

    ``session_id``; ``sources_used``, the numbered sources in the prompt
    (:meth:`AssembledPrompt.sources_used`: ``n``, ``url``, ``title``, ``source_type``);
    ``cited``, the numbers of those the reply cites as ``[n]`` (:func:`cited_sources`;
    left out without a reply, as in the assembly's trace); and ``report``, the budget
    report: :meth:`AssemblyReport.as_dict` without ``session_id`` and ``source_urls``
    (tokens per section, budget, what was left out).
    """
    sources = prompt.sources_used()
    out: dict[str, Any] = {"session_id": prompt.report.session_id, "sources_used": sources}
    if reply is not None:
        out["cited"] = cited_sources(reply.text, len(sources))
    report = prompt.report.as_dict()
    out["report"] = {k: v for k, v in report.items() if k not in _REPORT_LEFT_OUT}
    return out


def _profile_max_input_tokens(model: Any) -> int | None:
    """``model.profile["max_input_tokens"]`` through bindings and retries, if declared."""
    for _ in range(8):  # a binding of a retry of a binding ... of the chat model
        profile = getattr(model, "profile", None)
        if isinstance(profile, Mapping):
            value = profile.get("max_input_tokens")
            ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
            return value if ok else None
        model = getattr(model, "bound", None)
        if model is None:
            break
    return None


def _model_name(model: Any, message: BaseMessage, default: str | None) -> str:
    meta = message.response_metadata or {}
    for value in (
        default,
        meta.get("model_name"),
        meta.get("model"),
        getattr(model, "model_name", None),
        getattr(model, "model", None),
    ):
        if isinstance(value, str) and value:
            return value
    return type(model).__name__


def _as_message(message: BaseMessage) -> AIMessage:
    if isinstance(message, BaseMessageChunk):
        message = message_chunk_to_message(message)
    if not isinstance(message, AIMessage):
        message = AIMessage(content=message.content, id=message.id)
    return message


def _input_add(joined: Any, part: Any) -> Any:
    """``joined + part`` as LangChain adds streamed chunks; ``part`` where they do not add.

    Dicts add key by key (``AddableDict``'s rule): a step that builds a dict
    (``RunnableParallel``, ``RunnablePassthrough.assign``) streams one partial dict per
    key, and a key's streamed pieces (a question from a model) are added up too.
    """
    if isinstance(joined, Mapping) and isinstance(part, Mapping):
        out = dict(joined)
        for key, value in part.items():
            if out.get(key) is None:
                out[key] = value
            elif value is not None:
                out[key] = _input_add(out[key], value)
        return out
    try:
        return joined + part
    except TypeError:
        return part


def _join(inputs: list[Any]) -> Any:
    """The single input of a streamed run: its chunks added up, as ``invoke`` gets it."""
    if not inputs:
        msg = "ContextualChat got no input"
        raise ValidationError(msg)
    joined = inputs[0]
    for part in inputs[1:]:
        joined = _input_add(joined, part)
    return joined


_ID_NAMESPACE = uuid.UUID("0f3c8a52-6d0e-4a59-b1f4-7c2e9d18a6b3")
_RETRY_TAG = "retry:attempt:"


class Turn(NamedTuple):
    """One question-and-reply exchange about to happen in a session."""

    session_id: str
    question: BaseMessage
    text: str
    reply_id: str
    asked: str = ""  # when the question came (its stored timestamp)
    again: bool = False  # an earlier attempt may have recorded it (a retry, or an id given)


class _RetryKeys:
    """The turn key of the latest run under each parent run, so retries reuse it.

    ``Runnable.with_retry()`` runs every attempt as a child of one retry run and tags
    attempts after the first ``retry:attempt:N``; an attempt so tagged takes the key its
    predecessor under the same parent used. Any other run gets a fresh key, so two
    separate runs never share one. Bounded: the oldest parents are forgotten first.
    """

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._keys: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._lock = threading.Lock()

    def key(self, session_id: str, run_manager: BaseRunManager | None) -> tuple[str, bool]:
        """The turn key, and whether an earlier attempt used it (this run is a retry)."""
        parent = getattr(run_manager, "parent_run_id", None)
        tags = getattr(run_manager, "tags", None) or ()
        fresh = str(uuid.uuid4())
        if parent is None:
            return fresh, False
        slot = (str(parent), session_id)
        retrying = any(isinstance(t, str) and t.startswith(_RETRY_TAG) for t in tags)
        with self._lock:
            if retrying and slot in self._keys:
                self._keys.move_to_end(slot)
                return self._keys[slot], True
            self._keys[slot] = fresh
            if len(self._keys) > self._size:
                self._keys.popitem(last=False)
        return fresh, False


class _ReplyStream:
    """What a stream yields, fed the model's items one by one (no I/O).

    Chunks go out as they come, with the reply's id. The model's final chunk (its
    ``chunk_position="last"``) and a whole message (a model that does not stream) are
    held back: :meth:`last` gives them once the turn is recorded, carrying
    ``response_metadata["ctx_memory"]``, or an empty final chunk when there is none.
    So the stream's last item, and only it, says the turn was recorded.
    """

    def __init__(self, reply_id: str) -> None:
        self.reply_id = reply_id
        self.full: BaseMessage | None = None  # the whole reply so far, as the model sent it
        self._held: BaseMessage | None = None

    def feed(self, item: BaseMessage) -> list[AIMessage]:
        """The items to yield now that ``item`` came (held ones first)."""
        self.full = item if self.full is None else _add(self.full, item)
        out = [] if self._held is None else [_with_id(self._held, self.reply_id)]
        self._held = None
        if isinstance(item, BaseMessageChunk) and getattr(item, "chunk_position", None) is None:
            out.append(_with_id(item, self.reply_id))
        else:
            self._held = item
        return out

    def last(self, reply: AIMessage) -> AIMessage:
        """The final item, for ``reply`` (the whole reply as recorded)."""
        meta = {METADATA_KEY: reply.response_metadata[METADATA_KEY]}
        held = self._held
        if held is None:  # the model marked no final chunk: add an empty one
            content: Any = "" if isinstance(reply.content, str) else []
            return AIMessageChunk(
                content=content, id=self.reply_id, response_metadata=meta, chunk_position="last"
            )
        if not isinstance(held, BaseMessageChunk):
            return reply  # a whole message: the reply as stored
        update = {"id": self.reply_id, "response_metadata": {**held.response_metadata, **meta}}
        return held.model_copy(update=update)  # type: ignore[return-value]


class ContextualChat(BackgroundCompactions, Runnable[PromptInput, AIMessage]):
    """Assembles, calls a chat model and records the turn, as one Runnable.

    Input: a question (``str``), a ``HumanMessage`` or a dict with the question under
    the assembler's ``input_key`` (``"question"``). The session id comes from the input
    dict's ``"session_id"``, else ``config["configurable"]["session_id"]``, else
    ``session_id``. Output: the model's ``AIMessage`` (chunks when streaming), stored
    with ``metadata`` ``model``, ``response_time_ms``, ``sources_used`` (URLs of the
    sources in the prompt, ``None`` for one without), ``cited`` (the source numbers the
    reply cites) and ``tools_used`` (names of the reply's tool calls).

    The reply carries ``response_metadata["ctx_memory"]`` (:func:`reply_metadata`):
    ``sources_used`` (``[{"n", "url", "title", "source_type"}]``, the numbered sources
    the prompt held), ``cited`` (the ``n`` the reply cites as ``[n]``), ``report`` (the
    budget report) and ``session_id``. It is ctx_memory's annotation, not the model's
    words, so the stored record leaves it out (its ``metadata`` keeps ``sources_used`` and
    ``cited``) and ``manager.get_messages`` gives back the model's message whole. A stream
    carries it on its final chunk only (``chunk_position="last"``), yielded once the turn
    is recorded, so adding up the chunks gives the stored reply plus it. The assembly is a child
    run named after the assembler (``run_type="prompt"``) whose output is the same
    dict without ``cited``: tracers and callbacks see it before the model is called.

    Without ``max_tokens`` (and without an ``assembler``), the prompt is sized to the
    model's ``profile["max_input_tokens"]`` when the model declares one (``reserve_tokens``
    is still kept free), else to the assembler's default of 8000.

    A turn lands atomically: the question and the reply are written together, in one
    ``add_messages`` call, once the model has answered. So

    - a model error (sync, async, streaming or batched) writes nothing: no unanswered
      question is left in the session;
    - a question that does not fit the budget raises ``BudgetExceededError`` before
      anything is written;
    - a stream that does not finish records **nothing**: if the consumer stops reading
      (``break`` out of ``stream()`` / ``astream()``) or the model raises mid-stream,
      the chunks already yielded are the caller's and the session is as if the question
      had not been asked. A stream is recorded once the model's last chunk was read,
      before the stream's final chunk is yielded;
    - the question and the reply carry ids: the question keeps its own (a
      ``HumanMessage`` with an ``id``), else gets a new uuid4; the reply's id derives
      from the question's and replaces the model's per-call id (on the returned message,
      on every streamed chunk and in storage). Appends are idempotent by id, so running
      the same turn again cannot record it twice: ``chat.with_retry()`` reuses the first
      attempt's ids in every later attempt (even when a write landed but reported an
      error), and ``ContextualChat(manager, model.with_retry())`` retries only the model
      call. A retry of a larger chain around the chat reruns it as a new turn.

    Args:
        manager: Where sessions live.
        model: Any chat model (or Runnable taking messages and returning a message).
        assembler: The prompt assembler (default: one built from ``assembler_kwargs``).
        session_id: Default session id.
        model_name: Name to record (default: from the reply's ``response_metadata`` or
            the model's ``model_name`` / ``model`` attribute).
        **assembler_kwargs: For the default assembler, e.g. ``max_tokens=16000``
            (default: the model's ``profile["max_input_tokens"]``, else 8000),
            ``layout="stable"``, ``recall_share=0.3``, ``trim_block=0.25``,
            ``compaction=CompactionPolicy()`` or
            ``cache_hints=["anthropic", "openai"]`` (see
            :class:`~ctx_memory.prompt.ContextPromptAssembler`). With the ``"openai"``
            hint the model is called as ``model.bind(prompt_cache_key=...)``.
        compaction_mode: When the policy's summarising rung runs (``compaction=``, or the
            ``assembler``'s). ``"before"`` (default): before the prompt is assembled, so
            the prompt that crosses the trigger already holds the summary, and a failed
            summariser is in its report's ``compaction_notes``; the caller waits for the
            summariser. ``"background"``: once the turn is recorded, in a daemon thread
            (``invoke``, ``stream``, ``batch``) or an asyncio task on the caller's loop
            (``ainvoke``, ``astream``), so no reply waits for it; the prompt still uses
            stored compactions and clears old tool outputs, and the next request uses
            the summary once it is stored. At most one compaction per session runs at a
            time (repeats are coalesced). :meth:`flush_compactions` /
            :meth:`aflush_compactions` wait for it. The assembler then is a copy of the
            given one whose policy has ``summarize_at=None``.

    Example:
        .. code-block:: python

            from langchain_core.language_models import GenericFakeChatModel
            from langchain_core.messages import AIMessage

            from ctx_memory import ContextManager, ContextualChat

            manager = ContextManager()
            manager.set_system_prompt("s1", "You are a travel assistant.")
            replies = iter([AIMessage("Book early."), AIMessage("Yes.")])
            model = GenericFakeChatModel(messages=replies)
            chat = ContextualChat(manager, model, max_tokens=4000, model_name="fake")
            config = {"configurable": {"session_id": "s1"}}

            reply = chat.invoke("When should I book?", config=config)
            assert reply.content == "Book early."
            assert reply.response_metadata["ctx_memory"]["report"]["budget"] == 3000
            chunks = list(chat.stream("Really?", config=config))
            assert "".join(c.content for c in chunks) == "Yes."
            assert "ctx_memory" in chunks[-1].response_metadata

            history = manager.get_history("s1")
            assert [r["role"] for r in history] == ["user", "assistant"] * 2
            assert history[1]["metadata"]["model"] == "fake"
            assert history[1]["id"] == reply.id
            assert "response_time_ms" in history[3]["metadata"]
    """

    def __init__(
        self,
        manager: ContextManager,
        model: Runnable[LanguageModelInput, BaseMessage],
        *,
        assembler: ContextPromptAssembler | None = None,
        session_id: str | None = None,
        model_name: str | None = None,
        name: str | None = None,
        compaction_mode: CompactionMode = "before",
        **assembler_kwargs: Any,
    ) -> None:
        if assembler is not None and assembler_kwargs:
            msg = "pass either an assembler or assembler keyword arguments, not both"
            raise ValidationError(msg)
        self.manager = manager
        self.model = model
        self.assembler = assembler or _default_assembler(manager, model, assembler_kwargs)
        policy = self.assembler.compaction
        self.compaction_mode = check_mode(compaction_mode, policy, owner="ContextualChat")
        self._background: BackgroundCompactor | None = None
        if self.compaction_mode == "background" and policy is not None:
            self.assembler = copy.copy(self.assembler)
            self.assembler.compaction = prompt_policy(policy)
            if policy.summarize_at is not None:
                self._background = BackgroundCompactor(manager, policy, sent=self.assembler.sent)
        self.session_id = session_id
        self.model_name = model_name
        self.name = name
        self._retry_keys = _RetryKeys()

    @property
    @override
    def config_specs(self) -> list[ConfigurableFieldSpec]:
        return [SESSION_ID_SPEC]

    def __repr__(self) -> str:
        return f"ContextualChat(model={type(self.model).__name__}, assembler={self.assembler!r})"

    # ------------------------------------------------------------ pure steps

    def _turn(self, input_: Any, config: RunnableConfig, run_manager: BaseRunManager) -> Turn:
        """The session, the question with its id and the reply's id for this run."""
        session_id = session_id_from(
            config, self.session_id, payload=input_, owner="ContextualChat"
        )
        parsed = parse_question(input_, self.assembler.input_key)
        question = parsed.message
        again = question.id is not None  # the caller's id: it may have been sent before
        if question.id is None:
            key, again = self._retry_keys.key(session_id, run_manager)
            question = question.model_copy(update={"id": key})
        reply_id = str(uuid.uuid5(_ID_NAMESPACE, f"{session_id}\x1f{question.id}\x1freply"))
        return Turn(session_id, question, parsed.text, reply_id, now_iso(), again)

    @staticmethod
    def _replayed(
        turn: Turn, records: Sequence[Mapping[str, Any]], prompt: AssembledPrompt
    ) -> AIMessage | None:
        """The turn's reply as an earlier attempt stored it, if it did (else None)."""
        for record in reversed(records):
            if record.get("id") == turn.reply_id:
                message = record_to_message(record)
                if not isinstance(message, AIMessage):
                    return None
                meta = {**message.response_metadata, METADATA_KEY: reply_metadata(prompt, message)}
                return message.model_copy(update={"response_metadata": meta})
        return None

    def _stored_reply(self, turn: Turn, prompt: AssembledPrompt) -> AIMessage | None:
        """A retried turn whose reply is stored gets that reply: the model is not asked again."""
        if not turn.again:
            return None
        records = self.manager.get_history(turn.session_id, last_k=_REPLAY_WINDOW)
        return self._replayed(turn, records, prompt)

    async def _astored_reply(self, turn: Turn, prompt: AssembledPrompt) -> AIMessage | None:
        """Async :meth:`_stored_reply`."""
        if not turn.again:
            return None
        records = await self.manager.aget_history(turn.session_id, last_k=_REPLAY_WINDOW)
        return self._replayed(turn, records, prompt)

    def _turn_records(
        self, turn: Turn, reply: BaseMessage, started: float, prompt: AssembledPrompt
    ) -> tuple[list[BaseMessage | dict[str, Any]], AIMessage]:
        """What to write for the turn, and the reply as the caller gets it.

        The question and the reply go in one append. The reply gets the turn's id; the
        caller's copy also gets ``response_metadata["ctx_memory"]``. The stored record
        keeps the model's message whole without that annotation (which would make every
        later prompt heavier to build and is no part of what the model said); its
        ``metadata`` holds ``sources_used`` (the URLs, ``None`` for a source without
        one) and ``cited`` (the source numbers the reply cites).
        """
        message = _as_message(reply).model_copy(update={"id": turn.reply_id})
        extra = reply_metadata(prompt, message)
        metadata = {
            "model": _model_name(self.model, message, self.model_name),
            "response_time_ms": round((time.perf_counter() - started) * 1000, 3),
            "sources_used": [source["url"] for source in prompt.sources_used()],
            "cited": list(extra["cited"]),
            "tools_used": [call["name"] for call in message.tool_calls],
        }
        record = message_to_record(message, timestamp=now_iso(), metadata=metadata)
        del record["token_count"]  # counted by the manager
        # The question keeps the time it was asked; the reply, the time it came.
        question = message_to_record(turn.question, timestamp=turn.asked or record["timestamp"])
        del question["token_count"]
        meta = {**message.response_metadata, METADATA_KEY: extra}
        return [question, record], message.model_copy(update={"response_metadata": meta})

    def _model_for(self, prompt: AssembledPrompt) -> Runnable[LanguageModelInput, BaseMessage]:
        """The model, bound to the prompt's call options (``prompt_cache_key``) if any."""
        if not prompt.model_kwargs:
            return self.model
        return self.model.bind(**prompt.model_kwargs)

    @staticmethod
    def _child(config: RunnableConfig, run_manager: Any) -> RunnableConfig:
        return patch_config(config, callbacks=run_manager.get_child())

    def _prompt_run(self, turn: Turn) -> dict[str, Any]:
        """How the assembly's child run starts: its inputs, type and name."""
        inputs = {"question": turn.text, "session_id": turn.session_id}
        return {"inputs": inputs, "run_type": "prompt", "name": self.assembler.get_name()}

    # ------------------------------------------------------------ I/O twins

    def _assemble(self, turn: Turn, run_manager: CallbackManagerForChainRun) -> AssembledPrompt:
        """The prompt, assembled in a child run whose output is the report.

        Reads only, so an over-budget question writes nothing. The turn's own ids are
        passed over in the stored history, in case an earlier attempt of this very turn
        already landed.
        """
        child = run_manager.get_child().on_chain_start(None, **self._prompt_run(turn))
        skip = frozenset({str(turn.question.id), turn.reply_id})
        try:
            prompt = self.assembler.build(
                turn.session_id, [turn.question], query=turn.text, skip_ids=skip
            )
        except BaseException as e:
            child.on_chain_error(e)
            raise
        child.on_chain_end(reply_metadata(prompt))
        return prompt

    async def _aassemble(
        self, turn: Turn, run_manager: AsyncCallbackManagerForChainRun
    ) -> AssembledPrompt:
        """Async :meth:`_assemble`."""
        child = await run_manager.get_child().on_chain_start(None, **self._prompt_run(turn))
        skip = frozenset({str(turn.question.id), turn.reply_id})
        try:
            prompt = await self.assembler.abuild(
                turn.session_id, [turn.question], query=turn.text, skip_ids=skip
            )
        except BaseException as e:
            await child.on_chain_error(e)
            raise
        await child.on_chain_end(reply_metadata(prompt))
        return prompt

    def _record(
        self, turn: Turn, reply: BaseMessage, started: float, prompt: AssembledPrompt
    ) -> AIMessage:
        """Write the question and the reply in one append; return the reply as stored.

        When the session held the reply's id already (a retry of a turn older than the
        look-back of :meth:`_stored_reply`), nothing was added: the reply stored then is
        looked up (:meth:`~ctx_memory.manager.ContextManager.get_message`) and returned,
        not the new one nobody will find stored.
        """
        written, message = self._turn_records(turn, reply, started, prompt)
        _, added = self.manager._add_counted(turn.session_id, written)
        self._compact_later(turn.session_id)
        if added or not turn.again:
            return message
        stored = self.manager.get_message(turn.session_id, turn.reply_id)
        return self._replayed(turn, [stored] if stored else [], prompt) or message

    async def _arecord(
        self, turn: Turn, reply: BaseMessage, started: float, prompt: AssembledPrompt
    ) -> AIMessage:
        """Async :meth:`_record`."""
        written, message = self._turn_records(turn, reply, started, prompt)
        _, added = await self.manager._aadd_counted(turn.session_id, written)
        self._acompact_later(turn.session_id)
        if added or not turn.again:
            return message
        stored = await self.manager.aget_message(turn.session_id, turn.reply_id)
        return self._replayed(turn, [stored] if stored else [], prompt) or message

    # ------------------------------------------------------------ invoke

    def _run(
        self, input_: PromptInput, run_manager: CallbackManagerForChainRun, config: RunnableConfig
    ) -> AIMessage:
        turn = self._turn(input_, config, run_manager)
        prompt = self._assemble(turn, run_manager)
        stored = self._stored_reply(turn, prompt)
        if stored is not None:
            return stored
        started = time.perf_counter()
        reply = self._model_for(prompt).invoke(prompt.messages, self._child(config, run_manager))
        return self._record(turn, reply, started, prompt)

    async def _arun(
        self,
        input_: PromptInput,
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> AIMessage:
        turn = self._turn(input_, config, run_manager)
        prompt = await self._aassemble(turn, run_manager)
        stored = await self._astored_reply(turn, prompt)
        if stored is not None:
            return stored
        started = time.perf_counter()
        reply = await self._model_for(prompt).ainvoke(
            prompt.messages, self._child(config, run_manager)
        )
        return await self._arecord(turn, reply, started, prompt)

    @override
    def invoke(
        self, input: PromptInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AIMessage:
        return self._call_with_config(self._run, input, config, run_type="chain", **kwargs)

    @override
    async def ainvoke(
        self, input: PromptInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AIMessage:
        return await self._acall_with_config(self._arun, input, config, run_type="chain", **kwargs)

    # ------------------------------------------------------------ streaming
    #
    # The turn is written after the model's last chunk has been read, so a consumer
    # that stops early (GeneratorExit at a ``yield``) or a model that raises mid-stream
    # leaves the session untouched: nothing is written on either path. The final chunk,
    # with ``response_metadata["ctx_memory"]``, is yielded after the write.

    def _stream_run(
        self,
        inputs: Iterator[PromptInput],
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> Iterator[AIMessage]:
        input_ = _join(list(inputs))
        turn = self._turn(input_, config, run_manager)
        prompt = self._assemble(turn, run_manager)
        stored = self._stored_reply(turn, prompt)
        if stored is not None:
            yield stored
            return
        started = time.perf_counter()
        stream = _ReplyStream(turn.reply_id)
        model = self._model_for(prompt)
        for item in model.stream(prompt.messages, self._child(config, run_manager)):
            yield from stream.feed(item)
        if stream.full is not None:
            reply = self._record(turn, stream.full, started, prompt)
            yield stream.last(reply)

    async def _astream_run(
        self,
        inputs: AsyncIterator[PromptInput],
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> AsyncIterator[AIMessage]:
        input_ = _join([part async for part in inputs])
        turn = self._turn(input_, config, run_manager)
        prompt = await self._aassemble(turn, run_manager)
        stored = await self._astored_reply(turn, prompt)
        if stored is not None:
            yield stored
            return
        started = time.perf_counter()
        stream = _ReplyStream(turn.reply_id)
        model = self._model_for(prompt)
        async for item in model.astream(prompt.messages, self._child(config, run_manager)):
            for out in stream.feed(item):
                yield out
        if stream.full is not None:
            reply = await self._arecord(turn, stream.full, started, prompt)
            yield stream.last(reply)

    @override
    def transform(
        self,
        input: Iterator[PromptInput],
        config: RunnableConfig | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessage]:
        yield from self._transform_stream_with_config(
            input, self._stream_run, config, run_type="chain", **kwargs
        )

    @override
    def stream(
        self, input: PromptInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[AIMessage]:
        yield from self.transform(iter([input]), config, **kwargs)

    @override
    async def atransform(
        self,
        input: AsyncIterator[PromptInput],
        config: RunnableConfig | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessage]:
        async for chunk in self._atransform_stream_with_config(
            input, self._astream_run, config, run_type="chain", **kwargs
        ):
            yield chunk

    @override
    async def astream(
        self, input: PromptInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[AIMessage]:
        async def once() -> AsyncIterator[PromptInput]:
            yield input

        async for chunk in self.atransform(once(), config, **kwargs):
            yield chunk


def _default_assembler(
    manager: ContextManager, model: Any, kwargs: dict[str, Any]
) -> ContextPromptAssembler:
    """The assembler from ``kwargs``, sized to the model's profile without ``max_tokens``."""
    profiled = None if "max_tokens" in kwargs else _profile_max_input_tokens(model)
    if profiled is None:
        return ContextPromptAssembler(manager, **kwargs)
    try:
        return ContextPromptAssembler(manager, max_tokens=profiled, **kwargs)
    except ValidationError as e:
        msg = f"{e} (max_tokens is the model's profile['max_input_tokens']: pass max_tokens=)"
        raise ValidationError(msg) from e


def _with_id(chunk: BaseMessage, message_id: str) -> AIMessage:
    """The chunk as yielded: carrying the id its whole message is stored under."""
    if chunk.id != message_id:
        chunk = chunk.model_copy(update={"id": message_id})
    return chunk  # type: ignore[return-value]


def _add(left: BaseMessage, right: BaseMessage) -> BaseMessage:
    if isinstance(left, BaseMessageChunk) and isinstance(right, BaseMessageChunk):
        return left + right
    return right  # a model that streams whole messages: keep the last
