"""What a user gets: ContextManager with default settings against raw redis-py and others.

Run: ``uv run --group bench python benchmarks/bench_manager.py`` (starts its own
``redis-server``; set ``REDIS_URL`` to use a running one). Every case runs in one process
against the same server, interleaved, best of ``BENCH_ROUNDS``; ratios print side by side.

The manager is built the way an app builds it: ``ContextManager(store="redis",
redis_url=..., max_sessions=10_000)``, every other setting at its default (events on,
write tokens on, exact tiktoken counts). Its calls are the public API
(``add_user_message``, ``get_history(last_k=20)``, ``get_history``), so the numbers include
validation, token counting, id generation, encoding and events: what an app pays.
Baselines: raw redis-py (a pipelined ``RPUSH`` + ``PEXPIRE``; ``LRANGE`` + ``json.loads``)
and langchain_community's ``RedisChatMessageHistory``. The in-memory store is measured
against one tiktoken count of the same content, the cost no exact store can avoid.
"""

from __future__ import annotations

import json
import os
import threading
import time
import warnings
from typing import TYPE_CHECKING, Any

import redis
from bench_redis import server

from ctx_memory import ContextManager

if TYPE_CHECKING:
    from collections.abc import Callable

APPENDS = int(os.environ.get("BENCH_APPENDS", "2000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
BIG = 100_000
ALL = 10_000
THREADS, PER_THREAD = 8, 500
TTL = 30 * 86_400  # the default TTL of a Redis store
TEXT = "How do I book a cheap flight to Paris in spring, and which airports are best? " * 2

TARGETS = {
    "append": 1.2,
    "last 20 of 100,000": 1.3,
    "read all 10,000": 1.2,
    f"{THREADS} threads x {PER_THREAD} appends": 1.2,
    "in-memory append": 2.0,
}


def load() -> str:
    """The machine's load average (other work skews every ratio here)."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def interleaved(
    cases: dict[str, Callable[[], Any]], rounds: int = ROUNDS, per: int = 1
) -> dict[str, float]:
    """Best wall time of each case (divided by ``per``) over ``rounds`` rounds.

    The cases alternate within each round, so a burst of other work on the machine
    slows all of them, not the one that happened to run then.
    """
    times = dict.fromkeys(cases, float("inf"))
    for _ in range(rounds):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            times[name] = min(times[name], time.perf_counter() - start)
    return {name: t / per for name, t in times.items()}


def main() -> None:  # noqa: PLR0915 - one script, one report
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from langchain_community.chat_message_histories import RedisChatMessageHistory
    from langchain_core.messages import HumanMessage

    with server() as url:
        admin = redis.Redis.from_url(url)
        raw = redis.Redis.from_url(url)
        cm = ContextManager(store="redis", redis_url=url, max_sessions=10_000)
        lc = RedisChatMessageHistory("lc", url=url, ttl=TTL)
        payload = json.dumps({"role": "user", "content": TEXT})
        message = HumanMessage(TEXT)
        print(
            f"redis-server {admin.info('server')['redis_version']}; ContextManager defaults + "
            f"MAX_SESSIONS=10000 (store={cm.store.name}, events "
            f"{'on' if cm.events.enabled else 'off'}); best of {ROUNDS}; {load()}\n"
        )
        rows: dict[str, dict[str, float]] = {}

        def raw_append() -> None:
            for _ in range(APPENDS):
                pipe = raw.pipeline(transaction=False)
                pipe.rpush("raw", payload)
                pipe.pexpire("raw", TTL * 1000)
                pipe.execute()

        def cm_append() -> None:
            for _ in range(APPENDS):
                cm.add_user_message("cm", TEXT)

        def lc_append() -> None:
            for _ in range(APPENDS):
                lc.add_message(message)

        cm.add_user_message("cm", "warm up")  # the session exists, as in a chat
        rows["append"] = interleaved(
            {"raw": raw_append, "ctx_memory": cm_append, "lc": lc_append}, per=APPENDS
        )

        def fill(n: int) -> None:
            admin.flushdb()
            for start in range(0, n, 5_000):
                k = min(5_000, n - start)
                raw.rpush("raw", *[payload] * k)
                cm.add_messages("read", [HumanMessage(TEXT) for _ in range(k)])

        fill(BIG)
        rows["last 20 of 100,000"] = interleaved(
            {
                "raw": lambda: [json.loads(m) for m in raw.lrange("raw", -20, -1)],
                "ctx_memory": lambda: cm.get_history("read", last_k=20),
            },
            rounds=50,
        )
        fill(ALL)
        rows["read all 10,000"] = interleaved(
            {
                "raw": lambda: [json.loads(m) for m in raw.lrange("raw", 0, -1)],
                "ctx_memory": lambda: cm.get_history("read"),
            }
        )

        def threads(work: Callable[[int], None]) -> float:
            workers = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
            start = time.perf_counter()
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            return (time.perf_counter() - start) / (THREADS * PER_THREAD)

        def raw_worker(i: int) -> None:
            for _ in range(PER_THREAD):
                pipe = raw.pipeline(transaction=False)
                pipe.rpush(f"raw{i}", payload)
                pipe.pexpire(f"raw{i}", TTL * 1000)
                pipe.execute()

        def cm_worker(i: int) -> None:
            for _ in range(PER_THREAD):
                cm.add_user_message("shared", TEXT)

        concurrent: dict[str, float] = {}
        for _ in range(ROUNDS):
            concurrent["raw"] = min(concurrent.get("raw", float("inf")), threads(raw_worker))
            concurrent["ctx_memory"] = min(
                concurrent.get("ctx_memory", float("inf")), threads(cm_worker)
            )
        rows[f"{THREADS} threads x {PER_THREAD} appends"] = concurrent

        memory = ContextManager()
        counter = memory.token_counter
        memory.add_user_message("m", "warm up")
        rows["in-memory append"] = interleaved(
            {
                "raw": lambda: [counter.count(TEXT) for _ in range(APPENDS)],
                "ctx_memory": lambda: [memory.add_user_message("m", TEXT) for _ in range(APPENDS)],
            },
            per=APPENDS,
        )

        print(f"{'':30} {'baseline':>12} {'ctx_memory':>12} {'ratio':>7} {'target':>7}")
        for name, row in rows.items():
            ratio = row["ctx_memory"] / row["raw"]
            target = TARGETS[name]
            verdict = "met" if ratio <= target else "missed"
            print(
                f"{name:30} {row['raw'] * 1e6:10.1f}µs {row['ctx_memory'] * 1e6:10.1f}µs "
                f"{ratio:6.2f}x {target:6.1f}x  {verdict}"
            )
            if "lc" in row:
                print(
                    f"{'  langchain_community':30} {'':12} {row['lc'] * 1e6:10.1f}µs "
                    f"{row['lc'] / row['raw']:6.2f}x (two round trips)"
                )
        print(
            "\nbaseline: raw redis-py (pipelined RPUSH+PEXPIRE / LRANGE+json); for the "
            f"in-memory append, one tiktoken count of the same content; at the end {load()}"
        )
        admin.flushdb()
        for client in (admin, raw):
            client.close()
        cm.close()


if __name__ == "__main__":
    main()
