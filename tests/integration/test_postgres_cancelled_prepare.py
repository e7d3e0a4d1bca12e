"""A call cancelled while its connection prepared a hot statement leaves the connection usable.

The store prepares its hot statements (one message appended, a range read) once per
connection. A task cancelled while waiting for the reply to the prepare, or a Ctrl-C
there, still leaves the connection idle with the statement prepared (psycopg reads the
reply). The store once recorded the name only after the reply, so the next use prepared
it again and failed (``DuplicatePreparedStatement``), on every call that connection
served, until the pool retired it.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import psycopg
import pytest
from langchain_core.messages import HumanMessage

from ctx_memory import ContextManager
from ctx_memory.stores.postgres import PostgresStore

pytestmark = pytest.mark.postgres


async def _cancel_the_first_append(url: str, schema: str, ticks: int) -> list[str]:
    """Errors of the calls after a first append cancelled after ``ticks`` loop turns."""
    store = PostgresStore(url, schema=schema, pool_size=1)
    manager = ContextManager(store=store)
    errors: list[str] = []
    try:
        await manager.aset_context("warm", "k", 1)  # the schema made, the pool open
        first = asyncio.ensure_future(manager.aadd_messages("s", [HumanMessage("0", id="m0")]))
        for _ in range(ticks):
            await asyncio.sleep(0)
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        for i in range(1, 6):
            try:
                await manager.aadd_messages("s", [HumanMessage(str(i), id=f"m{i}")])
                await manager.aget_history("s", last_k=3)
            except Exception as e:
                errors.append(f"{type(e).__name__}: {e}")
        held = [m["id"] for m in await manager.aget_history("s")]
        if held[-5:] != [f"m{i}" for i in range(1, 6)]:
            errors.append(f"held {held}")
    finally:
        await manager.aclose()
    return errors


def test_appends_after_a_cancelled_prepare_succeed(postgres_url: str) -> None:
    failed, schemas = {}, []
    try:
        for ticks in range(1, 16):  # the cancellation lands before, during, after the prepare
            schemas.append(f"t_{uuid.uuid4().hex[:12]}")
            errors = asyncio.run(_cancel_the_first_append(postgres_url, schemas[-1], ticks))
            if errors:
                failed[ticks] = errors[0]
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            for schema in schemas:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    assert failed == {}
