"""Publishing events to other processes: a listener with a queue and a background thread.

:class:`EventPublisher` is an ordinary event listener. A store that publishes events (Redis
pub/sub, PostgreSQL ``NOTIFY``) returns one from
:meth:`~ctx_memory.stores.base.BaseStore.event_listeners`, and every
:class:`ContextManager <ctx_memory.manager.ContextManager>` on the store adds it to its
emitter, so other processes receive the same :meth:`Event.to_dict
<ctx_memory.events.Event.to_dict>` objects as in-process listeners. Expiries and evictions,
which the store finds, are published once per store (not once per manager sharing it), unless
every manager on the store has ``EVENT_EMISSION=false``: their emitters then deliver nothing
to this listener, and the store's own report is held back too, so that other processes get
no events at all rather than a part of them. A store with no manager publishes its reports.
Publishing happens on a background thread: a write never waits for it, sync or async, and
events leave in the order they happened. A subclass only says how a batch is sent.

Events are notifications, not data: one the server does not take (it is down) is logged
and dropped, never retried into a later write's path. What is still queued when the program
exits (a job that never closes its manager) is sent before it ends: up to
:data:`EXIT_FLUSH_SECONDS` for all publishers together.
"""

from __future__ import annotations

import abc
import json
import logging
import os
import queue
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from ctx_memory._exit import at_exit
from ctx_memory.events import Event, EventEmitter, EventType
from ctx_memory.stores.base import lifecycle_time

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["EXIT_FLUSH_SECONDS", "EventPublisher", "event_payload"]

logger = logging.getLogger(__name__)

_LIFECYCLE = frozenset({EventType.SESSION_EXPIRED, EventType.SESSION_EVICTED})
_STOP = object()
_BATCH = 256

EXIT_FLUSH_SECONDS = 5.0
"""How long the program's exit waits, at most, for the events still queued to be sent."""

_LIVE: weakref.WeakSet[EventPublisher] = weakref.WeakSet()
"""Publishers whose thread has started: flushed at exit."""

_ALL: weakref.WeakSet[EventPublisher] = weakref.WeakSet()
"""Every publisher: a forked child resets each (one may be starting its thread)."""


def _flush_at_exit() -> None:
    deadline = time.monotonic() + EXIT_FLUSH_SECONDS
    for publisher in list(_LIVE):
        publisher.close(max(0.0, deadline - time.monotonic()))


at_exit(_flush_at_exit, "events")  # after background work (a summary) has emitted its own


def _forget_parent_threads() -> None:
    """In a forked child: start its own publishing thread on its next event.

    The parent's thread does not run in the child, and the events queued before the fork
    are the parent's to send.
    """
    for publisher in list(_ALL):
        publisher._lock = threading.Lock()  # (another thread may have held it at the fork)
        publisher._thread = None
        publisher._queue = queue.SimpleQueue()
    _LIVE.clear()


if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX
    os.register_at_fork(after_in_child=_forget_parent_threads)


def event_payload(event: Event) -> str:
    """The published JSON text of ``event``: its :meth:`~ctx_memory.events.Event.to_dict`."""
    return json.dumps(event.to_dict(), ensure_ascii=False, separators=(",", ":"), default=str)


class EventPublisher(abc.ABC):
    """Publish events on ``channel`` with ``client()``, from one background thread.

    Args:
        client: Returns the (sync) redis-py client to publish with.
        channel: The channel name.
        describe: How to name the server in a log line (its URL, password masked).
    """

    def __init__(
        self, client: Callable[[], Any], channel: str, *, describe: Callable[[], str] = str
    ) -> None:
        self._client = client
        self.channel = channel
        self._describe = describe
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._hooks: Mapping[object, object] | None = None
        self._was_muted = False
        _ALL.add(self)

    def __call__(self, event: Event) -> None:
        """Publish an event a manager emitted (lifecycle events come from :meth:`lifecycle`)."""
        if event.type not in _LIFECYCLE:
            self._put(event_payload(event))

    def watch(self, hooks: Mapping[object, object]) -> None:
        """Read the store's lifecycle hooks, keyed by each manager's emitter, on each report.

        That is how ``EVENT_EMISSION`` (an emitter's ``enabled``) reaches the store's
        reports; the store calls it when it starts publishing (``BaseStore._publish_with``).
        """
        self._hooks = hooks

    def _muted(self) -> bool:
        """Whether every manager using the store has emission turned off.

        With no manager on the store any more (they were dropped), as it was when the
        last ones were there: the settings they were made with still hold.
        """
        keys = list(self._hooks or ())  # one step: a manager may add its hook meanwhile
        emitters = [key for key in keys if isinstance(key, EventEmitter)]
        if emitters:
            self._was_muted = not any(emitter.enabled for emitter in emitters)
        return self._was_muted

    def remember_emission(self) -> None:
        """Note whether the managers on the store emit: called as one of them leaves."""
        self._muted()

    def lifecycle(self, event_type: str, session_id: str) -> None:
        """Publish an expiry or eviction the store found (a store lifecycle hook).

        Once per store, not once per manager; nothing when :meth:`_muted`.
        """
        if self._muted():
            return
        self._put(event_payload(Event(EventType(event_type), session_id, {}, lifecycle_time())))

    def _put(self, payload: str) -> None:
        if self._closed:
            return
        self._queue.put(payload)
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._closed:
                    thread = threading.Thread(
                        target=self._run, name=f"ctx_memory-publish-{self.channel}", daemon=True
                    )
                    try:
                        thread.start()
                    except RuntimeError:  # no new thread at interpreter exit (Python 3.12)
                        self._send_queued()
                        return
                    self._thread = thread
                    _LIVE.add(self)

    def _send_queued(self) -> None:
        """Send what is queued from this thread (no publishing thread could start)."""
        while self._send_batch([]):
            pass

    def _run(self) -> None:
        while self._send_batch([self._queue.get()]):
            pass

    def _send_batch(self, batch: list[object]) -> bool:
        """Send ``batch`` and what is queued after it (up to a batch); whether to go on.

        False once the queue is empty (when ``batch`` starts empty) or the stop mark is sent.
        """
        while len(batch) < _BATCH:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        payloads = [p for p in batch if isinstance(p, str)]
        if payloads:
            self._publish(payloads)
        return bool(batch) and _STOP not in batch

    @abc.abstractmethod
    def _publish(self, payloads: list[str]) -> None:
        """Send one batch of payloads, in order (on the background thread; never raises)."""

    def close(self, timeout: float = 5.0) -> None:
        """Publish what is queued (waiting up to ``timeout`` seconds), then stop."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(timeout)
