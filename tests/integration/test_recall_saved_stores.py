"""The saved recall index on every store: a second process loads it, sync and async.

``make_store`` builds stores that share one backend per test (a SQLite file, a Redis key
prefix, a PostgreSQL schema), like processes on one server; the in-memory store shares
nothing, so there the second process is played by a second ``Recall`` on one store.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ctx_memory import ContextManager
from ctx_memory.recall import Recall

if TYPE_CHECKING:
    from collections.abc import Callable

    from ctx_memory.stores.base import BaseStore


def fill(cm: ContextManager, n: int, start: int = 0) -> None:
    cm.add_messages(
        "s",
        [
            {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} about Lyon"}
            for i in range(start, start + n)
        ],
    )


def test_a_second_process_loads_the_saved_index(make_store: Callable[..., BaseStore]) -> None:
    first_store = make_store()
    first = ContextManager(store=first_store, token_counter="approximate")
    fill(first, 300)
    first.add_user_message("s", "The passport number is X1234567")
    Recall().index(first, "s", first.get_header("s"))
    assert len(first_store.get_recall_segments("s")) == 1
    fill(first, 10, start=300)
    second_store = make_store() if first_store.name != "memory" else first_store
    second = ContextManager(store=second_store, token_counter="approximate")
    recall = Recall()
    index = recall.index(second, "s", second.get_header("s"))
    assert (recall.loads, recall.rebuilds, len(index)) == (1, 0, 311)
    assert index.search("passport number")[0][0] == 300
    second.delete_message("s", index.ids[5] or "")  # the edit drops the saved index
    assert second_store.get_recall_segments("s") == []
    again = Recall()
    assert len(again.index(second, "s", second.get_header("s"))) == 310
    assert again.rebuilds == 1
    assert len(second_store.get_recall_segments("s")) == 1  # saved again


def test_the_async_path_on_every_store(make_store: Callable[..., BaseStore]) -> None:
    store = make_store()
    cm = ContextManager(store=store, token_counter="approximate")
    fill(cm, 300)

    async def scenario() -> None:
        first = Recall()
        await first.aindex(cm, "s", await cm.aget_header("s"))
        other = Recall()
        index = await other.aindex(cm, "s", await cm.aget_header("s"))
        assert (other.loads, len(index)) == (1, 300)
        assert await other.areindex(cm, "s") == 300
        assert len(await store.aget_recall_segments("s")) == 1

    asyncio.run(scenario())


def test_hybrid_recall_s_vectors_are_loaded_from_every_store(
    make_store: Callable[..., BaseStore],
) -> None:
    from langchain_core.embeddings import DeterministicFakeEmbedding

    class Counting(DeterministicFakeEmbedding):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            calls.extend(texts)
            return super().embed_documents(texts)

    calls: list[str] = []
    first_store = make_store()
    first = ContextManager(store=first_store, token_counter="approximate")
    fill(first, 300)
    built = Recall(embeddings=Counting(size=12)).index(first, "s", first.get_header("s"))
    assert len(calls) == 300
    fill(first, 5, start=300)
    second_store = make_store() if first_store.name != "memory" else first_store
    second = ContextManager(store=second_store, token_counter="approximate")
    calls.clear()
    recall = Recall(embeddings=Counting(size=12))
    index = recall.index(second, "s", second.get_header("s"))
    assert (recall.loads, recall.rebuilds, index.vector_count) == (1, 0, 305)
    assert len(calls) == 5  # only what followed the saved segment
    for loaded, original in zip(index.vectors[:300], built.vectors[:300], strict=True):
        assert loaded is not None
        assert original is not None
        assert max(abs(a - b) for a, b in zip(loaded, original, strict=True)) < 1e-6
