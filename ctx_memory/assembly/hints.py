"""Provider prompt-cache hints, through the LangChain chat models' documented fields.

- Anthropic: a ``cache_control`` key on a message's content block marks a cache
  breakpoint; langchain-anthropic's ``ChatAnthropic`` passes it on to the API (at most
  four per request). :func:`anthropic_breakpoints` sets two: on the system message and
  on the last history message, the end of the prefix the stable layout keeps the same
  from request to request; and, in an agent's tool loop, a third on the run's last
  message, which the next step's request begins with.
- OpenAI: ``prompt_cache_key`` is a request parameter that routes requests sharing a
  prefix to the same cache; with langchain-openai pass it as a call option,
  ``model.bind(prompt_cache_key=...)`` (or ``model_kwargs``). :func:`prompt_cache_key`
  derives one from the session id without exposing it.

Text blocks cost what their text costs (:class:`~ctx_memory.tokens.TokenCounter`), so a
hint never changes the budget.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from langchain_core.messages import BaseMessage

__all__ = ["anthropic_breakpoints", "prompt_cache_key", "with_cache_control"]


def prompt_cache_key(session_id: str) -> str:
    """OpenAI's ``prompt_cache_key`` for a session: stable, short, not the id itself."""
    digest = hashlib.sha256(session_id.encode("utf-8")).hexdigest()[:32]
    return f"ctx-memory-{digest}"


def with_cache_control(
    message: BaseMessage, cache_control: Mapping[str, Any] | None = None
) -> BaseMessage:
    """A copy of ``message`` whose last content block carries Anthropic's ``cache_control``.

    String content becomes one text block (the same tokens). langchain-anthropic passes
    ``cache_control`` on content blocks through to the API as a cache breakpoint. Blank
    text takes none (Anthropic refuses it there): a message with nothing else is returned
    as it is.
    """
    control = dict(cache_control or {"type": "ephemeral"})
    content = message.content
    blocks: list[Any]
    if not _has_markable(message):
        return message
    if isinstance(content, str):
        blocks = [{"type": "text", "text": content, "cache_control": control}]
    else:
        blocks = list(content)
        for i in range(len(blocks) - 1, -1, -1):
            if not _markable(blocks[i]):
                continue
            if isinstance(blocks[i], dict):
                blocks[i] = {**blocks[i], "cache_control": control}
            else:
                blocks[i] = {"type": "text", "text": blocks[i], "cache_control": control}
            break
    return message.model_copy(update={"content": blocks})


_UNMARKABLE = frozenset({"thinking", "redacted_thinking"})
"""Block types Anthropic refuses ``cache_control`` on (cached as part of the request)."""


def _markable(block: object) -> bool:
    """Whether Anthropic takes ``cache_control`` on ``block``: not blank text, not thinking."""
    if isinstance(block, str):
        return bool(block.strip())
    if isinstance(block, dict):
        kind, text = block.get("type"), block.get("text")
        if kind == "text":
            return isinstance(text, str) and bool(text.strip())
        return kind not in _UNMARKABLE
    return False


def _has_markable(message: BaseMessage) -> bool:
    content = message.content
    if isinstance(content, str):
        return _markable(content)
    return any(_markable(block) for block in content)


def _markable_at_or_before(messages: list[BaseMessage], index: int, first: int) -> int | None:
    """The newest message at ``index`` or before (down to ``first``) a breakpoint can go on.

    Anthropic refuses ``cache_control`` on an empty text block (an AI message that only
    calls tools, an empty tool result): the breakpoint moves back to the message before,
    which caches a little less and is valid.
    """
    for i in range(index, first - 1, -1):
        if _has_markable(messages[i]):
            return i
    return None


def _without_cache_control(message: BaseMessage) -> BaseMessage:
    """``message``, or a copy without the ``cache_control`` of its content blocks."""
    content = message.content
    if isinstance(content, str) or not any(
        isinstance(b, dict) and "cache_control" in b for b in content
    ):
        return message
    blocks = [
        {k: v for k, v in b.items() if k != "cache_control"} if isinstance(b, dict) else b
        for b in content
    ]
    return message.model_copy(update={"content": blocks})


def anthropic_breakpoints(
    messages: list[BaseMessage], *, has_system: bool, history: int, run_end: int | None = None
) -> list[BaseMessage]:
    """``messages`` with ``cache_control`` on the system message and the last history one.

    A message with no text to mark (an AI message that only calls tools, an empty tool
    result) passes its breakpoint to the message before it.

    ``history`` is how many history messages follow the system message (if any). Two of
    Anthropic's four breakpoints: the prefix that stays the same between requests. In an
    agent's tool loop, ``run_end`` is the index of the run's last message (the last tool
    result, before the stable layout's volatile context): a third breakpoint, since the
    next step's request begins with everything up to it. Breakpoints the messages
    already carry (stored content blocks with their own ``cache_control``) are removed
    first, so a request never holds more than these three (Anthropic refuses more than
    four).
    """
    out = [_without_cache_control(m) for m in messages]
    first = 1 if has_system else 0
    marks: list[int | None] = []
    if has_system:
        marks.append(_markable_at_or_before(out, 0, 0))
    if history:
        marks.append(_markable_at_or_before(out, first + history - 1, first))
    if run_end is not None and first + history <= run_end < len(out):
        marks.append(_markable_at_or_before(out, run_end, first + history))
    for index in dict.fromkeys(m for m in marks if m is not None):
        out[index] = with_cache_control(out[index])
    return out
