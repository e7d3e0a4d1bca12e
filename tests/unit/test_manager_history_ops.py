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
    # the newest 256, then pages by position from the header's count: 600..345, 344..89,
    # 88..0 (a deletion meanwhile moves no older message into a page already read)
    assert reads == [(-256, -1), (345, 600), (89, 344), (0, 88)]
    reads.clear()
    newest = manager.get_history("s1", last_k=1)[0]
    assert await get(newest["id"]) == newest
    assert len(reads) == 1
    assert await get("nobody") is None
    assert await get("nobody") is None
    with pytest.raises(ValidationError):
        await get("")


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_get_message_finds_an_old_message_while_newer_ones_are_deleted(mode: str) -> None:
    """Newer messages deleted between two page reads: the old one is found all the same."""
    manager = ContextManager()
    manager.add_messages("s1", [{"role": "user", "content": "old", "id": "t"}])
    # 256 newer: the old one is the first past the newest page, where a deletion moves it
    manager.add_messages("s1", [{"role": "user", "content": f"{i}"} for i in range(256)])
    original = manager.get_message_range, manager.aget_message_range

    def delete_newest() -> None:  # another writer, between this read and the next
        if len(manager.get_history("s1")) > 200:
            newest = manager.get_history("s1", last_k=1)[0]
            assert manager.delete_message("s1", newest["id"])

    def spy(sid: str, start: int, end: int) -> list[dict]:
        page = original[0](sid, start, end)
        delete_newest()
        return page

    async def aspy(sid: str, start: int, end: int) -> list[dict]:
        page = await original[1](sid, start, end)
        delete_newest()
        return page

    manager.get_message_range = spy  # type: ignore[method-assign]
    manager.aget_message_range = aspy  # type: ignore[method-assign]
    for _ in range(3):
        if mode == "sync":
            found = manager.get_message("s1", "t")
        else:
            found = await manager.aget_message("s1", "t")
        assert found is not None
        assert found["content"] == "old"
