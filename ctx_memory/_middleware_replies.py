"""What :class:`~ctx_memory.middleware.ContextMiddleware` remembers of the replies it stored.

A reply is stored as the model gave it, inside the model call; an ``after_model`` hook
of another middleware may change it in the agent state afterwards (``PIIMiddleware``
redacting an e-mail address). The middleware keeps each stored reply's digest until the
agent ends, and replaces the stored copy if the state's differs.
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage

__all__ = ["RecentReplies", "reply_digest"]


def reply_digest(message: BaseMessage) -> int:
    """What a reply says (its content and tool calls), to see whether it changed since."""
    calls = message.tool_calls if isinstance(message, AIMessage) else []
    return hash(json.dumps([message.content, calls], sort_keys=True, default=str))


class RecentReplies:
    """``(session id, message id) -> (digest, metadata)``, bounded (oldest dropped first).

    Shared by the agent's threads (a lock); bounded, so replies of runs that never end
    (an error, an interrupt never resumed) do not pile up.
    """

    LIMIT = 4096

    def __init__(self) -> None:
        self._items: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def put(self, key: tuple[str, str], value: tuple[int, dict[str, Any]]) -> None:
        """Remember a stored reply."""
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.LIMIT:
                del self._items[next(iter(self._items))]

    def take(self, key: tuple[str, str]) -> tuple[int, dict[str, Any]] | None:
        """Forget a stored reply; what was remembered of it (``None``: nothing)."""
        with self._lock:
            return self._items.pop(key, None)
