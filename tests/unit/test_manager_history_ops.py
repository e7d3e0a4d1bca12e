"""``ContextManager.get_message``: a stored message by id, however old."""

from __future__ import annotations

import pytest

from ctx_memory import ContextManager, ValidationError


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_get_message_finds_a_message_by_id_however_old(mode: str) -> None:
    manager = ContextManager()
    manager.add_messages("s1", [{"role": "user", "content": "first", "id": "q-1"}])
    for i in range(600):
        manager.add_user_message("s1", f"later {i}")
    reads: list[tuple[int, int]] = []
    original = manager.get_message_range, manager.aget_message_range

    def spy(sid: str, start: int, end: int) -> list[dict]:
        reads.append((start, end))
        return original[0](sid, start, end)

    async def aspy(sid: str, start: int, end: int) -> list[dict]:
        reads.append((start, end))
        return await original[1](sid, start, end)

    manager.get_message_range = spy  # type: ignore[method-assign]
    manager.aget_message_range = aspy  # type: ignore[method-assign]

    async def get(message_id: str) -> dict | None:
        if mode == "sync":
            return manager.get_message("s1", message_id)
        return await manager.aget_message("s1", message_id)

    found = await get("q-1")
    assert found is not None
    assert found["content"] == "first"
    assert len(reads) == 3  # three pages of 256, newest first
    reads.clear()
    newest = manager.get_history("s1", last_k=1)[0]
    assert await get(newest["id"]) == newest
    assert len(reads) == 1
    assert await get("nobody") is None
    assert await get("nobody") is None
    with pytest.raises(ValidationError):
        await get("")
