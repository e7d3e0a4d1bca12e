"""``EVENT_EMISSION=false`` turns off publishing too: other processes get no events at all.

With publishing on (``REDIS_PUBLISH_EVENTS`` / ``POSTGRES_PUBLISH_EVENTS``) and emission off,
the managers' events never reached the publisher, but the expiries and evictions the store
reports did (a store lifecycle hook): subscribers got only those. Now they are held back
too when every manager on the store has emission off; a store that no manager uses still
publishes its own reports (``test_expiries_are_published_once``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest

from ctx_memory import ContextManager

if TYPE_CHECKING:
    from collections.abc import Callable

    from ctx_memory.stores.base import BaseStore

pytestmark = pytest.mark.stores("redis", "cluster", "postgres")

TTL = 1.0


def wait_for(done: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(0.02)


def lifecycle_and_writes(cm: ContextManager) -> None:
    """Writes, an eviction (max_sessions=1) and an expiry found by gc()."""
    cm.add_user_message("a", "hi")
    cm.update_partial_context("a", {"k": 1})
    cm.add_user_message("b", "evicts a")
    time.sleep(TTL + 0.3)
    assert cm.gc() == 1  # b expired


def test_nothing_is_published_with_emission_off(make_store: Callable[..., BaseStore]) -> None:
    listener: Any = make_store()
    listener.exists("warm-up")  # (PostgreSQL: the schema exists before LISTEN)
    received: list[str] = []
    with listener.subscribe_events(lambda e: received.append(f"{e['type']}:{e['session_id']}")):
        time.sleep(0.3)  # the subscription is live
        muted = ContextManager(
            store=make_store(ttl_seconds=TTL, max_sessions=1, publish_events=True),
            event_emission=False,
            token_counter="approximate",
        )
        second = ContextManager(store=muted.store, event_emission=False)  # both muted
        in_process: list[str] = []
        second.on("*", lambda e: in_process.append(e.type.value))
        lifecycle_and_writes(muted)
        muted.close()  # publishes what is queued before it returns

        # A store whose manager emits, after it: its events arrive, so the muted ones
        # would have (each publisher sends in order; the muted one has finished).
        loud = ContextManager(store=make_store(publish_events=True), token_counter="approximate")
        loud.add_user_message("sentinel", "hi")
        loud.close()
        wait_for(lambda: "message_added:sentinel" in received)
        assert in_process == []
        assert received == ["session_created:sentinel", "message_added:sentinel"]

        # One manager of the store emits: the store's reports are published, once (the
        # muted manager's own writes are not).
        received.clear()
        listener.delete("sentinel")  # (a store, not a manager: no event)
        store = make_store(ttl_seconds=TTL, max_sessions=1, publish_events=True)
        quiet = ContextManager(store=store, event_emission=False, token_counter="approximate")
        ContextManager(store=store, token_counter="approximate")
        lifecycle_and_writes(quiet)
        quiet.close()
        wait_for(lambda: "session_expired:b" in received)
    assert received == ["session_evicted:a", "session_expired:b"]
