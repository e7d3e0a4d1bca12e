"""Pinned sources: always sent, first, in the system message (the stable prefix)."""

from __future__ import annotations

import itertools
import json
import random
import re
from types import SimpleNamespace
from typing import Any

import pytest
from adapter_fakes import ToolCallingFakeModel, question_of, stable_prefix
from langchain.agents.middleware import ModelRequest, ModelResponse
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from ctx_memory import ContextManager, ContextPromptAssembler, ContextualChat, TokenCounter
from ctx_memory.assembly.sources import (
    PINNED_HEADING,
    SOURCES_HEADING,
    ChosenSources,
    format_pinned,
    format_sources,
    is_pinned,
    plan_pinned,
    plan_sources,
    sources_block,
    split_pinned,
)
from ctx_memory.errors import ValidationError
from ctx_memory.middleware import ContextMiddleware

COUNTER = TokenCounter()
LAYOUTS = ["classic", "stable"]
WORDS = ["weather", "trip", "hotel", "booking", "museum", "dinner", "train", "ticket"]


def serialised(messages: list[BaseMessage]) -> str:
    return "".join(json.dumps([m.type, m.content], sort_keys=True) + "\n" for m in messages)


def numbered(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"^\[(\d+)\] ", text, flags=re.MULTILINE)]


def fill(manager: ContextManager, session: str, turns: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    messages: list[BaseMessage] = []
    for i in range(turns):
        messages.append(HumanMessage(" ".join(rng.choice(WORDS) for _ in range(12)) + f" {i}"))
        messages.append(AIMessage(" ".join(rng.choice(WORDS) for _ in range(18))))
    manager.add_messages(session, messages)


def session(manager: ContextManager, *, turns: int = 3) -> None:
    """``s1``: a system prompt, page and time, two pinned and three ranked sources."""
    manager.set_system_prompt("s1", "You are a travel assistant.")
    manager.update_metadata("s1", current_url="https://a.example", user_timezone="Europe/Paris")
    manager.add_fetched_context(
        "s1",
        "docs",
        "Refunds: a full refund within 24 hours of booking. " * 6,
        url="https://docs.example/refunds",
        extracted_data={"title": "Refund policy", "pinned": True},
        timestamp="2026-01-01T00:00:00+00:00",
    )
    manager.add_fetched_context(
        "s1",
        "web_search",
        "Rome hotels are cheapest in February.",
        url="https://rome.example",
        timestamp="2026-01-02T00:00:00+00:00",
    )
    manager.add_fetched_context(
        "s1",
        "web_search",
        "Paris trains leave every hour from Gare de Lyon.",
        url="https://paris.example",
        timestamp="2026-01-03T00:00:00+00:00",
    )
    manager.add_fetched_context(
        "s1",
        "notes",
        "The traveller is vegetarian and travels with a dog.",
        url="https://notes.example/profile",
        extracted_data={"title": "Traveller profile", "pinned": True},
        timestamp="2026-01-04T00:00:00+00:00",
    )
    manager.add_fetched_context(
        "s1",
        "web_search",
        "Museum tickets in Rome are free on the first Sunday.",
        url="https://museum.example",
        timestamp="2026-01-05T00:00:00+00:00",
    )
    fill(manager, "s1", turns)


def exact(result: Any) -> int:
    total = COUNTER.count_chat(result.messages)
    assert total == result.report.total_tokens <= result.report.budget
    report = result.report
    assert total == (
        report.system_tokens
        + report.sources_tokens
        + report.history_tokens
        + report.question_tokens
        + report.priming_tokens
    )
    return total


# --------------------------------------------------------------------------- pure parts


def test_is_pinned_and_split_pinned_keep_stored_order():
    items = [
        {"source_type": "web", "content": "a", "timestamp": "2026-01-03"},
        {"source_type": "docs", "content": "b", "timestamp": "2026-01-02"},
        {"source_type": "web", "content": "c", "timestamp": "2026-01-01", "extracted_data": {}},
        {"source_type": "web", "content": "d", "extracted_data": {"pinned": True}},
        {"source_type": "web", "content": "e", "extracted_data": {"pinned": "yes"}},
    ]
    assert [is_pinned(i) for i in items] == [False, False, False, True, False]
    pinned, others = split_pinned(items, ("docs",))
    # Oldest first (no timestamp sorts first), whatever the order given.
    assert [i["content"] for i in pinned] == ["d", "b"]
    assert [i["content"] for i in others] == ["a", "c", "e"]


def test_chosen_sources_numbering_continues_after_the_pinned_ones():
    pairs = ChosenSources(
        [({"url": "https://p"}, "pinned text"), ({"url": "https://r"}, "ranked text")], 1
    )
    assert pairs == (({"url": "https://p"}, "pinned text"), ({"url": "https://r"}, "ranked text"))
    assert pairs.pinned == 1
    assert format_pinned(pairs) == f"{PINNED_HEADING}\n\n[1] https://p\npinned text"
    assert format_sources(pairs) == f"{SOURCES_HEADING}\n\n[2] https://r\nranked text"
    assert sources_block(pairs) == format_pinned(pairs) + "\n\n" + format_sources(pairs)
    # A plain list is numbered from 1, as before, and has no pinned block.
    plain = list(pairs)
    assert numbered(format_sources(plain)) == [1, 2]
    assert format_pinned(plain) == ""


def test_plan_pinned_keeps_the_oldest_that_fit_then_ranked_follow():
    items = [
        {"url": f"https://p{i}", "content": f"pinned {i} " * 60, "token_count": 120}
        for i in range(5)
    ]
    pinned = plan_pinned(
        "System.", items, counter=COUNTER, allowance=300, per_source_tokens=80, max_sources=None
    )
    kept = [item["url"] for item, _ in pinned.chosen]
    assert kept == [f"https://p{i}" for i in range(len(kept))]  # the oldest, in order
    assert 1 <= len(kept) < 5
    assert pinned.dropped == pinned.pinned_dropped == 5 - len(kept)
    assert pinned.truncated == len(kept)  # each cut to the cap
    assert all(COUNTER.count(text) <= 80 for _, text in pinned.chosen)
    assert pinned.system_tokens == COUNTER.count_message("system", pinned.text) <= 300
    ranked = [{"url": "https://r", "content": "short", "token_count": 1}]
    full = plan_sources(
        "System.",
        ranked,
        counter=COUNTER,
        allowance=pinned.system_tokens + 40,
        per_source_tokens=80,
        max_sources=None,
        pinned=pinned,
    )
    assert [item["url"] for item, _ in full.chosen] == [*kept, "https://r"]
    assert full.pinned == len(kept)
    assert full.text.startswith(pinned.text + "\n\n" + SOURCES_HEADING)
    assert numbered(full.text) == list(range(1, len(kept) + 2))
    assert full.system_tokens == COUNTER.count_message("system", full.text)
    # No room left for ranked ones: the pinned stay, exactly as counted before.
    tight = plan_sources(
        "System.",
        ranked,
        counter=COUNTER,
        allowance=10,
        per_source_tokens=80,
        max_sources=None,
        pinned=pinned,
    )
    assert (tight.text, tight.system_tokens) == (pinned.text, pinned.system_tokens)
    assert tight.dropped == pinned.dropped + 1


# --------------------------------------------------------------------------- both layouts


@pytest.mark.parametrize("layout", LAYOUTS)
def test_pinned_sources_go_first_in_the_system_message(manager, layout):
    session(manager)
    assembler = ContextPromptAssembler(manager, max_tokens=3000, reserve_tokens=500, layout=layout)
    # The question matches a ranked source and the *newer* pinned one: no re-ranking.
    result = assembler.assemble("s1", "Is the vegetarian traveller's Rome hotel cheap?")
    exact(result)
    system = result.messages[0]
    assert isinstance(system, SystemMessage)
    text = system.text
    assert text.startswith("You are a travel assistant.")
    assert text.index("You are a travel assistant.") < text.index(PINNED_HEADING)
    assert text.index("[1] Refund policy") < text.index("[2] Traveller profile")
    report = result.report
    assert report.pinned_sources == 2
    assert report.pinned_source_urls == (
        "https://docs.example/refunds",
        "https://notes.example/profile",
    )
    assert report.source_urls[:2] == report.pinned_source_urls
    assert report.sources_included == 5  # the three others are ranked, each once
    assert sorted(report.source_urls[2:]) == [
        "https://museum.example",
        "https://paris.example",
        "https://rome.example",
    ]
    assert report.source_urls[2] == "https://rome.example"  # most relevant first
    assert len(set(report.source_urls)) == 5
    assert report.pinned_sources_dropped == 0
    if layout == "stable":
        # The ranked ones go last, numbered on after the pinned ones; never repeated.
        assert SOURCES_HEADING not in text
        assert "Current page" not in text
        tail = question_of(result.messages).text
        assert numbered(tail) == [3, 4, 5]
        assert PINNED_HEADING not in tail
        assert "Refund policy" not in tail
        assert result.system == text
    else:
        assert numbered(text) == [1, 2, 3, 4, 5]
        assert text.index(PINNED_HEADING) < text.index(SOURCES_HEADING)
    # The prompt's numbers are what sources_used() says.
    used = result.sources_used()
    assert [s["n"] for s in used] == [1, 2, 3, 4, 5]
    assert used[0]["url"] == "https://docs.example/refunds"
    assert used[1]["source_type"] == "notes"
    assert result.sources_text.startswith(PINNED_HEADING)
    data = report.as_dict()
    assert data["pinned_sources"] == 2
    assert data["pinned_source_urls"] == list(report.pinned_source_urls)
    json.dumps(data)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_pinned_source_types_pin_every_item_of_a_type(manager, layout):
    session(manager)
    manager.add_fetched_context(
        "s1", "docs", "Baggage: one cabin bag of 8 kg.", url="https://docs.example/bags"
    )
    assembler = ContextPromptAssembler(
        manager,
        max_tokens=3000,
        layout=layout,
        pinned_source_types=["docs"],
        source_types=["web_search"],  # docs are read all the same: they are pinned
    )
    result = assembler.assemble("s1", "museum tickets?")
    exact(result)
    report = result.report
    # Both docs, oldest first; the notes item is pinned by its data but not a wanted type.
    assert report.pinned_source_urls == (
        "https://docs.example/refunds",
        "https://docs.example/bags",
    )
    assert "https://notes.example/profile" not in report.source_urls
    assert report.source_urls[2] == "https://museum.example"
    assert "Baggage: one cabin bag" in result.messages[0].text


def test_pinned_source_types_must_be_a_list():
    with pytest.raises(ValidationError, match="pinned_source_types"):
        ContextPromptAssembler(ContextManager(), pinned_source_types="docs")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_max_sources_counts_the_pinned_ones(manager, layout):
    session(manager)
    one = ContextPromptAssembler(manager, max_tokens=3000, layout=layout, max_sources=1)
    report = one.assemble("s1", "Rome hotels?").report
    assert report.source_urls == ("https://docs.example/refunds",)
    assert (report.pinned_sources, report.pinned_sources_dropped) == (1, 1)
    assert report.sources_dropped == 4
    three = ContextPromptAssembler(manager, max_tokens=3000, layout=layout, max_sources=3)
    report = three.assemble("s1", "Rome hotels?").report
    assert report.source_urls == (
        "https://docs.example/refunds",
        "https://notes.example/profile",
        "https://rome.example",
    )
    none = ContextPromptAssembler(manager, max_tokens=3000, layout=layout, max_sources=0)
    assert none.assemble("s1", "Rome hotels?").report.sources_included == 0


@pytest.mark.parametrize("layout", LAYOUTS)
def test_pinned_beyond_the_share_keep_the_oldest_and_report_the_rest(manager, layout):
    manager.set_system_prompt("s1", "You answer from the handbook.")
    for i in range(12):
        manager.add_fetched_context(
            "s1",
            "handbook",
            f"Chapter {i}: " + " ".join(f"rule{i}x{j}" for j in range(150)),
            url=f"https://handbook.example/{i}",
            extracted_data={"pinned": True},
            timestamp=f"2026-02-{i + 1:02d}T00:00:00+00:00",
        )
    manager.add_fetched_context("s1", "web_search", "Trains are late today.", url="https://t")
    fill(manager, "s1", 50)
    assembler = ContextPromptAssembler(
        manager, max_tokens=2000, reserve_tokens=200, layout=layout, source_token_cap=200
    )
    short = assembler.assemble("s1", "trains?")
    long = assembler.assemble("s1", "trains? " + "Please tell me everything about them. " * 20)
    for result in (short, long):
        exact(result)
        report = result.report
        kept = report.pinned_sources
        assert 1 <= kept < 12
        assert report.pinned_source_urls == tuple(
            f"https://handbook.example/{i}" for i in range(kept)
        )
        assert report.pinned_sources_dropped == 12 - kept
        assert report.sources_dropped >= 12 - kept
        # Within the sources' share of what the system prompt leaves.
        share = int((report.budget - report.priming_tokens - report.system_tokens) * 0.5)
        pinned_tokens = COUNTER.count_lc_message(result.messages[0]) - report.system_tokens
        assert pinned_tokens <= share
        assert report.sources_tokens <= share  # a ranked one only in what is left
        assert report.source_urls[: report.pinned_sources] == report.pinned_source_urls
    # Which are pinned does not depend on the question: the same pinned block (stable:
    # the same system message; classic: the ranked ones follow the same text).
    assert short.report.pinned_sources == long.report.pinned_sources
    pinned_part = [r.messages[0].text.split(SOURCES_HEADING)[0].strip() for r in (short, long)]
    assert pinned_part[0] == pinned_part[1]
    if layout == "stable":
        assert short.messages[0] == long.messages[0]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_budget_is_never_exceeded(layout):
    rng = random.Random(7)
    for trial in range(25):
        manager = ContextManager()
        manager.set_system_prompt("s", "Be brief. " * rng.randint(0, 30))
        if rng.random() < 0.5:
            manager.update_metadata("s", user_time="2026-11-21 09:00", current_url="https://x")
        for i in range(rng.randint(1, 8)):
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 400)))
            manager.add_fetched_context(
                "s",
                rng.choice(["docs", "web_search"]),
                words,
                url=f"https://{trial}.{i}.example",
                extracted_data={"pinned": rng.random() < 0.5},
            )
        fill(manager, "s", rng.randint(0, 80), seed=trial)
        max_tokens = rng.choice([300, 600, 1200, 4000])
        assembler = ContextPromptAssembler(
            manager,
            max_tokens=max_tokens,
            reserve_tokens=rng.choice([0, 50]),
            layout=layout,
            source_token_cap=rng.choice([20, 100, 400]),
            sources_share=rng.choice([0.2, 0.5, 0.9]),
            pinned_source_types=rng.choice([(), ("docs",)]),
            max_sources=rng.choice([None, 2, 8]),
        )
        question = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 30)))
        result = assembler.assemble("s", question)
        exact(result)
        pinned = result.report.pinned_sources
        assert all(
            is_pinned(item, assembler.pinned_source_types) for item in result.sources[:pinned]
        )
        assert not any(
            is_pinned(item, assembler.pinned_source_types) for item in result.sources[pinned:]
        )


# --------------------------------------------------------------------------- the stable prefix


def test_stable_prefix_is_identical_across_questions_with_pinned_sources(manager):
    session(manager, turns=300)
    assembler = ContextPromptAssembler(
        manager, max_tokens=3000, reserve_tokens=500, layout="stable", cache_hints=["anthropic"]
    )
    first = assembler.assemble("s1", "Rome hotels?")
    second = assembler.assemble(
        "s1", "And what about the trains from Paris, the museum tickets, and dinner? " * 3
    )
    for result in (first, second):
        exact(result)
        prefix = stable_prefix(result.messages)  # system message (pinned included) + window
        assert result.report.stable_prefix_tokens == sum(
            COUNTER.count_lc_message(m) for m in prefix
        )
        assert "Refund policy" in result.messages[0].text
        # The breakpoint is on the system message, which holds the pinned sources.
        assert result.messages[0].content[-1]["cache_control"] == {"type": "ephemeral"}
    assert serialised(stable_prefix(first.messages)) == serialised(stable_prefix(second.messages))
    # The ranked sources differ per question, but only in the question's message.
    assert first.report.source_urls[2] != second.report.source_urls[2]
    assert first.report.source_urls[:2] == second.report.source_urls[:2]
    # Without the pinned ones the prefix is smaller by exactly what they take.
    for item in (
        manager.get_fetched_context("s1")["docs"] + manager.get_fetched_context("s1")["notes"]
    ):
        assert item["extracted_data"]["pinned"] is True
    bare = ContextPromptAssembler(
        manager, max_tokens=3000, reserve_tokens=500, layout="stable", max_sources=0
    ).assemble("s1", "Rome hotels?")
    pinned_tokens = COUNTER.count_lc_message(first.messages[0]) - COUNTER.count_lc_message(
        bare.messages[0]
    )
    assert pinned_tokens > 50
    assert first.report.sources_tokens >= pinned_tokens


def test_stable_prefix_across_a_conversation_with_pinned_sources(manager):
    session(manager, turns=200)
    rng = random.Random(3)
    replies = [AIMessage(" ".join(rng.choice(WORDS) for _ in range(15))) for _ in range(20)]
    model = ToolCallingFakeModel(messages=iter(replies))
    chat = ContextualChat(
        manager,
        model,
        max_tokens=3000,
        reserve_tokens=500,
        layout="stable",
        pinned_source_types=["docs"],
    )
    config = {"configurable": {"session_id": "s1"}}
    for turn in range(20):
        chat.invoke(f"{rng.choice(WORDS)} {rng.choice(WORDS)}? ({turn})", config=config)
    prompts = model.seen
    extended = 0
    for before, after in itertools.pairwise(prompts):
        assert before[0] == after[0]  # the system message, pinned sources included
        assert PINNED_HEADING in before[0].text
        if serialised(after).startswith(serialised(stable_prefix(before))):
            extended += 1
    assert extended >= 15  # the rest are block trims of the window


def test_classic_prefix_counts_a_system_message_with_pinned_sources_only(manager):
    manager.set_system_prompt("s1", "You are terse.")
    manager.add_fetched_context(
        "s1", "docs", "House rules: no smoking.", extracted_data={"pinned": True}
    )
    fill(manager, "s1", 3)
    assembler = ContextPromptAssembler(manager)
    result = assembler.assemble("s1", "Can I smoke?")
    exact(result)
    assert result.report.stable_prefix_tokens == COUNTER.count_lc_message(result.messages[0])
    manager.add_fetched_context("s1", "web_search", "Smoking areas are outside.")
    ranked = assembler.assemble("s1", "Can I smoke?")
    assert ranked.report.stable_prefix_tokens == 0  # ranked sources in the system message
    assert ranked.messages[0].text.startswith(result.messages[0].text)


def test_stable_layout_with_recalled_turns_numbers_ranked_sources_after_pinned(manager):
    manager.set_system_prompt("s1", "You are a travel assistant.")
    manager.add_user_message("s1", "My sister's wedding venue is the Orangery at Kew")
    manager.add_assistant_message("s1", "Noted: the Orangery.")
    fill(manager, "s1", 300)
    manager.add_fetched_context(
        "s1", "docs", "Kew Gardens opens at 10.", extracted_data={"pinned": True}
    )
    manager.add_fetched_context("s1", "web_search", "The Orangery serves lunch.", url="https://o")
    assembler = ContextPromptAssembler(
        manager, max_tokens=1500, reserve_tokens=100, layout="stable"
    )
    result = assembler.assemble("s1", "Where is my sister's wedding venue?")
    exact(result)
    assert result.report.recalled  # the recalled turns went on the question too
    tail = question_of(result.messages).text
    assert "Orangery at Kew" in tail
    assert numbered(tail) == [2]
    assert PINNED_HEADING not in tail
    assert numbered(result.messages[0].text) == [1]


async def test_async_assembly_gives_the_same_prompt(manager):
    session(manager, turns=40)
    for layout in LAYOUTS:
        assembler = ContextPromptAssembler(manager, max_tokens=1500, layout=layout)
        sync = assembler.assemble("s1", "Rome hotels?")
        other = await assembler.aassemble("s1", "Rome hotels?")
        assert serialised(sync.messages) == serialised(other.messages)
        assert sync.report.pinned_source_urls == other.report.pinned_source_urls


def test_no_pinned_source_leaves_the_report_dict_as_before(seeded):
    data = ContextPromptAssembler(seeded).assemble("s1", "paris").report.as_dict()
    assert not {"pinned_sources", "pinned_source_urls", "pinned_sources_dropped"} & set(data)


def test_contextual_chat_reports_the_pinned_sources_it_cites(manager):
    session(manager)
    model = ToolCallingFakeModel(messages=iter([AIMessage("Refunds within 24 hours [1].")]))
    chat = ContextualChat(manager, model, max_tokens=3000)
    reply = chat.invoke("refund?", config={"configurable": {"session_id": "s1"}})
    meta = reply.response_metadata["ctx_memory"]
    assert meta["sources_used"][0]["url"] == "https://docs.example/refunds"
    assert meta["cited"] == [1]
    assert meta["report"]["pinned_sources"] == 2


def test_middleware_sends_sources_pinned_by_their_data(manager):
    session(manager)
    seen: list[ModelRequest[Any]] = []

    def handler(request: ModelRequest[Any]) -> ModelResponse[Any]:
        seen.append(request)
        return ModelResponse(result=[AIMessage("ok")])

    middleware = ContextMiddleware(manager, max_tokens=3000, layout="stable")
    request = ModelRequest(
        model=ToolCallingFakeModel(messages=iter([])),
        messages=[HumanMessage("hotels?", id="q1")],
        system_message=SystemMessage("Agent rules."),
        state={"messages": [HumanMessage("hotels?", id="q1")]},
        runtime=SimpleNamespace(context={"session_id": "s1"}),
    )
    middleware.wrap_model_call(request, handler)
    system = seen[0].system_message
    assert system is not None
    assert system.text.startswith("Agent rules.")
    assert "[1] Refund policy" in system.text
    assert "[2] Traveller profile" in system.text
    assert "[3]" in question_of(seen[0].messages).text


def test_middleware_pins_by_source_type(manager):
    session(manager)
    seen: list[ModelRequest[Any]] = []

    def handler(request: ModelRequest[Any]) -> ModelResponse[Any]:
        seen.append(request)
        return ModelResponse(result=[AIMessage("ok")])

    middleware = ContextMiddleware(
        manager, max_tokens=3000, layout="stable", pinned_source_types=["web_search"]
    )
    assert middleware.assembler.pinned_source_types == ("web_search",)
    request = ModelRequest(
        model=ToolCallingFakeModel(messages=iter([])),
        messages=[HumanMessage("refund?", id="q1")],
        system_message=SystemMessage("Agent rules."),
        state={"messages": [HumanMessage("refund?", id="q1")]},
        runtime=SimpleNamespace(context={"session_id": "s1"}),
    )
    middleware.wrap_model_call(request, handler)
    system = seen[0].system_message
    assert system is not None
    # Every web_search item is pinned in the system message, whatever the question asks.
    assert "Rome hotels are cheapest in February." in system.text
    assert "Paris trains leave every hour" in system.text
    assert "Rome hotels" not in question_of(seen[0].messages).text
