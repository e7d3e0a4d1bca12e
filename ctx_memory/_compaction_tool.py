"""The ``restore_tool_result`` tool (see :func:`ctx_memory.compaction.make_restore_tool`).

No ``from __future__ import annotations`` here: LangChain injects ``ToolRuntime`` by its
annotation, which must be a real class at run time (as in :mod:`ctx_memory._recall_tool`).
"""

from typing import TYPE_CHECKING, Any

from langchain.tools import ToolRuntime
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, StructuredTool

from ctx_memory._recall_tool import runtime_session

if TYPE_CHECKING:
    from ctx_memory.manager import ContextManager

__all__ = ["build_restore_tool"]

DESCRIPTION = (
    "Bring back a tool output that was cleared from view to save space. Pass `tool_call_id`: "
    "the id named in the placeholder, and `message`: the message number it names (a call id "
    "can repeat). Returns the tool's full output."
)


Output = str | list[str | dict[str, Any]]

PAGE = 256
"""Messages read per step, newest first: a recent output costs one read, however long the
session (an append meanwhile moves older messages back, so a page may repeat, never skip)."""


def _found(tool_call_id: str, page: list[dict[str, Any]]) -> Output | None:
    """The stored output of ``tool_call_id`` in ``page``, exactly as the tool returned it.

    Its content unchanged: a str as stored, content blocks as the list they were.
    """
    for record in reversed(page):
        if record.get("role") == "tool" and record.get("tool_call_id") == tool_call_id:
            content: Output = record.get("content") or ""
            return content
    return None


def _missing(tool_call_id: str) -> str:
    return f"No tool output with tool_call_id {tool_call_id!r} in this conversation."


def build_restore_tool(manager: "ContextManager", session_id: str | None, *, name: str) -> BaseTool:
    """The tool (see :func:`ctx_memory.compaction.make_restore_tool`)."""

    def restore(
        tool_call_id: str,
        message: int | None = None,
        runtime: ToolRuntime[Any, Any] = None,  # type: ignore[assignment]
        config: RunnableConfig = None,  # type: ignore[assignment]
    ) -> Output:
        sid = runtime_session(runtime, session_id, config, owner="the restore_tool_result tool")
        if message is not None and message >= 0:  # the placeholder's: the very output
            page = manager.get_message_range(sid, message, message)
            found = _found(tool_call_id, page)
            if found is not None:
                return found
        end = -1
        while True:
            page = manager.get_message_range(sid, end - PAGE + 1, end)
            found = _found(tool_call_id, page)
            if found is not None:
                return found
            if len(page) < PAGE:
                return _missing(tool_call_id)
            end -= PAGE

    async def arestore(
        tool_call_id: str,
        message: int | None = None,
        runtime: ToolRuntime[Any, Any] = None,  # type: ignore[assignment]
        config: RunnableConfig = None,  # type: ignore[assignment]
    ) -> Output:
        sid = runtime_session(runtime, session_id, config, owner="the restore_tool_result tool")
        if message is not None and message >= 0:  # the placeholder's: the very output
            page = await manager.aget_message_range(sid, message, message)
            found = _found(tool_call_id, page)
            if found is not None:
                return found
        end = -1
        while True:
            page = await manager.aget_message_range(sid, end - PAGE + 1, end)
            found = _found(tool_call_id, page)
            if found is not None:
                return found
            if len(page) < PAGE:
                return _missing(tool_call_id)
            end -= PAGE

    return StructuredTool.from_function(
        func=restore, coroutine=arestore, name=name, description=DESCRIPTION
    )
