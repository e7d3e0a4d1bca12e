"""A LangChain summary and a policy compaction at the same boundary become one compaction."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from langchain.agents.middleware import ModelRequest, ModelResponse
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableLambda

from ctx_memory import ContextManager, ContextMiddleware, ContextPromptAssembler, TokenCounter
from ctx_memory._compaction_langchain import SUMMARY_PREFIX
from ctx_memory.assembly.compacted import COMPACTIONS_KEY, summary_record
from ctx_memory.compaction import CompactionPolicy, add_compaction, compact, get_compactions

LC = {"name": "langchain.SummarizationMiddleware", "model": "m", "prompt_hash": ""}


def _seed(manager: ContextManager, sid: str = "s", turns: int = 8) -> None:
    for i in range(turns):
        manager.add_messages(
            sid,
            [
                HumanMessage(f"Order {1000 + i}?"),
                AIMessage("", tool_calls=[{"name": "lookup", "args": {}, "id": f"call-{i}"}]),
                ToolMessage(f"order {1000 + i} shipped " + "x " * 80, tool_call_id=f"call-{i}"),
                AIMessage(f"Order {1000 + i} shipped."),
            ],
        )


def _summaries_sent(messages: list[BaseMessage]) -> list[str]:
    return [m.text for m in messages if m.text.startswith("[Summary of messages")]


def _assemble(manager: ContextManager, sid: str = "s") -> list[BaseMessage]:
    policy = CompactionPolicy(summarize_at=None, clear_tool_outputs_at=None)
    assembler = ContextPromptAssembler(manager, max_tokens=8000, compaction=policy)
    result = assembler.assemble(sid, "next?")
    assert result.report.total_tokens == TokenCounter().count_chat(result.messages)
    return list(result.messages)


def test_a_langchain_summary_at_a_policy_boundary_replaces_it(manager: ContextManager) -> None:
    _seed(manager)
    policy = add_compaction(manager, "s", 0, 15, "Orders 1000-1003 shipped.")
    lc = add_compaction(
        manager, "s", 0, 15, "LangChain: four orders shipped.", producer=LC,
        compaction_id="lc-summary-x",
    )  # fmt: skip
    assert get_compactions(manager, "s") == [lc]
    assert manager.get_context("s")["shared"][COMPACTIONS_KEY][policy["id"]] is None
    assert _summaries_sent(_assemble(manager)) == [
        "[Summary of messages 0-15]\nLangChain: four orders shipped.\n"
        "Tool results restorable with restore_tool_result: call-0, call-1, call-2, call-3"
    ]


def test_the_newer_summary_covers_the_union(manager: ContextManager) -> None:
    _seed(manager)
    history = manager.get_history("s")
    older = add_compaction(manager, "s", 0, 15, "Orders 1000-1003 shipped.", producer=LC)
    newer = add_compaction(manager, "s", 8, 15, "Orders 1002-1003 shipped.")
    assert get_compactions(manager, "s") == [newer]
    assert (newer["first_index"], newer["first_id"]) == (0, older["first_id"])
    assert newer["summary"] == "Orders 1000-1003 shipped.\nOrders 1002-1003 shipped."
    assert newer["tokens_covered"] == sum(r["token_count"] for r in history[:16])
    assert newer["tool_call_ids"] == ["call-0", "call-1", "call-2", "call-3"]
    assert newer["summary_tokens"] == summary_record(newer, TokenCounter())["token_count"]
    assert len(_summaries_sent(_assemble(manager))) == 1


def test_other_boundaries_are_left_alone(manager: ContextManager) -> None:
    _seed(manager)
    first = add_compaction(manager, "s", 0, 7, "Orders 1000-1001.")
    second = add_compaction(manager, "s", 8, 15, "Orders 1002-1003.")
    cleared = add_compaction(manager, "s", 0, 15, "", kind="tool_outputs_cleared")
    assert {e["id"] for e in get_compactions(manager, "s")} == {
        first["id"],
        second["id"],
        cleared["id"],
    }


def test_a_policy_summary_written_after_a_langchain_one_at_its_boundary(
    manager: ContextManager,
) -> None:
    """Vice versa: the LangChain summary is recorded while the policy's summariser runs."""
    _seed(manager, turns=12)

    def summarize(messages: list[BaseMessage]) -> str:
        last = len(messages) - 1
        add_compaction(manager, "s", 4, last, "LC: orders 1001 on.", producer=LC)
        return "Policy: orders 1000 on."

    policy = CompactionPolicy(
        summarize_at=100, keep_recent=12, block=4, min_messages=4,
        summarizer=RunnableLambda(summarize),
    )  # fmt: skip
    outcome = compact(manager, "s", policy)
    assert outcome.entry is not None
    assert get_compactions(manager, "s") == [outcome.entry]  # one, covering both
    assert outcome.entry["first_index"] == 0
    assert outcome.entry["summary"] == "Policy: orders 1000 on."
    assert len(_summaries_sent(_assemble(manager))) == 1


def test_the_middleware_merges_a_langchain_summary_with_the_policys(
    manager: ContextManager,
) -> None:
    _seed(manager)
    history = manager.get_history("s")
    policy_entry = add_compaction(manager, "s", 4, 11, "Orders 1001-1002 shipped.")
    summary = HumanMessage(
        f"{SUMMARY_PREFIX}\n\nOrders 1001 and 1002 shipped (LangChain).",
        id="sum-1",
        additional_kwargs={"lc_source": "summarization"},
    )
    kept = [HumanMessage(history[12]["content"], id=history[12]["id"])]
    middleware = ContextMiddleware(manager, max_tokens=6000, reserve_tokens=500)
    request = ModelRequest(
        model=None,  # type: ignore[arg-type]
        messages=[summary, *kept, HumanMessage("and now?", id="h-now")],
        system_message=None,
        state={"messages": [summary], "ctx_memory_state_start": history[4]["id"]},
        runtime=SimpleNamespace(context={"session_id": "s"}),
    )
    seen: list[list[BaseMessage]] = []

    def handler(req: ModelRequest[Any]) -> ModelResponse[Any]:
        seen.append(list(req.messages))
        return ModelResponse(result=[AIMessage("ok", id="a-now")])

    middleware.wrap_model_call(request, handler)
    (entry,) = get_compactions(manager, "s")
    assert entry["id"] == "lc-summary-sum-1"
    assert (entry["first_index"], entry["last_index"]) == (4, 11)
    assert manager.get_context("s")["shared"][COMPACTIONS_KEY][policy_entry["id"]] is None
    sent = [m.text for m in seen[0]]
    assert sum("shipped (LangChain)" in t for t in sent) == 1
    assert not any("Orders 1001-1002 shipped." in t for t in sent)  # not sent twice
