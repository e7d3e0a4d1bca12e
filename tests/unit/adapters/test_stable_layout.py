"""The stable layout: the prompt's prefix stays the same from request to request; cache hints."""

from __future__ import annotations

import itertools
import json
import random
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, TypedDict

import pytest
from adapter_fakes import ToolCallingFakeModel, fake_model, question_of, stable_prefix, tool_call
from langchain.agents import create_agent
from langchain.agents.middleware import ModelRequest, ModelResponse
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from ctx_memory import ContextManager, ContextPromptAssembler, ContextualChat, TokenCounter
from ctx_memory.assembly.hints import prompt_cache_key, with_cache_control
from ctx_memory.middleware import ContextMiddleware
from ctx_memory.recall import make_recall_tool, search_history

COUNTER = TokenCounter()
WORDS = [
    "weather",
    "trip",
    "hotel",
    "booking",
    "museum",
    "dinner",
    "train",
    "ticket",
    "coffee",
    "weekend",
    "budget",
    "plan",
]


def serialised(messages: list[BaseMessage]) -> str:
    return "".join(json.dumps([m.type, m.content], sort_keys=True) + "\n" for m in messages)


def fill(manager: ContextManager, session: str, turns: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    messages: list[BaseMessage] = []
    for i in range(turns):
        messages.append(HumanMessage(" ".join(rng.choice(WORDS) for _ in range(12)) + f" {i}"))
        messages.append(AIMessage(" ".join(rng.choice(WORDS) for _ in range(18))))
    manager.add_messages(session, messages)


def setup_session(manager: ContextManager) -> None:
    manager.set_system_prompt("s1", "You are a travel assistant. " * 20)
    manager.update_metadata("s1", user_timezone="Europe/Paris", current_url="https://a.example")
    for i, topic in enumerate(("hotel prices", "train tickets", "museum hours")):
        manager.add_fetched_context(
            "s1", "web_search", f"All about {topic}. " * 30, url=f"https://{i}.example"
        )
    fill(manager, "s1", 300)


class KwargsModel(ToolCallingFakeModel):
    """Records the call options each call got."""

    calls: list[dict[str, Any]] = []  # noqa: RUF012 - replaced per instance below

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)
        object.__setattr__(self, "calls", [])

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        self.calls.append(dict(kwargs))
        return super()._generate(messages, *args, **kwargs)


def test_over_50_turns_the_prefix_grows_and_moves_only_at_block_trims(manager):
    setup_session(manager)
    rng = random.Random(5)
    replies = [AIMessage(" ".join(rng.choice(WORDS) for _ in range(20))) for _ in range(50)]
    model = KwargsModel(messages=iter(replies))
    chat = ContextualChat(
        manager, model, max_tokens=3500, reserve_tokens=500, layout="stable", trim_block=0.25
    )
    config = {"configurable": {"session_id": "s1"}}
    reports = []
    for turn in range(50):
        question = f"{rng.choice(WORDS)} {rng.choice(WORDS)} and the museum? ({turn})"
        reply = chat.invoke(question, config=config)
        reports.append(reply.response_metadata["ctx_memory"]["report"])
    prompts = model.seen
    assert len(prompts) == 50
    trims = 0
    for n in range(49):
        before, after = prompts[n], prompts[n + 1]
        assert COUNTER.count_chat(before) == reports[n]["total_tokens"] <= 3000
        prefix = stable_prefix(before)  # the system message and the history window
        # The stable prefix the report names is exactly that part of the prompt.
        assert (
            sum(COUNTER.count_lc_message(m) for m in prefix) == reports[n]["stable_prefix_tokens"]
        )
        if serialised(after).startswith(serialised(prefix)):
            continue
        # Not a prefix: only because the window's oldest block was dropped.
        trims += 1
        assert serialised(after[:1]) == serialised(before[:1])  # the system message stays
        assert before[1].content != after[1].content
        assert after[1].content in [m.content for m in before[1:]]  # the start moved forward
    # ~30 messages in the window, blocks of 8: 100 new messages cross ~12 block edges,
    # where a one-turn-at-a-time window would change its start on every request.
    assert 1 <= trims <= 14, trims
    assert trims / 49 <= 0.3
    # The volatile parts are last: the local time and page in a message of their own,
    # the ranked sources on the question; never in the system message.
    assert "Current page" not in prompts[-1][0].text
    assert "[1]" not in prompts[-1][0].text
    assert "Current page: https://a.example" in prompts[-1][-1].text
    assert "Sources (most relevant first" in question_of(prompts[-1]).text
    # What is stored is the question as asked, without the attached context.
    stored = manager.get_history("s1", last_k=2)
    assert stored[0]["content"].startswith(tuple(WORDS))
    assert "<context>" not in stored[0]["content"]


@pytest.mark.parametrize("extras", [False, True])
def test_a_tool_loop_step_begins_with_the_whole_previous_request(manager, extras):
    """Each step of an agent's run re-sends the previous request as it was, but its
    volatile part (the clock moves), and so does the next question once the run is in the
    history, unless the run filled the window (a block trim). The question's own context
    (ranked sources, recalled turns) shares the budget with the run, so with it the
    guarantee is the system message and window."""
    setup_session(manager)
    fill(manager, "s1", 20)
    assembler = ContextPromptAssembler(
        manager,
        max_tokens=6000,
        layout="stable",
        max_sources=None if extras else 0,
        recall_share=0.5 if extras else 0.0,
        cache_hints=["anthropic"],
    )
    clock = iter(datetime(2025, 3, 1, 9, minute, tzinfo=UTC) for minute in range(0, 60, 3))

    def store(message: BaseMessage) -> BaseMessage:
        record = manager.add_messages("s1", [message])[0]
        return message.model_copy(update={"id": record["id"]})

    starts: list[int] = []  # each request's window start

    def request(run: list[BaseMessage], query: str) -> list[BaseMessage]:
        skip = frozenset(m.id for m in run if m.id)
        result = assembler.build("s1", run, query=query, skip_ids=skip, now=next(clock))
        assert COUNTER.count_chat(result.messages) == result.report.total_tokens <= 6000
        starts.append(result.report.history_left_out_messages)
        return list(result.messages)

    requests: list[list[BaseMessage]] = []
    heads: list[list[BaseMessage]] = []  # each request's system message and window
    for task in range(2):
        query = f"museum tickets and the hotel booking? ({task})"
        run = [store(HumanMessage(query))]
        for step in range(4):
            if step:
                call_id = f"c{task}{step}"
                run.append(store(tool_call("search", call_id, q="museum")))
                result = ToolMessage(f"Result {step}: " + "tickets " * 40, tool_call_id=call_id)
                run.append(store(result))
            requests.append(request(run, query))
            heads.append(requests[-1][: -1 - len(run)])  # the run, then the volatile part
        store(AIMessage(f"Done with task {task}."))

    def plain(messages: list[BaseMessage]) -> str:  # what is sent, breakpoints aside
        return serialised([m.model_copy(update={"content": m.text}) for m in messages])

    for i, (before, after, head) in enumerate(zip(requests, requests[1:], heads, strict=False)):
        assert before[-1].text.startswith("<context>\nCurrent page: https://a.example")
        assert "local time" in before[-1].text
        if starts[i + 1] != starts[i]:  # a trim: forward, and only as a new run begins
            assert (i + 1) % 4 == 0
            assert starts[i + 1] > starts[i]
            assert after[0] == before[0]  # the system message stays
            continue
        assert plain(after).startswith(plain(head))
        if not extras:
            assert plain(after).startswith(plain(before[:-1]))
    assert len(set(starts)) <= 2  # at most one trim in eight requests
    if extras:
        assert "Sources (most relevant first" in question_of(requests[0]).text
    assert requests[0][-1].text != requests[1][-1].text  # the clock moved: said last
    # The run's last message carries a breakpoint: the next step begins with it.
    step = requests[2]
    marked = [
        i
        for i, m in enumerate(step)
        if isinstance(m.content, list)
        and any(isinstance(b, dict) and "cache_control" in b for b in m.content)
    ]
    assert len(marked) == 3
    assert marked[-1] == len(step) - 2
    assert isinstance(step[-2], ToolMessage)


def test_classic_layout_is_unchanged_by_default(seeded):
    result = ContextPromptAssembler(seeded).assemble("s1", "When should I book?")
    assert result.report.layout == "classic"
    assert "[1]" in result.messages[0].text
    assert "User's local time" in result.messages[0].text
    assert result.messages[-1].content == "When should I book?"
    assert result.report.stable_prefix_tokens == 0  # sources and local time in the system


def test_trimming_moves_the_window_in_blocks(manager):
    fill(manager, "s1", 400)
    assembler = ContextPromptAssembler(
        manager, max_tokens=2000, reserve_tokens=0, layout="stable", recall_share=0.0
    )
    starts = []
    for i in range(40):
        result = assembler.assemble("s1", "next?")
        starts.append(result.history[0].content)
        manager.add_messages("s1", [HumanMessage(f"more {i} " * 5), AIMessage(f"sure {i} " * 5)])
    changes = sum(1 for a, b in itertools.pairwise(starts) if a != b)
    assert 1 <= changes <= 6  # blocks, not one turn per request (40 changes)


def _breakpoints(messages):
    """The content blocks carrying Anthropic's ``cache_control``."""
    return [
        block
        for m in messages
        if isinstance(m.content, list)
        for block in m.content
        if isinstance(block, dict) and "cache_control" in block
    ]


def test_anthropic_and_openai_hints_have_the_documented_shape(manager):
    setup_session(manager)
    assembler = ContextPromptAssembler(
        manager, max_tokens=3000, layout="stable", cache_hints=["anthropic", "openai"]
    )
    result = assembler.assemble("s1", "hotel prices?")
    system, messages = result.messages[0], result.messages
    assert isinstance(system, SystemMessage)
    assert system.content[-1]["cache_control"] == {"type": "ephemeral"}
    last_history = stable_prefix(messages)[-1]
    assert last_history.content[-1]["cache_control"] == {"type": "ephemeral"}
    breakpoints = _breakpoints(messages)
    assert len(breakpoints) == 2 <= 4
    assert COUNTER.count_chat(messages) == result.report.total_tokens  # hints cost nothing
    key = result.model_kwargs["prompt_cache_key"]
    assert key == prompt_cache_key("s1") != prompt_cache_key("s2")
    assert len(key) <= 64
    assert "s1" not in key
    again = assembler.assemble("s1", "train tickets?")
    assert again.model_kwargs == result.model_kwargs
    # Without hints: plain string contents, no call options.
    plain = ContextPromptAssembler(manager, max_tokens=3000, layout="stable").assemble("s1", "x")
    assert isinstance(plain.messages[0].content, str)
    assert plain.model_kwargs == {}


@pytest.mark.parametrize("layout", ["classic", "stable"])
def test_no_breakpoint_on_an_empty_text_block(manager, layout):
    """Anthropic refuses ``cache_control`` on empty text: the breakpoint moves back."""
    manager.add_user_message("s1", "weather in Paris?")
    manager.add_messages("s1", [
        AIMessage("", tool_calls=[{"name": "weather", "args": {}, "id": "c1"}]),
        ToolMessage("", tool_call_id="c1"),
        AIMessage([{"type": "text", "text": " "}], tool_calls=[
            {"name": "weather", "args": {}, "id": "c2"}]),
        ToolMessage([{"type": "text", "text": ""}], tool_call_id="c2"),
    ])  # fmt: skip
    assembler = ContextPromptAssembler(
        manager, max_tokens=3000, layout=layout, cache_hints=["anthropic"]
    )
    messages = assembler.assemble("s1", "and tomorrow?").messages
    marked = [
        (m, block)
        for m in messages
        if isinstance(m.content, list)
        for block in m.content
        if isinstance(block, dict) and "cache_control" in block
    ]
    assert marked, "the system message and the question before the tool calls keep theirs"
    for message, block in marked:
        assert block.get("type") != "text" or block["text"].strip(), message
    [question] = [m for m, _ in marked if isinstance(m, HumanMessage)]
    assert "weather in Paris?" in str(question.content)
    assert with_cache_control(AIMessage("")).content == ""
    thinking = AIMessage([
        {"type": "text", "text": "The answer."},
        {"type": "thinking", "thinking": "...", "signature": "x"},
    ])  # fmt: skip
    marked_blocks = with_cache_control(thinking).content
    assert "cache_control" in marked_blocks[0]  # the text, not the thinking block after it
    assert "cache_control" not in marked_blocks[1]


def test_stored_cache_control_never_adds_breakpoints(manager):
    """Stored blocks carrying their own ``cache_control`` lose it: at most ours are sent."""
    mark = {"type": "ephemeral"}
    for i in range(6):
        manager.add_messages("s1", [
            HumanMessage([{"type": "text", "text": f"question {i}", "cache_control": mark}]),
            AIMessage([{"type": "text", "text": f"answer {i}", "cache_control": mark}]),
        ])  # fmt: skip
    for layout in ("classic", "stable"):
        assembler = ContextPromptAssembler(
            manager, max_tokens=3000, layout=layout, cache_hints=["anthropic"]
        )
        messages = assembler.assemble("s1", "and then?").messages
        breakpoints = _breakpoints(messages)
        assert 1 <= len(breakpoints) <= 3, layout
    stored = manager.get_history("s1")  # the session keeps what was stored
    assert all(r["content"][0]["cache_control"] == mark for r in stored)


async def test_contextual_chat_binds_the_prompt_cache_key(manager):
    manager.add_user_message("s1", "hi")
    model = KwargsModel(messages=iter([AIMessage("a"), AIMessage("b")]))
    chat = ContextualChat(manager, model, cache_hints=["openai"])
    config = {"configurable": {"session_id": "s1"}}
    chat.invoke("q1", config=config)
    await chat.ainvoke("q2", config=config)
    assert [c.get("prompt_cache_key") for c in model.calls] == [prompt_cache_key("s1")] * 2


def _request(messages: list[BaseMessage]) -> ModelRequest[Any]:
    return ModelRequest(
        model=fake_model("unused"),
        messages=messages,
        system_message=SystemMessage("Agent rules."),
        state={"messages": messages},
        runtime=SimpleNamespace(context={"session_id": "s1"}),
    )


@pytest.mark.parametrize("use_async", [False, True])
async def test_middleware_passes_the_layout_and_hints_through(manager, use_async):
    setup_session(manager)
    seen: list[ModelRequest[Any]] = []

    def handler(request: ModelRequest[Any]) -> ModelResponse[Any]:
        seen.append(request)
        return ModelResponse(result=[AIMessage("ok")])

    async def ahandler(request: ModelRequest[Any]) -> ModelResponse[Any]:
        return handler(request)

    middleware = ContextMiddleware(
        manager, max_tokens=3000, layout="stable", cache_hints=["anthropic", "openai"]
    )
    request = _request([HumanMessage("hotel prices?", id="q1")])
    if use_async:
        await middleware.awrap_model_call(request, ahandler)
    else:
        middleware.wrap_model_call(request, handler)
    sent = seen[0]
    assert sent.model_settings["prompt_cache_key"] == prompt_cache_key("s1")
    assert sent.system_message.content[-1]["cache_control"] == {"type": "ephemeral"}
    assert sent.system_message.content[0]["text"].startswith("Agent rules.")
    assert "Current page" in sent.messages[-1].text
    assert "hotel prices?" in question_of(sent.messages).text
    assert manager.get_history("s1", last_k=2)[0]["content"] == "hotel prices?"


FACT = "My sister's wedding venue is the Orangery at Kew Gardens"


class SessionContext(TypedDict):
    session_id: str


@pytest.mark.parametrize("how", ["config", "context"])
def test_the_recall_tool_inside_a_real_agent(manager, how):
    manager.add_messages("s1", [HumanMessage(FACT), AIMessage("Noted.")])
    fill(manager, "s1", 400)
    model = fake_model(
        tool_call("recall", "call-1", query="sister wedding venue"), "The Orangery at Kew."
    )
    agent = create_agent(
        model,
        tools=[make_recall_tool(manager)],
        middleware=[ContextMiddleware(manager, max_tokens=1200, recall_share=0.0)],
        context_schema=SessionContext,
    )
    if how == "config":
        result = agent.invoke(
            {"messages": [("user", "Where is the wedding?")]},
            {"configurable": {"session_id": "s1"}},
        )
    else:
        result = agent.invoke(
            {"messages": [("user", "Where is the wedding?")]}, context={"session_id": "s1"}
        )
    assert result["messages"][-1].content == "The Orangery at Kew."
    tool_result = result["messages"][-2]
    assert tool_result.type == "tool"
    assert FACT in tool_result.content
    assert "[0 user]" in tool_result.content
    assert "[1 assistant]" in tool_result.content
    # The model saw the tool result with its call (no orphan), and it is stored too.
    second = model.seen[1]
    assert any(m.type == "tool" and FACT in m.content for m in second)
    stored = manager.get_history("s1", last_k=3)
    assert stored[1]["role"] == "tool"
    assert FACT in stored[1]["content"]


def test_the_recall_tool_finds_neither_the_turn_in_progress_nor_its_own_answers(manager):
    """The question being answered (stored before the tools run) and the tool's earlier
    answers, stored as tool messages, are not what it looks for: asked again and again it
    shows the older turn, not its own answers nested in each other; once that turn is
    redacted, the redacted text does not come back through them."""
    card = "My card number is 4111-2222-3333-4444 and the door code is 4471."
    manager.add_messages("s1", [HumanMessage(card), AIMessage("Saved both.")])
    fill(manager, "s1", 400)

    def ask(query: str) -> str:
        asked_at = len(manager.get_history("s1"))
        model = fake_model(tool_call("recall", f"call-{asked_at}", query=query), "ok")
        agent = create_agent(
            model, tools=[make_recall_tool(manager)], middleware=[ContextMiddleware(manager)]
        )
        config = {"configurable": {"session_id": "s1"}}
        result = agent.invoke({"messages": [("user", f"Remind me: {query}?")]}, config)
        answer = str(result["messages"][-2].content)
        assert f"[{asked_at} user]" not in answer  # the turn in progress is in view
        return answer

    for _ in range(3):
        answer = ask("door code")
        assert "[0 user] " + card in answer
        assert answer.count("4471") == 1  # once: no earlier answer nested in this one
    first = manager.get_history("s1")[0]["id"]
    manager.replace_message("s1", first, HumanMessage("My card number is [REDACTED]."))
    assert "4111" not in ask("card number")
    assert [h.position for h in search_history(manager, "s1", "4111")] == []


async def test_the_recall_tool_async(manager):
    manager.add_messages("s1", [HumanMessage(FACT), AIMessage("Noted.")])
    tool = make_recall_tool(manager, "s1")
    assert FACT in await tool.ainvoke({"query": "wedding venue"})
    assert "Nothing earlier" in await tool.ainvoke({"query": "zebra"})
