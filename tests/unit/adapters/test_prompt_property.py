"""Property: the assembled prompt never exceeds the budget and keeps the newest turns."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from ctx_memory import BudgetExceededError, ContextManager, ContextPromptAssembler, InMemoryStore
from ctx_memory.tokens import TokenCounter

COUNTER = TokenCounter()  # an independent counter, same encoding as the manager's default
WORDS = st.sampled_from(
    ["paris", "flight", "book", "cheap", "the", "hotel", "ß", "日本", "🙂", "\n", "{}", "42"]
)
TEXT = st.lists(WORDS, min_size=0, max_size=40).map(" ".join)


@st.composite
def turns(draw):
    """A list of turns; each is user, optional tool round trips, then an answer."""
    out = []
    for t in range(draw(st.integers(0, 14))):
        turn = [HumanMessage(draw(TEXT))]
        for c in range(draw(st.integers(0, 2))):
            call_id = f"call-{t}-{c}"
            turn.append(
                AIMessage(
                    draw(TEXT),
                    tool_calls=[{"name": "search", "args": {"q": draw(TEXT)}, "id": call_id}],
                )
            )
            turn.append(ToolMessage(draw(TEXT), tool_call_id=call_id))
        if draw(st.booleans()):
            turn.append(AIMessage(draw(TEXT)))
        out.append(turn)
    return out


def _check_pairs(messages):
    open_calls: set[str] = set()
    answered = {m.tool_call_id for m in messages if isinstance(m, ToolMessage)}
    for message in messages:
        if isinstance(message, AIMessage) and message.tool_calls:
            ids = {c["id"] for c in message.tool_calls}
            assert ids <= answered, "an AI tool call without its results"
            open_calls |= ids
        if isinstance(message, ToolMessage):
            assert message.tool_call_id in open_calls, "an orphan tool message"


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    history=turns(),
    max_tokens=st.integers(20, 1500),
    reserve=st.integers(0, 200),
    system_prompt=st.none() | TEXT,
    question=TEXT,
    sources=st.lists(TEXT, max_size=5),
    cap=st.integers(1, 80),
    orphan=st.booleans(),
)
def test_budget_is_never_exceeded_and_newest_turns_are_kept(
    history, max_tokens, reserve, system_prompt, question, sources, cap, orphan
):
    if reserve >= max_tokens:
        reserve = 0
    with ContextManager(store=InMemoryStore()) as manager:
        if system_prompt is not None:
            manager.set_system_prompt("s", system_prompt)
        if orphan:  # junk at the very start: never sent
            manager.add_messages("s", [ToolMessage("stray", tool_call_id="nowhere")])
        flat = [m for turn in history for m in turn]
        if flat:
            manager.add_messages("s", flat)
        if sources:
            manager.add_fetched_items(
                "s",
                [
                    {"source_type": "web", "content": text, "url": f"https://{i}.example"}
                    for i, text in enumerate(sources)
                ],
            )
        assembler = ContextPromptAssembler(  # the pure recency window (recall: test_recall*.py)
            manager,
            max_tokens=max_tokens,
            reserve_tokens=reserve,
            source_token_cap=cap,
            recall_share=0.0,
        )
        budget = max_tokens - reserve
        try:
            result = assembler.assemble("s", question)
        except BudgetExceededError:
            fixed = 3 + COUNTER.count_lc_message(HumanMessage(question))
            if system_prompt:
                fixed += COUNTER.count_message("system", system_prompt)
            assert fixed > budget
            return
        messages = result.messages
        recount = COUNTER.count_chat(messages)
        assert recount == result.report.total_tokens
        assert recount <= budget
        assert messages[-1].content == question
        _check_pairs(messages)

        # History is the newest whole turns: a suffix of the stored turns.
        sent = [m for m in messages if m.type != "system"][:-1]
        kept_turns = 0
        if sent:
            assert sent[0].type == "human"
            kept_turns = sum(1 for m in sent if m.type == "human")
            suffix = [m for turn in history[len(history) - kept_turns :] for m in turn]
            assert [m.content for m in sent] == [m.content for m in suffix]
        # ... and the next older turn would not have fitted.
        if kept_turns < len(history):
            older = history[len(history) - kept_turns - 1]
            cost = sum(COUNTER.count_lc_message(m) for m in older)
            assert recount + cost > budget
