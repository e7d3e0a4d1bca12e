"""``search_history``: the whole history searched on every store, best first, sync and async."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from ctx_memory import ContextManager
from ctx_memory.errors import ValidationError
from ctx_memory.recall import MAX_SEARCH_HITS, asearch_history, search_history

if TYPE_CHECKING:
    from collections.abc import Callable

    from ctx_memory.stores.base import BaseStore


def filled(store: BaseStore) -> ContextManager:
    cm = ContextManager(store=store)
    for i in range(300):
        cm.add_user_message("s1", f"filler question {i} about the weather")
        cm.add_assistant_message("s1", f"filler answer {i}: sunny")
        if i == 17:
            cm.add_user_message("s1", "My passport number is X1234567, keep it safe")
            cm.add_assistant_message("s1", "Saved your passport number.")
        if i == 250:
            cm.add_user_message("s1", "The hotel in Lyon is booked for the passport office visit")
    return cm


def test_finds_old_messages_best_first_on_every_store(
    make_store: Callable[..., BaseStore],
) -> None:
    cm = filled(make_store())
    hits = search_history(cm, "s1", "what was my passport number?", k=5)
    contents = [hit.message["content"] for hit in hits]
    assert contents == [  # BM25: the shorter of two messages with both terms first
        "Saved your passport number.",
        "My passport number is X1234567, keep it safe",
        "The hotel in Lyon is booked for the passport office visit",
    ]
    assert [hit.position for hit in hits] == [37, 36, 504]
    assert hits[0].terms == hits[1].terms == ("passport", "number")
    assert hits[2].terms == ("passport",)
    assert hits[0].score > hits[1].score > hits[2].score > 0
    history = cm.get_history("s1")
    for hit in hits:
        assert history[hit.position] == hit.message
    assert hits[0].as_dict() == {
        "position": 37,
        "score": hits[0].score,
        "terms": ["passport", "number"],
        "message": history[37],
    }
    again = asyncio.run(asearch_history(cm, "s1", "what was my passport number?", k=5))
    assert again == hits


def test_k_limits_and_a_missing_session_has_no_hits(make_store: Callable[..., BaseStore]) -> None:
    cm = filled(make_store())
    assert len(search_history(cm, "s1", "filler weather", k=7)) == 7
    assert search_history(cm, "s1", "zeppelin") == []
    assert search_history(cm, "nobody", "passport") == []
    assert asyncio.run(asearch_history(cm, "nobody", "passport")) == []
    assert not cm.session_exists("nobody")  # searching creates nothing


def test_the_index_follows_writes_and_edits() -> None:
    cm = ContextManager()
    cm.add_user_message("s1", "nothing yet")
    assert search_history(cm, "s1", "zeppelin") == []
    cm.add_user_message("s1", "we flew in a zeppelin")
    [hit] = search_history(cm, "s1", "zeppelin")
    assert hit.position == 1
    cm.clear("s1")
    cm.add_user_message("s1", "a new start, no airships")
    assert search_history(cm, "s1", "zeppelin") == []


@pytest.mark.parametrize(
    ("query", "k", "match"),
    [
        (None, 10, "query must be a str, got NoneType"),
        ("x", 0, "k must be an int from 1 to 100, got 0"),
        ("x", MAX_SEARCH_HITS + 1, "k must be an int from 1 to 100, got 101"),
        ("x", True, "k must be an int from 1 to 100, got True"),
        ("x", 2.0, "k must be an int from 1 to 100, got 2.0"),
    ],
)
def test_bad_arguments_are_refused(query: object, k: object, match: str) -> None:
    cm = ContextManager()
    cm.add_user_message("s1", "hello")
    with pytest.raises(ValidationError, match=match):
        search_history(cm, "s1", query, k=k)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=match):
        asyncio.run(asearch_history(cm, "s1", query, k=k))  # type: ignore[arg-type]
