"""A PostgresStore used from one ``asyncio.run`` after another: no connection left behind.

The store opens one asyncio pool per event loop. When ``asyncio.run`` ends it cancels
every task left, the pool's with them; the store then closes the pool and its idle
connections, and forgets the loop. Before, each loop left its connections open on the
server until the process ended (a script running one ``asyncio.run`` per job ran the
server out of connections), the store kept a reference to every such loop, and
``asyncio.run`` could wait forever at its end (seen on Python 3.11.2, Debian 12's). The
loops run in a child process, under a timeout, so a hang fails the test instead of
stopping the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.postgres

SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    import psycopg
    from ctx_memory import ContextManager
    from ctx_memory.stores.postgres import PostgresStore

    url, schema, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = PostgresStore(url, schema=schema)
    manager = ContextManager(store=store, token_counter="approximate")
    manager.add_user_message("s1", "hello")  # the sync pool: its own connection(s)

    def ours() -> int:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ctx_memory'"
                " AND pid <> pg_backend_pid()"
            ).fetchone()
            return int(row[0])

    async def job(i: int) -> None:
        await manager.aadd_user_message("s1", f"message {i}")
        await manager.aget_history("s1", last_k=5)

    before = ours()
    counts = []
    for i in range(runs):
        asyncio.run(job(i))
        counts.append(ours())
    history = manager.get_history("s1")
    kept = len(store._guards) + len(store._apools)  # entries of loops that ended
    store.close()
    print(json.dumps({"before": before, "counts": counts, "messages": len(history), "kept": kept}))
    """
)


def test_each_loop_s_pool_is_closed_when_asyncio_run_ends(
    postgres_url: str, pg_schema: str
) -> None:
    runs = 60
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, postgres_url, pg_schema, str(runs)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONWARNINGS": "error::ResourceWarning"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["messages"] == runs + 1  # every job's write is there
    # Connections of other tests' stores in this process are idle and counted alike in
    # "before"; the child's own pools add at most the sync pool's and one loop's.
    assert max(report["counts"]) <= report["before"] + 2, report
    assert report["kept"] == 0  # the store holds on to no loop that ended
