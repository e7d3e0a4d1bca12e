from __future__ import annotations

import warnings
from collections import Counter
from datetime import UTC, datetime

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.prompt_values import ChatPromptValue
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from rank_bm25 import BM25Plus

from ctx_memory import (
    AssembledPrompt,
    AssemblyReport,
    BudgetExceededError,
    ContextManager,
    ContextPromptAssembler,
    InMemoryStore,
    TokenCounter,
    ValidationError,
)
from ctx_memory.assembly.window import group_tool_results
from ctx_memory.prompt import (
    HistoryWindow,
    bm25_scores,
    format_header,
    format_sources,
    plan_sources,
    rank_sources,
    repair_tool_pairs,
    tokenize,
)

CONFIG = {"configurable": {"session_id": "s1"}}


def rec(role: str, tokens: int = 5, **extra):
    return {"role": role, "content": extra.pop("content", role), "token_count": tokens, **extra}


# --------------------------------------------------------------------------- pure parts


def test_tokenize_drops_stopwords_and_case():
    assert tokenize("How do I book a CHEAP flight to Paris?") == [
        "book",
        "cheap",
        "flight",
        "paris",
    ]


def test_bm25_matches_rank_bm25_bm25plus_without_delta():
    corpus = [
        tokenize("paris flights cheap fares book early paris"),
        tokenize("rome hotels february cheap"),
        tokenize("flights from new york to paris non stop"),
        tokenize("weather in paris"),
    ]
    query = tokenize("cheap paris flights")
    ours = bm25_scores(query, [Counter(d) for d in corpus], [len(d) for d in corpus])
    reference = BM25Plus(corpus, k1=1.5, b=0.75, delta=0).get_scores(query)
    assert ours == pytest.approx(list(reference))


def test_bm25_no_overlap_scores_zero_and_empty_corpus():
    assert bm25_scores(["x"], [Counter(["a"])], [1]) == [0.0]
    assert bm25_scores(["x"], [], []) == []


def test_rank_sources_relevance_then_recency():
    items = [
        {"content": "rome hotels", "timestamp": "2026-01-01T00:00:00", "url": "a"},
        {"content": "paris flights", "timestamp": "2026-01-02T00:00:00", "url": "b"},
        {"content": "unrelated", "timestamp": "2026-01-04T00:00:00", "url": "c"},
        {"content": "also unrelated", "timestamp": "2026-01-03T00:00:00", "url": "d"},
    ]
    cache: dict = {}
    ranked = rank_sources("flights to paris", items, cache=cache)
    assert [i["url"] for _, i in ranked] == ["b", "c", "d", "a"]
    assert len(cache) == 4
    assert rank_sources("flights to paris", items, cache=cache) == ranked


def test_rank_sources_uses_title():
    items = [
        {"content": "x", "extracted_data": {"title": "Paris guide"}, "timestamp": "1", "url": "a"},
        {"content": "y", "timestamp": "2", "url": "b"},
    ]
    assert rank_sources("paris", items)[0][1]["url"] == "a"


def test_format_header_shows_what_is_known():
    assert format_header({}) == ""
    assert format_header({"mode": "normal"}) == ""
    header = format_header(
        {"mode": "research", "current_url": "https://a.example", "user_time": "2026-11-21 09:00"}
    )
    assert header.splitlines() == [
        "Mode: research",
        "Current page: https://a.example",
        "User's local time: 2026-11-21 09:00",
    ]
    now = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    assert "2026-11-21 13:00 (Europe/Paris)" in format_header(
        {"user_timezone": "Europe/Paris"}, now=now
    )
    # zones stored before the manager checked them, or imported: no local time, no error
    for zone in ("Not/AZone", "Europe", "x" * 300, "../etc/passwd", "/abs"):
        assert format_header({"user_timezone": zone}, now=now) == ""


def test_format_sources_numbers_with_title_url_and_details():
    text = format_sources(
        [
            (
                {"url": "https://a", "extracted_data": {"title": "A", "published_date": "2026"}},
                "alpha",
            ),
            ({"url": "https://b"}, "beta"),
        ]
    )
    assert "[1] A - https://a (2026)\nalpha" in text
    assert "[2] https://b\nbeta" in text
    assert format_sources([]) == ""


def test_history_window_whole_turns_newest_first():
    history = [rec("user"), rec("assistant"), rec("user"), rec("assistant"), rec("user")]
    window = HistoryWindow(budget=14)
    assert window.feed(reversed(history)) is True  # the budget ran out
    assert [r["role"] for r in window.finish(at_start=False)] == ["user"]
    window = HistoryWindow(budget=15)
    assert window.feed(reversed(history)) is True
    assert [r["role"] for r in window.finish(at_start=False)] == ["user", "assistant", "user"]
    assert window.tokens == 15


def test_history_window_never_starts_mid_turn():
    history = [rec("user"), rec("assistant", 3), rec("assistant", 3), rec("user"), rec("assistant")]
    window = HistoryWindow(budget=15)
    window.feed(reversed(history))
    kept = window.finish(at_start=False)
    assert [r["role"] for r in kept] == ["user", "assistant"]
    assert window.tokens == 10


def test_history_window_keeps_leading_messages_at_start():
    history = [rec("assistant", content="Welcome!"), rec("user"), rec("assistant")]
    window = HistoryWindow(budget=100)
    window.feed(reversed(history))
    assert window.finish(at_start=True)[0]["content"] == "Welcome!"
    window = HistoryWindow(budget=100)
    window.feed(reversed(history))
    assert len(window.finish(at_start=False)) == 2


def test_history_window_skip():
    history = [rec("user", id="a"), rec("assistant", id="b"), rec("user", id="c")]
    window = HistoryWindow(budget=100, skip=lambda r: r["id"] == "c")
    window.feed(reversed(history))
    assert [r["id"] for r in window.finish(at_start=True)] == ["a", "b"]
    assert window.skipped == 1


def test_history_window_spends_nothing_on_a_result_whose_call_it_does_not_reach():
    """Another writer's message between a tool call and its result puts them in two turns.

    A window reaching the result's turn but not the call's would drop the result in the
    repair: its tokens are counted only once the call comes, so the newer turn still fits.
    """
    call = {"name": "t", "args": {}, "id": "c1"}
    history = [
        rec("user", id="u1"),
        rec("assistant", tool_calls=[call], id="call"),
        rec("user", id="u2"),  # the other writer's message
        rec("tool", 100, tool_call_id="c1", id="result"),
        rec("assistant", id="a2"),
    ]
    window = HistoryWindow(budget=60)
    assert window.feed(reversed(history)) is True  # the call's turn (with its result) is over
    kept = window.finish(at_start=False)
    assert [r["id"] for r in kept] == ["u2", "a2"]  # the orphan result repaired away
    assert window.tokens == 10 == sum(r["token_count"] for r in kept)
    # With room for both turns, the result goes back beside its call.
    window = HistoryWindow(budget=200)
    window.feed(reversed(history))
    kept = window.finish(at_start=True)
    assert [r["id"] for r in kept] == ["u1", "call", "result", "u2", "a2"]
    assert window.tokens == 120 == sum(r["token_count"] for r in kept)


def test_repair_drops_orphans_and_unanswered_calls():
    call = {"name": "t", "args": {}, "id": "c1"}
    records = [
        rec("tool", tool_call_id="c0"),  # orphan
        rec("user"),
        rec("assistant", tool_calls=[call]),
        rec("tool", tool_call_id="c1"),
        rec("assistant", tool_calls=[{"name": "t", "args": {}, "id": "c2"}]),  # unanswered
        rec("user"),
    ]
    kept, dropped = repair_tool_pairs(records)
    assert [r["role"] for r in kept] == ["user", "assistant", "tool", "user"]
    assert len(dropped) == 2
    messages = [
        ToolMessage("x", tool_call_id="zz"),
        HumanMessage("hi"),
        AIMessage("", tool_calls=[call]),
        ToolMessage("r", tool_call_id="c1"),
    ]
    kept_msgs, dropped_msgs = repair_tool_pairs(messages)
    assert [m.type for m in kept_msgs] == ["human", "ai", "tool"]
    assert dropped_msgs == [messages[0]]


def test_tool_results_follow_their_call_in_the_window():
    """Another writer's turn between a call and its results moves after the results."""
    calls = [{"name": "t", "args": {}, "id": "c1"}, {"name": "t", "args": {}, "id": "c2"}]
    history = [
        rec("user", content="q"),
        rec("assistant", content="", tool_calls=calls),
        rec("user", content="inner question"),
        rec("tool", content="r2", tool_call_id="c2"),
        rec("assistant", content="inner answer"),
        rec("tool", content="r1", tool_call_id="c1"),
        rec("assistant", content="done"),
    ]
    window = HistoryWindow(budget=1000)
    window.feed(reversed(history))
    kept = window.finish(at_start=True)
    assert [r["content"] for r in kept] == [
        "q", "", "r1", "r2", "inner question", "inner answer", "done"
    ]  # fmt: skip
    messages = [
        AIMessage("", tool_calls=calls[:1]),
        HumanMessage("between"),
        ToolMessage("r1", tool_call_id="c1"),
    ]
    assert [m.type for m in group_tool_results(messages)] == ["ai", "tool", "human"]
    assert group_tool_results(messages[1:2]) == messages[1:2]


def test_plan_sources_caps_counts_exactly_and_drops_least_relevant():
    counter = TokenCounter()
    long = "word " * 1000
    items = [
        {"content": long, "url": "https://a", "token_count": counter.count(long)},
        {"content": "short", "url": "https://b", "token_count": 1},
    ]
    plan = plan_sources(
        "System.", items, counter=counter, allowance=200, per_source_tokens=50, max_sources=None
    )
    assert plan.truncated == 1
    assert [i["url"] for i, _ in plan.chosen] == ["https://a", "https://b"]
    assert counter.count(plan.chosen[0][1]) <= 50
    assert plan.system_tokens == counter.count_message("system", plan.text) <= 200
    small = plan_sources(
        "System.", items, counter=counter, allowance=40, per_source_tokens=50, max_sources=None
    )
    assert small.dropped >= 1
    assert small.system_tokens <= 40
    none = plan_sources("", [], counter=counter, allowance=10, per_source_tokens=5, max_sources=3)
    assert (none.text, none.system_tokens) == ("", 0)


# --------------------------------------------------------------------------- assembler


def test_assembled_order_and_exact_budget(seeded):
    assembler = ContextPromptAssembler(seeded, max_tokens=3000, reserve_tokens=500)
    result = assembler.assemble("s1", "When should I book cheap flights to Paris?")
    types = [m.type for m in result.messages]
    assert types == ["system", "human", "ai", "human", "ai", "human"]
    system = result.messages[0].content
    assert system.startswith("You are a travel assistant.")
    assert "Mode: research" in system
    assert "Current page: https://airline.example/paris" in system
    assert "User's local time: 2026-11-21T08:00:00 (Europe/Paris)" in system
    # Most relevant first: both Paris sources before the Rome one.
    first, second, third = (system.index(f"[{n}]") for n in (1, 2, 3))
    assert first < second < third
    assert "Rome hotels" in system[third:]
    report = result.report
    assert report.total_tokens == TokenCounter().count_chat(result.messages)
    assert report.total_tokens <= report.budget == 2500
    assert (
        report.system_tokens
        + report.sources_tokens
        + report.history_tokens
        + report.question_tokens
        + report.priming_tokens
        == report.total_tokens
    )
    assert report.sources_included == 3
    assert report.history_messages == 4
    assert report.history_left_out_messages == 0


def test_per_source_cap(seeded):
    assembler = ContextPromptAssembler(seeded, source_token_cap=20)
    result = assembler.assemble("s1", "paris flights")
    assert result.report.sources_truncated == 1
    assert "cheapest fares. Book" in result.system
    assert result.system.count("Book flights to Paris") <= 3


def test_max_sources_and_sources_share(seeded):
    assert ContextPromptAssembler(seeded, max_sources=0).assemble("s1", "q").sources == ()
    one = ContextPromptAssembler(seeded, max_sources=1).assemble("s1", "Rome hotels")
    assert one.report.source_urls == ("https://rome.example",)
    assert one.report.sources_dropped == 2
    tight = ContextPromptAssembler(seeded, max_tokens=400, reserve_tokens=0, sources_share=0.1)
    result = tight.assemble("s1", "paris flights")
    assert result.report.sources_tokens <= 0.1 * 400


def test_history_left_out_when_budget_is_small(seeded):
    for i in range(30):
        seeded.add_user_message("s1", f"question number {i} " * 5)
        seeded.add_assistant_message("s1", f"answer number {i} " * 5)
    assembler = ContextPromptAssembler(
        seeded, max_tokens=600, reserve_tokens=100, max_sources=0, recall_share=0.0
    )
    result = assembler.assemble("s1", "latest?")
    report = result.report
    assert report.total_tokens <= 500
    assert report.total_tokens == TokenCounter().count_chat(result.messages)
    assert result.history[0].type == "human"
    assert result.history[-1].content == "answer number 29 " * 5
    assert report.history_left_out_messages == 64 - report.history_messages
    stored = seeded.get_memory_stats("s1")["token_count"]
    assert report.history_left_out_tokens == stored - report.history_tokens
    # The next older turn would not have fit.
    stored_history = seeded.get_history("s1")
    first = len(stored_history) - report.history_messages
    older_turn = sum(r["token_count"] for r in stored_history[first - 2 : first])
    assert report.total_tokens + older_turn > report.budget


def test_budget_exceeded_names_the_numbers(seeded):
    assembler = ContextPromptAssembler(seeded, max_tokens=40, reserve_tokens=10)
    with pytest.raises(BudgetExceededError, match="over the budget of 30"):
        assembler.assemble("s1", "When should I book?")


@pytest.mark.parametrize("layout", ["classic", "stable"])
def test_budget_exceeded_counts_the_page_as_header_not_question(layout):
    """The stable layout sends the page and time with the question: still the header's cost."""
    manager = ContextManager()
    manager.set_system_prompt("s", "You are terse.")
    manager.update_metadata("s", current_url="https://shop.example/" + "a/" * 400)
    question = TokenCounter().count_message("user", "What is the price?")
    assembler = ContextPromptAssembler(manager, max_tokens=300, reserve_tokens=0, layout=layout)
    with pytest.raises(BudgetExceededError, match=rf"and the question \({question} tokens\)"):
        assembler.assemble("s", "What is the price?")


def test_invalid_budget_settings(manager):
    with pytest.raises(ValidationError):
        ContextPromptAssembler(manager, max_tokens=100, reserve_tokens=100)
    with pytest.raises(ValidationError):
        ContextPromptAssembler(manager, sources_share=2)


def test_unknown_session_gives_just_the_question(manager):
    result = ContextPromptAssembler(manager).assemble("nobody", "hi")
    assert [m.type for m in result.messages] == ["human"]
    assert result.report.total_tokens == TokenCounter().count_chat(result.messages)


def test_exclude_last_skips_the_recorded_question(seeded):
    seeded.add_user_message("s1", "Recorded question")
    result = ContextPromptAssembler(seeded).assemble("s1", "Recorded question", exclude_last=1)
    assert [m.content for m in result.messages].count("Recorded question") == 1
    assert result.report.history_left_out_messages == 0
    assert result.report.history_left_out_tokens == 0


def test_orphan_tool_messages_never_start_the_history(manager):
    manager.add_messages(
        "s1",
        [
            ToolMessage("orphan", tool_call_id="zz"),
            AIMessage("", tool_calls=[{"name": "t", "args": {}, "id": "c9"}]),
            HumanMessage("q1"),
            AIMessage("", tool_calls=[{"name": "t", "args": {"x": 1}, "id": "c1"}]),
            ToolMessage("result", tool_call_id="c1"),
            AIMessage("a1"),
        ],
    )
    result = ContextPromptAssembler(manager).assemble("s1", "q2")
    assert [m.type for m in result.messages] == ["human", "ai", "tool", "ai", "human"]
    assert result.report.history_repaired_messages == 2
    assert result.report.total_tokens == TokenCounter().count_chat(result.messages)


def test_reads_only_what_fits(manager):
    manager.add_messages(
        "s1",
        [HumanMessage(f"message {i}") if i % 2 == 0 else AIMessage(f"r {i}") for i in range(2000)],
    )
    calls = []
    original = manager.get_message_range

    def spy(session_id, start, end):
        records = original(session_id, start, end)
        calls.append(len(records))
        return records

    manager.get_message_range = spy
    assembler = ContextPromptAssembler(manager, max_tokens=500, reserve_tokens=0, recall_share=0.0)
    result = assembler.assemble("s1", "q")
    assert sum(calls) < 120
    assert len(result.history) > 40


async def test_async_assembly_uses_native_async_reads(seeded):
    used = []
    original = seeded.aget_message_range

    async def spy(*args):
        used.append(args)
        return await original(*args)

    seeded.aget_message_range = spy
    assembler = ContextPromptAssembler(seeded)
    result = await assembler.aassemble("s1", "paris")
    assert used
    sync = assembler.assemble("s1", "paris")
    assert [m.content for m in result.messages][1:] == [m.content for m in sync.messages][1:]


def test_other_encoding_is_recounted(manager):
    other = ContextManager(store=manager.store, token_encoding="cl100k_base")
    manager.add_user_message("s1", "hello there")
    manager.add_assistant_message("s1", "general kenobi")
    result = ContextPromptAssembler(other).assemble("s1", "again")
    counter = other.token_counter
    assert result.report.encoding == "cl100k_base"
    assert result.report.total_tokens == counter.count_chat(result.messages)


# --------------------------------------------------------------------------- Runnable


def test_runnable_invoke_batch_stream_and_session_sources(seeded):
    assembler = ContextPromptAssembler(seeded)
    value = assembler.invoke("paris", config=CONFIG)
    assert isinstance(value, ChatPromptValue)
    assert value.messages[-1] == HumanMessage("paris")
    from_dict = assembler.invoke({"question": "paris", "session_id": "s1"})
    assert from_dict.messages[1:] == value.messages[1:]
    assert assembler.batch(["a", "b"], config=CONFIG)[1].messages[-1].content == "b"
    assert [v.messages[-1].content for v in assembler.stream("c", config=CONFIG)] == ["c"]
    as_message = assembler.invoke(HumanMessage("m"), config=CONFIG)
    assert as_message.messages[-1].content == "m"
    with pytest.raises(ValidationError, match="session id"):
        assembler.invoke("no session")
    with pytest.raises(ValidationError, match="'question'"):
        assembler.invoke({"q": "x"}, config=CONFIG)


async def test_runnable_async(seeded):
    assembler = ContextPromptAssembler(seeded, session_id="s1")
    value = await assembler.ainvoke("paris")
    assert value.messages[-1].content == "paris"
    assert len(await assembler.abatch(["a", "b"])) == 2
    chunks = [c async for c in assembler.astream("z")]
    assert chunks[0].messages[-1].content == "z"


def test_composes_with_a_fake_model_and_traces_its_name(seeded):
    names = []

    class Names(BaseCallbackHandler):
        def on_chain_start(self, serialized, inputs, **kwargs):
            names.append(kwargs.get("name"))

    model = GenericFakeChatModel(messages=iter([AIMessage("Book early.")]))
    chain = ContextPromptAssembler(seeded) | model
    reply = chain.invoke("paris", config={**CONFIG, "callbacks": [Names()]})
    assert reply.content == "Book early."
    assert "ContextPromptAssembler" in names


def test_inside_a_users_chat_prompt_template(seeded):
    template = ChatPromptTemplate.from_messages(
        [
            ("system", "{system}\n\nUse these sources:\n{sources}"),
            MessagesPlaceholder("history"),
            ("human", "{question}"),
        ]
    )
    assembler = ContextPromptAssembler(seeded, max_tokens=4000, reserve_tokens=1000)
    chain = assembler.as_variables() | template
    value = chain.invoke("cheap paris flights", config=CONFIG)
    messages = value.to_messages()
    assert isinstance(messages[0], SystemMessage)
    assert "[1] " in messages[0].content
    assert "You are a travel assistant." in messages[0].content
    assert [m.type for m in messages[1:]] == ["human", "ai", "human", "ai", "human"]
    assert messages[-1].content == "cheap paris flights"


async def test_variables_async(seeded):
    variables = await ContextPromptAssembler(seeded).as_variables().ainvoke("x", config=CONFIG)
    assert set(variables) == {"system", "sources", "history", "question", "report"}
    assert isinstance(variables["report"], AssemblyReport)


def test_report_dict_and_html(seeded):
    result = ContextPromptAssembler(seeded).assemble("s1", "paris")
    assert isinstance(result, AssembledPrompt)
    data = result.report.as_dict()
    assert data["remaining_tokens"] == result.report.budget - result.report.total_tokens
    assert isinstance(data["source_urls"], list)
    html = result._repr_html_()
    assert html is not None
    assert "Assembled prompt" in html
    assert result.report._repr_html_() is not None


def test_no_warnings(seeded):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ContextPromptAssembler(seeded).invoke("paris", config=CONFIG)


def test_store_keeps_everything(seeded):
    before = seeded.get_memory_stats("s1")["message_count"]
    ContextPromptAssembler(seeded, max_tokens=200, reserve_tokens=0, max_sources=0).assemble(
        "s1", "x"
    )
    assert seeded.get_memory_stats("s1")["message_count"] == before


def test_repr():
    with ContextManager(store=InMemoryStore()) as manager:
        assert "max_tokens=8000" in repr(ContextPromptAssembler(manager))


def test_sources_are_ranked_in_any_language(manager):
    for content, url in [
        ("京都には多くの寺があります。", "https://kyoto.example"),
        ("東京は日本の首都です。", "https://tokyo.example"),
        ("Café de Flore, Paris.", "https://paris.example"),
        ("서울은 한국의 수도입니다.", "https://seoul.example"),
    ]:
        manager.add_fetched_context("s1", "web_search", content, url=url)
    assembler = ContextPromptAssembler(manager)
    for question, url in [
        ("東京について教えて", "https://tokyo.example"),
        ("京都", "https://kyoto.example"),
        ("cafe?", "https://paris.example"),
        ("서울", "https://seoul.example"),
    ]:
        result = assembler.assemble("s1", question)
        assert result.report.source_urls[0] == url, question


def test_custom_tokenizer_ranks_the_sources(manager):
    manager.add_fetched_context("s1", "web_search", "alpha beta", url="https://a.example")
    manager.add_fetched_context("s1", "web_search", "gamma delta", url="https://b.example")
    # Newest first by default when nothing matches; a tokenizer that maps "one" to
    # "alpha" finds the older source.
    synonyms = {"one": "alpha"}

    def tokenizer(text: str) -> list[str]:
        return [synonyms.get(w, w) for w in text.lower().split()]

    plain = ContextPromptAssembler(manager).assemble("s1", "one")
    assert plain.report.source_urls[0] == "https://b.example"
    custom = ContextPromptAssembler(manager, tokenizer=tokenizer).assemble("s1", "one")
    assert custom.report.source_urls[0] == "https://a.example"


@pytest.mark.parametrize("layout", ["classic", "stable"])
def test_variables_carry_the_header_and_recalled_turns_in_both_layouts(manager, layout):
    """A template fed ``as_variables()`` sends what ``assemble()`` does: the page and local
    time header, and the turns recall brought back, in either layout."""
    manager.set_system_prompt("s1", "You are the front desk.")
    manager.update_metadata(
        "s1", mode="research", current_url="https://kew.example/booking", user_timezone="UTC"
    )
    manager.add_user_message("s1", "My passport number is X1234567")
    manager.add_assistant_message("s1", "Noted.")
    for i in range(120):
        manager.add_user_message("s1", f"Question {i} about the stay")
        manager.add_assistant_message("s1", f"Answer {i} about the stay")
    template = ChatPromptTemplate.from_messages(
        [("system", "{system}\n{sources}"), MessagesPlaceholder("history"), ("human", "{question}")]
    )
    assembler = ContextPromptAssembler(manager, max_tokens=1500, reserve_tokens=200, layout=layout)
    question = "What was my passport number?"
    assert assembler.assemble("s1", question).report.recalled
    sent = (assembler.as_variables() | template).invoke(question, config=CONFIG).to_messages()
    text = "\n".join(m.text for m in sent)
    for needle in ("X1234567", "Current page: https://kew.example/booking", "local time"):
        assert needle in text, needle
    assert sent[-1].text.endswith(question)
