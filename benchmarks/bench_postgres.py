"""PostgreSQL: ContextManager on PostgresStore against raw psycopg and langchain-postgres.

Run: ``uv run --all-extras --group bench python benchmarks/bench_postgres.py``. It starts
its own PostgreSQL server the way the tests do (``tests/pg_server.py``: ``initdb`` in a temp
dir, a free loopback port, as the ``postgres`` user when run as root; fsync off, as a
server on a battery-backed disk or with ``synchronous_commit=off`` would be: what is left
is round trips and CPU, the hard case for ratios); set ``POSTGRES_URL`` to use a running
one. Everything runs in one process against that one server, interleaved, best of
``BENCH_ROUNDS``; appends (``BENCH_APPENDS`` per implementation and round) are timed in
interleaved blocks of 250, best block, so that a burst of load on a shared machine lands on
one block of each rather than on one implementation's whole round.

* **ctx_memory**: ``ContextManager(store="postgres", postgres_url=...)``, every other
  setting at its default (a 30-day sliding TTL, events on, exact tiktoken counts), through
  the public API: ``add_user_message``, ``get_history(last_k=20)``, ``get_history``.
* **raw psycopg**: one autocommit connection, a table ``(id bigserial, session_id,
  message)`` indexed on ``(session_id, id)``; one ``INSERT`` per message (``json.dumps`` of
  a role/content dict); ``SELECT ... ORDER BY id DESC LIMIT 20`` and ``json.loads``.
* **langchain-postgres**: ``PostgresChatMessageHistory`` on its own connection;
  ``add_message``; it reads with ``.messages`` (the whole history; it has no last-k).

When the server has ``pg_stat_statements`` (the private one does), the report ends with
each implementation's mean server time per append and per last-20 read: the part of a
round trip that is PostgreSQL's, apart from the client's Python and the loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from ctx_memory import ContextManager

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

APPENDS = int(os.environ.get("BENCH_APPENDS", "2000"))
BLOCK = max(1, min(APPENDS, 250))  # appends are timed in interleaved blocks of this many
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
BIG, SMALL, ALL = 100_000, 1_000, 10_000
THREADS, PER_THREAD = 8, 250
TEXT = "How do I book a cheap flight to Paris in spring, and which airports are best? " * 2

TARGETS = {"append": 1.3, "last 20 of 100,000": 1.3}


@contextmanager
def server() -> Iterator[str]:
    """``POSTGRES_URL``, else a private server for the run."""
    url = os.environ.get("POSTGRES_URL")
    if url:
        yield url
        return
    from pg_server import PostgresServer

    directory = Path(tempfile.mkdtemp(prefix="ctx-pg-bench-"))
    pg = PostgresServer(directory)
    try:
        yield pg.start().url
    finally:
        pg.stop("immediate")
        shutil.rmtree(directory, ignore_errors=True)


def best(fn: Callable[[], Any], rounds: int = ROUNDS) -> float:
    """Best wall time of ``rounds`` runs of ``fn``."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


class Raw:
    """The baseline: one INSERT per message, SELECT ... ORDER BY ... LIMIT."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        self.conn.execute("DROP TABLE IF EXISTS raw_messages")
        self.conn.execute(
            "CREATE TABLE raw_messages (id bigserial PRIMARY KEY, session_id text NOT NULL, "
            "message text NOT NULL)"
        )
        self.conn.execute("CREATE INDEX ON raw_messages (session_id, id)")

    def append(self, session_id: str, content: str) -> None:
        self.conn.execute(
            "INSERT INTO raw_messages (session_id, message) VALUES (%s, %s)",
            (session_id, json.dumps({"role": "user", "content": content})),
        )

    def fill(self, session_id: str, n: int) -> None:
        payload = json.dumps({"role": "user", "content": TEXT})
        with self.conn.cursor().copy("COPY raw_messages (session_id, message) FROM STDIN") as copy:
            for _ in range(n):
                copy.write_row((session_id, payload))

    def last(self, session_id: str, k: int) -> list[Any]:
        rows = self.conn.execute(
            "SELECT message FROM raw_messages WHERE session_id = %s ORDER BY id DESC LIMIT %s",
            (session_id, k),
        ).fetchall()
        return [json.loads(r[0]) for r in reversed(rows)]

    def all(self, session_id: str) -> list[Any]:
        rows = self.conn.execute(
            "SELECT message FROM raw_messages WHERE session_id = %s ORDER BY id", (session_id,)
        ).fetchall()
        return [json.loads(r[0]) for r in rows]


class ServerTimes:
    """Mean execution times on the server (``pg_stat_statements``), if it is loaded."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        try:
            self.conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            self.conn.execute("SELECT pg_stat_statements_reset()")
            self.available = True
        except psycopg.Error:
            self.available = False

    def reset(self) -> None:
        if self.available:
            self.conn.execute("SELECT pg_stat_statements_reset()")

    def mean(self, pattern: str) -> float | None:
        """Mean seconds of the most called statement whose text matches ``pattern``."""
        if not self.available:
            return None
        row = self.conn.execute(
            "SELECT mean_exec_time FROM pg_stat_statements WHERE query LIKE %s "
            "ORDER BY calls DESC LIMIT 1",
            (pattern,),
        ).fetchone()
        return None if row is None else row[0] / 1e3


def main() -> None:  # noqa: PLR0915 - one script, one report
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from langchain_core.messages import HumanMessage
    from langchain_postgres import PostgresChatMessageHistory

    with server() as url:
        raw = Raw(url)
        cm = ContextManager(store="postgres", postgres_url=url, postgres_schema="bench")
        lc_conn = psycopg.connect(url, autocommit=True)
        PostgresChatMessageHistory.create_tables(lc_conn, "lc_messages")

        def lc(session: str, conn: psycopg.Connection[Any] = lc_conn) -> Any:
            return PostgresChatMessageHistory("lc_messages", session, sync_connection=conn)

        version = raw.conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        print(
            f"PostgreSQL {version}; ContextManager defaults (store={cm.store.name}, TTL "
            f"{cm.settings.ttl_seconds:.0f} s, events {'on' if cm.events.enabled else 'off'}, "
            f"{cm.settings.token_counter}); best of {ROUNDS}\n"
        )
        rows: dict[str, dict[str, float]] = {}
        message = HumanMessage(TEXT)
        lc_append_session = lc(str(uuid.uuid4()))

        def raw_append() -> None:
            for _ in range(BLOCK):
                raw.append("raw", TEXT)

        def cm_append() -> None:
            for _ in range(BLOCK):
                cm.add_user_message("cm", TEXT)

        def lc_append() -> None:
            for _ in range(BLOCK):
                lc_append_session.add_message(message)

        cm.add_user_message("cm", "warm up")  # the session exists, as in a chat
        stats = ServerTimes(url)
        append: dict[str, float] = {}
        for _ in range(ROUNDS * (APPENDS // BLOCK)):  # interleaved in blocks: the same load
            for name, fn in (("raw", raw_append), ("ctx_memory", cm_append), ("lc", lc_append)):
                t = best(fn, rounds=1) / BLOCK
                append[name] = min(append.get(name, float("inf")), t)
        rows["append"] = append
        server_rows = {
            "append": {
                "raw": stats.mean("INSERT INTO raw_messages%"),
                "ctx_memory": stats.mean('%WITH u AS (UPDATE "bench".sessions%'),
                "lc": stats.mean('INSERT INTO "lc_messages"%'),
            }
        }

        def fill(tag: str, n: int) -> tuple[str, Any]:
            raw.fill(f"raw-{tag}", n)
            for start in range(0, n, 5_000):
                cm.add_messages(
                    f"cm-{tag}", [HumanMessage(TEXT) for _ in range(min(5_000, n - start))]
                )
            history = lc(str(uuid.uuid4()))
            for start in range(0, n, 5_000):
                history.add_messages([HumanMessage(TEXT) for _ in range(min(5_000, n - start))])
            return tag, history

        for tag, n in (("small", SMALL), ("big", BIG)):
            _, history = fill(tag, n)
            label = f"last 20 of {n:,}"
            stats.reset()
            rows[label] = {
                "raw": best(lambda tag=tag: raw.last(f"raw-{tag}", 20), 200),
                "ctx_memory": best(lambda tag=tag: cm.get_history(f"cm-{tag}", last_k=20), 200),
                "lc": best(lambda history=history: history.messages[-20:], 2 if n > SMALL else 20),
            }
            server_rows[label] = {
                "raw": stats.mean("SELECT message FROM raw_messages%LIMIT%"),
                "ctx_memory": stats.mean('%WITH s AS (SELECT * FROM "bench".sessions%LATERAL%'),
                "lc": stats.mean('SELECT message FROM "lc_messages"%'),
            }
        _, history = fill("all", ALL)
        rows[f"read all {ALL:,}"] = {
            "raw": best(lambda: raw.all("raw-all"), 10),
            "ctx_memory": best(lambda: cm.get_history("cm-all"), 10),
            "lc": best(lambda: history.messages, 5),
        }

        def threads(work: Callable[[int], None]) -> float:
            workers = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
            start = time.perf_counter()
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            return (time.perf_counter() - start) / (THREADS * PER_THREAD)

        raws = [Raw.__new__(Raw) for _ in range(THREADS)]
        for r in raws:
            r.conn = psycopg.connect(url, autocommit=True)
        lcs = [lc(str(uuid.uuid4()), psycopg.connect(url, autocommit=True)) for _ in range(THREADS)]

        def raw_worker(i: int) -> None:
            for _ in range(PER_THREAD):
                raws[i].append(f"raw-t{i}", TEXT)

        def cm_worker(i: int) -> None:
            for _ in range(PER_THREAD):
                cm.add_user_message(f"cm-t{i}", TEXT)

        def lc_worker(i: int) -> None:
            for _ in range(PER_THREAD):
                lcs[i].add_message(message)

        concurrent: dict[str, float] = {}
        for _ in range(ROUNDS):
            for name, work in (("raw", raw_worker), ("ctx_memory", cm_worker), ("lc", lc_worker)):
                concurrent[name] = min(concurrent.get(name, float("inf")), threads(work))
        rows[f"{THREADS} writers x {PER_THREAD} appends"] = concurrent

        print(
            f"{'':28} {'raw psycopg':>12} {'ctx_memory':>12} {'ratio':>7} {'target':>7}"
            f" {'langchain-postgres':>20} {'lc/ctx':>7}"
        )
        for name, row in rows.items():
            ratio = row["ctx_memory"] / row["raw"]
            target = TARGETS.get(name.replace(f"{BIG:,}", "100,000"))
            verdict = "" if target is None else ("met" if ratio <= target else "missed")
            shown = f"{target:6.1f}x" if target else f"{'':7}"
            ahead = row["lc"] / row["ctx_memory"]
            print(
                f"{name:28} {_t(row['raw'])} {_t(row['ctx_memory'])} {ratio:6.2f}x {shown} "
                f"{_t(row['lc']):>20} {ahead:6.1f}x {verdict}"
            )
        print(
            "\nratio: ctx_memory / raw psycopg (lower is better); lc/ctx: how many times "
            "longer langchain-postgres takes (> 1: ctx_memory is ahead). Times per append "
            "(per message for the writers), per read otherwise."
        )
        if stats.available:
            print("\nMean server time per statement (pg_stat_statements):")
            for name, row in server_rows.items():
                shown = "  ".join(
                    f"{who} {_t(row[key]).strip() if row[key] is not None else '-'}"
                    for key, who in (("raw", "raw"), ("ctx_memory", "ctx_memory"), ("lc", "lc"))
                )
                print(f"  {name:26} {shown}")
        stats.conn.close()
        for r in raws:
            r.conn.close()
        for h in lcs:
            h._connection.close()
        raw.conn.execute("DROP TABLE raw_messages")
        raw.conn.close()
        lc_conn.execute("DROP TABLE lc_messages")
        lc_conn.close()
        with psycopg.connect(url, autocommit=True) as conn:
            cm.close()
            conn.execute('DROP SCHEMA IF EXISTS "bench" CASCADE')


def _t(seconds: float) -> str:
    if seconds >= 1e-3:
        return f"{seconds * 1e3:10.2f}ms"
    return f"{seconds * 1e6:10.1f}µs"


if __name__ == "__main__":
    main()
