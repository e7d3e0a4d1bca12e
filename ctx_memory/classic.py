"""ContextMemory: token-budgeted memory for the classic ``AgentExecutor`` and chains.

Needs the ``classic`` extra (``pip install ctx-memory[classic]``).

langchain-classic's token-buffer memories prune by re-counting the whole buffer and
popping from a list they read; on a Redis-backed history that list is a fresh copy, so
nothing is pruned, and their async path does not prune at all. ContextMemory never prunes
storage: it keeps the full history and *selects* the newest whole turns that fit
``max_token_limit`` at load time, from the token counts cached when each message was
written, with the same code sync and async (the store's native async path).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ctx_memory._extras import missing_extra

try:
    from langchain_classic.memory.chat_memory import BaseChatMemory
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise missing_extra("classic", __name__, e) from e

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, get_buffer_string
from pydantic import ConfigDict, Field
from typing_extensions import override

from ctx_memory.assembly.messages import records_to_messages
from ctx_memory.assembly.window import HistoryChunks, aread_history_window, read_history_window
from ctx_memory.history import ContextChatMessageHistory
from ctx_memory.manager import ContextManager  # noqa: TC001 - pydantic field type
from ctx_memory.schema import validate_session_id

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["ContextMemory"]


class ContextMemory(BaseChatMemory):
    """Classic LangChain memory over a ctx_memory session, cut to a token budget.

    ``load_memory_variables`` returns the newest whole turns (each starting at a user
    message) whose cached token counts fit ``max_token_limit``; ``save_context`` appends
    the human input and the AI output. Use ``return_messages=True`` with chat prompts
    (a ``MessagesPlaceholder``) and the default string buffer with text prompts.

    Reads, writes and ``clear`` always go to the current ``session_id``: assigning a new
    one (``memory.session_id = "user-43"``) moves all of them, and ``chat_memory`` (a
    :class:`~ctx_memory.history.ContextChatMessageHistory` view) follows too.

    Args:
        manager: Where the session lives.
        session_id: The session.
        max_token_limit: Tokens the loaded history may take (chat overhead included).
        memory_key: The prompt variable the history fills.
        return_messages: Messages instead of a ``Human: ...`` / ``AI: ...`` string.
        input_key: The chain input to store (default: the only non-memory input).
        output_key: The chain output to store (default: the only one, or ``output``).

    Example:
        .. code-block:: python

            from ctx_memory import ContextManager
            from ctx_memory.classic import ContextMemory

            memory = ContextMemory(manager=ContextManager(), session_id="s1", max_token_limit=40)
            for i in range(10):
                memory.save_context({"input": f"question {i}"}, {"output": f"answer {i}"})
            history = memory.load_memory_variables({})["history"]
            assert history.splitlines()[-2:] == ["Human: question 9", "AI: answer 9"]
            assert "question 0" not in history
            assert len(memory.chat_memory.messages) == 20  # storage keeps everything
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    manager: ContextManager = Field(exclude=True)
    session_id: str
    max_token_limit: int = 2000
    memory_key: str = "history"
    human_prefix: str = "Human"
    ai_prefix: str = "AI"

    def __init__(self, **data: Any) -> None:
        # Build the history here: the base class's default would instantiate langchain's
        # deprecated in-memory history and warn the user.
        if "chat_memory" not in data and "manager" in data and "session_id" in data:
            data["chat_memory"] = ContextChatMessageHistory(data["manager"], data["session_id"])
        super().__init__(**data)

    @override
    def __setattr__(self, name: str, value: Any) -> None:
        if name == "session_id":
            value = validate_session_id(value)
        super().__setattr__(name, value)
        if name in ("session_id", "manager") and isinstance(
            self.chat_memory, ContextChatMessageHistory
        ):
            # chat_memory is a view of the current session: it follows the change.
            super().__setattr__(
                "chat_memory",
                ContextChatMessageHistory(
                    self.manager, self.session_id, last_k=self.chat_memory.last_k
                ),
            )

    def _history(self) -> ContextChatMessageHistory:
        """The current session's history (reads and writes follow ``session_id``)."""
        return ContextChatMessageHistory(self.manager, self.session_id)

    def _messages(self, inputs: dict[str, Any], outputs: dict[str, Any]) -> list[BaseMessage]:
        input_str, output_str = self._get_input_output(inputs, outputs)
        return [HumanMessage(content=input_str), AIMessage(content=output_str)]

    @override
    def save_context(self, inputs: dict[str, Any], outputs: dict[str, str]) -> None:
        """Append the human input and the AI output to the current session, atomically."""
        self._history().add_messages(self._messages(inputs, outputs))

    @override
    async def asave_context(self, inputs: dict[str, Any], outputs: dict[str, str]) -> None:
        """Async :meth:`save_context`."""
        await self._history().aadd_messages(self._messages(inputs, outputs))

    @override
    def clear(self) -> None:
        """Drop the current session's history (system prompt, metadata and sources stay)."""
        self._history().clear()

    @override
    async def aclear(self) -> None:
        """Async :meth:`clear`."""
        await self._history().aclear()

    @property
    @override
    def memory_variables(self) -> list[str]:
        return [self.memory_key]

    def _chunks(self, header: Mapping[str, Any]) -> HistoryChunks:
        counter = self.manager.token_counter
        return HistoryChunks(header["metadata"], self.max_token_limit, counter=counter)

    def _load(self) -> list[BaseMessage]:
        """The newest whole turns that fit ``max_token_limit``, as messages."""
        header = self.manager.get_header(self.session_id)
        if header is None:
            return []
        window = read_history_window(self.manager, self.session_id, self._chunks(header))
        return records_to_messages(window.chosen)

    async def _aload(self) -> list[BaseMessage]:
        """Async :meth:`_load`."""
        header = await self.manager.aget_header(self.session_id)
        if header is None:
            return []
        window = await aread_history_window(self.manager, self.session_id, self._chunks(header))
        return records_to_messages(window.chosen)

    def _variables(self, messages: list[BaseMessage]) -> dict[str, Any]:
        if self.return_messages:
            return {self.memory_key: messages}
        text = get_buffer_string(messages, human_prefix=self.human_prefix, ai_prefix=self.ai_prefix)
        return {self.memory_key: text}

    @override
    def load_memory_variables(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return self._variables(self._load())

    @override
    async def aload_memory_variables(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return self._variables(await self._aload())
