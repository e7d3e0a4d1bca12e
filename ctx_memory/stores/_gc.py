"""The background garbage collector of the persistent stores: a thread calling ``gc()``.

It holds its store weakly, so a store dropped without :meth:`close` does not live on in
its collector; a failing ``gc()`` (server down, database locked) is logged and retried at
the next tick.
"""

from __future__ import annotations

import logging
import math
import threading
import weakref
from typing import TYPE_CHECKING

from ctx_memory.errors import ConfigurationError, StoreError
from ctx_memory.stores.base import MAX_TTL_SECONDS

if TYPE_CHECKING:
    from collections.abc import Callable

    from ctx_memory.config import Settings

__all__ = ["MIN_GC_INTERVAL_SECONDS", "GarbageCollector", "check_interval", "gc_interval"]

MIN_GC_INTERVAL_SECONDS = 0.01
"""The shortest collector interval: below it the thread would spin, a server under a loop."""

logger = logging.getLogger(__name__)


def gc_interval(settings: Settings) -> float | None:
    """The interval of the background collector ``settings`` ask for, or ``None``.

    ``GARBAGE_COLLECTION`` on (the default) and a session TTL: every
    ``GC_INTERVAL_SECONDS``. Without a TTL nothing expires, so nothing is collected.
    """
    if settings.garbage_collection and settings.ttl_seconds:
        return settings.gc_interval_seconds
    return None


def check_interval(interval: float | None) -> float | None:
    """``interval`` if it is ``None`` or 10 ms to ten years (in seconds), else raise.

    Raises:
        ConfigurationError: Names ``GC_INTERVAL_SECONDS``.
    """
    if interval is None:
        return None
    if isinstance(interval, bool) or not (
        math.isfinite(interval) and MIN_GC_INTERVAL_SECONDS <= interval <= MAX_TTL_SECONDS
    ):
        msg = (
            f"must be a number of seconds from {MIN_GC_INTERVAL_SECONDS} up to"
            f" {MAX_TTL_SECONDS} (ten years, as a TTL), got {interval!r}"
        )
        raise ConfigurationError("GC_INTERVAL_SECONDS", msg)
    return interval


class GarbageCollector:
    """A daemon thread that calls ``collect`` every ``interval`` seconds until stopped.

    Args:
        collect: The store's bound ``gc`` method (held through a weak reference).
        interval: Seconds between two calls.
        name: Shown in logs: the store's ``repr`` (no password).
    """

    def __init__(self, collect: Callable[[], int], interval: float, *, name: str) -> None:
        check_interval(interval)
        self._collect = weakref.WeakMethod(collect)
        self._interval = interval
        self._name = name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ctx-memory-gc", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            collect = self._collect()
            if collect is None:  # the store was garbage-collected without close()
                return
            try:
                collect()
            except StoreError as e:
                logger.warning(
                    "garbage collection of %s failed, retrying in %gs: %s",
                    self._name,
                    self._interval,
                    e,
                )
            except Exception:
                logger.exception(
                    "garbage collection of %s failed, retrying in %gs", self._name, self._interval
                )
            del collect  # hold no strong reference while waiting

    def stop(self) -> None:
        """Stop the thread and wait for a collection under way to end. Idempotent."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()

    @property
    def running(self) -> bool:
        """Whether the thread is alive."""
        return self._thread.is_alive()
