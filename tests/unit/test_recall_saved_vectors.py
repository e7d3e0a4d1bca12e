"""Hybrid recall's vectors saved with the index: another process embeds only what is new."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from ctx_memory import ContextManager, InMemoryStore
from ctx_memory.recall import (
    Recall,
    RecallIndex,
    embeddings_id,
    encode_segment,
    load_segments,
    segment_vectors,
    text_key,
)

WORDS = ["passport", "Rome", "wedding", "sister", "train", "budget", "harbour", "tulip"]


class CountingEmbeddings(DeterministicFakeEmbedding):
    """A deterministic fake that counts the texts it embeds, sync and async."""

    def __init__(self, size: int = 8) -> None:
        super().__init__(size=size)
        object.__setattr__(self, "texts", [])

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.texts.extend(texts)  # type: ignore[attr-defined]
        return super().embed_documents(texts)

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        self.texts.extend(texts)  # type: ignore[attr-defined]
        return super().embed_documents(texts)


class FailingOnce(CountingEmbeddings):
    def __init__(self) -> None:
        super().__init__()
        object.__setattr__(self, "failed", False)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not self.failed:  # type: ignore[has-type]
            object.__setattr__(self, "failed", True)
            msg = "rate limited"
            raise RuntimeError(msg)
        return super().embed_documents(texts)


def embedded(embeddings: Any) -> list[str]:
    return list(embeddings.texts)


def fill(manager: ContextManager, n: int, *, offset: int = 0) -> None:
    manager.add_messages(
        "s",
        [
            {
                "role": "user" if i % 2 == 0 else "assistant",
                "content": f"{i} " + " ".join(WORDS[(i * k) % len(WORDS)] for k in range(1, 5)),
            }
            for i in range(offset, offset + n)
        ],
    )


def index_of(recall: Recall, manager: ContextManager) -> RecallIndex:
    return recall.index(manager, "s", manager.get_header("s"))


@pytest.fixture
def manager() -> ContextManager:
    return ContextManager(store=InMemoryStore(), token_counter="approximate")


def test_another_process_loads_the_vectors_and_embeds_only_what_is_new(manager):
    fill(manager, 600)
    first_model = CountingEmbeddings()
    first = index_of(Recall(embeddings=first_model), manager)
    assert len(embedded(first_model)) == 600
    [saved] = manager.store.get_recall_segments("s")
    vectors = json.loads(saved)["vectors"]
    assert vectors["model"] == embeddings_id(first_model)
    assert (vectors["dims"], vectors["have"]) == (8, "1" * 600)

    fill(manager, 20, offset=600)
    second_model = CountingEmbeddings()  # another process, the same model
    other = Recall(embeddings=second_model)
    loaded = index_of(other, manager)
    assert (other.loads, other.rebuilds) == (1, 0)
    assert len(embedded(second_model)) == 20  # only the messages after the saved segment
    assert loaded.vector_count == 620
    for position in range(600):
        assert loaded.vectors[position] == pytest.approx(first.vectors[position], abs=1e-6)
    query = "sister wedding in Rome"
    vector = loaded.query_vector(second_model.embed_query(query))
    expected = index_of(Recall(embeddings=CountingEmbeddings(), save_every=0), manager)
    ranked = [hit.position for hit in loaded.hybrid_search(query, vector, k=20)]
    assert ranked == [hit.position for hit in expected.hybrid_search(query, vector, k=20)]


def test_vectors_of_another_model_are_not_loaded(manager):
    fill(manager, 300)
    index_of(Recall(embeddings=CountingEmbeddings(size=8)), manager)
    other_model = CountingEmbeddings(size=16)
    other = Recall(embeddings=other_model)
    index = index_of(other, manager)
    assert other.rebuilds == 1
    assert len(embedded(other_model)) == 300  # embedded again, with its own model
    assert index.dimensions == 16
    [saved] = manager.store.get_recall_segments("s")  # saved again whole, replacing
    assert json.loads(saved)["vectors"]["model"] == embeddings_id(other_model)


def test_lexical_and_hybrid_recalls_share_the_saved_index(manager):
    fill(manager, 300)
    index_of(Recall(), manager)  # saved without vectors
    hybrid_model = CountingEmbeddings()
    hybrid = Recall(embeddings=hybrid_model)
    assert index_of(hybrid, manager).vector_count == 300
    assert len(embedded(hybrid_model)) == 300  # nothing to load: read and embedded
    lexical = Recall()
    index = index_of(lexical, manager)  # loads the terms, ignores the vectors
    assert (lexical.loads, index.vector_count) == (1, 0)


def test_a_segment_is_saved_only_once_its_messages_are_embedded(manager, caplog):
    fill(manager, 300)
    model = FailingOnce()
    recall = Recall(embeddings=model)
    index_of(recall, manager)
    assert manager.store.get_recall_segments("s") == []  # the embedding failed: not saved
    fill(manager, 1, offset=300)
    index = index_of(recall, manager)  # retried, embedded, saved
    assert index.vector_count == 301
    [saved] = manager.store.get_recall_segments("s")
    assert json.loads(saved)["vectors"]["have"] == "1" * 301


def test_loaded_vectors_carry_over_an_edit_by_message_id_and_text(manager):
    fill(manager, 300)
    index_of(Recall(embeddings=CountingEmbeddings()), manager)
    model = CountingEmbeddings()
    recall = Recall(embeddings=model)
    recall.watch(manager)
    index_of(recall, manager)
    assert embedded(model) == []
    victim = manager.get_message_range("s", 5, 5)[0]["id"]
    manager.delete_message("s", victim)  # history_edited: rebuilt, vectors carried over
    index = index_of(recall, manager)
    assert len(index) == 299
    assert embedded(model) == []  # no message embedded again
    assert index.vector_count == 299


def test_reindex_and_the_async_path_save_vectors(manager):
    fill(manager, 300)
    model = CountingEmbeddings()
    assert Recall(embeddings=model).reindex(manager, "s") == 300
    [saved] = manager.store.get_recall_segments("s")
    assert json.loads(saved)["vectors"]["have"] == "1" * 300

    async def scenario() -> None:
        fill(manager, 10, offset=300)
        other_model = CountingEmbeddings()
        other = Recall(embeddings=other_model)
        index = await other.aindex(manager, "s", await manager.aget_header("s"))
        assert other.loads == 1
        assert len(embedded(other_model)) == 10
        assert index.vector_count == 310

    asyncio.run(scenario())


# ---------------------------------------------------------------------- pure


def hybrid_index(n: int) -> RecallIndex:
    index = RecallIndex()
    model = DeterministicFakeEmbedding(size=6)
    for i in range(n):
        text = "" if i % 7 == 3 else f"{i} {WORDS[i % len(WORDS)]}"
        index.add({"role": "user", "content": text, "id": f"m{i}"})
        if text:
            index.set_vector(i, model.embed_query(text), key=(f"m{i}", text_key(text)))
    return index


def test_segment_vectors_round_trip_as_float32() -> None:
    index = hybrid_index(30)
    model = "fake"
    texts = [
        encode_segment(index.segment(a, b) | {"vectors": segment_vectors(index, a, b, model)})
        for a, b in ((0, 12), (12, 30))
    ]
    loaded, clean = load_segments(texts, 30, vectors=model)
    assert clean
    assert loaded.vector_count == index.vector_count == 30 - len(range(3, 30, 7))
    assert loaded.vector_keys == index.vector_keys
    for a, b in zip(loaded.vectors, index.vectors, strict=True):
        assert (a is None) == (b is None)
        if a is not None and b is not None:
            assert a == pytest.approx(b, abs=1e-6)
    assert load_segments(texts, 30)[0].vector_count == 0  # a lexical load ignores them
    loaded, clean = load_segments(texts, 30, vectors="another model")
    assert (len(loaded), clean) == (0, False)


@pytest.mark.parametrize(
    "damage",
    [
        {"data": "%%%"},
        {"data": ""},
        {"dims": 5},
        {"have": "1" * 11},
        {"have": "2" * 12},
        {"digests": []},
        {"model": None},
    ],
)
def test_damaged_vectors_end_the_load_there(damage: dict[str, Any]) -> None:
    index = hybrid_index(24)
    good = index.segment(0, 12) | {"vectors": segment_vectors(index, 0, 12, "m")}
    bad = index.segment(12, 24)
    bad["vectors"] = segment_vectors(index, 12, 24, "m") | damage
    loaded, clean = load_segments([encode_segment(good), encode_segment(bad)], 24, vectors="m")
    assert (len(loaded), clean) == (12, False)  # the rest is read and embedded again


def test_a_nan_vector_is_refused() -> None:
    index = hybrid_index(12)
    segment = index.segment(0, 12) | {"vectors": segment_vectors(index, 0, 12, "m")}
    from array import array
    from base64 import b64decode, b64encode

    flat = array("f")
    flat.frombytes(b64decode(segment["vectors"]["data"]))
    flat[3] = math.nan
    segment["vectors"]["data"] = b64encode(flat.tobytes()).decode("ascii")
    assert load_segments([encode_segment(segment)], 12, vectors="m")[0].vector_count == 0


def test_text_key_is_stable_across_processes() -> None:
    """Saved with the vectors, so no per-process salt (``hash`` has one)."""
    import os
    import subprocess
    import sys

    code = "from ctx_memory.recall import text_key; print(text_key('The wifi password is tulip42'))"
    keys = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert keys == {str(text_key("The wifi password is tulip42"))}
    assert text_key("a") != text_key("b")
