"""The history window at its edges: repeated call ids, pending calls, large turns.

Each case once sent an invalid or nearly empty prompt (found by generated traces).
"""

from __future__ import annotations

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from ctx_memory import ContextManager, ContextPromptAssembler, TokenCounter
from ctx_memory.assembly.window import group_tool_results, repair_tool_pairs
from ctx_memory.eval.metrics import tool_pair_problems

COUNTER = TokenCounter()


def call(call_id: str, **args: object) -> AIMessage:
    return AIMessage("", tool_calls=[{"name": "weather", "args": args, "id": call_id}])


def shape(messages: list[BaseMessage]) -> list[str]:
    out = []
    for m in messages:
        if isinstance(m, ToolMessage):
            out.append(f"tool:{m.content}")
        elif isinstance(m, AIMessage) and m.tool_calls:
            out.append(f"call:{m.tool_calls[0]['args'].get('city')}")
        else:
            out.append(f"{m.type}:{m.content}")
    return out


def test_a_call_id_used_again_in_a_later_turn_pairs_each_call_with_its_own_result() -> None:
    messages = [
        HumanMessage("Paris?"),
        call("c1", city="Paris"),
        ToolMessage("Sunny", tool_call_id="c1"),
        AIMessage("Paris: sunny"),
        HumanMessage("Oslo?"),
        call("c1", city="Oslo"),
        ToolMessage("Snow", tool_call_id="c1"),
        AIMessage("Oslo: snow"),
    ]
    kept, dropped = repair_tool_pairs(messages)
    assert dropped == []
    assert shape(group_tool_results(kept)) == shape(messages)


def test_a_result_stored_twice_is_sent_once() -> None:
    messages = [
        HumanMessage("Paris?"),
        call("c1", city="Paris"),
        ToolMessage("Sunny", tool_call_id="c1"),
        ToolMessage("Sunny", tool_call_id="c1"),
        AIMessage("Paris: sunny"),
    ]
    kept, dropped = repair_tool_pairs(messages)
    assert len(dropped) == 1
    problems = tool_pair_problems(group_tool_results(kept))
    assert (problems.orphan_results, problems.unanswered_calls) == (0, 0)


def test_a_turn_stored_twice_and_an_unanswered_retry_give_a_valid_prompt() -> None:
    manager = ContextManager()
    turn = [
        HumanMessage("Paris?"),
        call("c1", city="Paris"),
        ToolMessage("Sunny", tool_call_id="c1"),
    ]
    manager.add_messages("s", [*turn, AIMessage("sunny")])
    manager.add_messages("s", [*turn, AIMessage("sunny")])  # a retry without ids: new ids
    manager.add_messages("s", [HumanMessage("again?"), call("c1", city="Paris")])  # no result
    for layout in ("classic", "stable"):
        prompt = ContextPromptAssembler(manager, max_tokens=4000, layout=layout).assemble("s", "q")
        problems = tool_pair_problems(prompt.messages)
        assert (problems.orphan_results, problems.unanswered_calls) == (0, 0)
        results = [m for m in prompt.messages if isinstance(m, ToolMessage)]
        assert len(results) == 2  # one per call that has one


def test_a_call_that_never_gets_all_its_results_costs_the_window_nothing() -> None:
    """The repair drops it and its one answered (large) result: the window must not stop
    there as if they were sent."""
    manager = ContextManager()
    for i in range(20):
        manager.add_messages("s", [HumanMessage(f"question {i}"), AIMessage(f"answer {i}")])
    both = AIMessage(
        "",
        tool_calls=[
            {"name": "a", "args": {}, "id": "c1"},
            {"name": "b", "args": {}, "id": "c2"},  # never answered
        ],
    )
    manager.add_messages(
        "s", [HumanMessage("look it up"), both, ToolMessage("row " * 5000, tool_call_id="c1")]
    )
    for layout in ("classic", "stable"):
        prompt = ContextPromptAssembler(
            manager, max_tokens=3000, reserve_tokens=0, layout=layout, recall_share=0.0
        ).assemble("s", "q")
        assert prompt.report.history_messages == 41  # all 20 turns and "look it up"
        assert COUNTER.count_chat(prompt.messages) <= 3000


def test_the_stable_block_trim_never_empties_the_window() -> None:
    """A block boundary inside a large turn that fits must not drop that turn."""
    manager = ContextManager()
    for i in range(30):
        manager.add_messages(
            "s",
            [
                HumanMessage(f"question {i}: " + "train museum hotel " * 13),
                AIMessage(f"answer {i}: " + "alpha bravo charlie " * 13),
            ],
        )
    rows = "\n".join(f'{{"row": {i}, "status": "shipped"}}' for i in range(120))
    turn: list[BaseMessage] = [HumanMessage("task: look up the orders")]
    for j in range(5):
        turn += [call(f"c{j}", city=str(j)), ToolMessage(rows, tool_call_id=f"c{j}")]
    turn.append(AIMessage("340 orders, all shipped."))
    manager.add_messages("s", turn)
    manager.add_messages("s", [HumanMessage("thanks"), AIMessage("You're welcome.")])
    assembler = ContextPromptAssembler(
        manager, max_tokens=10000, reserve_tokens=0, layout="stable", recall_share=0.0
    )
    prompt = assembler.assemble("s", "how many orders were there?")
    assert prompt.report.history_tokens * 2 >= 9000  # the window's budget: about 9,000
    assert any(isinstance(m, ToolMessage) for m in prompt.messages)
