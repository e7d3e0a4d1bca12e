"""The event publisher in a forked child: every publisher starts over (its own thread).

A publisher forked while another thread was starting its publishing thread (the lock held,
the thread object set, not yet listed as live) kept that state in the child: a lock no one
would release and a thread that never ran, so the child's events were never sent and
``close()`` hung. The child resets every publisher, started or not.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from ctx_memory.stores import _publisher
from ctx_memory.stores._publisher import EventPublisher

if TYPE_CHECKING:
    import pytest


class _Recording(EventPublisher):
    def __init__(self) -> None:
        super().__init__(lambda: None, "test-channel")
        self.sent: list[str] = []

    def _publish(self, payloads: list[str]) -> None:
        self.sent.extend(payloads)


def test_the_fork_handler_resets_a_publisher_caught_starting_its_thread() -> None:
    publisher = _Recording()
    publisher._queue.put("the parent's event")  # the parent's to send, not the child's
    publisher._lock.acquire()  # another thread inside _put at the fork ...
    publisher._thread = threading.Thread(target=lambda: None)  # ... its thread not started
    _publisher._forget_parent_threads()  # what os.register_at_fork runs in the child
    assert publisher._thread is None
    assert publisher._lock.acquire(timeout=1)
    publisher._lock.release()
    publisher._put("the child's event")
    publisher.close(timeout=5)
    assert publisher.sent == ["the child's event"]


def test_when_no_thread_can_start_the_event_is_sent_from_the_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Python 3.12 refuses a new thread at interpreter exit, where a background summary may
    emit the first event of a publisher: it is sent from the calling thread instead."""

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")

    publisher = _Recording()
    monkeypatch.setattr(threading.Thread, "start", refuse)
    publisher._put("at exit")
    assert publisher.sent == ["at exit"]
    assert publisher._thread is None
