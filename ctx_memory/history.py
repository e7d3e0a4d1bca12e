"""ContextChatMessageHistory: a session's history as a LangChain chat message history.

A thin adapter for code built on ``BaseChatMessageHistory`` (``RunnableWithMessageHistory``,
classic memories). langchain-core deprecates both in favour of agent short-term memory;
new code should prefer :class:`~ctx_memory.chat.ContextualChat` and
:class:`~ctx_memory.middleware.ContextMiddleware`. Subclassing does not emit
langchain-core's deprecation warning (it fires only for direct instances), so users of this
class see none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from langchain_core.chat_history import BaseChatMessageHistory
from typing_extensions import override

from ctx_memory.schema import record_to_message, validate_session_id

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    from langchain_core.messages import BaseMessage

    from ctx_memory.manager import ContextManager

__all__ = ["ContextChatMessageHistory"]


class ContextChatMessageHistory(BaseChatMessageHistory):
    """One session's conversation history, read and written through a ContextManager.

    Messages round-trip losslessly (content blocks, tool calls, ids, metadata). Writes are
    atomic appends; the async methods use the store's native async path.

    Args:
        manager: Where the session lives.
        session_id: The session.
        last_k: Only the newest ``last_k`` messages are read (``None``: all), widened back
            to the AI message whose tool calls the oldest of them answers: the messages
            never open with a tool result, which a model refuses without its call. Reading
            is O(``last_k``) (plus that exchange), whatever the session's length.

    Example:
        .. code-block:: python

            from langchain_core.messages import AIMessage, HumanMessage

            from ctx_memory import ContextChatMessageHistory, ContextManager

            history = ContextChatMessageHistory(ContextManager(), "s1")
            history.add_messages([HumanMessage("Hi"), AIMessage("Hello!")])
            assert [m.type for m in history.messages] == ["human", "ai"]
            history.clear()
            assert history.messages == []
    """

    def __init__(
        self,
        manager: ContextManager,
        session_id: str,
        *,
        last_k: int | None = None,
    ) -> None:
        super().__init__()
        self.manager = manager
        self.session_id = validate_session_id(session_id)
        self.last_k = last_k

    def __repr__(self) -> str:
        return f"ContextChatMessageHistory(session_id={self.session_id!r}, last_k={self.last_k})"

    @property
    @override
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """The stored messages (the newest ``last_k`` if set, see above), oldest first."""
        read = self.last_k
        while True:
            records = self.manager.get_history(self.session_id, read)
            start = _window_start(records, self.last_k, read)
            if start is not None:
                return [record_to_message(r) for r in records[start:]]
            read = 2 * len(records)

    @override
    async def aget_messages(self) -> list[BaseMessage]:
        read = self.last_k
        while True:
            records = await self.manager.aget_history(self.session_id, read)
            start = _window_start(records, self.last_k, read)
            if start is not None:
                return [record_to_message(r) for r in records[start:]]
            read = 2 * len(records)

    @override
    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        self.manager.add_messages(self.session_id, list(messages))

    @override
    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        await self.manager.aadd_messages(self.session_id, list(messages))

    @override
    def clear(self) -> None:
        """Drop the history; the system prompt, metadata and sources stay."""
        self.manager.clear(self.session_id, preserve_fetched=True)

    @override
    async def aclear(self) -> None:
        """Async :meth:`clear`."""
        await self.manager.aclear(self.session_id, preserve_fetched=True)


def _window_start(
    records: Sequence[Mapping[str, Any]], last_k: int | None, read: int | None
) -> int | None:
    """Where the messages begin in ``records`` (the newest ``read``); ``None``: read more.

    The newest ``last_k``, moved back over tool results to the message that called them.
    """
    if last_k is None or last_k <= 0:
        return 0
    start = max(0, len(records) - last_k)
    while start > 0 and records[start].get("role") == "tool":
        start -= 1
    if start == 0 and records and records[0].get("role") == "tool" and len(records) == read:
        return None  # the call is older than what was read
    return start
