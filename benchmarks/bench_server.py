"""The HTTP service's overhead over calling the manager directly, and SSE first-token latency.

Run: ``uv run python benchmarks/bench_server.py`` (``make bench`` runs it). One run,
side by side, on loopback with the in-memory store:

* ``get_memory_stats`` and ``add_webtext``: the median of ``GET /get_memory_stats/`` and
  ``POST /add_webtext/`` (a keep-alive ``http.client`` connection to ``uvicorn`` in its own
  process, the app as ``ctx-memory serve`` builds it, no keys, a rate limit that never
  refuses) against the median of the
  same manager calls made directly in this process (``get_memory_stats``;
  ``ContextIntegration.add_web_content``, which is what the endpoint calls). Rounds are
  interleaved; the overhead is the difference of the medians. Target: <= 1 ms.
* SSE first token: the server's chat model puts ``time.monotonic_ns()`` (CLOCK_MONOTONIC,
  one clock for every process of the machine) into its first token as it yields it; the
  client reads the first ``token`` event and subtracts. That is the time from the model's
  first token to the client holding it: ContextualChat, the SSE encoding, uvicorn and the
  socket. Target: <= 5 ms at the median.

``BENCH_REQUESTS`` (default 2000) requests per case; ``BENCH_STREAMS`` (default 300)
streams.
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from langchain_core.messages import AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk

from ctx_memory import ContextManager
from ctx_memory.server.models import DemoChatModel
from ctx_memory.web import ContextIntegration

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

REQUESTS = int(os.environ.get("BENCH_REQUESTS", "2000"))
STREAMS = int(os.environ.get("BENCH_STREAMS", "300"))
ROUNDS = 5
PAGE = "Paris (CDG) from New York (JFK): daily non-stop flights, from $420 round trip. " * 8


class StampingModel(DemoChatModel):
    """The demo model whose first streamed token is the monotonic time it was yielded."""

    async def _astream(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        words = self.reply_to(messages).split(" ")
        yield ChatGenerationChunk(message=AIMessageChunk(content=f"{time.monotonic_ns()} "))
        for index, word in enumerate(words):
            chunk = AIMessageChunk(content=word + (" " if index < len(words) - 1 else ""))
            if index == len(words) - 1:
                chunk.chunk_position = "last"
            yield ChatGenerationChunk(message=chunk)


def serve(port: int) -> None:
    """The server process: the app ``ctx-memory serve`` builds, with the stamping model."""
    import uvicorn

    from ctx_memory.config import load_settings
    from ctx_memory.server import create_app

    # The rate limiter runs (its cost is part of the overhead) but never refuses.
    settings = load_settings(server_rate_limit_per_minute=1e12, server_rate_limit_burst=10**9)
    app = create_app(ContextManager(settings), chat_model=StampingModel())
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_server() -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    msg = "the server did not start"
    raise RuntimeError(msg)


def _timed(fn: Callable[[int], Any], count: int, offset: int) -> list[float]:
    times = []
    for i in range(count):
        start = time.perf_counter()
        fn(offset + i)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    proc, port = _start_server()
    try:
        measure(port)
    finally:
        proc.terminate()
        proc.wait(10)


def measure(port: int) -> None:  # noqa: PLR0915 - a script: one page, top to bottom
    conn = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"Content-Type": "application/json"}

    def http_call(method: str, path: str, body: bytes | None = None) -> bytes:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        assert 200 <= response.status < 300, data
        return data

    manager = ContextManager()
    integration = ContextIntegration(manager)
    for target in (manager,):
        target.add_user_message("stats", "How do I book a cheap flight to Paris?")
        target.add_assistant_message("stats", "Book 6-8 weeks ahead.", model="m")
    http_call(
        "POST",
        "/v1/sessions/stats/messages",
        json.dumps({"role": "user", "content": "How do I book a cheap flight to Paris?"}).encode(),
    )
    http_call(
        "POST",
        "/v1/sessions/stats/messages",
        json.dumps({"role": "assistant", "content": "Book 6-8 weeks ahead."}).encode(),
    )
    stats_path = "/get_memory_stats/?" + urlencode({"session_id": "stats"})

    def direct_stats(_: int) -> None:
        manager.get_memory_stats("stats")

    def http_stats(_: int) -> None:
        http_call("GET", stats_path)

    def direct_webtext(i: int) -> None:
        integration.add_web_content(
            None, f"{PAGE} {i}", "https://airline.example/paris", session_id=f"web-{i % 50}"
        )

    def http_webtext(i: int) -> None:
        body = {
            "session_id": f"web-{i % 50}",
            "text_content": f"{PAGE} {i}",
            "current_url": "https://airline.example/paris",
        }
        http_call("POST", "/add_webtext/", json.dumps(body).encode())

    # warm up both sides (tiktoken, imports, connection)
    for fn in (direct_stats, http_stats, direct_webtext, http_webtext):
        _timed(fn, 200, 10_000_000)

    results: dict[str, list[float]] = {k: [] for k in ("ds", "hs", "dw", "hw")}
    per_round = max(1, REQUESTS // ROUNDS)
    for round_ in range(ROUNDS):
        offset = round_ * per_round
        results["ds"] += _timed(direct_stats, per_round, offset)
        results["hs"] += _timed(http_stats, per_round, offset)
        results["dw"] += _timed(direct_webtext, per_round, offset)
        results["hw"] += _timed(http_webtext, per_round, offset)

    # SSE: first token latency
    latencies = []
    for i in range(STREAMS):
        path = "/chat_response/?" + urlencode({"session_id": f"sse-{i % 20}", "question": "Hi?"})
        conn.request("GET", path)
        response = conn.getresponse()
        assert response.status == 200
        first_at: float | None = None
        stamp: int | None = None
        event = ""
        while True:
            line = response.readline()
            if not line:
                break
            text = line.decode().rstrip("\r\n")
            if text.startswith("event:"):
                event = text[6:].strip()
            elif text.startswith("data:") and event == "token" and stamp is None:
                now = time.monotonic_ns()
                stamp = int(json.loads(text[5:])["content"].split()[0])
                first_at = (now - stamp) / 1e6
            elif text.startswith("data:") and event == "done":
                break
        response.read()  # the rest (nothing after "done" but the end of the chunked body)
        assert first_at is not None
        if i >= 20:  # past the warm-up
            latencies.append(first_at)

    conn.close()

    def med(values: list[float]) -> float:
        return statistics.median(values) * 1000

    ds, hs, dw, hw = (med(results[k]) for k in ("ds", "hs", "dw", "hw"))
    print(f"HTTP service on loopback, in-memory store; {REQUESTS} requests per case, medians")
    print()
    print("| operation | manager directly | over HTTP | overhead | target |")
    print("|---|---:|---:|---:|---:|")
    for name, direct, over in (("get_memory_stats", ds, hs), ("add_webtext", dw, hw)):
        verdict = "met" if over - direct <= 1.0 else "MISSED"
        print(
            f"| {name} | {direct:.3f} ms | {over:.3f} ms | **{over - direct:.3f} ms** |"
            f" <= 1 ms: {verdict} |"
        )
    p50 = statistics.median(latencies)
    p90 = statistics.quantiles(latencies, n=10)[-1]
    verdict = "met" if p50 <= 5.0 else "MISSED"
    print()
    print(
        f"| SSE first token after the model's first token ({len(latencies)} streams) | p50 | p90 |"
        " target |"
    )
    print("|---|---:|---:|---:|")
    print(
        f"| model yields → client reads the token event | **{p50:.3f} ms** | {p90:.3f} ms |"
        f" <= 5 ms: {verdict} |"
    )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]))
    else:
        main()
