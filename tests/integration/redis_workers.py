"""Worker functions run in child processes by the Redis/SQLite integration tests.

They live in their own module so ``multiprocessing`` (spawn) can import them.
"""

from __future__ import annotations

from typing import Any


def build_manager(spec: dict[str, Any]) -> Any:
    from ctx_memory.manager import ContextManager
    from ctx_memory.stores.redis import RedisStore
    from ctx_memory.stores.sqlite import SqliteStore

    if spec["kind"] == "sqlite":
        store: Any = SqliteStore(spec["path"])
    else:
        store = RedisStore(
            spec["url"],
            cluster=spec["kind"] == "cluster",
            key_prefix=spec["prefix"],
            publish_events=spec.get("publish", False),
            max_sessions=spec.get("max_sessions"),
        )
    return ContextManager(store=store, token_counter="approximate")


def append_worker(spec: dict[str, Any], worker: int, count: int, session_id: str) -> None:
    cm = build_manager(spec)
    for i in range(count):
        cm.add_user_message(session_id, f"{worker}:{i}")
    cm.close()


def merge_worker(spec: dict[str, Any], worker: int, count: int, session_id: str) -> None:
    cm = build_manager(spec)
    for i in range(count):
        cm.update_partial_context(session_id, {"agents": {f"w{worker}": {f"k{i}": i}}})
    cm.close()


def publish_worker(spec: dict[str, Any], session_id: str) -> None:
    cm = build_manager({**spec, "publish": True})
    cm.add_user_message(session_id, "hello from another process")
    cm.update_partial_context(session_id, {"x": 1})
    cm.delete_context(session_id)
    cm.close()


def list_worker(spec: dict[str, Any], start: Any, results: Any) -> None:
    """List the store once, when ``start`` is set; put the expiries this process saw."""
    from ctx_memory.events import EventType

    cm = build_manager(spec)
    seen: list[str] = []
    cm.on(EventType.SESSION_EXPIRED, lambda event: seen.append(event.session_id))
    start.wait(10)
    cm.list_sessions()
    results.put(seen)
    cm.close()
