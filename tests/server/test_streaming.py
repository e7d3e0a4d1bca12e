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
