"""Worker functions run in child processes by the PostgreSQL integration tests."""

from __future__ import annotations

from typing import Any


def build_manager(spec: dict[str, Any]) -> Any:
    from ctx_memory.manager import ContextManager
    from ctx_memory.stores.postgres import PostgresStore

    store = PostgresStore(
        spec["url"], schema=spec["schema"], publish_events=spec.get("publish", False)
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
