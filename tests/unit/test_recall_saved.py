"""The recall index saved in the store: segments written, loaded, checked and rebuilt."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctx_memory import ContextManager, InMemoryStore
from ctx_memory.errors import StoreUnavailableError
from ctx_memory.recall import (
    MAX_SEGMENTS,
    Recall,
    RecallIndex,
    encode_segment,
    load_segments,
)
from ctx_memory.stores.ops import SaveRecallSegments
from ctx_memory.stores.sqlite import SqliteStore

if TYPE_CHECKING:
    from pathlib import Path

    from ctx_memory.stores.ops import StoreOp

WORDS = ["passport", "Rome", "café", "東京", "wedding", "sister", "train", "budget", "x_y"]


def records(n: int, *, offset: int = 0) -> list[dict[str, Any]]:
    """``n`` messages: users and assistants, some with tool calls and tool results."""
    out: list[dict[str, Any]] = []
    for i in range(offset, offset + n):
        words = " ".join(WORDS[(i * k) % len(WORDS)] for k in range(1, 4 + i % 5))
        record: dict[str, Any] = {"id": f"m{i}", "token_count": 3 + i % 7}
        if i % 11 == 5:
            record |= {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"name": "search", "args": {"q": words}, "id": f"c{i}"}],
            }
        elif i % 11 == 6:
            record |= {"role": "tool", "content": words, "tool_call_id": f"c{i - 1}"}
        else:
            record |= {"role": "user" if i % 2 == 0 else "assistant", "content": f"{i} {words}"}
        out.append(record)
    return out


def same_index(a: RecallIndex, b: RecallIndex) -> None:
    assert (a.ids, a.roles, a.tokens, a.lengths) == (b.ids, b.roles, b.tokens, b.lengths)
    assert (a.token_sum, a.total_length, a.user_positions) == (
        b.token_sum,
        b.total_length,
        b.user_positions,
    )
    for query in [*WORDS, "passport Rome wedding", "東京 café", "nothing here"]:
        assert a.search(query, k=50) == b.search(query, k=50)
    assert [a.turn(p) for p in range(len(a))] == [b.turn(p) for p in range(len(b))]


# ---------------------------------------------------------------------- pure


@settings(max_examples=40, deadline=None)
@given(total=st.integers(1, 60), cuts=st.lists(st.integers(1, 59), max_size=4))
def test_segments_rebuild_the_index_they_were_cut_from(total: int, cuts: list[int]) -> None:
    index = RecallIndex()
    index.recent = []
    bounds = sorted({0, total, *(c for c in cuts if c < total)})
    texts = []
    for start, stop in itertools.pairwise(bounds):
        index.extend(records(stop - start, offset=start))
        assert index.recent is not None
        assert len(index.recent) == stop - start
        from_terms = index.segment(start, stop)  # from the terms kept since the save
        kept, index.recent = index.recent, None
        assert bag(index.segment(start, stop)) == bag(from_terms)  # from the postings
        index.recent = kept
        texts.append(encode_segment(from_terms))
        index.saved, index.recent = stop, []
    loaded, clean = load_segments(texts, limit=total)
    assert clean
    same_index(loaded, index)


def bag(segment: dict[str, Any]) -> dict[str, Any]:
    """A segment with each message's terms sorted (their order does not matter)."""
    lines = [sorted(line.split()) for line in segment["words"].split("\n")]
    return {**segment, "words": lines}


def test_a_segment_from_kept_terms_equals_one_from_the_postings() -> None:
    index = RecallIndex()
    index.extend(records(30))
    index.saved, index.recent = 30, []
    index.extend(records(20, offset=30))
    from_terms = index.segment(30, 50)
    index.recent = None  # a pass over every posting instead
    assert bag(index.segment(30, 50)) == bag(from_terms)
    assert from_terms["words"].count("\n") == 19


def test_what_does_not_fit_ends_the_load() -> None:
    index = RecallIndex()
    index.extend(records(40))
    first, second = (encode_segment(index.segment(a, b)) for a, b in ((0, 20), (20, 40)))
    loaded, clean = load_segments([first, first, second], limit=40)  # saved twice
    assert len(loaded) == 40
    assert not clean
    loaded, clean = load_segments([first, second], limit=30)  # past the history
    assert (len(loaded), clean) == (20, False)
    loaded, clean = load_segments([second], limit=40)  # a gap
    assert (len(loaded), clean) == (0, False)
    other = json.loads(first)
    loaded, clean = load_segments([json.dumps({**other, "terms": "another/2"})], limit=40)
    assert (len(loaded), clean) == (0, False)
    broken = json.dumps({**other, "words": "rome\nrome"})  # two lines for 20 messages
    for text in ("not json", "[]", broken, json.dumps({**other, "ids": ["m0"]})):
        loaded, clean = load_segments([text], limit=40)
        assert (len(loaded), clean) == (0, False)
    loaded, clean = load_segments([first] * (MAX_SEGMENTS + 1), limit=40)
    assert (len(loaded), clean) == (20, False)  # too many: saved again whole


def test_segments_two_workers_saved_interleaved_load_whole() -> None:
    """Two workers serving one session each save from where their own last save stopped:
    the load follows the chain that reaches furthest instead of stopping at the first
    segment out of line (and says the chain is not clean, so it is saved again whole)."""
    index = RecallIndex()
    index.extend(records(1200))
    spans = [(0, 400), (300, 700), (400, 800), (700, 1100), (800, 1200), (1100, 1150)]
    texts = [encode_segment(index.segment(a, b)) for a, b in spans]
    loaded, clean = load_segments(texts, limit=1200)
    assert len(loaded) == 1200
    assert not clean
    assert loaded.ids == index.ids
    assert loaded.search("rome wedding", 5) == index.search("rome wedding", 5)
    loaded, clean = load_segments(texts[:2] + texts[3:4], limit=1200)  # no chain past 400
    assert (len(loaded), clean) == (400, False)


# ---------------------------------------------------------------------- through a store


class CountingStore(InMemoryStore):
    """An in-memory store that counts the messages read and can fail recall saves."""

    def __init__(self) -> None:
        super().__init__()
        self.read: list[tuple[int, int]] = []
        self.fail_saves = False

    def handle(self, op: StoreOp) -> object:
        if isinstance(op, SaveRecallSegments) and self.fail_saves:
            msg = "down"
            raise StoreUnavailableError(msg)
        result = super().handle(op)
        if type(op).__name__ == "GetMessages":
            self.read.append((op.start, op.end))  # type: ignore[union-attr]
        return result


def fill(manager: ContextManager, sid: str, n: int, offset: int = 0) -> None:
    manager.add_messages(sid, records(n, offset=offset))


def fresh(recall: Recall, manager: ContextManager, sid: str) -> RecallIndex:
    return recall.index(manager, sid, manager.get_header(sid))


def test_a_long_session_is_saved_and_another_process_loads_it() -> None:
    store = CountingStore()
    manager = ContextManager(store=store, token_counter="approximate")
    fill(manager, "s", 300)
    first = Recall()
    built = fresh(first, manager, "s")
    assert first.rebuilds == 1
    assert len(store.get_recall_segments("s")) == 1
    assert (built.saved, built.recent) == (300, [])  # counts kept from here on only
    fill(manager, "s", 20, offset=300)
    store.read.clear()
    other = Recall()  # another process: nothing in its memory
    loaded = fresh(other, manager, "s")
    assert (other.loads, other.rebuilds) == (1, 0)
    assert (loaded.saved, len(loaded.recent or ())) == (300, 20)
    assert store.read == [(299, 319)]  # the last saved message (checked) and what follows
    rebuilt = Recall(save_every=0)
    same_index(loaded, fresh(rebuilt, manager, "s"))
    assert len(built) == 300  # the first process's index, until its next update
    fill(manager, "s", 256, offset=320)
    fresh(other, manager, "s")  # 276 new since the save: saved as a second segment
    assert len(store.get_recall_segments("s")) == 2
    third = Recall()
    same_index(fresh(third, manager, "s"), fresh(rebuilt, manager, "s"))
    assert third.loads == 1


def test_a_short_session_is_neither_saved_nor_looked_up() -> None:
    store = CountingStore()
    manager = ContextManager(store=store, token_counter="approximate")
    fill(manager, "s", 100)
    recall = Recall()
    fresh(recall, manager, "s")
    assert store.get_recall_segments("s") == []


def test_an_edit_drops_the_saved_index_and_the_rebuild_saves_it_again() -> None:
    store = CountingStore()
    manager = ContextManager(store=store, token_counter="approximate")
    fill(manager, "s", 300)
    fresh(Recall(), manager, "s")
    manager.delete_message("s", "m3")
    assert store.get_recall_segments("s") == []
    other = Recall()
    index = fresh(other, manager, "s")
    assert (other.rebuilds, len(index)) == (1, 299)
    assert len(store.get_recall_segments("s")) == 1


@pytest.mark.parametrize("same_text", [True, False])
def test_segments_of_another_history_are_caught_and_replaced(same_text: bool) -> None:
    """By the last message's id (the same texts, so the same tokens), or by the tokens."""
    store = CountingStore()
    manager = ContextManager(store=store, token_counter="approximate")
    fill(manager, "s", 300)
    other_history = records(300, offset=0 if same_text else 1000)
    manager.add_messages("t", [{**r, "id": "t-" + r["id"]} for r in other_history])
    fresh(Recall(), manager, "t")
    store.save_recall_segments("s", store.get_recall_segments("t"), replace=True)
    other = Recall()
    index = fresh(other, manager, "s")
    assert (other.loads, other.rebuilds) == (0, 1)
    assert index.ids[0] == "m0"
    [text] = store.get_recall_segments("s")
    assert json.loads(text)["ids"][0] == "m0"


def test_a_broken_or_doubled_chain_is_saved_again_whole() -> None:
    store = CountingStore()
    manager = ContextManager(store=store, token_counter="approximate")
    fill(manager, "s", 300)
    fresh(Recall(), manager, "s")
    [good] = store.get_recall_segments("s")
    store.save_recall_segments("s", [good])  # two processes saved the same segment
    recall = Recall()
    fresh(recall, manager, "s")
    assert recall.loads == 1
    [again] = store.get_recall_segments("s")  # rewritten as one
    assert bag(json.loads(again)) == bag(json.loads(good))
    store.save_recall_segments("s", ["{broken"], replace=True)
    fresh(other := Recall(), manager, "s")
    assert other.rebuilds == 1
    [again] = store.get_recall_segments("s")
    assert bag(json.loads(again)) == bag(json.loads(good))


def test_a_failed_save_is_logged_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    store = CountingStore()
    manager = ContextManager(store=store, token_counter="approximate")
    fill(manager, "s", 300)
    recall = Recall()
    store.fail_saves = True
    with caplog.at_level(logging.WARNING, logger="ctx_memory.recall"):
        index = fresh(recall, manager, "s")
    assert len(index) == 300
    assert "was not saved" in caplog.text
    assert store.get_recall_segments("s") == []
    store.fail_saves = False
    fill(manager, "s", 1, offset=300)
    fresh(recall, manager, "s")
    [text] = store.get_recall_segments("s")
    assert json.loads(text)["stop"] == 301


def test_nothing_is_saved_with_a_tokenizer_or_save_every_0() -> None:
    store = CountingStore()
    manager = ContextManager(store=store, token_counter="approximate")
    fill(manager, "s", 300)
    for recall in (Recall(tokenizer=str.split), Recall(save_every=0)):
        fresh(recall, manager, "s")
        assert store.get_recall_segments("s") == []


def test_the_async_path_saves_and_loads_too() -> None:
    store = CountingStore()
    manager = ContextManager(store=store, token_counter="approximate")
    fill(manager, "s", 300)

    async def scenario() -> None:
        first = Recall()
        await first.aindex(manager, "s", await manager.aget_header("s"))
        assert len(store.get_recall_segments("s")) == 1
        other = Recall()
        index = await other.aindex(manager, "s", await manager.aget_header("s"))
        assert (other.loads, len(index)) == (1, 300)
        assert await other.areindex(manager, "s") == 300

    asyncio.run(scenario())


def test_reindex_replaces_whatever_is_saved() -> None:
    store = CountingStore()
    manager = ContextManager(store=store, token_counter="approximate")
    fill(manager, "s", 300)
    fill(manager, "short", 10)
    store.save_recall_segments("s", ["junk", "more junk"])
    recall = Recall()
    assert recall.reindex(manager, "s") == 300
    [text] = store.get_recall_segments("s")
    assert (json.loads(text)["start"], json.loads(text)["stop"]) == (0, 300)
    assert recall.reindex(manager, "short") == 0
    assert store.get_recall_segments("short") == []
    assert recall.reindex(manager, "missing") == 0


def test_a_restarted_sqlite_process_loads_instead_of_rebuilding(tmp_path: Path) -> None:
    path = str(tmp_path / "ctx.sqlite3")
    with ContextManager(store=SqliteStore(path), token_counter="approximate") as manager:
        fill(manager, "s", 400)
        fresh(Recall(), manager, "s")
    with ContextManager(store=SqliteStore(path), token_counter="approximate") as manager:
        recall = Recall()
        index = fresh(recall, manager, "s")
        assert (recall.loads, recall.rebuilds, len(index)) == (1, 0, 400)
        assert (
            index.search("passport Rome")[0][0]
            == fresh(Recall(save_every=0), manager, "s").search("passport Rome")[0][0]
        )
