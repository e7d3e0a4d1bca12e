"""What :class:`~ctx_memory.middleware.ContextMiddleware` remembers of the messages it stored.

A message is stored as the agent state holds it when the middleware writes it; another
middleware may change it in the state afterwards: ``PIIMiddleware`` redacts a reply in
``after_model``, or tool results in a ``before_model`` that runs after this middleware's.
The middleware keeps each stored message's digest until the agent ends, and replaces the
stored copy when the state's differs (same id, same place). A run resumed by another agent
(another process, a new instance: after an interrupt) holds replies this one did not
store: their stored copies are read back (:meth:`StoredDigests.seed`) to compare with.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage

from ctx_memory.schema import record_to_message

if TYPE_CHECKING:
    from collections.abc import Sequence

    from langchain.agents.middleware import ModelRequest
    from langchain_core.messages import BaseMessage

__all__ = ["LOOK_BACK", "StoredDigests", "as_in_state", "message_digest"]

LOOK_BACK = 256
"""How many of the newest stored messages :meth:`StoredDigests.seed` looks among."""


def as_in_state(request: ModelRequest[Any], run: list[BaseMessage]) -> list[BaseMessage]:
    """The run's messages as the agent state holds them (by id).

    A middleware wrapping the model call from outside may pass edited copies inward
    (``ContextEditingMiddleware`` clears old tool outputs in the request only): the
    session stores what the agent state holds, not what one request showed.
    """
    state = request.state if isinstance(request.state, Mapping) else {}
    held = {m.id: m for m in state.get("messages") or ()}
    return [held.get(m.id, m) if m.id is not None else m for m in run]


def message_digest(message: BaseMessage) -> int:
    """What a message says (its content and tool calls), to see whether it changed since."""
    calls = message.tool_calls if isinstance(message, AIMessage) else []
    return hash(json.dumps([message.content, calls], sort_keys=True, default=str))


class StoredDigests:
    """``(session id, message id) -> (digest, metadata)``, bounded (oldest dropped first).

    ``metadata``: what the stored record's metadata is (a reply's model, response time,
    sources and tools), for the replacement. Shared by the agent's threads (a lock);
    bounded, so the messages of runs that never end (an error, an interrupt never
    resumed) do not pile up.
    """

    LIMIT = 4096

    def __init__(self) -> None:
        self._items: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def put(self, key: tuple[str, str], value: tuple[int, dict[str, Any]]) -> None:
        """Remember a stored message."""
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.LIMIT:
                del self._items[next(iter(self._items))]

    def get(self, key: tuple[str, str]) -> tuple[int, dict[str, Any]] | None:
        """What is remembered of a stored message (``None``: nothing)."""
        with self._lock:
            return self._items.get(key)

    def take(self, key: tuple[str, str]) -> tuple[int, dict[str, Any]] | None:
        """Forget a stored message; what was remembered of it (``None``: nothing)."""
        with self._lock:
            return self._items.pop(key, None)

    def remember(
        self, session_id: str, message: BaseMessage, metadata: dict[str, Any] | None = None
    ) -> None:
        """Keep what ``message`` said as stored, unless it is known already."""
        key = (session_id, str(message.id))
        if self.get(key) is None:
            self.put(key, (message_digest(message), metadata or {}))

    def changed(
        self, session_id: str, messages: Sequence[BaseMessage], *, forget: bool = False
    ) -> list[tuple[BaseMessage, dict[str, Any]]]:
        """Messages stored that the state now holds changed, with their stored metadata.

        Another middleware changed them once stored: ``PIIMiddleware`` redacting a reply
        (``after_model``) or tool results (a ``before_model`` after this one's). The
        caller replaces the stored copies; ``forget``: the run ends, forget them all.
        """
        changed = []
        for message in messages:
            key = (session_id, str(message.id))
            kept = self.take(key) if forget else self.get(key)
            if kept is None or kept[0] == message_digest(message):
                continue
            changed.append((message, kept[1]))
            if not forget:
                self.put(key, (message_digest(message), kept[1]))
        return changed

    def unseen_replies(self, session_id: str, messages: Sequence[BaseMessage]) -> bool:
        """Whether ``messages`` hold a reply this agent did not store (a resumed run)."""
        with self._lock:
            return any(
                isinstance(m, AIMessage) and m.id and (session_id, str(m.id)) not in self._items
                for m in messages
            )

    def seed(self, session_id: str, records: Sequence[dict[str, Any]]) -> None:
        """Remember stored records (the newest of the session) not remembered yet."""
        for record in records:
            key = (session_id, str(record.get("id")))
            if record.get("id") and self.get(key) is None:
                stored = record_to_message(record)
                self.put(key, (message_digest(stored), dict(record.get("metadata") or {})))
