"""The recall-segment contract: where a store keeps :mod:`ctx_memory.recall`'s saved index.

A store that keeps segments (a save on a live session answers ``True``; a store whose
``keeps_recall_segments`` is true must) stores them per session, in order, as given;
drops them with every write that removes or changes stored messages and with the
session; never creates a session for them. A store that does not keep them answers
``[]`` and ``False`` (:mod:`ctx_memory.recall` uses only stores whose
``keeps_recall_segments`` is true; the others' indexes are rebuilt in each process).
The docstring of each test is the clause of the contract it checks.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest

from ctx_memory.errors import ValidationError
from ctx_memory.stores.base import EncodedMessage
from ctx_memory.testing._base import LATER, ContractBase, append, init, item, msg, requires

if TYPE_CHECKING:
    from ctx_memory.stores.base import BaseStore
    from ctx_memory.testing._base import StoreFactory

__all__ = ["StoreRecallSegmentTests"]

# JSON text as ctx_memory.recall writes it: non-ASCII kept, control characters escaped.
SEGMENT = '{"v":1,"terms":{"caf\u00e9":[0,1],"\u65e5\u672c":[1,2]},"note":"\\u0000 \u2028"}'


def _edit(store: BaseStore, how: str) -> None:
    """One write that removes or changes stored messages of session ``s``."""
    if how == "delete_messages":
        store.delete_messages("s", ["id-1"], now=LATER)
    elif how == "replace_message":
        new = msg(1)
        store.replace_message("s", "id-1", EncodedMessage(new.json, 3, new.id), now=LATER)
    elif how == "truncate_messages":
        store.truncate_messages("s", "id-0", inclusive=False, now=LATER)
    elif how == "clear":
        store.clear("s", now=LATER, preserve_fetched=True)
    else:
        store.replace_document("s", init("s"), [msg(0), msg(1), msg(2)], [])


def _keep(store: BaseStore, how: str) -> None:
    """One write that leaves the stored messages as they are."""
    if how == "append":
        append(store, "s", 7)
    elif how == "append_fetched":
        store.append_fetched("s", [item("web", 0)], init=init("s"), now=LATER, dedupe=True)
    elif how == "merge_shared":
        store.merge_shared("s", {"k": 1}, init=init("s"), now=LATER)
    elif how == "update_header":
        store.update_header("s", init=init("s"), now=LATER, metadata={"mode": "x"})
    else:
        store.delete_messages("s", ["not-there"], now=LATER)


def _saved(store: BaseStore, segments: list[str]) -> bool:
    """Save ``segments`` for session ``s`` (live); whether the store keeps segments at all."""
    keeps = store.save_recall_segments("s", segments)
    assert keeps or not store.keeps_recall_segments, "keeps_recall_segments but not saved"
    return keeps


class StoreRecallSegmentTests(ContractBase):
    """Saved recall-index segments (:class:`~ctx_memory.stores.ops.SaveRecallSegments`)."""

    def test_recall_segments_round_trip_in_order(self, store: BaseStore) -> None:
        """Segments are kept in order, exactly as given; ``replace`` swaps them all."""
        append(store, "s", 0, 1)
        assert store.get_recall_segments("s") == []
        if not _saved(store, ["a", SEGMENT]):
            assert store.get_recall_segments("s") == []
            assert not store.save_recall_segments("s", ["a"], replace=True)
            assert store.get_recall_segments("s") == []
            return
        big = "x" * 300_000
        assert store.save_recall_segments("s", [big])
        assert store.save_recall_segments("s", [])
        assert store.get_recall_segments("s") == ["a", SEGMENT, big]
        assert store.save_recall_segments("s", ["d"], replace=True)
        assert store.get_recall_segments("s") == ["d"]
        assert store.save_recall_segments("s", [], replace=True)
        assert store.get_recall_segments("s") == []

    @pytest.mark.parametrize("bad", ["a\x00b", "a\ud800b", 7])
    def test_unstorable_segments_are_refused_before_anything_is_written(
        self, store: BaseStore, bad: object
    ) -> None:
        """A segment every store cannot keep is refused, naming it, and nothing is written.

        A NUL, a lone surrogate, or not a ``str``: ``ValidationError`` before any write.
        """
        append(store, "s", 0)
        with pytest.raises(ValidationError, match="recall segment 1"):
            store.save_recall_segments("s", ["fine", bad])  # type: ignore[list-item]
        assert store.get_recall_segments("s") == []

    def test_recall_segments_never_create_a_session(self, store: BaseStore) -> None:
        """Saving for a missing session writes nothing and says so; reading gives ``[]``."""
        assert not store.save_recall_segments("s", ["a"])
        assert not store.save_recall_segments("s", ["a"], replace=True)
        assert store.get_recall_segments("s") == []
        assert not store.exists("s")
        assert store.list_sessions() == []

    def test_recall_segments_are_per_session(self, store: BaseStore) -> None:
        """One session's segments are not another's, whatever the ids look like."""
        append(store, "a}b", 0)
        append(store, "a", 0)
        keeps = store.save_recall_segments("a}b", ["one"])
        assert store.get_recall_segments("a") == []
        assert store.get_recall_segments("a}b") == (["one"] if keeps else [])

    def test_saving_recall_segments_is_not_a_write_of_the_session(self, store: BaseStore) -> None:
        """Saving segments leaves the document (and its timestamp) as it was."""
        append(store, "s", 0)
        before = store.get_document("s")
        store.save_recall_segments("s", ["a"])
        assert store.get_document("s") == before

    @pytest.mark.parametrize(
        "how",
        ["delete_messages", "replace_message", "truncate_messages", "clear", "replace_document"],
    )
    def test_history_edits_drop_recall_segments(self, store: BaseStore, how: str) -> None:
        """A write that removes or changes stored messages drops the segments with it."""
        append(store, "s", 0, 1, 2)
        store.save_recall_segments("s", ["a", "b"])
        _edit(store, how)
        assert store.get_recall_segments("s") == []

    @pytest.mark.parametrize(
        "how", ["append", "append_fetched", "merge_shared", "update_header", "no_op_edit"]
    )
    def test_other_writes_keep_recall_segments(self, store: BaseStore, how: str) -> None:
        """Appends and writes that leave the history as it was keep the segments."""
        append(store, "s", 0, 1, 2)
        keeps = _saved(store, ["a", "b"])
        _keep(store, how)
        expected = ["a", "b"] if keeps else []
        assert store.get_recall_segments("s") == expected

    def test_recall_segments_go_with_the_session(self, store: BaseStore) -> None:
        """``delete`` drops the segments: a session made again under the id has none."""
        append(store, "s", 0)
        store.save_recall_segments("s", ["a"])
        assert store.delete("s")
        assert store.get_recall_segments("s") == []
        append(store, "s", 0)
        assert store.get_recall_segments("s") == []

    @requires("ttl")
    def test_recall_segments_expire_with_the_session(self, open_store: StoreFactory) -> None:
        """An expired session has no segments, and one made again under its id has none."""
        store = open_store(ttl_seconds=0.3)
        append(store, "s", 0)
        store.save_recall_segments("s", ["a"])
        time.sleep(0.45)
        assert store.get_recall_segments("s") == []
        assert not store.save_recall_segments("s", ["b"])
        append(store, "s", 0)
        assert store.get_recall_segments("s") == []

    @requires("ttl")
    def test_saving_or_reading_recall_segments_does_not_refresh_the_ttl(
        self, open_store: StoreFactory
    ) -> None:
        """Segments are no access: a session saved to or read from still expires on time."""
        store = open_store(ttl_seconds=0.6)
        append(store, "s", 0)
        time.sleep(0.35)
        store.save_recall_segments("s", ["a"])
        store.get_recall_segments("s")
        time.sleep(0.4)
        assert not store.exists("s")

    @requires("max_sessions")
    def test_recall_segments_are_no_lru_access(self, open_store: StoreFactory) -> None:
        """Saving or reading segments does not make a session the most recently used."""
        store = open_store(max_sessions=2)
        append(store, "old", 0)
        append(store, "new", 0)
        store.save_recall_segments("old", ["a"])
        store.get_recall_segments("old")
        append(store, "third", 0)  # evicts the least recently used: still "old"
        assert not store.exists("old")
        assert store.exists("new")

    @requires("max_sessions")
    def test_recall_segments_go_with_an_evicted_session(self, open_store: StoreFactory) -> None:
        """An evicted session's segments go with it."""
        store = open_store(max_sessions=1)
        append(store, "s", 0)
        store.save_recall_segments("s", ["a"])
        append(store, "t", 0)  # evicts s
        assert not store.exists("s")
        append(store, "s", 0)
        assert store.get_recall_segments("s") == []

    def test_async_recall_segments(self, store: BaseStore) -> None:
        """The async twins do what the sync calls do."""

        async def scenario() -> None:
            append(store, "s", 0)
            keeps = await store.asave_recall_segments("s", [])
            assert keeps or not store.keeps_recall_segments
            assert await store.asave_recall_segments("s", ["a", "b"]) == keeps
            assert await store.aget_recall_segments("s") == (["a", "b"] if keeps else [])
            assert await store.asave_recall_segments("s", ["c"], replace=True) == keeps
            assert await store.aget_recall_segments("s") == (["c"] if keeps else [])
            assert not await store.asave_recall_segments("missing", ["c"])

        asyncio.run(scenario())
