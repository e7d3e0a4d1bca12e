"""The ``recall`` tool's LangChain side (see :func:`ctx_memory.recall.make_recall_tool`).

Apart from :mod:`ctx_memory.recall` because the tool's functions take a ``ToolRuntime``
that LangChain injects by its annotation: the annotation must be a real class at run
time (no ``from __future__ import annotations`` here), and ``langchain`` is imported
only when a tool is made.
"""

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from ctx_memory._extras import missing_extra

try:
    from langchain.tools import ToolRuntime
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise missing_extra("agents", "ctx_memory.recall.make_recall_tool", e) from e

from langchain_core.tools import BaseTool, StructuredTool

from ctx_memory.prompt import session_id_from
from ctx_memory.recall import format_turns, tool_ranges

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig

    from ctx_memory.manager import ContextManager
    from ctx_memory.recall import Recall, RecallIndex

__all__ = ["build_recall_tool"]

HEADING = "Earlier turns of this conversation (positions in the history):"
DESCRIPTION = (
    "Look up older turns of this conversation that are no longer in view. Pass `query`: "
    "the words to look for (names, numbers, topics). Returns the matching turns with their "
    "positions in the conversation."
)


def runtime_session(runtime: Any, default: str | None) -> str:
    """The session id as ContextMiddleware finds it: context, configurable, thread, default."""
    context = getattr(runtime, "context", None)
    if isinstance(context, Mapping) and context.get("session_id"):
        return str(context["session_id"])
    if context is not None and getattr(context, "session_id", None):
        return str(context.session_id)
    config = cast("RunnableConfig", getattr(runtime, "config", None) or {})
    configurable = config.get("configurable") or {}
    fallback = configurable.get("thread_id") or default
    return session_id_from(config, fallback, owner="the recall tool")


def _answer(query: str, parts: list[tuple[int, list[dict[str, Any]]]]) -> str:
    if not parts:
        return f"Nothing earlier in this conversation matches {query!r}."
    return format_turns(parts, heading=HEADING)


def build_recall_tool(
    manager: "ContextManager",
    recall: "Recall",
    session_id: str | None,
    *,
    k: int,
    max_tokens: int,
    name: str,
) -> BaseTool:
    """The tool (see :func:`ctx_memory.recall.make_recall_tool`)."""

    def ranges(index: "RecallIndex", query: str) -> list[tuple[int, int]]:
        return tool_ranges(index, query, k, max_tokens)

    def recall_turns(query: str, runtime: ToolRuntime[Any, Any] = None) -> str:  # type: ignore[assignment]
        sid = runtime_session(runtime, session_id)
        index = recall.index(manager, sid, manager.get_header(sid))
        found = ranges(index, query)
        parts = [(a, manager.get_message_range(sid, a, b - 1)) for a, b in found]
        return _answer(query, parts)

    async def arecall_turns(query: str, runtime: ToolRuntime[Any, Any] = None) -> str:  # type: ignore[assignment]
        sid = runtime_session(runtime, session_id)
        index = await recall.aindex(manager, sid, await manager.aget_header(sid))
        found = ranges(index, query)
        parts = [(a, await manager.aget_message_range(sid, a, b - 1)) for a, b in found]
        return _answer(query, parts)

    return StructuredTool.from_function(
        func=recall_turns, coroutine=arecall_turns, name=name, description=DESCRIPTION
    )
