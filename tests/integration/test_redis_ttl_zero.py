"""A write with no TTL (``SESSION_EXPIRATION_SECONDS=0``: never) makes its session permanent.

A session written under a TTL, then written by a store with none (the setting changed, or a
second app, CLI or worker on the same prefix), must not expire with the TTL of the earlier
write: on Redis every key the write would give the TTL loses it (``PERSIST``), on the
session scripts and on the append hot path (``APPEND_SCRIPT``), as SQLite and PostgreSQL
keep such a session.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest

from ctx_memory import ContextManager
from ctx_memory.stores.redis import RedisStore, session_keys

if TYPE_CHECKING:
    from collections.abc import Callable

    from ctx_memory.stores.base import BaseStore

pytestmark = [pytest.mark.redis, pytest.mark.stores("redis", "cluster")]

TTL = 1.0

# Every kind of write a store with no TTL may make on a session created under a TTL.
WRITES: dict[str, Callable[[ContextManager, str], object]] = {
    "add_user_message": lambda cm, sid: cm.add_user_message(sid, "later"),
    "update_partial_context": lambda cm, sid: cm.update_partial_context(sid, {"a": 1}),
    "update_metadata": lambda cm, sid: cm.update_metadata(sid, mode="research"),
    "add_fetched_context": lambda cm, sid: cm.add_fetched_context(sid, "web", "page 2"),
    "clear": lambda cm, sid: cm.clear(sid, preserve_fetched=True),
}


def manager(store: BaseStore) -> ContextManager:
    return ContextManager(store=store, token_counter="approximate")


def no_key_expires(store: BaseStore, sid: str) -> None:
    """No key of the session is left with a TTL (but the recall list, not written here)."""
    assert isinstance(store, RedisStore)
    client: Any = store.client
    k = session_keys(store.prefix, sid)
    for key in (k.h, k.m, k.ids, k.f, k.fp):
        assert client.pttl(key) in (-1, -2), key  # no TTL, or no such key


@pytest.mark.parametrize("max_sessions", [None, 10], ids=["unbounded", "max_sessions"])
def test_every_write_without_ttl_makes_the_session_permanent(
    make_store: Callable[..., BaseStore], max_sessions: int | None
) -> None:
    short = manager(make_store(ttl_seconds=TTL, max_sessions=max_sessions))
    never = manager(make_store(max_sessions=max_sessions))
    for kind, write in WRITES.items():
        sid = f"s-{kind}"
        short.add_user_message(sid, "first")
        short.add_fetched_context(sid, "web", "page 1")
        write(never, sid)
        no_key_expires(never.store, sid)

    time.sleep(TTL + 0.6)  # past the TTL the first writes gave
    for kind in WRITES:
        doc = never.get_context(f"s-{kind}")
        assert doc is not None, f"{kind} by a store with no TTL: the session expired"
        messages = [m["content"] for m in doc["conversation_history"]]
        fetched = [i["content"] for items in doc["fetched_context"].values() for i in items]
        assert messages == {"add_user_message": ["first", "later"], "clear": []}.get(
            kind, ["first"]
        ), kind
        assert fetched == (["page 1", "page 2"] if kind == "add_fetched_context" else ["page 1"])
    assert doc["shared"] == {}
    assert never.get_context("s-update_partial_context")["shared"] == {"a": 1}  # type: ignore[index]
    assert never.get_metadata("s-update_metadata")["mode"] == "research"  # type: ignore[index]


@pytest.mark.parametrize("max_sessions", [None, 10], ids=["unbounded", "max_sessions"])
def test_an_append_to_a_known_session_without_ttl_makes_it_permanent(
    make_store: Callable[..., BaseStore], max_sessions: int | None
) -> None:
    """The hot path: the no-TTL store knows the session (it wrote it), a TTL store wrote since."""
    short = manager(make_store(ttl_seconds=TTL, max_sessions=max_sessions))
    never = manager(make_store(max_sessions=max_sessions))
    never.add_user_message("hot", "one")  # known to `never` from now on
    short.add_fetched_context("hot", "web", "page")  # gives every key the TTL again
    short.add_user_message("hot", "two")
    never.add_user_message("hot", "three")  # APPEND_SCRIPT with no TTL
    no_key_expires(never.store, "hot")

    time.sleep(TTL + 0.6)
    doc = never.get_context("hot")
    assert doc is not None, "an append with no TTL left the session to expire"
    assert [m["content"] for m in doc["conversation_history"]] == ["one", "two", "three"]
    assert [i["content"] for i in doc["fetched_context"]["web"]] == ["page"]
