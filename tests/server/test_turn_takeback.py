"""A failed turn takes back what its request wrote, and never another client's write.

A turn on a new session creates it (its mode and page go to the metadata first). When the
turn then fails, deleting the session would race with another client's append landing
between the check and the delete: the session stays instead.
"""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from server_helpers import LiveServer
from typing_extensions import override

from ctx_memory import ContextManager
from ctx_memory.server import create_app

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

OVER_BUDGET = "word " * 2000  # alone over SERVER_MAX_TOKENS = 1200
STORES = ["memory", "sqlite"]


def _store_options(store: str, tmp_path: Path) -> dict[str, Any]:
    if store == "sqlite":
        return {"store": "sqlite", "sqlite_path": str(tmp_path / "sessions.sqlite3")}
    return {"store": "memory"}


class _AppendsBeforeDeleting(ContextManager):
    """A manager on which another client's append is answered 201 just before a delete.

    That is the interleaving of the race: a failed turn has checked that its new session
    holds nothing, another client's ``POST .../messages`` lands and is acknowledged, then
    the session would be deleted.
    """

    url = ""
    acknowledged: tuple[str, ...] = ()

    @override
    async def adelete_context(self, session_id: str) -> bool:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:
            response = await client.post(
                f"/v1/sessions/{session_id}/messages",
                json={"role": "user", "content": "keep me", "id": "keep"},
            )
        if response.status_code == 201:
            self.acknowledged = (*self.acknowledged, session_id)
        return await super().adelete_context(session_id)


@pytest.fixture(params=STORES)
def racing(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[_AppendsBeforeDeleting]:
    options = _store_options(request.param, tmp_path)
    with _AppendsBeforeDeleting(server_max_tokens=1200, **options) as manager:
        yield manager


@pytest.mark.parametrize("stream", [False, True])
def test_a_failed_turn_never_deletes_an_append_acknowledged_meanwhile(
    racing: _AppendsBeforeDeleting, stream: bool
) -> None:
    with LiveServer(create_app(racing)) as live, httpx.Client(base_url=live.url) as client:
        racing.url = live.url
        turn = client.post(
            "/v1/sessions/new/chat",
            json={"question": OVER_BUDGET, "stream": stream, "current_url": "https://x.example"},
        )
        assert turn.status_code == 422
        if not racing.acknowledged:  # the turn deleted nothing: the append comes after
            appended = client.post(
                "/v1/sessions/new/messages",
                json={"role": "user", "content": "keep me", "id": "keep"},
            )
            assert appended.status_code == 201
        stored = client.get("/v1/sessions/new/messages")
    assert stored.status_code == 200
    assert [m["id"] for m in stored.json()["messages"]] == ["keep"]


@pytest.mark.parametrize("store", STORES)
def test_concurrent_failed_turns_and_appends_lose_no_acknowledged_message(
    store: str, served: Any, tmp_path: Path
) -> None:
    """Real concurrency on ``ctx-memory serve``: rounds of an over-budget turn and an append
    on a new session at once (before the fix, a few in 100 appends answered 201 were lost)."""
    (tmp_path / "settings.toml").write_text(
        f'[ctx_memory]\nSTORE = "{store}"\nSERVER_MAX_TOKENS = 1200\n'
        "SERVER_RATE_LIMIT_PER_MINUTE = 0\n",
        encoding="utf-8",
    )
    server = served()
    lost: list[tuple[str, int]] = []
    limits = httpx.Limits(max_connections=20)
    with httpx.Client(base_url=server.url, timeout=60, limits=limits) as client:

        def one(k: int) -> None:
            session = f"race{k}"
            answers: dict[str, int] = {}

            def turn() -> None:
                sent = {"question": OVER_BUDGET, "stream": k % 2 == 0, "current_url": "u"}
                answers["turn"] = client.post(f"/v1/sessions/{session}/chat", json=sent).status_code

            def append() -> None:
                threading.Event().wait(random.uniform(0, 0.03))
                sent = {"role": "user", "content": "keep me", "id": f"keep{k}"}
                answers["append"] = client.post(
                    f"/v1/sessions/{session}/messages", json=sent
                ).status_code

            threads = [threading.Thread(target=turn), threading.Thread(target=append)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert answers == {"turn": 422, "append": 201}
            read = client.get(f"/v1/sessions/{session}/messages")
            ids = [m["id"] for m in read.json().get("messages", [])]
            if ids != [f"keep{k}"]:
                lost.append((session, read.status_code))

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(one, range(200)))
    assert lost == []


def test_a_failed_turn_leaves_its_new_session_with_only_its_mode_and_page(
    manager: ContextManager,
) -> None:
    from fastapi.testclient import TestClient

    from ctx_memory.config import load_settings

    client = TestClient(create_app(manager, load_settings(server_max_tokens=1200)))
    refused = client.post(
        "/v1/sessions/fresh/chat",
        json={"question": OVER_BUDGET, "mode": "normal", "current_url": "https://a.example"},
    )
    assert refused.status_code == 422
    stats = manager.get_memory_stats("fresh")
    assert (stats["exists"], stats["message_count"], stats["fetched_item_count"]) == (True, 0, 0)
    metadata = manager.get_metadata("fresh")
    assert (metadata["mode"], metadata["current_url"]) == ("normal", "https://a.example")
