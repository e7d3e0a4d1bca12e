"""Session events and the in-process emitter that delivers them to listeners.

A listener is any callable taking one :class:`Event`. Listeners run synchronously in the
thread that made the change, after the change is stored; a listener that raises is logged
and never fails the write nor stops the other listeners.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from ctx_memory import tracing
from ctx_memory.schema import now_iso

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Event", "EventEmitter", "EventType"]

logger = logging.getLogger(__name__)


class EventType(str, Enum):
    """Every event a session can emit."""

    SESSION_CREATED = "session_created"
    MESSAGE_ADDED = "message_added"
    HISTORY_EDITED = "history_edited"
    FETCHED_ADDED = "fetched_added"
    CONTEXT_UPDATED = "context_updated"
    METADATA_UPDATED = "metadata_updated"
    SESSION_CLEARED = "session_cleared"
    SESSION_DELETED = "session_deleted"
    SESSION_EXPIRED = "session_expired"
    SESSION_EVICTED = "session_evicted"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Event:
    """Something that happened to a session.

    Attributes:
        type: What happened.
        session_id: The session it happened to.
        data: Event details (e.g. ``{"count": 2}`` for ``message_added``).
        timestamp: When, as an ISO-8601 UTC string.
    """

    type: EventType
    session_id: str
    data: dict[str, Any] = field(default_factory=dict)
    timestamp: str = field(default_factory=now_iso)

    def to_dict(self) -> dict[str, Any]:
        """The event as JSON-native data (for logs or publishing)."""
        return {
            "type": self.type.value,
            "session_id": self.session_id,
            "data": self.data,
            "timestamp": self.timestamp,
        }


class EventEmitter:
    """Registers listeners and delivers events to them.

    Args:
        enabled: When false, :meth:`emit` does nothing (``EVENT_EMISSION=false``).

    Example:
        .. code-block:: python

            from ctx_memory import EventEmitter, EventType

            seen = []
            emitter = EventEmitter()
            emitter.on(EventType.MESSAGE_ADDED, seen.append)
            emitter.emit(EventType.MESSAGE_ADDED, "s1", count=1)
            assert seen[0].data == {"count": 1}
    """

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._lock = threading.Lock()
        self._listeners: dict[EventType | None, list[Callable[[Event], None]]] = {}
        self._always: dict[EventType | None, list[Callable[[Event], None]]] = {}

    def on(
        self,
        event_type: EventType | str | None,
        listener: Callable[[Event], None],
        *,
        always: bool = False,
    ) -> Callable[[], None]:
        """Call ``listener`` for ``event_type`` (``None`` or ``"*"``: every event).

        ``always``: call it even while emission is disabled (ctx_memory's own caches,
        such as the recall index, which must hear of every edit to stay correct).

        Returns:
            A function that removes the listener again.
        """
        key = None if event_type in (None, "*") else EventType(event_type)
        with self._lock:
            self._listeners.setdefault(key, []).append(listener)
            if always:
                self._always.setdefault(key, []).append(listener)
        return lambda: self.off(event_type, listener)

    def off(self, event_type: EventType | str | None, listener: Callable[[Event], None]) -> None:
        """Remove a listener registered with :meth:`on` (no error if it is not there)."""
        key = None if event_type in (None, "*") else EventType(event_type)
        with self._lock:
            for registry in (self._listeners, self._always):
                listeners = registry.get(key, [])
                if listener in listeners:
                    listeners.remove(listener)

    def has_listeners(self) -> bool:
        """Whether any listener is registered."""
        return any(self._listeners.values())

    def listens(self, event_type: EventType) -> bool:
        """Whether :meth:`emit` of ``event_type`` would reach a listener (build no data else)."""
        registered = self._listeners
        return self.enabled and (
            bool(registered.get(event_type) or registered.get(None)) or tracing.instrumented()
        )

    def emit(
        self, event_type: EventType | str, session_id: str, *, at: str | None = None, **data: Any
    ) -> Event | None:
        """Deliver an event to its listeners; return it.

        ``at`` is its timestamp (default: now); a store's expiry or eviction carries the
        time the store reported it, the same for every manager on the store and for the
        copy published to other processes.

        Returns ``None`` (and builds no event) when emission is disabled or nobody listens
        to this type: a write with no listener pays for no event object.
        """
        if not self.enabled:
            if self._always:  # ctx_memory's own listeners hear it all the same
                self._deliver(self._always, event_type, session_id, at, data, traced=False)
            return None
        return self._deliver(
            self._listeners, event_type, session_id, at, data, traced=tracing.instrumented()
        )

    def _deliver(
        self,
        registered: dict[EventType | None, list[Callable[[Event], None]]],
        event_type: EventType | str,
        session_id: str,
        at: str | None,
        data: dict[str, Any],
        *,
        traced: bool,
    ) -> Event | None:
        kind = event_type if type(event_type) is EventType else EventType(event_type)
        if not registered.get(kind) and not registered.get(None) and not traced:
            return None  # (read without the lock: a listener added meanwhile hears the next)
        event = Event(kind, session_id, data) if at is None else Event(kind, session_id, data, at)
        if traced:
            tracing.span_event(event)
        with self._lock:
            listeners = [*registered.get(kind, ()), *registered.get(None, ())]
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                logger.exception(
                    "ctx_memory event listener %r failed on %s for session %r",
                    listener,
                    event.type.value,
                    session_id,
                )
        return event
