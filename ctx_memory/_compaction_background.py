"""Summarising after the reply: rung (b) of the compaction ladder off the request path.

``ContextualChat(compaction_mode="background")`` and ``ContextMiddleware(compaction_mode=
"background")`` assemble with their policy's stored compactions and tool-output clearing
but never summarise before the prompt (the assembler gets the policy with
``summarize_at=None``, :func:`prompt_policy`). Once a turn is recorded they hand the session
to a :class:`BackgroundCompactor`, which runs :func:`~ctx_memory.compaction.compact` (sync
callers: a small pool of daemon threads) or :func:`~ctx_memory.compaction.acompact` (async
callers: an asyncio task on the caller's loop, kept referenced until it ends) with the full
policy. The compaction is data in the session, so the next request, in this process or
another, uses it once it is stored.

At most one compaction per session is queued or running in one compactor: a request for a
session already queued is dropped (the queued run reads the session when it starts), and
one for a session being compacted makes that run go once more when it ends (the session
may have grown past the trigger again), never twice at the same time. A summariser that
raises or returns nothing changes nothing; :func:`~ctx_memory.compaction.compact` logs it
as a warning, as before a prompt, and the outcome is kept for :meth:`BackgroundCompactor.
flush`. Any other error (say, the store) is logged with its traceback on the
``ctx_memory.compaction`` logger and kept as an outcome too; it never reaches the caller.

:meth:`BackgroundCompactor.flush` and :meth:`BackgroundCompactor.aflush` wait for the
pending work (tests, scripts, shutdown). At interpreter exit the threads' pending work is
waited for at most :data:`EXIT_TIMEOUT_SECONDS`; the threads are daemons, so a stuck
summariser cannot keep the process alive. Async work lives on its event loop: await
``aflush`` before the loop ends (``asyncio.run`` cancels what is left, which writes nothing).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import weakref
from asyncio import sleep as asleep
from collections import deque
from dataclasses import dataclass, replace
from time import monotonic, sleep
from typing import TYPE_CHECKING, Literal

from langchain_core.runnables.config import var_child_runnable_config

from ctx_memory._exit import at_exit
from ctx_memory.compaction import CompactionOutcome, CompactionPolicy, acompact, compact
from ctx_memory.errors import ValidationError

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage

    from ctx_memory._compaction_summarize import SentRequests
    from ctx_memory.manager import ContextManager

__all__ = [
    "EXIT_TIMEOUT_SECONDS",
    "BackgroundCompactions",
    "BackgroundCompactor",
    "CompactionMode",
    "check_mode",
    "prompt_policy",
]

logger = logging.getLogger("ctx_memory.compaction")

CompactionMode = Literal["before", "background"]
"""When the summarising rung runs: ``"before"`` the prompt is assembled (the reply waits
for the summariser) or in the ``"background"`` once the turn is recorded."""

_MODES = ("before", "background")
_POLL_SECONDS = 0.005
EXIT_TIMEOUT_SECONDS = 10.0
"""At interpreter exit, the longest wait for the threads' pending compactions (in all)."""

Finished = tuple[str, CompactionOutcome]
"""A finished background compaction: the session id and what :func:`compact` did."""


def check_mode(
    mode: object, policy: CompactionPolicy | None, *, owner: str
) -> CompactionMode | None:
    """Validate ``compaction_mode``; the mode, or None when nothing runs in the background.

    Raises:
        ValidationError: An unknown mode, or ``"background"`` without a policy.
    """
    if mode not in _MODES:
        msg = f"{owner}: compaction_mode must be 'before' or 'background', got {mode!r}"
        raise ValidationError(msg)
    if mode == "before":
        return "before"
    if policy is None:
        msg = f"{owner}: compaction_mode='background' needs compaction=CompactionPolicy(...)"
        raise ValidationError(msg)
    return "background"


def prompt_policy(policy: CompactionPolicy) -> CompactionPolicy:
    """The policy the assembler gets in background mode: the same, but never summarising."""
    return replace(policy, summarize_at=None)


@dataclass
class _Slot:
    """A session queued or being compacted.

    ``loop`` is the event loop of the task running it (None: a thread); ``again`` asks the
    run going on to go once more when it ends.
    """

    loop: asyncio.AbstractEventLoop | None
    running: bool = False
    again: bool = False

    def dead(self) -> bool:
        """Whether its task's loop closed without ending it (the task will never run)."""
        return self.loop is not None and self.loop.is_closed()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _deadline_of(timeout: float | None) -> float | None:
    return None if timeout is None else monotonic() + timeout


class BackgroundCompactor:
    """Runs :func:`~ctx_memory.compaction.compact` for sessions, off the request path.

    Args:
        manager: Where the sessions live.
        policy: The full policy (its summary trigger decides whether a run writes).
        workers: Most threads running sync compactions at once (each exits when idle).
        sent: The assembler's last request per session (:attr:`ContextPromptAssembler.sent
            <ctx_memory.prompt.ContextPromptAssembler.sent>`): a run passes the session's
            as ``prefix_messages`` (and its window as ``window_tokens``), so a chat
            summariser repeats the request just answered.
    """

    def __init__(
        self,
        manager: ContextManager,
        policy: CompactionPolicy,
        *,
        workers: int = 2,
        sent: SentRequests | None = None,
    ):
        if workers < 1:
            msg = f"workers must be >= 1, got {workers}"
            raise ValidationError(msg)
        self.manager = manager
        self.policy = policy
        self.workers = workers
        self.sent = sent
        self._lock = threading.Lock()
        self._slots: dict[str, _Slot] = {}
        self._queue: deque[str] = deque()
        self._threads = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._finished: deque[Finished] = deque(maxlen=1024)
        _LIVE.add(self)
        manager.before_close(self)

    def __repr__(self) -> str:
        return f"BackgroundCompactor(pending={len(self._slots)}, workers={self.workers})"

    @property
    def pending(self) -> frozenset[str]:
        """The sessions queued or being compacted."""
        with self._lock:
            self._drop_dead()
            return frozenset(self._slots)

    # ------------------------------------------------------------ bookkeeping (under the lock)

    def _drop_dead(self) -> None:
        for session_id in [s for s, slot in self._slots.items() if slot.dead()]:
            logger.warning(
                "background compaction of session %r dropped: its event loop closed", session_id
            )
            del self._slots[session_id]

    def _coalesced(self, session_id: str) -> bool:
        """Whether a request for ``session_id`` is taken by a run queued or going on."""
        self._drop_dead()
        slot = self._slots.get(session_id)
        if slot is None:
            return False
        if slot.running:
            slot.again = True
        return True

    def _start(self, session_id: str) -> None:
        with self._lock:
            slot = self._slots.get(session_id)
            if slot is not None:
                slot.running = True

    def _done(self, session_id: str, outcome: CompactionOutcome) -> bool:
        """Record ``outcome``; whether to run once more (asked while this run went on)."""
        with self._lock:
            self._finished.append((session_id, outcome))
            slot = self._slots.get(session_id)
            if slot is None:  # dropped meanwhile (its loop closed)
                return False
            if slot.again:
                slot.again = False
                return True
            del self._slots[session_id]
            return False

    def _release(self, session_id: str) -> None:
        """Free an interrupted run's slot (cancelled task, or an error beyond ``Exception``)."""
        with self._lock:
            self._slots.pop(session_id, None)

    # ------------------------------------------------------------ one compaction (I/O twins)

    def _sent(self, session_id: str) -> tuple[list[BaseMessage] | None, int | None]:
        """The request just answered and its history window (a chat summariser's prefix)."""
        sent = None if self.sent is None else self.sent.get(session_id)
        return (None, None) if sent is None else sent

    def _compact_once(self, session_id: str) -> CompactionOutcome:
        try:
            prefix, window = self._sent(session_id)
            return compact(
                self.manager, session_id, self.policy, prefix_messages=prefix, window_tokens=window
            )
        except Exception as e:
            logger.exception("background compaction of session %r failed", session_id)
            return CompactionOutcome(reason=f"compaction failed: {type(e).__name__}: {e}")

    async def _acompact_once(self, session_id: str) -> CompactionOutcome:
        try:
            prefix, window = self._sent(session_id)
            return await acompact(
                self.manager, session_id, self.policy, prefix_messages=prefix, window_tokens=window
            )
        except Exception as e:
            logger.exception("background compaction of session %r failed", session_id)
            return CompactionOutcome(reason=f"compaction failed: {type(e).__name__}: {e}")

    # ------------------------------------------------------------ sync: daemon threads

    def submit(self, session_id: str) -> None:
        """Compact ``session_id`` on a worker thread (returns at once)."""
        with self._lock:
            if self._coalesced(session_id):
                return
            self._slots[session_id] = _Slot(loop=None)
            self._queue.append(session_id)
            if self._threads >= self.workers:
                return
            self._threads += 1
        thread = threading.Thread(target=self._work, name="ctx-memory-compaction", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # interpreter shutting down: no new thread
            logger.warning("background compaction of session %r not started", session_id)
            with self._lock:
                self._threads -= 1
                if self._threads == 0:
                    for queued in self._queue:
                        self._slots.pop(queued, None)
                    self._queue.clear()

    def _next(self) -> str | None:
        """The next queued session, marked running; None (and one thread less) if none."""
        with self._lock:
            if not self._queue:
                self._threads -= 1  # with the check: a submit now starts a thread
                return None
            session_id = self._queue.popleft()
            self._slots[session_id].running = True
            return session_id

    def _work(self) -> None:
        session_id = self._next()
        while session_id is not None:
            try:
                self._run_thread_slot(session_id)
            except BaseException:  # beyond Exception (say, SystemExit): the thread ends
                with self._lock:
                    self._threads -= 1
                raise
            session_id = self._next()

    def _run_thread_slot(self, session_id: str) -> None:
        again = True
        try:
            while again:
                again = self._done(session_id, self._compact_once(session_id))
        finally:
            if again:
                self._release(session_id)

    # ------------------------------------------------------------ async: tasks on the caller's loop

    def asubmit(self, session_id: str) -> None:
        """Compact ``session_id`` in a task on the running loop (returns at once).

        The task is kept referenced until it ends, runs outside the caller's LangChain run
        (it is no child of a run that has ended) and logs what goes wrong.
        """
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._coalesced(session_id):
                return
            self._slots[session_id] = _Slot(loop=loop)
        context = contextvars.copy_context()
        context.run(var_child_runnable_config.set, None)
        task = loop.create_task(self._run_task_slot(session_id), context=context)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    async def _run_task_slot(self, session_id: str) -> None:
        self._start(session_id)
        again = True
        try:
            while again:
                again = self._done(session_id, await self._acompact_once(session_id))
        finally:
            if again:
                self._release(session_id)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            logger.warning("a background compaction was cancelled (nothing written)")
        elif task.exception() is not None:
            logger.error("a background compaction failed", exc_info=task.exception())

    # ------------------------------------------------------------ waiting (twins)

    def _deadline(self, timeout: float | None) -> float | None:
        """The sync wait's deadline; refuses to block a loop that runs some of the work."""
        loop = _running_loop()
        with self._lock:
            blocked = loop is not None and any(s.loop is loop for s in self._slots.values())
        if blocked:
            msg = (
                "flush_compactions() would block the event loop its compactions run on: "
                "use await aflush_compactions()"
            )
            raise RuntimeError(msg)
        return _deadline_of(timeout)

    def _adeadline(self, timeout: float | None) -> float | None:
        """The async wait's deadline (awaiting lets the loop's own tasks run)."""
        return _deadline_of(timeout)

    def _busy(self, deadline: float | None) -> bool:
        """Whether work is pending; raises ``TimeoutError`` once ``deadline`` has passed."""
        with self._lock:
            self._drop_dead()
            if not self._slots:
                return False
            if deadline is not None and monotonic() >= deadline:
                msg = f"background compactions still pending: {sorted(self._slots)}"
                raise TimeoutError(msg)
            return True

    def _take(self) -> list[Finished]:
        with self._lock:
            finished = list(self._finished)
            self._finished.clear()
            return finished

    def flush(self, timeout: float | None = None) -> list[Finished]:
        """Wait until no compaction is queued or running; what finished since the last flush.

        Waits for thread and task work alike (a task on another thread's loop too).

        Raises:
            TimeoutError: Work still pending after ``timeout`` seconds.
            RuntimeError: Called on an event loop that runs some of the work (it could
                never finish): use :meth:`aflush`.
        """
        deadline = self._deadline(timeout)
        while self._busy(deadline):
            sleep(_POLL_SECONDS)
        return self._take()

    async def aflush(
        self,
        timeout: float | None = None,  # noqa: ASYNC109 - flush's twin
    ) -> list[Finished]:
        """Async :meth:`flush` (the loop's own compaction tasks run while it waits)."""
        deadline = self._adeadline(timeout)
        # Polled, not an asyncio.Event: thread work and other loops' tasks end here too.
        while self._busy(deadline):  # noqa: ASYNC110
            await asleep(_POLL_SECONDS)
        return self._take()

    def _drain_threads(self, deadline: float, when: str = "exiting") -> None:
        """At exit: wait for the threads' work until ``deadline`` (tasks' loops are gone)."""
        while True:
            with self._lock:
                left = sorted(s for s, slot in self._slots.items() if slot.loop is None)
            if not left:
                return
            if monotonic() >= deadline:
                logger.warning("%s with background compactions unfinished: %s", when, left)
                return
            sleep(_POLL_SECONDS)

    def finish_for_close(self) -> None:
        """The manager closes: its threads' pending work first (at most the exit wait)."""
        self._drain_threads(monotonic() + EXIT_TIMEOUT_SECONDS, "closing the manager")

    async def afinish_for_close(self) -> None:
        """The manager closes (``aclose``): all pending work first, tasks included."""
        deadline = self._adeadline(EXIT_TIMEOUT_SECONDS)
        try:
            while self._busy(deadline):  # noqa: ASYNC110 - as aflush, without taking outcomes
                await asleep(_POLL_SECONDS)
        except TimeoutError as e:
            logger.warning("closing the manager with %s", e)


_LIVE: weakref.WeakSet[BackgroundCompactor] = weakref.WeakSet()


def _drain_at_exit() -> None:
    deadline = monotonic() + EXIT_TIMEOUT_SECONDS
    for compactor in list(_LIVE):
        compactor._drain_threads(deadline)


at_exit(_drain_at_exit, "work")  # before the events it emits are flushed


class BackgroundCompactions:
    """What ``ContextualChat`` and ``ContextMiddleware`` share of background compaction.

    Both hold a :class:`BackgroundCompactor` in ``_background`` in ``"background"``
    mode (``None`` in ``"before"`` mode, where these do nothing).
    """

    _background: BackgroundCompactor | None

    def _compact_later(self, session_id: str) -> None:
        """Background mode: summarise in a worker thread once the turn is stored."""
        if self._background is not None:
            self._background.submit(session_id)

    def _acompact_later(self, session_id: str) -> None:
        """Background mode: summarise in a task on the running loop once the turn is stored."""
        if self._background is not None:
            self._background.asubmit(session_id)

    @property
    def compactions_pending(self) -> frozenset[str]:
        """Sessions whose background compaction is queued or running (none in ``"before"``)."""
        return self._background.pending if self._background is not None else frozenset()

    def flush_compactions(self, timeout: float | None = None) -> list[Finished]:
        """Wait for the background compactions; ``(session_id, outcome)`` of each finished.

        Lists the runs finished since the previous flush, each with its
        :class:`~ctx_memory.compaction.CompactionOutcome` (``outcome.entry`` is the
        compaction written, else ``outcome.reason`` says why not). ``[]`` in
        ``"before"`` mode. For tests, scripts and shutdown.

        Raises:
            TimeoutError: Work still pending after ``timeout`` seconds.
            RuntimeError: Called on the event loop its compaction tasks run on: use
                :meth:`aflush_compactions`.
        """
        if self._background is None:
            return []
        return self._background.flush(timeout)

    async def aflush_compactions(
        self,
        timeout: float | None = None,  # noqa: ASYNC109 - the twin of flush_compactions
    ) -> list[Finished]:
        """Async :meth:`flush_compactions`: await it before the event loop ends."""
        if self._background is None:
            return []
        return await self._background.aflush(timeout)
