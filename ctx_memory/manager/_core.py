"""The manager's plumbing: settings, store, token counter, events, and executing operations.

Each public method of :class:`~ctx_memory.manager.ContextManager` is three steps: *plan*
(validate and encode the input into one typed operation of :mod:`ctx_memory.stores.ops`,
pure, before anything is written), *execute* (:meth:`ManagerCore._execute`, one call of
:meth:`BaseStore.execute <ctx_memory.stores.base.BaseStore.execute>`, or
:meth:`ManagerCore._aexecute` in the async twin) and *finish* (turn the result into the
return value and events, pure). The sync and async twins share the plan and finish helpers
and differ only by ``await`` (``tests/unit/test_twins.py`` checks that).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ctx_memory.config import Settings, load_settings, with_overrides
from ctx_memory.events import EventEmitter, EventType
from ctx_memory.stores import create_store
from ctx_memory.stores.base import Closeable, Header, lifecycle_time, new_header
from ctx_memory.tokens import TokenCounter

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from ctx_memory.events import Event
    from ctx_memory.stores.base import BaseStore, WriteResult
    from ctx_memory.stores.ops import (
        Op,
    )


R = TypeVar("R")


class PendingWork(Protocol):
    """Background work a manager finishes before its store closes (``before_close``)."""

    def finish_for_close(self) -> None:
        """Finish (or give up within a time limit) before the store closes."""

    async def afinish_for_close(self) -> None:
        """Async :meth:`finish_for_close` (``aclose``: the loop's own tasks may finish too)."""


logger = logging.getLogger("ctx_memory")


def _settle(task: asyncio.Future[Any]) -> None:
    error = None if task.cancelled() else task.exception()  # read: no "never retrieved"
    if error is not None:  # the caller saw it, unless it was cancelled meanwhile
        logger.debug("a write that ran whole failed: %r", error)


class ManagerCore(Closeable):
    """Settings, store, counter and events of a manager; how it executes an operation."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        store: BaseStore | str | None = None,
        counter: TokenCounter | None = None,
        events: EventEmitter | None = None,
        **overrides: Any,
    ) -> None:
        if isinstance(store, str):
            overrides["store"] = store
            store = None
        if settings is None:
            settings = load_settings(**overrides)
        elif overrides:
            settings = with_overrides(settings, **overrides)
        self.settings = settings
        self.events = events or EventEmitter(enabled=settings.event_emission)
        self.store = store if store is not None else create_store(settings)
        self._lifecycle_counts = {"session_expired": 0, "session_evicted": 0}
        # The store holds the hook, not the manager: managers built on a shared store and
        # dropped without close() (which would close the store) are freed, and their hook
        # leaves the store with them.
        self._remove_hook = self.store.add_lifecycle_hook(_weak_hook(self), key=self.events)
        weakref.finalize(self, self._remove_hook).atexit = False  # exit: nothing to free
        self._store_listeners = self.store.event_listeners()
        for listener in self._store_listeners:
            self.events.on(None, listener)
        self._token_counter = counter
        self._counter_lock = threading.Lock()
        # Work that needs the store, finished by close() / aclose() before the store closes.
        self._closing: list[weakref.ref[PendingWork]] = []
        self._whole: set[asyncio.Future[Any]] = set()  # _run_whole's tasks, until they end

    def __repr__(self) -> str:
        return f"ContextManager(store={self.store!r})"

    @property
    def async_enabled(self) -> bool:
        """Whether async twins use the store's native async I/O (``ASYNC_OPERATIONS``).

        When false the async methods still work: they run the sync store call in a
        worker thread.
        """
        return self.settings.async_operations

    @property
    def token_counter(self) -> TokenCounter:
        """The counter used for every write (built on first use from settings)."""
        if self._token_counter is None:
            with self._counter_lock:
                if self._token_counter is None:
                    s = self.settings
                    self._token_counter = TokenCounter(
                        s.default_model,
                        encoding=s.token_encoding,
                        approximate=s.token_counter == "approximate",
                    )
        return self._token_counter

    def _execute(self, op: Op[R]) -> R:
        return self.store.execute(op)

    async def _aexecute(self, op: Op[R]) -> R:
        if self.settings.async_operations:
            return await self.store.aexecute(op)
        return await asyncio.to_thread(self.store.execute, op)

    def execute(self, op: Op[R]) -> R:
        """Execute one store operation (:mod:`ctx_memory.stores.ops`) on this manager's store.

        For what the manager's methods do not cover (``ctx_memory.recall`` reads and
        saves its index segments this way); no validation, no events.
        """
        return self._execute(op)

    async def aexecute(self, op: Op[R]) -> R:
        """Async :meth:`execute` (in a worker thread when ``ASYNC_OPERATIONS`` is off)."""
        return await self._aexecute(op)

    def _on_lifecycle(self, event_type: str, session_id: str) -> None:
        if event_type in self._lifecycle_counts:
            self._lifecycle_counts[event_type] += 1
            why = "expired (TTL)" if event_type == "session_expired" else "evicted (LRU)"
            logger.info("ctx_memory: session %r %s on %s store", session_id, why, self.store.name)
        self.events.emit(event_type, session_id, at=lifecycle_time())

    def _init(self, session_id: str, now: str) -> Header:
        return new_header(session_id, now=now, encoding=self.token_counter.encoding_name)

    def _created(self, session_id: str, result: WriteResult) -> None:
        if result.created:
            self.events.emit(EventType.SESSION_CREATED, session_id)

    def on(
        self, event_type: EventType | str | None, listener: Callable[[Event], None]
    ) -> Callable[[], None]:
        """Register an event listener (``None``/``"*"`` for all); returns an unsubscriber."""
        return self.events.on(event_type, listener)

    def add_event_listener(
        self, listener: Callable[[Event], None], event_type: EventType | str | None = None
    ) -> Callable[[], None]:
        """Seed 000's name for :meth:`on` (listener first; all events by default)."""
        return self.events.on(event_type, listener)

    def remove_event_listener(
        self, listener: Callable[[Event], None], event_type: EventType | str | None = None
    ) -> None:
        """Remove a listener added with :meth:`add_event_listener`."""
        self.events.off(event_type, listener)

    def _detach(self) -> None:
        self._remove_hook()
        for listener in self._store_listeners:
            self.events.off(None, listener)

    async def _run_whole(self, steps: Coroutine[Any, Any, R]) -> R:
        """Await ``steps`` in a task that a cancellation of the caller does not stop.

        For writes of more than one step (a history edit, then the removal of the
        summaries it made stale): the caller sees its ``CancelledError`` at once, and the
        task goes on to the end, so what the first step stored is never left without the
        others. :meth:`aclose` waits for such tasks before the store closes.
        """
        task = asyncio.ensure_future(steps)
        self._whole.add(task)
        task.add_done_callback(self._whole.discard)
        task.add_done_callback(_settle)
        return await asyncio.shield(task)

    def before_close(self, work: PendingWork) -> None:
        """Have :meth:`close` finish ``work`` before the store closes.

        :meth:`close` calls ``work.finish_for_close()``, :meth:`aclose` awaits
        ``work.afinish_for_close()``. For work in the background that still needs the
        store, such as a background compactor's pending
        summaries: it finishes (within its own time limit) before the store closes.
        ``work`` is held weakly: an object gone since is skipped.
        """
        alive = [ref for ref in self._closing if ref() is not None]  # (dead ones dropped)
        self._closing = [*alive, weakref.ref(work)]

    def _pending_work(self) -> list[PendingWork]:
        work = [ref() for ref in self._closing]
        self._closing = []
        return [w for w in work if w is not None]

    def close(self) -> None:
        """Close the store (stops the garbage collector, releases connections).

        Background work on this manager registered with :meth:`before_close` (pending
        summaries) is finished first.
        """
        for work in self._pending_work():
            work.finish_for_close()
        self._detach()
        self.store.close()

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        loop = asyncio.get_running_loop()
        mine = [task for task in self._whole if task.get_loop() is loop]
        await asyncio.gather(*mine, return_exceptions=True)  # edits whose callers left
        for work in self._pending_work():
            await work.afinish_for_close()
        self._detach()
        await self.store.aclose()


def _weak_hook(manager: ManagerCore) -> Callable[[str, str], bool]:
    """``manager._on_lifecycle`` through a weak reference; ``False`` once it is gone."""
    method = weakref.WeakMethod(manager._on_lifecycle)

    def hook(event_type: str, session_id: str) -> bool:
        found = method()
        if found is None:
            return False  # another manager on the same emitter hears it, if any
        found(event_type, session_id)
        return True

    return hook
