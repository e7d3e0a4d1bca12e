"""Several processes on one PostgreSQL session: appends, nested merges, events across processes."""

from __future__ import annotations

import multiprocessing
import time
from typing import TYPE_CHECKING, Any

import pytest
from postgres_workers import append_worker, build_manager, merge_worker, publish_worker

from ctx_memory.manager import ContextManager
from ctx_memory.stores.postgres import PostgresStore

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def spec(postgres_url: str, pg_schema: str) -> dict[str, Any]:
    return {"url": postgres_url, "schema": pg_schema}


@pytest.fixture
def store(spec: dict[str, Any]) -> Iterator[PostgresStore]:
    with PostgresStore(spec["url"], schema=spec["schema"]) as store:
        yield store


def _run(target: Callable[..., None], jobs: list[tuple[Any, ...]]) -> None:
    # fork: the children reuse the parent's imports; each builds its own store and pool.
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=target, args=args) for args in jobs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0


def test_four_processes_append_500_each_to_one_session(
    store: PostgresStore, spec: dict[str, Any]
) -> None:
    store.list_sessions()  # the schema exists before the children race to use it
    _run(append_worker, [(spec, w, 500, "shared {session}") for w in range(4)])
    messages = store.get_messages("shared {session}")
    assert len(messages) == 2000
    header = store.get_header("shared {session}")
    assert header is not None
    assert header["metadata"]["message_count"] == 2000
    assert header["metadata"]["token_count"] == sum(m["token_count"] for m in messages)
    for w in range(4):
        mine = [m["content"] for m in messages if m["content"].startswith(f"{w}:")]
        assert mine == [f"{w}:{i}" for i in range(500)]
    assert len({m["id"] for m in messages}) == 2000
    assert store.get_messages("shared {session}", -3, -1) == messages[-3:]


def test_concurrent_nested_merges_keep_every_key(
    store: PostgresStore, spec: dict[str, Any]
) -> None:
    _run(merge_worker, [(spec, w, 60, "merge") for w in range(4)])
    header = store.get_header("merge")
    assert header is not None
    assert header["shared"] == {
        "agents": {f"w{w}": {f"k{i}": i for i in range(60)} for w in range(4)}
    }


def test_events_reach_another_process(store: PostgresStore, spec: dict[str, Any]) -> None:
    received: list[dict[str, Any]] = []
    with store.subscribe_events(received.append):
        _run(publish_worker, [(spec, "evt")])
        deadline = time.monotonic() + 10
        while len(received) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
    kinds = [e["type"] for e in received]
    assert kinds == ["session_created", "message_added", "context_updated", "session_deleted"]
    assert {e["session_id"] for e in received} == {"evt"}
    assert received[1]["data"]["count"] == 1
    assert received[1]["data"]["roles"] == ["user"]


def test_published_events_are_the_in_process_events(
    store: PostgresStore, spec: dict[str, Any]
) -> None:
    """Another process receives exactly what this process's listeners got (Event.to_dict)."""
    received: list[dict[str, Any]] = []
    local: list[dict[str, Any]] = []
    with store.subscribe_events(received.append):
        cm = build_manager({**spec, "publish": True})
        cm.on(None, lambda event: local.append(event.to_dict()))
        cm.add_user_message("same", "hello")
        cm.add_fetched_context("same", "web", "page", url="https://a.example")
        cm.update_metadata("same", mode="research")
        cm.clear("same", preserve_fetched=True)
        cm.delete_context("same")
        cm.close()  # publishes what is queued before it returns
        deadline = time.monotonic() + 10
        while len(received) < len(local) and time.monotonic() < deadline:
            time.sleep(0.02)
    assert len(local) == 6
    assert received == local


def test_expiries_are_published_once(spec: dict[str, Any]) -> None:
    store = PostgresStore(spec["url"], schema=spec["schema"], ttl_seconds=0.3, publish_events=True)
    received: list[dict[str, Any]] = []
    try:
        with store.subscribe_events(received.append):
            with PostgresStore(spec["url"], schema=spec["schema"], ttl_seconds=0.3) as writer:
                ContextManager(store=writer, token_counter="approximate").add_user_message(
                    "short", "hi"
                )
            time.sleep(0.5)
            assert store.gc() == 1
            store.publisher.close()  # type: ignore[union-attr]
            deadline = time.monotonic() + 10
            while not received and time.monotonic() < deadline:
                time.sleep(0.02)
    finally:
        store.close()
    assert [(e["type"], e["session_id"]) for e in received] == [("session_expired", "short")]
