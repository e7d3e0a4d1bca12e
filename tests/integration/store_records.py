"""Headers and encoded messages for tests that call a store directly (below the manager);
waiting for a PostgreSQL statement to queue on a row lock."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ctx_memory.schema import dumps
from ctx_memory.stores.base import EncodedMessage, new_header

if TYPE_CHECKING:
    from collections.abc import Callable

    import psycopg

NOW = "2025-01-01T00:00:00+00:00"


def init(sid: str) -> Any:
    """The init header an append carries for session ``sid``."""
    return new_header(sid, now=NOW, encoding="o200k_base")


def msg(i: int, tokens: int = 2, content: str | None = None) -> EncodedMessage:
    """User message ``i`` (id ``id-<i>``, content ``m<i>`` unless given), as a store takes it."""
    record = {"role": "user", "content": content or f"m{i}", "id": f"id-{i}", "token_count": tokens}
    return EncodedMessage(dumps(record), tokens, f"id-{i}")


def waiting_on_locks(conn: psycopg.Connection[Any], marker: str) -> int:
    """How many statements whose text holds ``marker`` wait on a lock (``pg_stat_activity``)."""
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
        (f"%{marker}%",),
    ).fetchone()
    assert row is not None
    return int(row[0])


def wait_for(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` for up to 10 s."""
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "a statement never queued on the row lock"
        time.sleep(0.01)
