"""An edit that lands while a summary is being made: that summary is never stored.

The edit removes the summaries covering what it changed, but one still being made is not
there yet: it was written afterwards with the old text (a redacted card number then
reached the model through it). Another manager on the same store makes the edit from
inside the summariser, as another process or thread would while the model call runs.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.runnables import RunnableLambda

from ctx_memory import ContextManager, ContextPromptAssembler
from ctx_memory.assembly.compacted import COMPACTIONS_KEY
from ctx_memory.compaction import EDITED, CompactionPolicy, acompact, compact, get_compactions
from ctx_memory.stores.memory import InMemoryStore

if TYPE_CHECKING:
    from collections.abc import Callable

    from ctx_memory.compaction import CompactionOutcome
    from ctx_memory.stores.base import BaseStore

CARD = "4111-1111-1111-1111"
REDACTED = HumanMessage("My card is [redacted], book AF100.")


def _pair(make_store: Callable[..., BaseStore]) -> tuple[ContextManager, ContextManager]:
    """The compacting manager and another writer's, on the same data."""
    first = make_store()
    other = first if isinstance(first, InMemoryStore) else make_store()
    return ContextManager(store=first), ContextManager(store=other)


def _seed(manager: ContextManager, sid: str, turns: int = 40) -> None:
    messages: list[Any] = [HumanMessage(f"My card is {CARD}, book AF100.", id="m0")]
    messages.append(AIMessage("Noted.", id="r0"))
    for i in range(1, turns):
        messages += [HumanMessage(f"Flight {i} is AF{100 + i}.", id=f"m{i}"), AIMessage("Ok.")]
    manager.add_messages(sid, messages)


def _edit(other: ContextManager, sid: str, kind: str) -> None:
    if kind == "replace":
        other.replace_message(sid, "m0", REDACTED)
    elif kind == "delete":
        other.delete_message(sid, "m0")
    else:
        other.truncate_after(sid, "m0", inclusive=True)


def _editing_summarizer(other: ContextManager, sid: str, kind: str) -> RunnableLambda[Any, str]:
    """Joins the messages, after another writer's edit the first time it is called."""
    calls: list[str] = []

    def summarize(messages: list[BaseMessage]) -> str:
        if not calls:
            _edit(other, sid, kind)
        calls.append(kind)
        return "\n".join(m.text for m in messages)

    return RunnableLambda(summarize)


def _policy(summarizer: Any = None) -> CompactionPolicy:
    if summarizer is None:
        return CompactionPolicy(summarize_at=300, keep_recent=16, block=8)
    return CompactionPolicy(summarize_at=300, keep_recent=16, block=8, summarizer=summarizer)


def _run(manager: ContextManager, sid: str, policy: CompactionPolicy, mode: str) -> Any:
    if mode == "async":
        return asyncio.run(acompact(manager, sid, policy))
    return compact(manager, sid, policy)


def _card_sent(manager: ContextManager, sid: str) -> bool:
    prompt = ContextPromptAssembler(
        manager, max_tokens=4000, compaction=CompactionPolicy(summarize_at=None)
    ).assemble(sid, "Which flight?")
    return any(CARD in m.text for m in prompt.messages)


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("kind", ["replace", "delete", "truncate"])
def test_a_summary_of_text_edited_meanwhile_is_not_stored(
    make_store: Callable[..., BaseStore], kind: str, mode: str
) -> None:
    manager, other = _pair(make_store)
    _seed(manager, "s1")
    outcome: CompactionOutcome = _run(
        manager, "s1", _policy(_editing_summarizer(other, "s1", kind)), mode
    )
    assert (outcome.entry, outcome.reason, outcome.failed) == (None, EDITED, False)
    assert CARD not in str(get_compactions(manager, "s1"))
    assert not _card_sent(manager, "s1")
    # Never written, not even for an instant another process could have used it in: no
    # entry and no tombstone of a removed one.
    shared = (manager.get_header("s1") or {"shared": {}})["shared"]
    assert not shared.get(COMPACTIONS_KEY)
    if kind != "truncate":  # the next compaction summarises the edited history
        again = compact(manager, "s1", _policy())
        assert again.entry is not None
        assert CARD not in again.entry["summary"]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_rolling_summary_taking_in_a_summary_made_stale_meanwhile_is_not_stored(
    make_store: Callable[..., BaseStore], mode: str
) -> None:
    """The first summary covers the card; the edit removes it while the next one is made."""
    manager, other = _pair(make_store)
    _seed(manager, "s1")
    first = compact(manager, "s1", _policy())
    assert first.entry is not None
    assert CARD in first.entry["summary"]
    for i in range(40, 60):  # enough for the next block
        manager.add_messages("s1", [HumanMessage(f"Flight {i} is AF{100 + i}."), AIMessage("Ok.")])
    outcome: CompactionOutcome = _run(
        manager, "s1", _policy(_editing_summarizer(other, "s1", "replace")), mode
    )
    assert (outcome.entry, outcome.reason) == (None, EDITED)
    assert CARD not in str(get_compactions(manager, "s1"))
    assert not _card_sent(manager, "s1")
