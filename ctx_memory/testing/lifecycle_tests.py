"""The lifecycle contract: TTL, LRU eviction, lifecycle hooks, several writers, closing.

The docstring of each test is the clause of the contract it checks.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from ctx_memory.errors import SharedStateTooLargeError, StoreError
from ctx_memory.testing._base import (
    LATER,
    NOW,
    ContractBase,
    StoreFactory,
    append,
    contents,
    init,
    msg,
    requires,
)

__all__ = ["StoreLifecycleTests"]


class StoreLifecycleTests(ContractBase):
    """Lifecycle tests; part of ``StoreContract``."""

    def test_close_is_idempotent(self, open_store: StoreFactory) -> None:
        """``close`` may be called twice; ``with`` closes the store."""
        with open_store() as store:
            append(store, "s", 0)
        store.close()

    def test_operations_after_close_are_refused(self, open_store: StoreFactory) -> None:
        """Once closed, a store refuses every operation, sync and async, with ``StoreError``.

        Nothing is reopened behind the caller's back: a closed store stays closed, the
        same on every backend.
        """
        store = open_store()
        append(store, "s", 0)
        store.close()
        with pytest.raises(StoreError):
            store.get_header("s")
        with pytest.raises(StoreError):
            append(store, "s", 1)
        with pytest.raises(StoreError):
            asyncio.run(store.aget_header("s"))

    # -------------------------------------------------------------- concurrency

    def test_concurrent_writers_lose_nothing_and_duplicate_nothing(
        self, open_store: StoreFactory
    ) -> None:
        """Threads appending each other's messages store each id once; merges all land.

        With a shared backend the threads write through two store objects.
        """
        stores = [open_store()]
        if self.supports_shared_backend:
            stores.append(open_store())
        messages = [msg(i, tokens=i) for i in range(30)]

        def writer(w: int) -> None:
            store = stores[w % len(stores)]
            for i in range(30):
                store.append_messages("s", [messages[(i + w) % 30]], init=init("s"), now=NOW)
            store.merge_shared("s", {"by": {f"w{w}": w}}, init=init("s"), now=NOW)

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        document = stores[-1].get_document("s")
        assert document is not None
        ids = [m["id"] for m in document["conversation_history"]]
        assert sorted(ids) == sorted(m.id for m in messages)
        meta = document["metadata"]
        assert (meta["message_count"], meta["token_count"]) == (30, sum(range(30)))
        assert document["shared"] == {"by": {f"w{w}": w for w in range(8)}}

    # -------------------------------------------------------------- TTL

    @requires("ttl")
    def test_ttl_expiry_and_sliding_refresh(self, open_store: StoreFactory) -> None:
        """Sessions expire ``ttl_seconds`` after their last write; reads do not refresh."""
        store = open_store(ttl_seconds=0.6)
        events: list[tuple[str, str]] = []
        store.lifecycle_hook = lambda kind, sid: events.append((kind, sid))
        append(store, "keep", 0)
        append(store, "drop", 0)
        time.sleep(0.35)
        append(store, "keep", 1)  # a write slides the TTL
        store.get_messages("drop")  # a read does not
        time.sleep(0.4)
        assert store.exists("keep")
        assert not store.exists("drop")
        assert store.get_document("drop") is None
        assert store.list_sessions() == ["keep"]
        assert contents(store.get_messages("keep")) == ["m0", "m1"]
        time.sleep(0.7)
        store.gc()
        assert store.list_sessions() == []
        assert ("session_expired", "keep") in events
        # an expired session starts afresh
        assert append(store, "drop", 5).created
        assert contents(store.get_messages("drop")) == ["m5"]

    @requires("ttl")
    def test_deleting_an_expired_session_reports_its_expiry(self, open_store: StoreFactory) -> None:
        """An expired session does not exist: ``delete`` answers ``False`` and reports it.

        What is left of it is removed, and its expiry reported once, as a listing or
        ``gc`` would.
        """
        store = open_store(ttl_seconds=0.3)
        events: list[tuple[str, str]] = []
        store.lifecycle_hook = lambda kind, sid: events.append((kind, sid))
        append(store, "gone", 0)
        time.sleep(0.45)
        assert store.delete("gone") is False
        assert events == [("session_expired", "gone")]
        assert store.delete("gone") is False
        assert store.gc() == 0
        assert store.list_sessions() == []
        assert events == [("session_expired", "gone")]

    @requires("ttl")
    def test_each_expiry_is_reported_once(self, open_store: StoreFactory) -> None:
        """Every expired session is reported once to every hook, whoever finds it first."""
        store = open_store(ttl_seconds=0.3)
        heard: list[str] = []
        keyed: list[str] = []
        store.add_lifecycle_hook(lambda kind, sid: heard.append(f"{kind}:{sid}"))
        store.add_lifecycle_hook(lambda _kind, _sid: keyed.append("replaced"), key="k")
        store.add_lifecycle_hook(lambda kind, sid: keyed.append(f"{kind}:{sid}"), key="k")
        for sid in ("a", "b", "c"):
            store.create(sid, init(sid))
        time.sleep(0.45)
        assert not store.exists("a")
        assert store.get_messages("b") == []
        removed = store.gc()
        assert 1 <= removed <= 3  # the reads above may have removed "a" and "b" already
        assert store.gc() == 0
        assert store.list_sessions() == []
        expected = ["session_expired:a", "session_expired:b", "session_expired:c"]
        assert sorted(heard) == sorted(keyed) == expected

    @requires("ttl")
    def test_list_page_skips_expired_sessions(self, open_store: StoreFactory) -> None:
        """Expired sessions never appear in a page."""
        store = open_store(ttl_seconds=0.3)
        for i in range(6):
            store.create(f"old{i}", init(f"old{i}"))
        time.sleep(0.45)
        store.create("new", init("new"))
        assert store.list_page(limit=3) == ["new"]
        assert store.list_page(prefix="old", limit=3) == []

    # -------------------------------------------------------------- LRU

    @requires("max_sessions")
    def test_lru_eviction(self, open_store: StoreFactory) -> None:
        """Creating one session too many evicts the least recently read or written one."""
        store = open_store(max_sessions=2)
        events: list[tuple[str, str]] = []
        store.lifecycle_hook = lambda kind, sid: events.append((kind, sid))
        append(store, "a", 0)
        append(store, "b", 0)
        assert store.get_messages("a")  # a read makes "a" recently used
        result = append(store, "c", 0)
        assert result.created
        assert result.evicted == ("b",)
        assert events == [("session_evicted", "b")]
        assert store.list_sessions() == ["a", "c"]
        assert store.get_document("b") is None
        append(store, "a", 1)  # a write too
        assert append(store, "d", 0).evicted == ("c",)
        assert store.list_sessions() == ["a", "d"]
        assert contents(store.get_messages("a")) == ["m0", "m1"]
        # the read just above made "a" the most recently used
        assert store.replace_document("e", init("e"), [msg(1)], []).evicted == ("d",)
        assert store.list_sessions() == ["a", "e"]

    @requires("max_sessions", "exact_lru")
    def test_appending_only_known_ids_is_no_access(self, open_store: StoreFactory) -> None:
        """A retried append whose ids are all stored changes nothing: not the LRU order."""
        store = open_store(max_sessions=2)
        append(store, "a", 0)
        append(store, "b", 0)
        again = store.append_messages("a", [msg(0)], init=init("a"), now=LATER)
        assert (again.created, again.added) == (False, 0)
        assert append(store, "c", 0).evicted == ("a",)
        assert store.list_sessions() == ["b", "c"]

    @requires("max_sessions")
    def test_every_lifecycle_hook_hears_each_eviction(self, open_store: StoreFactory) -> None:
        """Each hook added hears every eviction until removed; a hook's key replaces."""
        store = open_store(max_sessions=1)
        first: list[str] = []
        second: list[str] = []
        remove_first = store.add_lifecycle_hook(lambda kind, sid: first.append(f"{kind}:{sid}"))
        store.add_lifecycle_hook(lambda _kind, _sid: second.append("replaced"), key="k")
        store.add_lifecycle_hook(lambda kind, sid: second.append(f"{kind}:{sid}"), key="k")
        append(store, "a", 0)
        assert append(store, "b", 0).evicted == ("a",)
        remove_first()
        assert append(store, "c", 0).evicted == ("b",)
        assert first == ["session_evicted:a"]
        assert second == ["session_evicted:a", "session_evicted:b"]

    @requires("max_sessions", "exact_lru")
    @pytest.mark.parametrize("write", ["import_if_absent", "shared_too_large", "no_op_edit"])
    def test_a_refused_or_empty_write_is_no_access(
        self, open_store: StoreFactory, write: str
    ) -> None:
        """A write refused whole, or an edit that finds nothing to change, is no access."""
        store = open_store(max_sessions=2)
        append(store, "a", 0)
        append(store, "b", 0)
        if write == "import_if_absent":
            taken = store.replace_document("a", init("a"), [msg(5)], [], if_absent=True)
            assert (taken.created, taken.added) == (False, 0)
        elif write == "shared_too_large":
            with pytest.raises(SharedStateTooLargeError):
                store.set_shared("a", "k", "x" * (1 << 20), init=init("a"), now=LATER)
        else:
            assert store.delete_messages("a", ["not-there"], now=LATER) == 0
        assert append(store, "c", 0).evicted == ("a",)

    @requires("max_sessions")
    def test_max_sessions_must_be_a_whole_number(self, store_factory: StoreFactory) -> None:
        """``max_sessions`` is refused unless it is an int of at least 1 (a bool is not)."""
        for bad in (True, 1.5, 0, "2"):
            with pytest.raises(ValueError, match="max_sessions"):
                store_factory(max_sessions=bad)  # type: ignore[arg-type]

    # -------------------------------------------------------------- several store objects

    @requires("shared_backend")
    def test_write_after_another_store_object_deleted_the_session(
        self, open_store: StoreFactory
    ) -> None:
        """A write after another store object deleted the session recreates it whole."""
        one, two = open_store(), open_store()
        append(one, "s", 0)
        assert two.delete("s")
        result = append(one, "s", 1)
        assert result.created
        document = two.get_document("s")
        assert document is not None
        assert document["metadata"]["session_id"] == "s"
        assert contents(document["conversation_history"]) == ["m1"]

    @requires("shared_backend", "max_sessions")
    def test_lru_is_shared_between_store_objects(self, open_store: StoreFactory) -> None:
        """``max_sessions`` counts the sessions of every store object on the backend."""
        one, two = open_store(max_sessions=2), open_store(max_sessions=2)
        append(one, "a", 0)
        append(two, "b", 0)
        append(one, "c", 0)
        assert two.list_sessions() == ["b", "c"]
