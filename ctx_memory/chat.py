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
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, NamedTuple

from langchain_core.messages import AIMessage, BaseMessage, message_chunk_to_message
from langchain_core.messages.base import BaseMessageChunk
from langchain_core.runnables import Runnable
from langchain_core.runnables.config import patch_config
from typing_extensions import override

from ctx_memory.errors import ValidationError
from ctx_memory.prompt import (
    SESSION_ID_SPEC,
    AssembledPrompt,
    Call,
    ContextPromptAssembler,
    PromptInput,
    adrive,
    drive,
    parse_question,
    session_id_from,
)
from ctx_memory.schema import message_to_record, now_iso

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Generator, Iterator

    from langchain_core.callbacks import (
        AsyncCallbackManagerForChainRun,
        CallbackManagerForChainRun,
    )
    from langchain_core.callbacks.manager import BaseRunManager
    from langchain_core.language_models import LanguageModelInput
    from langchain_core.runnables import RunnableConfig
    from langchain_core.runnables.utils import ConfigurableFieldSpec

    from ctx_memory.manager import ContextManager

__all__ = ["ContextualChat"]


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


def _join(inputs: list[Any]) -> Any:
    """The single input of a streamed run (string chunks are joined)."""
    if not inputs:
        msg = "ContextualChat got no input"
        raise ValidationError(msg)
    if all(isinstance(part, str) for part in inputs):
        return "".join(inputs)
    return inputs[-1]


_ID_NAMESPACE = uuid.UUID("0f3c8a52-6d0e-4a59-b1f4-7c2e9d18a6b3")
_RETRY_TAG = "retry:attempt:"


class Turn(NamedTuple):
    """One question-and-reply exchange about to happen in a session."""

    session_id: str
    question: BaseMessage
    text: str
    reply_id: str


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

    def key(self, session_id: str, run_manager: BaseRunManager | None) -> str:
        parent = getattr(run_manager, "parent_run_id", None)
        tags = getattr(run_manager, "tags", None) or ()
        fresh = str(uuid.uuid4())
        if parent is None:
            return fresh
        slot = (str(parent), session_id)
        retrying = any(isinstance(t, str) and t.startswith(_RETRY_TAG) for t in tags)
        with self._lock:
            if retrying and slot in self._keys:
                self._keys.move_to_end(slot)
                return self._keys[slot]
            self._keys[slot] = fresh
            if len(self._keys) > self._size:
                self._keys.popitem(last=False)
        return fresh


class ContextualChat(Runnable[PromptInput, AIMessage]):
    """Assembles, calls a chat model and records the turn, as one Runnable.

    Input: a question (``str``), a ``HumanMessage`` or a dict with the question under
    the assembler's ``input_key`` (``"question"``). The session id comes from the input
    dict's ``"session_id"``, else ``config["configurable"]["session_id"]``, else
    ``session_id``. Output: the model's ``AIMessage`` (chunks when streaming), stored
    with ``metadata`` ``model``, ``response_time_ms``, ``sources_used`` (URLs of the
    sources in the prompt) and ``tools_used`` (names of the reply's tool calls).

    A turn lands atomically: the question and the reply are written together, in one
    ``add_messages`` call, once the model has answered. So

    - a model error (sync, async, streaming or batched) writes nothing: no unanswered
      question is left in the session;
    - a question that does not fit the budget raises ``BudgetExceededError`` before
      anything is written;
    - a stream that does not finish records **nothing**: if the consumer stops reading
      (``break`` out of ``stream()`` / ``astream()``) or the model raises mid-stream,
      the chunks already yielded are the caller's and the session is as if the question
      had not been asked. A stream is recorded once the model's last chunk was read;
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
        **assembler_kwargs: For the default assembler, e.g. ``max_tokens=16000``.

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
            chunks = list(chat.stream("Really?", config=config))
            assert "".join(c.content for c in chunks) == "Yes."

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
        **assembler_kwargs: Any,
    ) -> None:
        if assembler is not None and assembler_kwargs:
            msg = "pass either an assembler or assembler keyword arguments, not both"
            raise ValidationError(msg)
        self.manager = manager
        self.model = model
        self.assembler = assembler or ContextPromptAssembler(manager, **assembler_kwargs)
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

    # ------------------------------------------------------------ shared steps (pure + flows)

    def _turn(self, input_: Any, config: RunnableConfig, run_manager: BaseRunManager) -> Turn:
        """The session, the question with its id and the reply's id for this run."""
        session_id = session_id_from(
            config, self.session_id, payload=input_, owner="ContextualChat"
        )
        parsed = parse_question(input_, self.assembler.input_key)
        question = parsed.message
        if question.id is None:
            key = self._retry_keys.key(session_id, run_manager)
            question = question.model_copy(update={"id": key})
        reply_id = str(uuid.uuid5(_ID_NAMESPACE, f"{session_id}\x1f{question.id}\x1freply"))
        return Turn(session_id, question, parsed.text, reply_id)

    def _prepare_flow(self, turn: Turn) -> Generator[Call, Any, AssembledPrompt]:
        """Assemble the prompt; reads only, so an over-budget question writes nothing.

        The turn's own ids are passed over in the stored history, in case an earlier
        attempt of this very turn already landed.
        """
        return (
            yield from self.assembler.build_flow(
                turn.session_id,
                [turn.question],
                query=turn.text,
                skip_ids=frozenset({str(turn.question.id), turn.reply_id}),
            )
        )

    def _record_flow(
        self, turn: Turn, reply: BaseMessage, started: float, prompt: AssembledPrompt
    ) -> Generator[Call, Any, AIMessage]:
        """Write the question and the reply in one append; return the reply as stored."""
        message = _as_message(reply)
        if message.id != turn.reply_id:
            message = message.model_copy(update={"id": turn.reply_id})
        metadata = {
            "model": _model_name(self.model, message, self.model_name),
            "response_time_ms": round((time.perf_counter() - started) * 1000, 3),
            "sources_used": list(prompt.report.source_urls),
            "tools_used": [call["name"] for call in message.tool_calls],
        }
        record = message_to_record(message, timestamp=now_iso(), metadata=metadata)
        del record["token_count"]  # counted by the manager
        yield Call("add_messages", (turn.session_id, [turn.question, record]))
        return message

    @staticmethod
    def _child(config: RunnableConfig, run_manager: Any) -> RunnableConfig:
        return patch_config(config, callbacks=run_manager.get_child())

    # ------------------------------------------------------------ invoke

    def _run(
        self, input_: PromptInput, run_manager: CallbackManagerForChainRun, config: RunnableConfig
    ) -> AIMessage:
        turn = self._turn(input_, config, run_manager)
        prompt = drive(self.manager, self._prepare_flow(turn))
        started = time.perf_counter()
        reply = self.model.invoke(prompt.messages, self._child(config, run_manager))
        return drive(self.manager, self._record_flow(turn, reply, started, prompt))

    async def _arun(
        self,
        input_: PromptInput,
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> AIMessage:
        turn = self._turn(input_, config, run_manager)
        prompt = await adrive(self.manager, self._prepare_flow(turn))
        started = time.perf_counter()
        reply = await self.model.ainvoke(prompt.messages, self._child(config, run_manager))
        return await adrive(self.manager, self._record_flow(turn, reply, started, prompt))

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
    # leaves the session untouched: nothing is written on either path.

    def _stream_run(
        self,
        inputs: Iterator[PromptInput],
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> Iterator[AIMessage]:
        input_ = _join(list(inputs))
        turn = self._turn(input_, config, run_manager)
        prompt = drive(self.manager, self._prepare_flow(turn))
        started = time.perf_counter()
        full: BaseMessage | None = None
        for chunk in self.model.stream(prompt.messages, self._child(config, run_manager)):
            full = chunk if full is None else _add(full, chunk)
            yield _with_id(chunk, turn.reply_id)
        if full is not None:
            drive(self.manager, self._record_flow(turn, full, started, prompt))

    async def _astream_run(
        self,
        inputs: AsyncIterator[PromptInput],
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> AsyncIterator[AIMessage]:
        input_ = _join([part async for part in inputs])
        turn = self._turn(input_, config, run_manager)
        prompt = await adrive(self.manager, self._prepare_flow(turn))
        started = time.perf_counter()
        full: BaseMessage | None = None
        async for chunk in self.model.astream(prompt.messages, self._child(config, run_manager)):
            full = chunk if full is None else _add(full, chunk)
            yield _with_id(chunk, turn.reply_id)
        if full is not None:
            await adrive(self.manager, self._record_flow(turn, full, started, prompt))

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


def _with_id(chunk: BaseMessage, message_id: str) -> AIMessage:
    """The chunk as yielded: carrying the id its whole message is stored under."""
    if chunk.id != message_id:
        chunk = chunk.model_copy(update={"id": message_id})
    return chunk  # type: ignore[return-value]


def _add(left: BaseMessage, right: BaseMessage) -> BaseMessage:
    if isinstance(left, BaseMessageChunk) and isinstance(right, BaseMessageChunk):
        return left + right
    return right  # a model that streams whole messages: keep the last
