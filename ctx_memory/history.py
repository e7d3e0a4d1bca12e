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

from ctx_memory.schema import validate_session_id

if TYPE_CHECKING:
    from collections.abc import Sequence

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
        last_k: Only the newest ``last_k`` messages are read (``None``: all). Reading is
            O(``last_k``), whatever the session's length.

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
        """The stored messages (the newest ``last_k`` if set), oldest first."""
        return self.manager.get_messages(self.session_id, self.last_k)

    @override
    async def aget_messages(self) -> list[BaseMessage]:
        return await self.manager.aget_messages(self.session_id, self.last_k)

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
