"""The ``recall`` tool searches fetched sources too: a labelled section, excerpts, a budget."""

from __future__ import annotations

import random
import re
from typing import TypedDict

import pytest
from adapter_fakes import fake_model, tool_call
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from ctx_memory import ContextManager, TokenCounter
from ctx_memory._recall_tool import (
    DESCRIPTION,
    DESCRIPTION_WITH_SOURCES,
    HEADING,
    SOURCES_HEADING,
    source_excerpt,
    source_section,
)
from ctx_memory.middleware import ContextMiddleware
from ctx_memory.recall import make_recall_tool, recall_for, recall_terms

COUNTER = TokenCounter()
WORDS = ["weather", "trip", "hotel", "booking", "museum", "dinner", "train", "ticket"]
FACT = "The spare key is under the blue flowerpot by the garage."
PAGE = (
    "Welcome to the holiday flat. " * 40
    + FACT
    + " The boiler switch is in the hall cupboard. "
    + "Enjoy your stay and leave the keys on the table. " * 40
)


class SessionContext(TypedDict):
    session_id: str


def fill(manager: ContextManager, session: str, turns: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    messages: list[BaseMessage] = []
    for i in range(turns):
        messages.append(HumanMessage(" ".join(rng.choice(WORDS) for _ in range(12)) + f" {i}"))
        messages.append(AIMessage(" ".join(rng.choice(WORDS) for _ in range(18))))
    manager.add_messages(session, messages)


def with_page(manager: ContextManager) -> None:
    manager.add_fetched_context(
        "s1",
        "web_page",
        PAGE,
        url="https://flat.example/guide",
        extracted_data={"title": "Holiday flat guide"},
    )
    manager.add_fetched_context(
        "s1", "web_search", "Trains to the coast leave hourly.", url="https://trains.example"
    )


def shown_positions(answer: str) -> set[int]:
    """Positions of the turns the answer shows (a turn heading or a labelled line)."""
    turns = answer.split(SOURCES_HEADING, maxsplit=1)[0]
    found = re.findall(r"^(?:Messages (\d+)-\d+:|\[(\d+) \w)", turns, flags=re.MULTILINE)
    return {int(a or b) for a, b in found}


def sources_part(answer: str) -> str:
    assert SOURCES_HEADING in answer
    return answer[answer.index(SOURCES_HEADING) :]


# --------------------------------------------------------------------------- direct


def test_the_answer_has_turns_then_a_labelled_sources_section(manager):
    manager.add_user_message("s1", "Where did you say the spare key was?")
    manager.add_assistant_message("s1", "I will check the flat guide.")
    with_page(manager)
    tool = make_recall_tool(manager, "s1", source_token_cap=60)
    assert tool.description == DESCRIPTION_WITH_SOURCES
    answer = tool.invoke({"query": "spare key"})
    assert answer.startswith(HEADING)
    assert shown_positions(answer) >= {0}
    assert "Where did you say the spare key was?" in answer
    assert answer.index(HEADING) < answer.index(SOURCES_HEADING)
    section = sources_part(answer)
    # Type, title and URL, then the passage with the match, cut to the cap.
    assert "[web_page] Holiday flat guide - https://flat.example/guide" in section
    assert FACT in section
    excerpt = section.split("https://flat.example/guide\n", 1)[1]
    assert excerpt.startswith("… ")
    assert excerpt.endswith(" …")
    assert COUNTER.count(excerpt) <= 60
    assert "trains.example" not in section  # shares no term with the query


def test_a_source_alone_can_answer(manager):
    fill(manager, "s1", 30)
    with_page(manager)
    answer = make_recall_tool(manager, "s1").invoke({"query": "boiler switch"})
    assert HEADING not in answer
    assert answer.startswith(SOURCES_HEADING)
    assert "The boiler switch is in the hall cupboard." in answer


def test_sources_are_ranked_and_limited(manager):
    for i in range(6):
        manager.add_fetched_context(
            "s1",
            "docs",
            f"Ferry timetable {i}. " + ("The ferry leaves at dawn. " * (i + 1)),
            url=f"https://ferry.example/{i}",
        )
    manager.add_fetched_context("s1", "docs", "Bus timetable.", url="https://bus.example")
    answer = make_recall_tool(manager, "s1", source_k=2).invoke({"query": "ferry dawn"})
    section = sources_part(answer)
    assert section.count("[docs] ") == 2
    assert "bus.example" not in section


def test_source_types_and_sources_off(manager):
    manager.add_user_message("s1", "Hello")
    with_page(manager)
    only_search = make_recall_tool(manager, "s1", source_types=["web_search"])
    assert "Nothing earlier" in only_search.invoke({"query": "spare key"})
    assert "trains.example" in only_search.invoke({"query": "trains coast"})
    off = make_recall_tool(manager, "s1", sources=False)
    assert off.description == DESCRIPTION
    assert off.invoke({"query": "spare key"}) == (
        "Nothing earlier in this conversation matches 'spare key'."
    )


def test_nothing_matches(manager):
    manager.add_user_message("s1", "Hello")
    with_page(manager)
    answer = make_recall_tool(manager, "s1").invoke({"query": "zebra"})
    assert answer == "Nothing earlier in this conversation or its fetched sources matches 'zebra'."


@pytest.mark.parametrize("max_tokens", [80, 200, 600, 2000])
def test_the_tool_budget_holds_turns_and_sources(manager, max_tokens):
    for i in range(40):
        manager.add_user_message("s1", f"Note {i}: the spare key story, part {i}. " * 3)
        manager.add_assistant_message("s1", f"Understood, part {i} of the spare key story.")
    for i in range(5):
        manager.add_fetched_context(
            "s1", "docs", PAGE, url=f"https://flat.example/{i}", timestamp=f"2026-01-0{i + 1}"
        )
    tool = make_recall_tool(manager, "s1", k=20, max_tokens=max_tokens, source_k=5)
    answer = tool.invoke({"query": "spare key"})
    section = sources_part(answer) if SOURCES_HEADING in answer else ""
    sources_tokens = COUNTER.count(section) if section else 0
    # The sources take at most half when turns match too; the turns (cached counts) the rest.
    assert sources_tokens <= max_tokens // 2 or HEADING not in answer
    index = recall_for(manager).index(manager, "s1", manager.get_header("s1"))
    turns = {index.turn(p) for p in shown_positions(answer)}
    assert turns  # some turns always fit: they get at least half
    assert sum(index.cost(*turn) for turn in turns) + sources_tokens <= max_tokens
    assert COUNTER.count(answer) <= max_tokens  # the whole answer, counted exactly


@pytest.mark.parametrize("max_tokens", [60, 120, 200, 1000, 2000])
def test_the_answer_fits_max_tokens_counted_exactly(manager, max_tokens):
    """Labels, the heading and gap lines come on top of the turns' cached counts."""
    for i in range(30):
        manager.add_user_message("s1", f"q{i} passport")
        manager.add_assistant_message("s1", f"a{i}")
    for k in (5, 30):
        tool = make_recall_tool(manager, "s1", k=k, max_tokens=max_tokens, sources=False)
        answer = tool.invoke({"query": "passport"})
        assert COUNTER.count(answer) <= max_tokens
        assert shown_positions(answer)  # the weakest turns went, not all of them


def test_sources_take_what_the_turns_leave(manager):
    manager.add_user_message("s1", "The spare key, again.")
    for i in range(5):
        manager.add_fetched_context("s1", "docs", PAGE, url=f"https://flat.example/{i}")
    tool = make_recall_tool(manager, "s1", max_tokens=600, source_k=5, source_token_cap=100)
    section = sources_part(tool.invoke({"query": "spare key"}))
    assert COUNTER.count(section) > 300  # over half: the one short turn left it room
    assert COUNTER.count(section) <= 600


def test_source_excerpt():
    terms = recall_terms("spare key")
    assert source_excerpt("Short text.", terms, counter=COUNTER, cap=50) == "Short text."
    excerpt = source_excerpt(PAGE, terms, counter=COUNTER, cap=30)
    assert FACT in excerpt
    assert COUNTER.count(excerpt) <= 30
    # A sentence longer than the cap is cut, and says so.
    long = "key " + "word " * 500
    cut = source_excerpt(long, terms, counter=COUNTER, cap=20)
    assert cut.startswith("key")
    assert cut.endswith(" …")
    assert COUNTER.count(cut) <= 20
    assert source_excerpt(PAGE, terms, counter=COUNTER, cap=0) == ""
    # Chinese or Japanese text: sentences end at the ideographic full stop.
    japanese = "東京は大きい。" * 40 + "合鍵は植木鉢の下です。" + "大阪も大きい。" * 40
    found = source_excerpt(japanese, recall_terms("合鍵"), counter=COUNTER, cap=30)
    assert "合鍵は植木鉢の下です。" in found
    assert COUNTER.count(found) <= 30


def test_source_section_counts_exactly():
    fetched = {
        "docs": [
            {"source_type": "docs", "content": PAGE, "url": f"https://f/{i}", "token_count": None}
            for i in range(3)
        ]
    }
    text, tokens = source_section(fetched, "spare key", counter=COUNTER, k=3, cap=50, budget=150)
    assert text.startswith(SOURCES_HEADING)
    assert tokens == COUNTER.count(text) <= 150
    assert source_section(fetched, "spare key", counter=COUNTER, k=3, cap=50, budget=5) == ("", 0)
    assert source_section({}, "spare key", counter=COUNTER, k=3, cap=50, budget=500) == ("", 0)


async def test_the_tool_async(manager):
    manager.add_user_message("s1", "Hello")
    with_page(manager)
    tool = make_recall_tool(manager, "s1")
    sync = tool.invoke({"query": "spare key"})
    assert await tool.ainvoke({"query": "spare key"}) == sync
    assert FACT in sync


# --------------------------------------------------------------------------- in an agent


@pytest.mark.parametrize("use_async", [False, True])
async def test_the_recall_tool_finds_a_fetched_source_inside_a_real_agent(manager, use_async):
    fill(manager, "s1", 200)
    with_page(manager)
    model = fake_model(
        tool_call("recall", "call-1", query="spare key"), "Under the blue flowerpot."
    )
    agent = create_agent(
        model,
        tools=[make_recall_tool(manager)],
        middleware=[ContextMiddleware(manager, max_tokens=1500, max_sources=0)],
        context_schema=SessionContext,
    )
    state = {"messages": [("user", "Where is the spare key?")]}
    if use_async:
        result = await agent.ainvoke(state, context={"session_id": "s1"})
    else:
        result = agent.invoke(state, context={"session_id": "s1"})
    assert result["messages"][-1].content == "Under the blue flowerpot."
    tool_result = result["messages"][-2]
    assert tool_result.type == "tool"
    # The question is stored but in view (the turn in progress): only the page is shown.
    assert HEADING not in tool_result.content
    assert "Where is the spare key?" not in tool_result.content
    section = sources_part(tool_result.content)
    assert FACT in section
    assert "[web_page] Holiday flat guide - https://flat.example/guide" in section
    # The model saw the result with its call (max_sources=0: not from the prompt's sources).
    second = model.seen[1]
    assert any(m.type == "tool" and FACT in m.text for m in second)
    assert not any(m.type == "system" and FACT in m.text for m in second)
    stored = manager.get_history("s1", last_k=3)
    assert stored[1]["role"] == "tool"
    assert FACT in stored[1]["content"]


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_match_too_large_for_the_answer_is_not_called_no_match(mode: str) -> None:
    manager = ContextManager()
    manager.add_user_message("s1", "What is the door code?")
    manager.add_assistant_message("s1", "The door code is " + "4711 and more digits " * 600)
    tool = make_recall_tool(manager, "s1", max_tokens=200, sources=False)
    query = {"query": "door code"}
    answer = tool.invoke(query) if mode == "sync" else await tool.ainvoke(query)
    assert answer.startswith("Earlier turns match 'door code', but none fits")
    nothing = (
        tool.invoke({"query": "zeppelin"})
        if mode == "sync"
        else await tool.ainvoke({"query": "zeppelin"})
    )
    assert nothing == "Nothing earlier in this conversation matches 'zeppelin'."
