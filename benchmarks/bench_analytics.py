"""Analytics across 100,000 sessions: ``analyze()`` on the in-memory store and on SQLite.

Run: ``uv run python benchmarks/bench_analytics.py``. ``BENCH_SESSIONS=20000`` makes a
shorter run, ``BENCH_ROUNDS=5`` takes the best of five, and ``BENCH_STORES=memory,sqlite,redis``
adds Redis (on a ``redis-server`` it starts, or at ``REDIS_URL``). The target (issue 14):
100,000 generated sessions analysed in at most 10 s on two cores.

Sessions are generated with a seeded RNG and written through the public API
(``ContextManager.import_session``), the way an app's sessions would look: 0-8 turns,
assistant replies with a model, ``response_time_ms``, ``sources_used`` and ``cited``, some
tool calls with their results, 0-4 fetched sources, three modes, 30 days of start times.
Writing them is not timed; ``analyze(manager)`` is, from the first page of ids to the
report. The SQLite file is kept in ``BENCH_DIR`` (default: a temporary directory) and
reused when it already holds the sessions.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ctx_memory import ContextManager, InMemoryStore
from ctx_memory.analytics import analyze
from ctx_memory.stores.sqlite import SqliteStore

SESSIONS = int(os.environ.get("BENCH_SESSIONS", "100000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
TARGET_SECONDS = 10.0 * SESSIONS / 100_000
STORES = os.environ.get("BENCH_STORES", "memory,sqlite").split(",")
SEED = 14
MODELS = ("gpt-4o-mini", "gpt-4o", "claude-sonnet-4", "llama-3.1-70b")
MODES = ("normal", "thinking", "research")
TOOLS = ("web_search", "calculator", "weather")
START = datetime(2026, 10, 1, tzinfo=UTC)
QUESTION = "Which of the two airports is closer to the city centre, and how long is the train?"
ANSWER = "Orly is closer; the Orlyval and RER B take about 35 minutes to Chatelet [1]. " * 2
PAGE = "Paris has two main airports. Orly lies 13 km south of the centre. " * 6


def _ts(at: datetime) -> str:
    return at.isoformat()


def session_document(rng: random.Random, index: int) -> dict[str, Any]:
    """One generated session document (what ``import_session`` takes)."""
    sid = f"bench-{index:07d}"
    started = START + timedelta(seconds=rng.randrange(30 * 86_400))
    urls = [f"https://site{rng.randrange(50)}.example/{index}/{k}" for k in range(rng.randrange(5))]
    fetched: dict[str, list[dict[str, Any]]] = {}
    for k, url in enumerate(urls):
        kind = "web_search" if k % 3 else "js_scraping"
        fetched.setdefault(kind, []).append(
            {"source_type": kind, "content": PAGE, "url": url, "timestamp": _ts(started),
             "extracted_data": {"title": f"Source {k}"}}
        )  # fmt: skip
    history: list[dict[str, Any]] = []
    at = started
    for turn in range(rng.choice((0, 1, 1, 2, 3, 4, 6, 8))):
        at += timedelta(seconds=rng.randrange(5, 300))
        history.append({"role": "user", "content": QUESTION, "timestamp": _ts(at),
                        "id": f"{sid}-u{turn}"})  # fmt: skip
        reply: dict[str, Any] = {
            "role": "assistant",
            "content": ANSWER,
            "id": f"{sid}-a{turn}",
            "metadata": {
                "model": rng.choice(MODELS),
                "response_time_ms": round(rng.lognormvariate(6.5, 0.6), 3),
                "sources_used": urls,
                "cited": sorted(rng.sample(range(1, len(urls) + 1), min(len(urls), 2))),
            },
        }
        if rng.random() < 0.2:
            tool = rng.choice(TOOLS)
            call_id = f"{sid}-c{turn}"
            call = {"role": "assistant", "content": "", "id": f"{sid}-t{turn}",
                    "timestamp": _ts(at), "tool_calls": [
                        {"name": tool, "args": {"q": "orly"}, "id": call_id, "type": "tool_call"}
                    ], "metadata": {"model": reply["metadata"]["model"]}}  # fmt: skip
            result = {"role": "tool", "content": "42", "tool_call_id": call_id, "name": tool,
                      "timestamp": _ts(at), "id": f"{sid}-r{turn}"}  # fmt: skip
            history += [call, result]
        at += timedelta(milliseconds=reply["metadata"]["response_time_ms"])
        reply["timestamp"] = _ts(at)
        history.append(reply)
    return {
        "system_prompt": "You are a concise travel assistant.",
        "metadata": {
            "session_id": sid,
            "created_at": _ts(started),
            "timestamp": _ts(at),
            "mode": rng.choice(MODES),
            "current_url": None,
        },
        "fetched_context": fetched,
        "conversation_history": history,
        "shared": {},
    }


def fill(manager: ContextManager, count: int) -> float:
    """Write ``count`` generated sessions (the same ones every run); return the seconds."""
    rng = random.Random(SEED)
    start = time.perf_counter()
    for index in range(count):
        manager.import_session(session_document(rng, index), overwrite=True)
    return time.perf_counter() - start


def measure(name: str, manager: ContextManager) -> dict[str, float]:
    """Best of ``ROUNDS`` full ``analyze()`` runs."""
    best, best_cpu = float("inf"), float("inf")
    report = None
    for _ in range(ROUNDS):
        start, cpu = time.perf_counter(), time.process_time()
        report = analyze(manager)
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    assert report is not None
    assert report.sessions == SESSIONS, (name, report.sessions)
    messages = sum(report.messages_by_role.values())
    return {"seconds": best, "cpu": best_cpu, "messages": messages}


def main() -> None:
    """Fill both stores, time ``analyze`` on each, print a table."""
    print(f"{SESSIONS:,} sessions, best of {ROUNDS}, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    rows = []
    if "memory" in STORES:
        # An app's in-memory store, without the default 100-session LRU limit.
        with ContextManager(store=InMemoryStore(), token_counter="approximate") as manager:
            wrote = fill(manager, SESSIONS)
            rows.append(("memory", wrote, measure("memory", manager)))
    if "sqlite" in STORES:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(os.environ.get("BENCH_DIR", tmp)) / f"analytics-{SESSIONS}.sqlite3"
            store = SqliteStore(str(path))
            with ContextManager(store=store, token_counter="approximate") as manager:
                have = len(manager.list_sessions(limit=SESSIONS + 1))
                wrote = fill(manager, SESSIONS) if have != SESSIONS else 0.0
                rows.append(("sqlite", wrote, measure("sqlite", manager)))
    if "redis" in STORES:  # no target: one round trip per read on loopback
        from bench_redis import server  # starts its own redis-server

        with (
            server() as url,
            ContextManager(
                store="redis", redis_url=url, max_sessions=None, token_counter="approximate"
            ) as manager,
        ):
            wrote = fill(manager, SESSIONS)
            rows.append(("redis", wrote, measure("redis", manager)))
    print(f"{'store':<8} {'write (untimed)':>16} {'analyze':>9} {'CPU':>7} {'sessions/s':>11} "
          f"{'messages':>9} {'target':>8}")  # fmt: skip
    for name, wrote, m in rows:
        ok = "-" if name == "redis" else "met" if m["seconds"] <= TARGET_SECONDS else "MISSED"
        print(f"{name:<8} {wrote:>15.1f}s {m['seconds']:>8.2f}s {m['cpu']:>6.2f}s "
              f"{SESSIONS / m['seconds']:>11,.0f} {m['messages']:>9,.0f} {ok:>8}")  # fmt: skip
    print(f"target: {TARGET_SECONDS:.1f} s wall for {SESSIONS:,} sessions; CPU is this process's "
          "time (SQLite runs in it), which a busy machine does not inflate")  # fmt: skip


if __name__ == "__main__":
    main()
