"""Streaming over a real uvicorn server: tokens arrive as the model makes them, and a
request the client abandons mid-stream records nothing (as ``ContextualChat`` documents)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import httpx
from server_helpers import LiveServer, SlowModel, sse_events

from ctx_memory.server import create_app

if TYPE_CHECKING:
    from ctx_memory import ContextManager

QUESTION = "Tell me, in many words, how to book a cheap flight to Paris in the spring"


def test_tokens_arrive_while_the_model_is_still_answering(manager: ContextManager) -> None:
    app = create_app(manager, chat_model=SlowModel(delay=0.05))
    with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=30) as client:
        started = time.perf_counter()
        seen: list[tuple[float, str]] = []
        params = {"session_id": "s", "question": QUESTION}
        with client.stream("GET", "/chat_response/", params=params) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-store"
            seen.extend(
                (time.perf_counter() - started, line[6:].strip())
                for line in response.iter_lines()
                if line.startswith("event:")
            )
    first_token = next(t for t, name in seen if name == "token")
    done = next(t for t, name in seen if name == "done")
    assert done - first_token > 0.5  # ~30 chunks 50 ms apart: the first came long before
    assert [r["role"] for r in manager.get_history("s")] == ["user", "assistant"]


def test_a_stream_cancelled_mid_answer_records_no_turn(manager: ContextManager) -> None:
    app = create_app(manager, chat_model=SlowModel(delay=0.05))
    with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=30) as client:
        tokens = 0
        params = {"session_id": "cut", "question": QUESTION}
        with client.stream("GET", "/chat_response/", params=params) as response:
            for line in response.iter_lines():
                tokens += line == "event: token"
                if tokens == 3:
                    break  # leaving the block closes the connection mid-stream
        time.sleep(3.0)  # longer than the rest of the answer would have taken
        assert manager.get_history("cut") == []
        # the research variant: its sources are recorded first, the turn is not
        with client.stream(
            "GET", "/get_adv_response/", params={"session_id": "cut2", "question": QUESTION}
        ) as response:
            for line in response.iter_lines():
                if line == "event: token":
                    break
        time.sleep(3.0)
        assert manager.get_history("cut2") == []
        assert manager.get_fetched_context("cut2")["web_search"]
        # the server is fine afterwards: a whole turn is recorded once
        whole = client.get("/chat_response/", params={"session_id": "cut", "question": "Hi"})
        done = json.loads(sse_events(whole.text)[-1][1])
        history = manager.get_history("cut")
        assert [r["role"] for r in history] == ["user", "assistant"]
        assert history[1]["id"] == done["message_id"]


def test_a_model_failing_mid_stream_ends_with_an_error_event(manager: ContextManager) -> None:
    class Failing(SlowModel):
        async def _astream(self, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
            count = 0
            async for chunk in super()._astream(*args, **kwargs):  # type: ignore[arg-type]
                count += 1
                if count == 3:
                    raise ConnectionError("the model's connection dropped")
                yield chunk

    app = create_app(manager, chat_model=Failing(delay=0.0))
    with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=30) as client:
        response = client.get("/chat_response/", params={"session_id": "f", "question": QUESTION})
    events = sse_events(response.text)
    assert events[-1][0] == "error"
    assert json.loads(events[-1][1])["error"] == "turn_failed"
    assert "connection dropped" not in response.text  # no internals to the client
    assert manager.get_history("f") == []


def _cut_after_first_token(client: httpx.Client, path: str, params: dict[str, str]) -> None:
    with client.stream("GET", path, params=params) as response:
        for line in response.iter_lines():
            if line == "event: token":
                return  # leaving the block closes the connection mid-stream


def test_a_cancelled_first_turn_keeps_a_session_another_client_wrote_meanwhile(
    manager: ContextManager,
) -> None:
    """A stream opening a new session is cancelled after an import of that id landed:
    the session is the import's, not the stream's to take back."""
    manager.set_system_prompt("tmpl", "You are the travel agent of ACME.")
    manager.update_partial_context("tmpl", {"tier": "gold"})
    document = json.loads(manager.export_session("tmpl"))
    manager.delete_context("tmpl")
    app = create_app(manager, chat_model=SlowModel(delay=0.05))
    with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=30) as client:
        params = {"session_id": "imp", "question": QUESTION}
        with client.stream("GET", "/chat_response/", params=params) as response:
            for line in response.iter_lines():
                if line == "event: token":
                    assert client.put("/v1/sessions/imp", json=document).status_code == 200
                    break
        time.sleep(3.0)
        stored = client.get("/v1/sessions/imp")
    assert stored.status_code == 200
    assert stored.json()["shared"] == {"tier": "gold"}


def test_a_cancelled_research_turn_that_found_nothing_new_takes_back_its_page(
    manager: ContextManager,
) -> None:
    """The same research question again adds no source: cancelled, its page goes back."""
    app = create_app(manager, chat_model=SlowModel(delay=0.05))
    with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=30) as client:
        asked = {"session_id": "r", "question": QUESTION}
        client.get("/get_adv_response/", params={**asked, "current_url": "https://home.example"})
        _cut_after_first_token(
            client, "/get_adv_response/", {**asked, "current_url": "https://cancelled.example"}
        )
        time.sleep(3.0)
    assert manager.get_metadata("r")["current_url"] == "https://home.example"
    assert len(manager.get_history("r")) == 2


def test_a_model_failing_before_its_first_token_is_a_json_error(manager: ContextManager) -> None:
    from fastapi.testclient import TestClient

    class Down(SlowModel):
        async def _astream(self, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
            raise ConnectionError("provider said 429 for key sk-secret-123")
            yield  # an async generator

        def _generate(self, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
            raise ConnectionError("provider said 429 for key sk-secret-123")

    app = create_app(manager, chat_model=Down(delay=0.0))
    client = TestClient(app, raise_server_exceptions=False)
    for stream in ("true", "false"):
        response = client.get(
            "/chat_response/", params={"session_id": "d", "question": "hi", "stream": stream}
        )
        assert response.status_code == 502
        assert response.json()["error"] == "upstream_error"
        assert "sk-secret" not in response.text
    assert manager.get_history("d") == []
