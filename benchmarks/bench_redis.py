"""RedisStore against raw redis-py and langchain_community's RedisChatMessageHistory.

Run: ``uv run --group bench python benchmarks/bench_redis.py`` (starts its own
``redis-server`` on a free loopback port; set ``REDIS_URL`` to use a running server).
Every case runs against the same server in one process; ratios are printed side by side.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import redis

from ctx_memory.schema import dumps, now_iso
from ctx_memory.stores.base import EncodedMessage, new_header
from ctx_memory.stores.redis import RedisStore

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

APPENDS = int(os.environ.get("BENCH_APPENDS", "3000"))
BIG = 100_000
ALL = 10_000
TTL = 3600
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))


@contextmanager
def server() -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    exe = shutil.which("redis-server")
    if exe is None:
        msg = "redis-server not found: install it (apt-get install redis-server) or set REDIS_URL"
        raise SystemExit(msg)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                tmp,
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            client = redis.Redis(port=port)
            for _ in range(500):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.01)
            client.close()
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait()


def message(i: int) -> dict[str, Any]:
    return {
        "role": "user" if i % 2 == 0 else "assistant",
        "content": f"message number {i}: " + "lorem ipsum dolor sit amet " * 4,
        "timestamp": now_iso(),
        "metadata": {},
        "token_count": 30,
        "id": f"msg-{i}",
    }


def commands(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if name not in ("cmdstat_info", "cmdstat_config|resetstat", "cmdstat_config")
    }


@contextmanager
def counting_sends() -> Iterator[list[int]]:
    """Count the packed writes redis-py puts on the wire (one per round trip)."""
    sends = [0]
    original = redis.connection.AbstractConnection.send_packed_command

    def send(self: Any, command: Any, check_health: bool = True) -> None:
        sends[0] += 1
        original(self, command, check_health)

    redis.connection.AbstractConnection.send_packed_command = send  # type: ignore[method-assign]
    try:
        yield sends
    finally:
        redis.connection.AbstractConnection.send_packed_command = original  # type: ignore[method-assign]


def timed(fn: Callable[[], Any], repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_append(url: str, admin: redis.Redis) -> dict[str, tuple[float, float, float]]:
    """Per implementation: (µs per message, server commands per message, round trips per message).

    Every implementation appends the same messages with the same one-hour sliding TTL. The
    RedisStore loop also does what its caller (the ContextManager) does per append: take a
    timestamp and build the init header, so the store is not flattered.
    """
    from langchain_community.chat_message_histories import RedisChatMessageHistory
    from langchain_core.messages import HumanMessage

    raw = redis.Redis.from_url(url)
    store = RedisStore(url, key_prefix="bench", ttl_seconds=TTL)
    history = RedisChatMessageHistory("append", url=url, ttl=TTL)
    payloads = [dumps(message(i)) for i in range(APPENDS)]
    lc_messages = [HumanMessage(message(i)["content"]) for i in range(APPENDS)]

    def raw_append() -> None:
        for p in payloads:
            pipe = raw.pipeline(transaction=False)
            pipe.rpush("raw:append", p)
            pipe.pexpire("raw:append", TTL * 1000)
            pipe.execute()

    def store_append() -> None:
        for i, p in enumerate(payloads):  # as ContextManager._append_flow calls it
            now = now_iso()
            store.append_messages(
                "append",
                [EncodedMessage(p, 30, f"msg-{i}")],
                init=new_header("append", now=now, encoding="o200k_base"),
                now=now,
            )

    encoded = [[EncodedMessage(p, 30, f"msg-{i}")] for i, p in enumerate(payloads)]
    stamp = now_iso()
    header = new_header("append", now=stamp, encoding="o200k_base")

    def store_call_only() -> None:
        for m in encoded:  # inputs prebuilt, like raw's payloads: the store's own cost
            store.append_messages("append", m, init=header, now=stamp)

    def lc_append() -> None:
        for m in lc_messages:
            history.add_message(m)

    cases = {
        "raw redis-py": raw_append,
        "RedisStore": store_append,
        "RedisStore, call only": store_call_only,
        "langchain_community": lc_append,
    }
    best: dict[str, float] = dict.fromkeys(cases, float("inf"))
    per_msg: dict[str, float] = {}
    trips: dict[str, float] = {}
    for name, fn in cases.items():  # round trips, counted on a separate, untimed run
        admin.flushdb()
        fn()  # warm up: the first append of a session creates it
        with counting_sends() as sends:
            fn()
        trips[name] = sends[0] / APPENDS
    for _ in range(ROUNDS):  # interleaved rounds, best of each: fair on a noisy machine
        for name, fn in cases.items():
            admin.flushdb()
            fn()  # warm up (script load, connections)
            admin.flushdb()
            admin.config_resetstat()
            best[name] = min(best[name], timed(fn))
            per_msg[name] = sum(commands(admin).values()) / APPENDS
    out = {name: (best[name] / APPENDS * 1e6, per_msg[name], trips[name]) for name in cases}
    raw.close()
    store.close()
    return out


def fill(url: str, admin: redis.Redis, n: int) -> tuple[RedisStore, Any, redis.Redis]:
    from langchain_community.chat_message_histories import RedisChatMessageHistory
    from langchain_core.messages import HumanMessage, message_to_dict

    admin.flushdb()
    raw = redis.Redis.from_url(url)
    store = RedisStore(url, key_prefix="bench")
    history = RedisChatMessageHistory("read", url=url)
    payloads = [dumps(message(i)) for i in range(n)]
    lc = [json.dumps(message_to_dict(HumanMessage(message(i)["content"]))) for i in range(n)]
    now = now_iso()
    for start in range(0, n, 5000):
        chunk = payloads[start : start + 5000]
        raw.rpush("raw:read", *chunk)
        store.append_messages(
            "read",
            [EncodedMessage(p, 30, f"msg-{start + i}") for i, p in enumerate(chunk)],
            init=new_header("read", now=now, encoding="o200k_base"),
            now=now,
        )
        admin.lpush("message_store:read", *lc[start : start + 5000])  # newest first, as lc does
    return store, history, raw


def main() -> None:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    with server() as url:
        admin = redis.Redis.from_url(url)
        parser = "hiredis" if redis.utils.HIREDIS_AVAILABLE else "pure-Python parser"
        print(
            f"redis-server {admin.info('server')['redis_version']} at {url}; "
            f"redis-py {redis.__version__} ({parser}); best of {ROUNDS} interleaved rounds\n"
        )

        append = bench_append(url, admin)
        base = append["raw redis-py"][0]
        print(f"append one message with TTL ({APPENDS} appends, one call each)")
        print(
            f"  {'':22} {'µs/msg':>8} {'msgs/s':>8} {'x raw':>6} {'round trips':>11} "
            f"{'server cmds':>11}"
        )
        for name, (us, cmds, trips) in append.items():
            print(
                f"  {name:22} {us:8.1f} {1e6 / us:8.0f} {us / base:6.2f} {trips:11.2f} {cmds:11.1f}"
            )
        ratio = base / append["RedisStore"][0]
        only = base / append["RedisStore, call only"][0]
        print(
            f"  RedisStore throughput = {ratio:.2f}x raw (target ≥ 0.8x; "
            f"{only:.2f}x for the store call alone, without its caller's timestamp and header)\n"
        )

        store, history, raw = fill(url, admin, BIG)
        raw_last = timed(lambda: [json.loads(m) for m in raw.lrange("raw:read", -20, -1)], 200)
        raw_last_bare = timed(lambda: raw.lrange("raw:read", -20, -1), 200)
        store_last = timed(lambda: store.get_messages("read", -20, -1), 200)
        lc_last = timed(lambda: history.messages[-20:], 2)
        print(f"last 20 of {BIG:,} messages")
        print(f"  raw LRANGE              {raw_last_bare * 1e6:10.1f} µs")
        print(f"  raw LRANGE + json       {raw_last * 1e6:10.1f} µs   1.00x")
        print(
            f"  RedisStore.get_messages {store_last * 1e6:10.1f} µs {store_last / raw_last:6.2f}x"
            f"  ({store_last / raw_last_bare:.2f}x bare LRANGE; target ≤ 2x)"
        )
        print(f"  langchain_community     {lc_last * 1e6:10.1f} µs {lc_last / raw_last:6.0f}x\n")

        store, history, raw = fill(url, admin, ALL)
        raw_all = timed(lambda: [json.loads(m) for m in raw.lrange("raw:read", 0, -1)], 10)
        store_all = timed(lambda: store.get_messages("read"), 10)
        store_doc = timed(lambda: store.get_document("read"), 10)
        lc_all = timed(lambda: history.messages, 10)
        print(f"read all {ALL:,} messages into dicts / documents")
        print(f"  raw LRANGE + json       {raw_all * 1e3:10.2f} ms   1.00x")
        print(
            f"  RedisStore.get_messages {store_all * 1e3:10.2f} ms {store_all / raw_all:6.2f}x"
            "  (target ≤ 1.5x)"
        )
        print(f"  RedisStore.get_document {store_doc * 1e3:10.2f} ms {store_doc / raw_all:6.2f}x")
        print(
            f"  langchain_community     {lc_all * 1e3:10.2f} ms {lc_all / raw_all:6.2f}x"
            "  (BaseMessage objects)"
        )
        admin.flushdb()
        admin.close()


if __name__ == "__main__":
    main()
