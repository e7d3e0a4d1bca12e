"""An expired session written again before a collection runs is reported expired, once.

On Redis the expired session's index member waits for ``gc()`` or a listing to find its
keys gone; a write re-creating the session re-indexes it first, so neither would ever find
it. The write that re-creates it reports the expiry instead (``session_expired`` and the
manager's ``sessions_expired``), as the memory, SQLite and PostgreSQL stores do, and a
collection afterwards reports nothing more. On one server the session script finds it (the
index is in the same call); on a cluster the client does, from its index calls.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = [pytest.mark.redis, pytest.mark.stores("redis", "cluster")]

TTL = 1.0

# Writes that re-create a missing session; the first is an append to a session the store
# knows (the hot path answers "missing", then the creating script runs).
WRITES: dict[str, Callable[[Any, str], object]] = {
    "add_user_message": lambda cm, sid: cm.add_user_message(sid, "second life"),
    "update_metadata": lambda cm, sid: cm.update_metadata(sid, mode="research"),
    "update_partial_context": lambda cm, sid: cm.update_partial_context(sid, {"k": 1}),
    "add_fetched_context": lambda cm, sid: cm.add_fetched_context(sid, "web", "page"),
}


def recorder(cm: Any) -> list[str]:
    seen: list[str] = []
    cm.on("*", lambda event: seen.append(f"{event.type.value}:{event.session_id}"))
    return seen


def expiries(seen: list[str]) -> list[str]:
    return [e for e in seen if e.startswith("session_expired")]


@pytest.mark.parametrize("write", list(WRITES))
@pytest.mark.parametrize("max_sessions", [None, 10], ids=["unbounded", "max_sessions"])
def test_a_write_re_creating_an_expired_session_reports_the_expiry(
    manager_factory: Callable[..., Any], write: str, max_sessions: int | None
) -> None:
    cm = manager_factory(ttl_seconds=TTL, max_sessions=max_sessions)
    seen = recorder(cm)
    cm.add_user_message("chat", "first life")
    WRITES[write](cm, "chat")  # written again while alive: nothing to report
    assert expiries(seen) == []
    time.sleep(TTL + 0.5)  # expired; no collection ran
    WRITES[write](cm, "chat")

    assert expiries(seen) == ["session_expired:chat"], seen
    assert seen[-2:] != ["session_expired:chat"]  # (the events of the write come after it)
    assert seen.count("session_created:chat") == 2, seen
    assert seen.index("session_expired:chat") < len(seen) - 1 - seen[::-1].index(
        "session_created:chat"
    ), seen  # reported before the session's second creation
    assert cm.get_memory_stats()["sessions_expired"] == 1
    assert cm.gc() == 0  # nothing left for a collection to find
    assert cm.list_sessions() == ["chat"]
    assert expiries(seen) == ["session_expired:chat"], seen
    history = [m["content"] for m in cm.get_history("chat")]
    assert history == (["second life"] if write == "add_user_message" else [])


def test_another_store_re_creating_it_reports_it_once(
    manager_factory: Callable[..., Any],
) -> None:
    """The writer never saw the session (no known-session hot path): every process together
    reports the expiry once, whether the write or a collection finds it first."""
    first = manager_factory(ttl_seconds=TTL)
    second = manager_factory(ttl_seconds=TTL)
    heard = [recorder(first), recorder(second)]
    first.add_user_message("chat", "first life")
    time.sleep(TTL + 0.5)
    second.add_user_message("chat", "second life")  # finds it expired
    assert first.gc() == 0
    assert second.gc() == 0
    assert [expiries(events) for events in heard] == [[], ["session_expired:chat"]]
    assert second.get_memory_stats()["sessions_expired"] == 1

    time.sleep(TTL + 0.5)  # expired again: this time a collection finds it first
    assert first.gc() == 1
    second.add_user_message("chat", "third life")
    assert [expiries(events) for events in heard] == [
        ["session_expired:chat"],
        ["session_expired:chat"],
    ]
    assert first.get_memory_stats()["sessions_expired"] == 1
    assert second.get_memory_stats()["sessions_expired"] == 1


def test_two_deletes_of_a_live_cluster_session_report_no_expiry(
    redis_cluster_url: str, key_prefix: str
) -> None:
    """A deletes after B removed the session A found live: no ``session_expired``.

    On a cluster a delete unindexes the session in one call and deletes its keys in
    another; B's whole delete falls between A's two. Before, A then found the keys gone
    and its index entry removed, and reported an expiry that never happened (34 of 150
    threaded pairs). A deleted expired session is still reported (the test above).
    """
    from ctx_memory.stores.redis import RedisStore

    a = RedisStore(redis_cluster_url, cluster=True, key_prefix=key_prefix)
    b = RedisStore(redis_cluster_url, cluster=True, key_prefix=key_prefix)
    heard: list[tuple[str, str, str]] = []
    a.lifecycle_hook = lambda kind, sid: heard.append(("a", kind, sid))
    b.lifecycle_hook = lambda kind, sid: heard.append(("b", kind, sid))

    def finish(steps: Any, request: Any) -> Any:
        while True:
            try:
                request = steps.send(a._do(request))
            except StopIteration as stop:
                return stop.value

    try:
        for before_b in (1, 2):  # B's whole delete lands after A's first call, or second
            sid = f"live-{before_b}"
            a.create(sid, _init(sid))
            steps = a._op_delete(sid)  # A's requests, run one at a time
            request = next(steps)
            for _ in range(before_b - 1):
                request = steps.send(a._do(request))
            answer = a._do(request)
            assert b.delete(sid) is True
            try:
                request = steps.send(answer)
            except StopIteration as stop:  # pragma: no cover - A has a call left
                raise AssertionError(stop.value) from None
            assert finish(steps, request) is False
        assert heard == []
    finally:
        a.close()
        b.close()


def _init(session_id: str) -> Any:
    from ctx_memory.stores.base import new_header

    return new_header(session_id, now="2026-01-01T00:00:00+00:00", encoding="o200k_base")
