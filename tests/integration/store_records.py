"""Headers and encoded messages for tests that call a store directly (below the manager)."""

from __future__ import annotations

from typing import Any

from ctx_memory.schema import dumps
from ctx_memory.stores.base import EncodedMessage, new_header

NOW = "2025-01-01T00:00:00+00:00"


def init(sid: str) -> Any:
    """The init header an append carries for session ``sid``."""
    return new_header(sid, now=NOW, encoding="o200k_base")


def msg(i: int, tokens: int = 2, content: str | None = None) -> EncodedMessage:
    """User message ``i`` (id ``id-<i>``, content ``m<i>`` unless given), as a store takes it."""
    record = {"role": "user", "content": content or f"m{i}", "id": f"id-{i}", "token_count": tokens}
    return EncodedMessage(dumps(record), tokens, f"id-{i}")
