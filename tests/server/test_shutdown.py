"""A server shutting down mid-stream: the turn finishes within the grace, or the stream
ends with an ``error`` event; it never just breaks off."""

from __future__ import annotations

import json
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from server_helpers import LiveServer, SlowModel, sse_events

from ctx_memory import ContextManager
from ctx_memory.server import create_app, turns

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

QUESTION = "Tell me, in many words, how to book a cheap flight to Paris in the spring"


@pytest.fixture
def shutting_down() -> Iterator[None]:
    """Shutdown as SIGTERM starts it; sse-starlette's process-wide flag reset after."""
    from sse_starlette.sse import AppStatus

    yield
    AppStatus.should_exit = False


def _stream_then_sigterm(live: LiveServer, session_id: str) -> tuple[list[tuple[str, str]], float]:
    """Open a chat stream, send the server SIGTERM at its first token, read it to the end."""
    body = ""
    with (
        httpx.Client(base_url=live.url, timeout=60) as client,
        client.stream(
            "POST", f"/v1/sessions/{session_id}/chat", json={"question": QUESTION}
        ) as response,
    ):
        assert response.status_code == 200
        for text in response.iter_text():
            body += text
            if "event: token" in body and not live.server.should_exit:
                # what uvicorn's SIGTERM handler calls (sse-starlette hooks it)
                live.server.handle_exit(signal.SIGTERM, None)
                signalled = time.monotonic()
    return sse_events(body), time.monotonic() - signalled


@pytest.mark.usefixtures("shutting_down")
def test_a_stream_open_at_shutdown_finishes_its_turn(manager: ContextManager) -> None:
    app = create_app(manager, chat_model=SlowModel(delay=0.05))  # ~1.5 s of tokens
    with LiveServer(app) as live:
        events, _ = _stream_then_sigterm(live, "finishing")
    assert events[-1][0] == "done"
    history = manager.get_history("finishing")
    assert [r["role"] for r in history] == ["user", "assistant"]
    assert history[1]["id"] == json.loads(events[-1][1])["message_id"]


@pytest.mark.usefixtures("shutting_down")
def test_a_turn_past_the_grace_ends_with_an_error_event_and_records_nothing(
    manager: ContextManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(turns, "SHUTDOWN_GRACE_SECONDS", 1.0)
    app = create_app(manager, chat_model=SlowModel(delay=0.5))  # ~15 s of tokens
    with LiveServer(app) as live:
        events, took = _stream_then_sigterm(live, "cut")
    assert events[-1] == ("error", json.dumps(turns.SHUTTING_DOWN))
    assert [name for name, _ in events[:-1]] == ["token"] * (len(events) - 1)
    assert took < 6  # the grace, sse-starlette's check every 0.5 s, not the whole answer
    assert manager.get_history("cut") == []


def test_serve_finishes_a_research_stream_it_accepted_before_sigterm(
    served: Any, tmp_path: Path
) -> None:
    """``ctx-memory serve`` with a slow search: SIGTERM while the stream waits for it."""
    (tmp_path / "slow_search.py").write_text(
        "import asyncio\n"
        "from ctx_memory.server.models import DemoSearchRetriever\n\n\n"
        "class SlowSearch(DemoSearchRetriever):\n"
        "    async def _aget_relevant_documents(self, query, *, run_manager):\n"
        "        await asyncio.sleep(3)\n"
        "        return self._get_relevant_documents(query, run_manager=run_manager.get_sync())\n",
        encoding="utf-8",
    )
    db = tmp_path / "sessions.sqlite3"
    (tmp_path / "settings.toml").write_text(
        '[ctx_memory]\nSTORE = "sqlite"\n'
        f"SQLITE_PATH = {json.dumps(str(db))}\n"
        'SERVER_RETRIEVER = "slow_search:SlowSearch"\n',
        encoding="utf-8",
    )
    server = served()
    got: dict[str, Any] = {}

    def research() -> None:
        sent = {"question": QUESTION, "stream": True}
        response = httpx.post(f"{server.url}/v1/sessions/st/research", json=sent, timeout=60)
        got["status"], got["events"] = response.status_code, sse_events(response.text)

    asking = threading.Thread(target=research)
    asking.start()
    time.sleep(1.5)  # the request waits for the search
    server.proc.send_signal(signal.SIGTERM)
    asking.join(60)
    server.proc.wait(60)
    assert got["status"] == 200
    names = [name for name, _ in got["events"]]
    assert (names[0], names[-1]) == ("sources", "done")
    with ContextManager(store="sqlite", sqlite_path=str(db)) as stored:
        assert [r["role"] for r in stored.get_history("st")] == ["user", "assistant"]
