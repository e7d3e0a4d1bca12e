"""ContextualChat: one Runnable for seed 001's whole request flow.

record the user message → assemble a token-budgeted prompt (system prompt + header,
sources, history, question) → call any chat model → record the reply with the model name,
response time, sources and tools used → return the ``AIMessage``.

It is the package's answer to the deprecated ``RunnableWithMessageHistory``: history is
never trimmed in storage, only in the prompt, and every reply is stored with what
produced it. Streaming yields the model's chunks and records the whole message once the
stream ends; the async methods do the same with the store's native async path.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Generator, Iterator

    from langchain_core.callbacks import (
        AsyncCallbackManagerForChainRun,
        CallbackManagerForChainRun,
    )
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


class ContextualChat(Runnable[PromptInput, AIMessage]):
    """Records, assembles, calls a chat model and records the reply, as one Runnable.

    Input: a question (``str``), a ``HumanMessage`` or a dict with the question under
    the assembler's ``input_key`` (``"question"``). The session id comes from the input
    dict's ``"session_id"``, else ``config["configurable"]["session_id"]``, else
    ``session_id``. Output: the model's ``AIMessage`` (chunks when streaming), stored
    with ``metadata`` ``model``, ``response_time_ms``, ``sources_used`` (URLs of the
    sources in the prompt) and ``tools_used`` (names of the reply's tool calls).

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

    @property
    @override
    def config_specs(self) -> list[ConfigurableFieldSpec]:
        return [SESSION_ID_SPEC]

    def __repr__(self) -> str:
        return f"ContextualChat(model={type(self.model).__name__}, assembler={self.assembler!r})"

    # ------------------------------------------------------------ shared steps (pure + flows)

    def _session(self, input_: Any, config: RunnableConfig) -> str:
        return session_id_from(config, self.session_id, payload=input_, owner="ContextualChat")

    def _prepare_flow(self, session_id: str, input_: Any) -> Generator[Call, Any, AssembledPrompt]:
        """Record the question, then assemble the prompt without it in the history.

        The question gets an id (if it has none) so the assembler recognises its stored
        copy even when other writers append to the session at the same time.
        """
        parsed = parse_question(input_, self.assembler.input_key)
        question = parsed.message
        if question.id is None:
            question = question.model_copy(update={"id": f"ctx-{uuid.uuid4()}"})
        yield Call("add_messages", (session_id, [question]))
        return (
            yield from self.assembler.build_flow(
                session_id,
                [question],
                query=parsed.text,
                skip_ids=frozenset({str(question.id)}),
            )
        )

    def _record_call(
        self, session_id: str, reply: BaseMessage, started: float, prompt: AssembledPrompt
    ) -> tuple[AIMessage, Call]:
        message = _as_message(reply)
        metadata = {
            "model": _model_name(self.model, message, self.model_name),
            "response_time_ms": round((time.perf_counter() - started) * 1000, 3),
            "sources_used": list(prompt.report.source_urls),
            "tools_used": [call["name"] for call in message.tool_calls],
        }
        return message, Call("add_messages", (session_id, [message]), {"metadata": metadata})

    @staticmethod
    def _child(config: RunnableConfig, run_manager: Any) -> RunnableConfig:
        return patch_config(config, callbacks=run_manager.get_child())

    # ------------------------------------------------------------ invoke

    def _run(
        self, input_: PromptInput, run_manager: CallbackManagerForChainRun, config: RunnableConfig
    ) -> AIMessage:
        session_id = self._session(input_, config)
        prompt = drive(self.manager, self._prepare_flow(session_id, input_))
        started = time.perf_counter()
        reply = self.model.invoke(prompt.messages, self._child(config, run_manager))
        message, record = self._record_call(session_id, reply, started, prompt)
        drive(self.manager, _single(record))
        return message

    async def _arun(
        self,
        input_: PromptInput,
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> AIMessage:
        session_id = self._session(input_, config)
        prompt = await adrive(self.manager, self._prepare_flow(session_id, input_))
        started = time.perf_counter()
        reply = await self.model.ainvoke(prompt.messages, self._child(config, run_manager))
        message, record = self._record_call(session_id, reply, started, prompt)
        await adrive(self.manager, _single(record))
        return message

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

    def _stream_run(
        self,
        inputs: Iterator[PromptInput],
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> Iterator[AIMessage]:
        input_ = _join(list(inputs))
        session_id = self._session(input_, config)
        prompt = drive(self.manager, self._prepare_flow(session_id, input_))
        started = time.perf_counter()
        full: BaseMessage | None = None
        for chunk in self.model.stream(prompt.messages, self._child(config, run_manager)):
            full = chunk if full is None else _add(full, chunk)
            yield chunk  # type: ignore[misc]
        if full is not None:
            _, record = self._record_call(session_id, full, started, prompt)
            drive(self.manager, _single(record))

    async def _astream_run(
        self,
        inputs: AsyncIterator[PromptInput],
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> AsyncIterator[AIMessage]:
        input_ = _join([part async for part in inputs])
        session_id = self._session(input_, config)
        prompt = await adrive(self.manager, self._prepare_flow(session_id, input_))
        started = time.perf_counter()
        full: BaseMessage | None = None
        async for chunk in self.model.astream(prompt.messages, self._child(config, run_manager)):
            full = chunk if full is None else _add(full, chunk)
            yield chunk  # type: ignore[misc]
        if full is not None:
            _, record = self._record_call(session_id, full, started, prompt)
            await adrive(self.manager, _single(record))

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


def _add(left: BaseMessage, right: BaseMessage) -> BaseMessage:
    if isinstance(left, BaseMessageChunk) and isinstance(right, BaseMessageChunk):
        return left + right
    return right  # a model that streams whole messages: keep the last


def _single(call: Call) -> Generator[Call, Any, None]:
    yield call
