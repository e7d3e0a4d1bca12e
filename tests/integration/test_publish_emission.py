"""``EVENT_EMISSION=false`` turns off publishing too: other processes get no events at all.

With publishing on (``REDIS_PUBLISH_EVENTS`` / ``POSTGRES_PUBLISH_EVENTS``) and emission off,
the managers' events never reached the publisher, but the expiries and evictions the store
reports did (a store lifecycle hook): subscribers got only those. Now they are held back
too when every manager on the store has emission off; a store that no manager uses still
publishes its own reports (``test_expiries_are_published_once``).
"""

from __future__ import annotations

import gc
import threading
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
        loud = ContextManager(store=store, token_counter="approximate")  # kept: it emits
        lifecycle_and_writes(quiet)
        quiet.close()
        wait_for(lambda: "session_expired:b" in received)
        del loud
    assert received == ["session_evicted:a", "session_expired:b"]


def test_emission_stays_off_after_the_stores_managers_are_dropped(
    make_store: Callable[..., BaseStore],
) -> None:
    """A store whose muted managers were dropped (not closed) still publishes nothing."""
    listener: Any = make_store()
    listener.exists("warm-up")
    received: list[str] = []
    store = make_store(ttl_seconds=TTL, publish_events=True)
    with listener.subscribe_events(lambda e: received.append(f"{e['type']}:{e['session_id']}")):
        time.sleep(0.3)
        cm = ContextManager(store=store, event_emission=False, token_counter="approximate")
        cm.add_user_message("gone", "hi")
        del cm
        gc.collect()
        time.sleep(TTL + 0.3)
        assert store.gc() == 1  # the expiry, reported by the store with no manager left
        store.close()  # publishes what is queued before it returns
        loud = ContextManager(store=make_store(publish_events=True), token_counter="approximate")
        loud.add_user_message("sentinel", "hi")
        loud.close()
        wait_for(lambda: "message_added:sentinel" in received)
    assert received == ["session_created:sentinel", "message_added:sentinel"]


_EXITING_JOB = """
import json, sys
from ctx_memory import ContextManager
spec = json.loads(sys.argv[1])
if spec["kind"] == "postgres":
    from ctx_memory.stores.postgres import PostgresStore
    store = PostgresStore(spec["url"], schema=spec["schema"], publish_events=True)
else:
    from ctx_memory.stores.redis import RedisStore
    store = RedisStore(spec["url"], cluster=spec["kind"] == "cluster",
                       key_prefix=spec["prefix"], publish_events=True)
cm = ContextManager(store=store, token_counter="approximate")
for i in range(300):
    cm.add_user_message("job", f"step {i}")
if len(sys.argv) > 2:  # and a summary written in the background after a reply
    import time
    from langchain_core.language_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.runnables import RunnableLambda
    from ctx_memory import ContextualChat
    from ctx_memory.compaction import CompactionPolicy

    def slow_summary(messages):
        time.sleep(0.5)  # a model call, still running when the program ends
        return AIMessage("Steps 0 to 299 were logged.")

    chat = ContextualChat(
        cm, GenericFakeChatModel(messages=iter([AIMessage("Done.")])), max_tokens=4000,
        compaction=CompactionPolicy(summarize_at=300, keep_recent=16, block=8,
                                    summarizer=RunnableLambda(slow_summary)),
        compaction_mode="background",
    )
    chat.invoke("Which step was first?", config={"configurable": {"session_id": "job"}})
# the program ends here: no close()
"""


@pytest.mark.parametrize("background", [False, True], ids=["writes", "background-summary"])
def test_a_program_that_exits_without_close_still_publishes_its_events(
    make_store: Callable[..., BaseStore], background: bool
) -> None:
    """The events still queued at exit are sent before the program ends (they were lost),
    and so is the event of a summary the exit waits for (it was emitted after the flush)."""
    import json
    import subprocess
    import sys

    listener: Any = make_store()
    listener.exists("warm-up")  # (PostgreSQL: the schema exists before LISTEN)
    if hasattr(listener, "schema"):
        spec = {"kind": "postgres", "url": listener._conninfo, "schema": listener.schema}
    else:
        kind = "cluster" if listener.cluster else "redis"
        spec = {"kind": kind, "url": listener._url, "prefix": listener.prefix}
    received: list[str] = []
    with listener.subscribe_events(lambda e: received.append(e["type"])):
        time.sleep(0.3)  # the subscription is live
        done = subprocess.run(
            [sys.executable, "-c", _EXITING_JOB, json.dumps(spec), *(["chat"] * background)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        expected = ["session_created"] + ["message_added"] * 300
        if background:  # the turn, then the summary's compaction entry
            expected += ["message_added", "context_updated"]
        wait_for(lambda: len(received) >= len(expected))
    assert received == expected


def test_a_forked_child_publishes_its_own_events(make_store: Callable[..., BaseStore]) -> None:
    """A child forked after the publisher started (gunicorn --preload, a forking job
    runner) starts its own publishing thread: the parent's does not run in it."""
    import os

    listener: Any = make_store()
    listener.exists("warm-up")
    received: list[str] = []
    with listener.subscribe_events(lambda e: received.append(f"{e['type']}:{e['session_id']}")):
        time.sleep(0.3)
        cm = ContextManager(store=make_store(publish_events=True), token_counter="approximate")
        cm.add_user_message("parent", "before the fork")
        wait_for(lambda: len(received) == 2)
        pid = os.fork()
        if pid == 0:  # the child: write, then end without close() (os._exit skips nothing
            try:  # of ours: the flush runs from sys.exit's atexit handlers)
                cm.add_user_message("child", "from the child")
                time.sleep(0.5)  # its own thread sends it while it runs
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert status == 0
        wait_for(lambda: "message_added:child" in received)
    assert received == [
        "session_created:parent", "message_added:parent",
        "session_created:child", "message_added:child",
    ]  # fmt: skip


def test_closing_the_store_stops_the_subscriptions_it_made(
    make_store: Callable[..., BaseStore],
) -> None:
    """``close()`` stops every listener ``subscribe_events`` started, its return value
    dropped or not (the docs' examples drop it): none reconnects, none calls back."""
    listener: Any = make_store()
    listener.exists("warm-up")  # (PostgreSQL: the schema exists before LISTEN)
    received: list[str] = []
    listener.subscribe_events(lambda e: received.append(e["session_id"]))  # dropped
    kept = listener.subscribe_events(lambda e: received.append("kept:" + e["session_id"]))
    time.sleep(0.3)  # both are live
    writer = ContextManager(store=make_store(publish_events=True), token_counter="approximate")
    writer.add_user_message("before", "hi")
    wait_for(lambda: {"before", "kept:before"} <= set(received))
    kept.close()  # closed by its caller first: the store's close() closes it again, harmlessly
    listener.close()
    received.clear()
    writer.add_user_message("after", "hi")
    writer.close()
    time.sleep(1.0)  # longer than a reconnect takes
    assert received == []


def test_a_callback_can_close_its_store(make_store: Callable[..., BaseStore]) -> None:
    """A listener that shuts the store down from its callback closes it whole: its own
    subscription (no wait for the thread it runs in), the others, the collector."""
    store: Any = make_store(gc_interval_seconds=60)
    store.exists("warm-up")
    errors: list[BaseException] = []
    done = threading.Event()

    def shut_down(_event: dict[str, Any]) -> None:
        try:
            store.close()
        except BaseException as e:
            errors.append(e)
        done.set()

    store.subscribe_events(shut_down)
    received: list[str] = []
    other = store.subscribe_events(lambda e: received.append(e["session_id"]))
    time.sleep(0.3)
    writer = ContextManager(store=make_store(publish_events=True), token_counter="approximate")
    writer.add_user_message("s", "hi")
    assert done.wait(10)
    assert errors == []
    assert store._closed
    assert not store.gc_running
    assert other.closed
    received.clear()
    writer.add_user_message("after", "hi")
    writer.close()
    time.sleep(1.0)  # longer than a reconnect takes
    assert received == []


def test_subscriptions_closed_by_their_caller_are_let_go(
    make_store: Callable[..., BaseStore],
) -> None:
    """The store keeps a subscription until its own close() only while it is open: one
    subscribing and closing in a loop does not grow the store."""
    store: Any = make_store()
    store.exists("warm-up")
    for _ in range(20):
        store.subscribe_events(lambda _event: None).close()
    assert len(store.__dict__.get("_subscriptions", ())) <= 1
    store.close()
