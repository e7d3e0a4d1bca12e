"""The operations contract: each operation of the store interface, called directly.

Every backend behaves like the in-memory reference store. The docstring of each test is
the clause of the contract it checks.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

from ctx_memory.errors import SharedStateTooLargeError, ValidationError
from ctx_memory.stores.base import MAX_SHARED_BYTES, EncodedMessage
from ctx_memory.testing._base import (
    LATER,
    NOW,
    ContractBase,
    append,
    contents,
    decoded,
    init,
    item,
    msg,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from ctx_memory.stores.base import BaseStore

__all__ = ["HOSTILE_IDS", "StoreOperationTests"]

HOSTILE_IDS = [
    "plain",
    "a}b",
    "{a}",
    "}{",
    "{",
    "}",
    "a:b:c",
    "*",
    "a*",
    "with space",
    " ",
    "ünï©ødé ✓ 🚀",
    "x" * 256,
    "a\nb",
    "[]",
    "\\",
    "%s",
    "ctx_memory:{__index__}:lru",
]
"""Session ids that break naive key schemes; each must name its own session only."""

# Ids whose order differs between code points and UTF-16 (U+E000 sorts before an emoji).
_PAGED_IDS = sorted(
    [f"user-{i:04d}" for i in range(230)]
    + ["a", "b:{x}", "zé", "z\u4e2d", "z\ue000", "z\U0001f600"]
)


class StoreOperationTests(ContractBase):
    """Each store operation, called directly; part of ``StoreContract``."""

    # -------------------------------------------------------------- create / upsert

    def test_reads_of_a_missing_session_create_nothing(self, store: BaseStore) -> None:
        """Reads, ``delete`` and ``clear`` of a missing session find nothing, create nothing."""
        assert store.get_document("nope") is None
        assert store.get_header("nope") is None
        assert store.get_messages("nope") == []
        assert store.count_messages("nope") == 0
        assert store.get_fetched("nope") == {}
        assert not store.exists("nope")
        assert store.list_sessions() == []
        assert not store.delete("nope")
        assert not store.clear("nope", now=NOW)
        assert store.list_page(limit=10) == []
        assert store.list_sessions() == []

    def test_create_then_create_again(self, store: BaseStore) -> None:
        """``create`` makes the session from ``init``; again, it only touches the timestamp."""
        assert store.create("s", init("s")).created
        again = store.create("s", init("s", now=LATER))
        assert not again.created
        header = store.get_header("s")
        assert header is not None
        assert header["metadata"]["created_at"] == NOW
        assert header == {
            "system_prompt": None,
            "metadata": {**init("s")["metadata"], "timestamp": LATER},
            "shared": {},
        }

    def test_first_write_upserts_from_init(self, store: BaseStore) -> None:
        """A write on a missing session creates it from ``init`` and says so."""
        result = append(store, "s", 0, 1)
        assert result.created
        assert result.added == 2
        assert not append(store, "s", 2).created
        document = store.get_document("s")
        assert document is not None
        assert list(document) == [
            "system_prompt",
            "metadata",
            "fetched_context",
            "conversation_history",
            "shared",
        ]
        assert document["metadata"]["session_id"] == "s"
        assert contents(document["conversation_history"]) == ["m0", "m1", "m2"]
        assert store.list_sessions() == ["s"]
        assert store.exists("s")

    def test_counters_and_timestamp(self, store: BaseStore) -> None:
        """Appends add to ``message_count`` and ``token_count`` and set ``timestamp``."""
        store.append_messages("s", [msg(0, 4), msg(1, 6)], init=init("s"), now=NOW)
        store.append_messages("s", [msg(2, 10)], init=init("s"), now=LATER)
        header = store.get_header("s")
        assert header is not None
        meta = header["metadata"]
        assert meta["message_count"] == 3
        assert meta["token_count"] == 20
        assert meta["timestamp"] == LATER
        assert store.count_messages("s") == 3

    def test_empty_append_touches_only(self, store: BaseStore) -> None:
        """An empty append creates the session and adds nothing."""
        result = store.append_messages("s", [], init=init("s"), now=NOW)
        assert result.created
        assert result.added == 0
        assert store.count_messages("s") == 0
        header = store.get_header("s")
        assert header is not None
        assert header["metadata"]["message_count"] == 0

    def test_append_stores_each_message_id_once(self, store: BaseStore) -> None:
        """An id already in the session, or earlier in the same batch, is skipped.

        Appending only known ids changes nothing at all, not even ``timestamp``: a retry
        of an append that went through is a no-op.
        """
        assert append(store, "s", 0).added == 1
        again = store.append_messages("s", [msg(0)], init=init("s"), now=LATER)
        assert (again.created, again.added) == (False, 0)
        header = store.get_header("s")
        assert header is not None
        assert header["metadata"]["timestamp"] == NOW
        batch = store.append_messages(
            "s", [msg(1, 4), msg(1, 4), msg(0), msg(2, 5), msg(1, 4)], init=init("s"), now=LATER
        )
        assert batch.added == 2
        header = store.get_header("s")
        assert header is not None
        meta = header["metadata"]
        assert (meta["message_count"], meta["token_count"]) == (3, 3 + 4 + 5)
        assert meta["timestamp"] == LATER
        assert [m["id"] for m in store.get_messages("s")] == ["id-0", "id-1", "id-2"]

    # -------------------------------------------------------------- LRANGE semantics

    @pytest.mark.parametrize(
        ("start", "end"),
        [
            (0, -1),
            (0, 0),
            (-1, -1),
            (-3, -1),
            (2, 4),
            (3, 100),
            (-100, 1),
            (-100, -100),
            (5, 2),
            (10, 20),
            (-1, 0),
            (4, -2),
            (0, -6),
            (-5, -5),
        ],
    )
    def test_get_messages_follows_lrange(self, store: BaseStore, start: int, end: int) -> None:
        """``get_messages(start, end)`` is Redis ``LRANGE``: inclusive, negative from the end."""
        append(store, "s", 0, 1, 2, 3, 4)
        expected = [f"m{i}" for i in range(5)]
        n = 5
        lo = max(start + n if start < 0 else start, 0)
        hi = min(end + n if end < 0 else end, n - 1)
        assert contents(store.get_messages("s", start, end)) == (
            expected[lo : hi + 1] if lo <= hi else []
        )

    def test_get_message_spans_reads_each_span(self, store: BaseStore) -> None:
        """``get_message_spans`` gives each inclusive span's messages, in the spans' order.

        Past the end, what is there; a missing session, ``[]`` per span; bad spans refused.
        """
        append(store, "s", 0, 1, 2, 3, 4, 5, 6)
        spans = [(5, 6), (0, 0), (2, 3), (6, 9), (8, 9), (1, 1)]
        parts = store.get_message_spans("s", spans)
        assert [contents(part) for part in parts] == [
            ["m5", "m6"],
            ["m0"],
            ["m2", "m3"],
            ["m6"],
            [],
            ["m1"],
        ]
        assert parts[2] == store.get_messages("s", 2, 3)  # the same records as a range read
        assert store.get_message_spans("s", []) == []
        assert store.get_message_spans("nope", [(0, 1), (3, 3)]) == [[], []]
        assert asyncio.run(store.aget_message_spans("s", [(4, 4), (0, 1)])) == [
            store.get_messages("s", 4, 4),
            store.get_messages("s", 0, 1),
        ]
        for bad in ([(-1, 2)], [(3, 2)], [(0, 1.5)], [(0,)]):
            with pytest.raises(ValidationError, match="span 0"):
                store.get_message_spans("s", bad)  # type: ignore[arg-type]
        assert not store.exists("nope")
        assert store.delete_messages("s", ["id-1"], now=NOW) == 1  # positions move up
        parts = store.get_message_spans("s", [(1, 2), (5, 5), (6, 6)])
        assert [contents(part) for part in parts] == [["m2", "m3"], ["m6"], []]

    # -------------------------------------------------------------- fetched context

    def test_fetched_grouped_in_first_seen_order(self, store: BaseStore) -> None:
        """Fetched items come back by source type, types in the order first seen."""
        items = [item("web_search", 0), item("js_scraping", 1), item("web_search", 2)]
        items.append(item("x y", 3))
        result = store.append_fetched("s", items, init=init("s"), now=NOW)
        assert result.added == 4
        fetched = store.get_fetched("s")
        assert list(fetched) == ["web_search", "js_scraping", "x y"]
        assert [i["content"] for i in fetched["web_search"]] == ["c0", "c2"]
        assert store.get_fetched("s", "js_scraping") == {"js_scraping": [decoded(items[1])]}
        assert store.get_fetched("s", "unknown") == {}
        document = store.get_document("s")
        assert document is not None
        assert document["fetched_context"] == fetched

    def test_fetched_dedupe(self, store: BaseStore) -> None:
        """With ``dedupe``, an item whose fingerprint is stored or seen in the batch is skipped."""
        first = [item("web", 0), item("web", 1)]
        assert store.append_fetched("s", first, init=init("s"), now=NOW, dedupe=True).added == 2
        again = [item("web", 1), item("web", 2), item("web", 2)]
        assert store.append_fetched("s", again, init=init("s"), now=NOW, dedupe=True).added == 1
        assert [i["content"] for i in store.get_fetched("s")["web"]] == ["c0", "c1", "c2"]
        # without dedupe, duplicates are kept
        assert store.append_fetched("s", [item("web", 0)], init=init("s"), now=NOW).added == 1
        assert len(store.get_fetched("s")["web"]) == 4

    # -------------------------------------------------------------- shared state

    def test_merge_shared_semantics(self, store: BaseStore) -> None:
        """``merge_shared`` merges dicts key by key; anything else replaces; JSON kept exactly."""

        def merge(partial: dict[str, Any]) -> None:
            store.merge_shared("s", partial, init=init("s"), now=NOW)

        merge({"a": {"b": 1, "l": [1, 2]}, "s": 1, "e": [], "d": {}})
        merge({"a": {"c": {"deep": [], "n": None}, "l": []}, "s": {"now": "dict"}})
        merge({"e": {}, "d": {"k": [{}]}, "f": 0.30000000000000004, "big": 2**62 + 1})
        merge({"a": {"c": {"n": {"x": 'é"\\/\u2028'}}}, "d": {}})
        merge({"unicode": "ünï ✓ 🚀", "t": True, "z": False, "neg": -1.5e-300})
        merge({"s": {"now": {}}, "a": {"l": {"replaced": "list"}}})
        header = store.get_header("s")
        assert header is not None
        shared = header["shared"]
        assert shared == {
            "a": {"b": 1, "l": {"replaced": "list"}, "c": {"deep": [], "n": {"x": 'é"\\/\u2028'}}},
            "s": {"now": {}},
            "e": {},
            "d": {"k": [{}]},
            "f": 0.30000000000000004,
            "big": 2**62 + 1,
            "unicode": "ünï ✓ 🚀",
            "t": True,
            "z": False,
            "neg": -1.5e-300,
        }
        assert list(shared) == ["a", "s", "e", "d", "f", "big", "unicode", "t", "z", "neg"]
        assert list(shared["a"]) == ["b", "l", "c"]

    def test_merge_into_scalar_and_scalar_over_dict(self, store: BaseStore) -> None:
        """A dict merged over a scalar replaces it, and a scalar over a dict replaces it."""
        store.merge_shared("s", {"k": 1, "m": {"x": {"y": 1}}}, init=init("s"), now=NOW)
        store.merge_shared("s", {"k": {"now": "dict"}, "m": {"x": 5}}, init=init("s"), now=NOW)
        header = store.get_header("s")
        assert header is not None
        assert header["shared"] == {"k": {"now": "dict"}, "m": {"x": 5}}

    def test_set_shared_replaces(self, store: BaseStore) -> None:
        """``set_shared`` replaces one key whole, whatever characters the key holds."""
        store.merge_shared("s", {"k": {"a": 1, "b": 2}}, init=init("s"), now=NOW)
        store.set_shared("s", "k", {"c": []}, init=init("s"), now=NOW)
        store.set_shared("s", "weird key: {}*", [1, {"x": []}], init=init("s"), now=NOW)
        header = store.get_header("s")
        assert header is not None
        assert header["shared"] == {"k": {"c": []}, "weird key: {}*": [1, {"x": []}]}

    @pytest.mark.parametrize("how", ["merge", "set"])
    def test_shared_over_its_size_limit_is_refused_unchanged(
        self, store: BaseStore, how: str
    ) -> None:
        """A merge or set whose *result* outgrows ``MAX_SHARED_BYTES`` raises, changing nothing."""
        store.merge_shared("s", {"have": "x" * (MAX_SHARED_BYTES - 200)}, init=init("s"), now=NOW)
        before = store.get_document("s")
        big = "y" * 300  # fits alone, not with what the session holds
        write: Callable[[], object] = (
            (lambda: store.merge_shared("s", {"more": big}, init=init("s"), now=LATER))
            if how == "merge"
            else (lambda: store.set_shared("s", "more", big, init=init("s"), now=LATER))
        )
        with pytest.raises(SharedStateTooLargeError) as info:
            write()
        assert info.value.size > info.value.limit == MAX_SHARED_BYTES
        assert store.get_document("s") == before
        store.set_shared("s", "have", big, init=init("s"), now=LATER)  # replacing: it fits
        header = store.get_header("s")
        assert header is not None
        assert header["shared"] == {"have": big}

    @pytest.mark.parametrize("how", ["merge", "set"])
    def test_a_refused_shared_write_creates_no_session(self, store: BaseStore, how: str) -> None:
        """Too large for a session that does not exist: no session is created either."""
        big = "z" * (MAX_SHARED_BYTES + 1)
        write: Callable[[], object] = (
            (lambda: store.merge_shared("new", {"blob": big}, init=init("new"), now=NOW))
            if how == "merge"
            else (lambda: store.set_shared("new", "blob", big, init=init("new"), now=NOW))
        )
        with pytest.raises(SharedStateTooLargeError):
            write()
        assert not store.exists("new")
        assert store.list_sessions() == []

    # -------------------------------------------------------------- header

    def test_update_header_never_touches_counters(self, store: BaseStore) -> None:
        """``update_header`` sets metadata keys and the system prompt, never the counters."""
        append(store, "s", 0, 1)
        store.update_header(
            "s",
            init=init("s"),
            now=LATER,
            metadata={"message_count": 99, "token_count": 99, "mode": "research", "extra": {}},
            system_prompt="Be brief.",
            set_system_prompt=True,
        )
        header = store.get_header("s")
        assert header is not None
        meta = header["metadata"]
        assert (meta["message_count"], meta["token_count"]) == (2, 6)
        assert meta["mode"] == "research"
        assert meta["extra"] == {}
        assert meta["timestamp"] == LATER
        assert header["system_prompt"] == "Be brief."
        store.update_header("s", init=init("s"), now=NOW, metadata={"mode": "thinking"})
        header = store.get_header("s")
        assert header is not None
        assert header["system_prompt"] == "Be brief."
        store.update_header(
            "s", init=init("s"), now=NOW, system_prompt=None, set_system_prompt=True
        )
        header = store.get_header("s")
        assert header is not None
        assert header["system_prompt"] is None

    def test_update_header_metadata_is_shallow(self, store: BaseStore) -> None:
        """Metadata keys are replaced whole, never merged."""
        store.update_header("s", init=init("s"), now=NOW, metadata={"extra": {"a": 1}})
        store.update_header("s", init=init("s"), now=NOW, metadata={"extra": {"b": 2}})
        header = store.get_header("s")
        assert header is not None
        assert header["metadata"]["extra"] == {"b": 2}

    # -------------------------------------------------------------- clear / delete / replace

    @pytest.mark.parametrize("preserve", [False, True])
    def test_clear(self, store: BaseStore, preserve: bool) -> None:
        """``clear`` drops history (and fetched items unless preserved), keeps the rest."""
        append(store, "s", 0, 1)
        store.append_fetched("s", [item("web", 0)], init=init("s"), now=NOW, dedupe=True)
        store.merge_shared("s", {"keep": 1}, init=init("s"), now=NOW)
        store.update_header("s", init=init("s"), now=NOW, system_prompt="P", set_system_prompt=True)
        assert store.clear("s", now=LATER, preserve_fetched=preserve)
        document = store.get_document("s")
        assert document is not None
        assert document["conversation_history"] == []
        assert document["metadata"]["message_count"] == 0
        assert document["metadata"]["token_count"] == 0
        assert document["metadata"]["timestamp"] == LATER
        assert document["shared"] == {"keep": 1}
        assert document["system_prompt"] == "P"
        again = store.append_fetched("s", [item("web", 0)], init=init("s"), now=NOW, dedupe=True)
        if preserve:  # fingerprints kept too: the same item is still a duplicate
            assert list(document["fetched_context"]) == ["web"]
            assert again.added == 0
        else:
            assert document["fetched_context"] == {}
            assert again.added == 1
        assert append(store, "s", 0, 7).added == 2  # the message ids went with the history
        assert contents(store.get_messages("s")) == ["m0", "m7"]

    def test_delete(self, store: BaseStore) -> None:
        """``delete`` removes everything: a later write starts a new session from scratch."""
        append(store, "s", 0)
        store.append_fetched("s", [item("web", 0)], init=init("s"), now=NOW, dedupe=True)
        assert store.delete("s")
        assert not store.delete("s")
        assert store.get_document("s") is None
        assert store.list_sessions() == []
        assert append(store, "s", 1).created
        new = store.append_fetched("s", [item("web", 0)], init=init("s"), now=NOW, dedupe=True)
        assert new.added == 1
        assert contents(store.get_messages("s")) == ["m1"]

    def test_replace_document(self, store: BaseStore) -> None:
        """``replace_document`` swaps the whole session; counters come from the header."""
        append(store, "s", 0, 1, 2)
        header = init("s")
        header["system_prompt"] = "imported"
        header["metadata"].update(message_count=2, token_count=42, mode="research", extra=[])
        header["shared"] = {"x": {"y": []}}
        items = [item("web", 0), item("pdf", 1)]
        result = store.replace_document("s", header, [msg(10), msg(11)], items)
        assert not result.created
        assert result.added == 2
        document = store.get_document("s")
        assert document is not None
        assert document["system_prompt"] == "imported"
        assert document["metadata"] == header["metadata"]
        assert document["shared"] == {"x": {"y": []}}
        assert contents(document["conversation_history"]) == ["m10", "m11"]
        assert list(document["fetched_context"]) == ["web", "pdf"]
        again = store.append_fetched("s", [item("web", 0)], init=init("s"), now=NOW, dedupe=True)
        assert again.added == 0
        assert append(store, "s", 0).added == 1  # the old history's ids are gone
        assert store.replace_document("new", init("new"), [], []).created
        assert store.list_sessions() == ["new", "s"]

    def test_replace_document_if_absent(self, store: BaseStore) -> None:
        """``if_absent`` writes a new session and leaves an existing one untouched."""
        assert store.replace_document("s", init("s"), [msg(0)], [], if_absent=True).created
        refused = store.replace_document("s", init("s"), [msg(1), msg(2)], [], if_absent=True)
        assert (refused.created, refused.added) == (False, 0)
        assert [m["id"] for m in store.get_messages("s")] == ["id-0"]

    def test_concurrent_imports_of_one_new_id(self, store: BaseStore) -> None:
        """Imports of one new id at once all succeed; with ``if_absent`` exactly one writes.

        The second half applies to a store declaring ``imports_if_absent`` (its check and
        write are one atomic step); every built-in store does.
        """
        from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

        def put(i: int, *, absent: bool) -> bool:
            doc = [msg(100 * i + j) for j in range(3)]
            return store.replace_document(
                f"s{absent}", init(f"s{absent}"), doc, [], if_absent=absent
            ).created

        with ThreadPoolExecutor(8) as pool:
            assert sum(pool.map(lambda i: put(i, absent=False), range(8))) >= 1  # none fails
            assert len(store.get_messages("sFalse")) == 3
            if not store.imports_if_absent:
                return
            created = list(pool.map(lambda i: put(i, absent=True), range(8)))
        assert created.count(True) == 1
        winner = created.index(True)
        expected = [f"id-{100 * winner + j}" for j in range(3)]
        assert [m["id"] for m in store.get_messages("sTrue")] == expected

    def test_replace_document_keeps_each_message_id_once(self, store: BaseStore) -> None:
        """An imported history holding an id twice keeps its first occurrence only."""
        result = store.replace_document("s", init("s"), [msg(0), msg(1), msg(0)], [])
        assert result.created
        assert result.added == 2
        assert [m["id"] for m in store.get_messages("s")] == ["id-0", "id-1"]
        assert append(store, "s", 1).added == 0

    # -------------------------------------------------------------- history edits

    def test_delete_messages(self, store: BaseStore) -> None:
        """``delete_messages`` removes those ids, keeps the order, lowers both counters."""
        store.append_messages(
            "s", [msg(i, tokens=i + 1) for i in range(5)], init=init("s"), now=NOW
        )
        assert store.delete_messages("s", ["id-1", "id-3", "id-9"], now=LATER) == 2
        assert contents(store.get_messages("s")) == ["m0", "m2", "m4"]
        header = store.get_header("s")
        assert header is not None
        meta = header["metadata"]
        assert (meta["message_count"], meta["token_count"]) == (3, 1 + 3 + 5)
        assert meta["timestamp"] == LATER
        assert store.count_messages("s") == 3
        assert store.delete_messages("s", ["id-1", "nope"], now=NOW) == 0  # nothing changed
        header = store.get_header("s")
        assert header is not None
        assert header["metadata"]["timestamp"] == LATER
        assert append(store, "s", 1).added == 1  # a deleted id is free again
        assert contents(store.get_messages("s")) == ["m0", "m2", "m4", "m1"]
        assert store.delete_messages("s", ["id-2", "id-2", "id-4", "id-2"], now=LATER) == 2

    def test_ids_that_differ_only_in_case_or_normal_form_are_different_sessions(
        self, store: BaseStore
    ) -> None:
        """Session ids are compared as exact strings.

        No case folding, no Unicode normalisation, no trimming: a case-insensitive
        collation, say, would merge them.
        """
        pairs = [("Alice", "alice"), ("caf\u00e9", "cafe\u0301"), ("user", "user "), ("a", "A")]
        ids = list(dict.fromkeys(sid for pair in pairs for sid in pair))
        for n, sid in enumerate(ids):
            append(store, sid, n)
        for n, sid in enumerate(ids):
            assert contents(store.get_messages(sid)) == [f"m{n}"], sid
        assert store.list_sessions() == sorted(ids)

    def test_the_init_header_given_is_not_kept(self, store: BaseStore) -> None:
        """The store keeps its own copy of ``init``.

        The caller changing it later, or the store counting into it, changes neither side.
        """
        given = init("s")
        store.append_messages("s", [msg(0)], init=given, now=NOW)
        assert given == init("s")  # the store's counters did not land in the caller's dict
        given["metadata"]["mode"] = "mutated"
        given["shared"]["k"] = "mutated"
        header = store.get_header("s")
        assert header is not None
        assert header["metadata"]["mode"] == "normal"
        assert header["shared"] == {}

    def test_replace_message(self, store: BaseStore) -> None:
        """``replace_message`` keeps the place; ``token_count`` moves by the difference."""
        append(store, "s", 0, 1, 2)
        new = msg(1, tokens=10)
        edited = EncodedMessage(new.json.replace('"m1"', '"edited"'), new.tokens, new.id)
        assert store.replace_message("s", "id-1", edited, now=LATER)
        assert contents(store.get_messages("s")) == ["m0", "edited", "m2"]
        header = store.get_header("s")
        assert header is not None
        meta = header["metadata"]
        assert (meta["message_count"], meta["token_count"]) == (3, 3 + 10 + 3)
        assert meta["timestamp"] == LATER
        assert not store.replace_message("s", "nope", msg(7), now=NOW)
        assert contents(store.get_messages("s")) == ["m0", "edited", "m2"]
        assert append(store, "s", 1).added == 0  # the id is still stored

    @pytest.mark.parametrize("inclusive", [False, True])
    def test_truncate_messages(self, store: BaseStore, inclusive: bool) -> None:
        """``truncate_messages`` drops what follows the message (and it, if ``inclusive``)."""
        store.append_messages(
            "s", [msg(i, tokens=i + 1) for i in range(6)], init=init("s"), now=NOW
        )
        removed = store.truncate_messages("s", "id-2", inclusive=inclusive, now=LATER)
        kept = 2 if inclusive else 3
        assert removed == 6 - kept
        assert contents(store.get_messages("s")) == [f"m{i}" for i in range(kept)]
        header = store.get_header("s")
        assert header is not None
        meta = header["metadata"]
        assert (meta["message_count"], meta["token_count"]) == (kept, sum(range(1, kept + 1)))
        assert meta["timestamp"] == LATER
        assert store.truncate_messages("s", "id-4", inclusive=True, now=NOW) is None
        last = f"id-{kept - 1}"
        assert store.truncate_messages("s", last, inclusive=False, now=NOW) == 0
        assert append(store, "s", 4, 0).added == 1  # removed ids are free again
        assert store.truncate_messages("s", "id-0", inclusive=True, now=NOW) == kept + 1
        assert store.count_messages("s") == 0
        assert store.exists("s")

    def test_history_edits_of_a_missing_session_create_nothing(self, store: BaseStore) -> None:
        """History edits of a missing session change nothing and report it."""
        assert store.delete_messages("nope", ["id-0"], now=NOW) == 0
        assert not store.replace_message("nope", "id-0", msg(0), now=NOW)
        assert store.truncate_messages("nope", "id-0", inclusive=True, now=NOW) is None
        assert not store.exists("nope")
        assert store.list_sessions() == []

    # -------------------------------------------------------------- listing

    def test_list_page(self, store: BaseStore) -> None:
        """``list_page`` pages through live ids in code point order, by prefix and cursor."""
        for sid in _PAGED_IDS:
            store.create(sid, init(sid))
        seen: list[str] = []
        cursor = None
        while True:
            page = store.list_page(cursor=cursor, limit=50)
            seen += page
            if len(page) < 50:
                break
            cursor = page[-1]
        assert seen == _PAGED_IDS == store.list_sessions()
        assert store.list_page(prefix="user-01", limit=7) == [f"user-01{i:02d}" for i in range(7)]
        assert store.list_page(prefix="user-01", limit=500) == [
            f"user-01{i:02d}" for i in range(100)
        ]
        assert store.list_page(prefix="user-0199", cursor="user-0100", limit=3) == ["user-0199"]
        assert store.list_page(prefix="z", limit=9) == ["zé", "z\u4e2d", "z\ue000", "z\U0001f600"]
        assert store.list_page(prefix="z", cursor="z\ue000", limit=9) == ["z\U0001f600"]
        assert store.list_page(prefix="nobody", limit=5) == []
        assert store.delete("user-0001")
        assert store.list_page(limit=3) == ["a", "b:{x}", "user-0000"]
        assert store.list_page(cursor="user-0000", limit=2) == ["user-0002", "user-0003"]

    # -------------------------------------------------------------- isolation, aliasing

    def test_hostile_ids_are_isolated(self, store: BaseStore) -> None:
        """Ids with braces, colons, globs, newlines or 256 characters name their own session."""
        for n, sid in enumerate(HOSTILE_IDS):
            append(store, sid, n)
            store.merge_shared(sid, {"owner": sid}, init=init(sid), now=NOW)
            fetched = [item("web", n, fp="same")]
            store.append_fetched(sid, fetched, init=init(sid), now=NOW, dedupe=True)
        assert store.list_sessions() == sorted(HOSTILE_IDS)
        for n, sid in enumerate(HOSTILE_IDS):
            document = store.get_document(sid)
            assert document is not None
            assert document["metadata"]["session_id"] == sid
            assert contents(document["conversation_history"]) == [f"m{n}"]
            assert document["shared"] == {"owner": sid}
            assert [i["content"] for i in document["fetched_context"]["web"]] == [f"c{n}"]
        for sid in HOSTILE_IDS[::2]:
            assert store.delete(sid)
        assert store.list_sessions() == sorted(HOSTILE_IDS[1::2])
        for n, sid in enumerate(HOSTILE_IDS):
            assert store.count_messages(sid) == (n % 2)

    def test_returned_objects_are_fresh(self, store: BaseStore) -> None:
        """Nothing a read returns or a write is given aliases what the store holds."""
        append(store, "s", 0)
        store.merge_shared("s", {"a": {"b": []}}, init=init("s"), now=NOW)
        store.append_fetched("s", [item("web", 0)], init=init("s"), now=NOW)
        document = store.get_document("s")
        assert document is not None
        document["shared"]["a"]["b"].append(1)
        document["metadata"]["mode"] = "mutated"
        document["conversation_history"][0]["content"] = "mutated"
        document["fetched_context"]["web"][0]["content"] = "mutated"
        header = store.get_header("s")
        assert header is not None
        header["shared"]["a"] = None
        store.get_messages("s")[0]["content"] = "mutated"
        store.get_fetched("s")["web"].clear()
        partial: dict[str, Any] = {"p": {"q": []}}
        store.merge_shared("s", partial, init=init("s"), now=NOW)
        partial["p"]["q"].append("mutated")
        value: dict[str, Any] = {"r": []}
        store.set_shared("s", "v", value, init=init("s"), now=NOW)
        value["r"].append("mutated")
        fresh = store.get_document("s")
        assert fresh is not None
        assert fresh["shared"] == {"a": {"b": []}, "p": {"q": []}, "v": {"r": []}}
        assert fresh["metadata"]["mode"] == "normal"
        assert contents(fresh["conversation_history"]) == ["m0"]
        assert fresh["fetched_context"]["web"][0]["content"] == "c0"

    # -------------------------------------------------------------- async twins

    def test_async_twins(self, store: BaseStore) -> None:
        """Each ``aX`` does what ``X`` does (run here in a fresh event loop)."""

        async def main() -> None:
            assert (await store.acreate("s", init("s"))).created
            appended = await store.aappend_messages("s", [msg(0), msg(1)], init=init("s"), now=NOW)
            assert appended.added == 2
            fetched = await store.aappend_fetched(
                "s", [item("web", 0), item("web", 0)], init=init("s"), now=NOW, dedupe=True
            )
            assert fetched.added == 1
            await store.amerge_shared("s", {"a": {"b": []}}, init=init("s"), now=NOW)
            await store.aset_shared("s", "c", 1, init=init("s"), now=NOW)
            await store.aupdate_header(
                "s",
                init=init("s"),
                now=LATER,
                metadata={"mode": "thinking"},
                system_prompt="P",
                set_system_prompt=True,
            )
            assert await store.aexists("s")
            assert await store.acount_messages("s") == 2
            assert contents(await store.aget_messages("s", -1, -1)) == ["m1"]
            assert list(await store.aget_fetched("s")) == ["web"]
            header = await store.aget_header("s")
            assert header is not None
            assert header["shared"] == {"a": {"b": []}, "c": 1}
            assert header["metadata"]["mode"] == "thinking"
            document = await store.aget_document("s")
            assert document == store.get_document("s")
            assert await store.alist_sessions() == ["s"]
            assert await store.aclear("s", now=NOW)
            assert await store.acount_messages("s") == 0
            replaced = await store.areplace_document("t", init("t"), [msg(3)], [])
            assert replaced.created
            assert await store.adelete("s")
            assert await store.alist_sessions() == ["t"]
            await store.aclose()

        asyncio.run(main())

    def test_async_history_edits_and_paging(self, store: BaseStore) -> None:
        """The async history edits and ``alist_page`` do what their sync twins do."""

        async def main() -> None:
            await store.aappend_messages("s", [msg(i) for i in range(6)], init=init("s"), now=NOW)
            assert await store.adelete_messages("s", ["id-0"], now=NOW) == 1
            assert await store.areplace_message("s", "id-1", msg(1, tokens=7), now=NOW)
            assert await store.atruncate_messages("s", "id-3", inclusive=False, now=NOW) == 2
            assert await store.atruncate_messages("s", "nope", inclusive=False, now=NOW) is None
            await store.acreate("t", init("t"))
            assert await store.alist_page(limit=1) == ["s"]
            assert await store.alist_page(cursor="s", limit=5) == ["t"]
            assert await store.alist_page(prefix="t", limit=5) == ["t"]

        asyncio.run(main())
        assert [m["id"] for m in store.get_messages("s")] == ["id-1", "id-2", "id-3"]
        header = store.get_header("s")
        assert header is not None
        meta = header["metadata"]
        assert (meta["message_count"], meta["token_count"]) == (3, 7 + 3 + 3)
