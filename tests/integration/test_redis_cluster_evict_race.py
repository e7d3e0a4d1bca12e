"""Eviction on a Redis Cluster never deletes a write that lands while it runs.

On a cluster the LRU index and each session are in different slots, so eviction takes
several calls (``RedisOperations._cluster_evict``): choose, mark, drop from the index, delete.
Here another store (another process, as far as Redis can tell) appends to the victim
between each pair of those calls, and the appended message must survive: the victim is
kept (a write touched it, so it is no longer the least recently used, or it unmarked it),
or, when the append comes after the deletion, the session is created again holding it.
Either way every session that exists is indexed, and nothing indexed is gone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from redis_raw import raw_client

from ctx_memory.schema import dumps
from ctx_memory.stores._redis_lua import Script
from ctx_memory.stores._redis_requests import Eval
from ctx_memory.stores.base import EncodedMessage, new_header
from ctx_memory.stores.redis import RedisStore, index_key, session_keys

if TYPE_CHECKING:
    from collections.abc import Callable

    from ctx_memory.stores.base import BaseStore

pytestmark = [pytest.mark.redis, pytest.mark.stores("cluster")]

NOW = "2025-01-01T00:00:00+00:00"


def msg(text: str) -> EncodedMessage:
    record = {"role": "user", "content": text, "id": f"id-{text}"}
    return EncodedMessage(dumps(record), 2, f"id-{text}")


def init(sid: str) -> Any:
    return new_header(sid, now=NOW, encoding="o200k_base")


def write(store: BaseStore, sid: str, text: str) -> None:
    store.append_messages(sid, [msg(text)], init=init(sid), now=NOW)


STEPS = {Script.MARK: "mark", Script.INDEX_FORGET_STALE: "forget_stale", Script.EVICT: "evict"}


def step(request: Any) -> str | None:
    """Which eviction step ``request`` is, if it is one."""
    return STEPS.get(request.script) if isinstance(request, Eval) else None


def interleave(store: RedisStore, before: str, action: Callable[[], None]) -> list[str]:
    """Run ``action`` once, just before ``store`` sends the eviction step ``before``
    (``"end"``: after the last step); returns the steps sent."""
    sent: list[str] = []
    do = store._do

    def hooked(request: Any) -> Any:
        name = step(request)
        if name == before and before not in sent:
            action()
        if name is not None:
            sent.append(name)
        return do(request)

    store._do = hooked  # type: ignore[method-assign]
    return sent


def indexed(store: RedisStore) -> set[str]:
    client = raw_client(store)
    members = client.zrange(index_key(store.prefix), 0, -1)
    client.close()
    return {m[len(session_keys(store.prefix, "x").member) - 1 :] for m in members}


@pytest.mark.parametrize("before", ["mark", "forget_stale", "evict", "end"])
def test_an_append_during_eviction_is_never_lost(
    make_store: Callable[..., BaseStore], before: str
) -> None:
    evictor = make_store(max_sessions=2)
    writer = make_store(max_sessions=2)  # another process on the same cluster
    assert isinstance(evictor, RedisStore)
    write(writer, "a", "first")
    write(writer, "b", "first")  # a is now the least recently used
    sent = interleave(evictor, before, lambda: write(writer, "a", "during"))
    write(evictor, "c", "first")  # over max_sessions: the eviction chooses a
    if before == "end":
        write(writer, "a", "during")
    assert {"mark", "forget_stale"} <= set(sent)  # an eviction did run
    contents = [m["content"] for m in evictor.get_messages("a")]
    assert "during" in contents  # acknowledged, so stored
    if before in {"mark", "forget_stale", "evict"}:
        assert contents == ["first", "during"]  # kept whole, not evicted
    else:
        assert contents == ["during"]  # evicted first, created again by the append
    alive = {sid for sid in ("a", "b", "c") if evictor.exists(sid)}
    assert "a" in alive
    assert indexed(evictor) == alive  # every live session indexed, nothing else
    assert set(evictor.list_sessions()) == alive


def test_eviction_without_a_race_takes_the_least_recently_used(
    make_store: Callable[..., BaseStore],
) -> None:
    store = make_store(max_sessions=2)
    assert isinstance(store, RedisStore)
    sent = interleave(store, "never", lambda: None)
    for sid in ("a", "b", "c", "d"):
        write(store, sid, "first")
    assert store.list_sessions() == ["c", "d"]
    assert indexed(store) == {"c", "d"}
    assert sent == ["mark", "forget_stale", "evict"] * 2
    client = raw_client(store)
    for sid in ("a", "b"):
        assert not any(client.exists(k) for k in session_keys(store.prefix, sid).script_keys)
    assert client.hget(session_keys(store.prefix, "c").h, "ev") is None
    client.close()


def test_a_victim_read_after_it_was_chosen_is_kept(
    make_store: Callable[..., BaseStore],
) -> None:
    """A read touches too: the eviction drops only members whose score is unchanged."""
    evictor = make_store(max_sessions=2)
    reader = make_store(max_sessions=2)
    assert isinstance(evictor, RedisStore)
    write(evictor, "a", "first")
    write(evictor, "b", "first")
    interleave(evictor, "forget_stale", lambda: reader.get_messages("a"))
    write(evictor, "c", "first")
    assert [m["content"] for m in evictor.get_messages("a")] == ["first"]
    # The read kept a; it is marked but never deleted, and its next write unmarks it.
    write(reader, "a", "later")
    client = raw_client(evictor)
    assert client.hget(session_keys(evictor.prefix, "a").h, "ev") is None
    client.close()


async def test_the_async_eviction_keeps_a_write_that_lands_during_it(
    make_store: Callable[..., BaseStore],
) -> None:
    """The same steps on the asyncio client (one generator, two drivers)."""
    evictor = make_store(max_sessions=2)
    writer = make_store(max_sessions=2)
    assert isinstance(evictor, RedisStore)
    await writer.aappend_messages("a", [msg("first")], init=init("a"), now=NOW)
    await writer.aappend_messages("b", [msg("first")], init=init("b"), now=NOW)
    sent: list[str] = []
    ado = evictor._ado

    async def hooked(request: Any) -> Any:
        name = step(request)
        if name == "evict" and "evict" not in sent:
            write(writer, "a", "during")  # lands after the index dropped a, before deletion
        if name is not None:
            sent.append(name)
        return await ado(request)

    evictor._ado = hooked  # type: ignore[method-assign]
    await evictor.aappend_messages("c", [msg("first")], init=init("c"), now=NOW)
    assert sent == ["mark", "forget_stale", "evict"]
    assert [m["content"] for m in await evictor.aget_messages("a")] == ["first", "during"]
    assert indexed(evictor) == {"a", "b", "c"}  # kept, and indexed again


@pytest.mark.parametrize("deleted_before_the_writer_looks", [True, False])
def test_a_write_between_the_choice_and_the_mark_is_kept(
    make_store: Callable[..., BaseStore], deleted_before_the_writer_looks: bool
) -> None:
    """The writer touched the index *before* the eviction chose its session (others were
    touched since, so it was still the least recently used), and its write landed between
    the choice and the mark: the mark stayed, the index dropped the member and the eviction
    deleted the session just written. The writer's second touch finds its member gone and
    takes the session back (unmark), or writes again when it was deleted already."""
    evictor = make_store(max_sessions=2)
    writer = make_store(max_sessions=2)
    reader = make_store(max_sessions=2)
    assert isinstance(evictor, RedisStore)
    assert isinstance(writer, RedisStore)
    write(writer, "a", "first")
    write(writer, "b", "first")
    do = writer._do
    landed = False

    def hooked(request: Any) -> Any:
        nonlocal landed
        if landed or isinstance(request, Eval):  # the touches go through
            return do(request)
        landed = True  # the write itself: others first touch b, then the eviction chooses a
        reader.get_messages("b")
        reply: Any = None

        def the_write() -> None:
            nonlocal reply
            reply = do(request)

        interleave(evictor, "mark", the_write)
        if deleted_before_the_writer_looks:
            write(evictor, "c", "first")  # chooses a, [the write], marks, drops, deletes a
        else:
            evictor_do = evictor._do

            def until_mark(inner: Any) -> Any:  # the eviction stops after its mark
                if step(inner) in {"forget_stale", "evict"}:
                    pending.append(inner)
                    return [] if step(inner) == "forget_stale" else 0
                return evictor_do(inner)

            pending: list[Any] = []
            evictor._do = until_mark  # type: ignore[method-assign]
            write(evictor, "c", "first")
            evictor._do = evictor_do  # type: ignore[method-assign]
            assert [step(r) for r in pending] == ["forget_stale"]
            # The dropped member, as that eviction's next call would have: a still marked.
            evictor_do(pending[0])
        return reply

    writer._do = hooked  # type: ignore[method-assign]
    write(writer, "a", "during")
    assert landed
    contents = [m["content"] for m in evictor.get_messages("a")]
    assert "during" in contents  # acknowledged, so stored
    if not deleted_before_the_writer_looks:
        assert contents == ["first", "during"]  # taken back before the deletion
        client = raw_client(evictor)
        assert client.hget(session_keys(evictor.prefix, "a").h, "ev") is None
        client.close()
    alive = {sid for sid in ("a", "b", "c") if evictor.exists(sid)}
    assert indexed(evictor) == alive


def test_a_victim_two_evictions_marked_is_deleted_by_the_one_that_dropped_it(
    make_store: Callable[..., BaseStore],
) -> None:
    """Each eviction marks with its own token, the later mark replacing the earlier; only
    the eviction whose forget_stale removed the member deletes it, and it must, whichever
    token the mark holds (the victim escaped both, and the index grew past the limit)."""
    store = make_store(max_sessions=2)
    assert isinstance(store, RedisStore)
    write(store, "a", "first")
    assert store._do(store._session(Script.MARK, "a", token="aaaa")) == 1
    assert store._do(store._session(Script.MARK, "a", token="bbbb")) == 1
    assert store._do(store._session(Script.EVICT, "a", token="aaaa")) == 1
    assert not store.exists("a")
    write(store, "b", "first")
    assert store._do(store._session(Script.MARK, "b", token="aaaa")) == 1
    write(store, "b", "later")  # a write unmarks: kept whatever the token
    assert store._do(store._session(Script.EVICT, "b", token="aaaa")) == 0
    assert [m["content"] for m in store.get_messages("b")] == ["first", "later"]
