"""Compaction in the integrations: create_agent + ContextMiddleware, and ContextualChat."""

from __future__ import annotations

from adapter_fakes import fake_model, tool_call
from langchain.agents import create_agent
from langchain_core.messages import ToolMessage

from ctx_memory import ContextManager, ContextMiddleware, ContextualChat
from ctx_memory.compaction import CompactionPolicy, get_compactions

CONFIG = {"configurable": {"thread_id": "s1"}}


def _seed(manager: ContextManager) -> None:
    for i in range(30):
        manager.add_user_message("s1", f"Step {i}: look up order {1000 + i}.")
        manager.add_messages(
            "s1",
            [
                tool_call("lookup", f"call-{i}", order=1000 + i),
                ToolMessage(
                    f"order {1000 + i} status shipped " + "x " * 150,
                    tool_call_id=f"call-{i}",
                    name="lookup",
                ),
            ],
        )
        manager.add_assistant_message("s1", f"Order {1000 + i} shipped.")


def test_agent_compacts_and_restores_without_summarization_middleware(
    manager: ContextManager,
) -> None:
    _seed(manager)
    policy = CompactionPolicy(
        clear_tool_outputs_at=1000, keep_tool_outputs=8, summarize_at=3000, keep_recent=24, block=8
    )
    middleware = ContextMiddleware(manager, max_tokens=3000, reserve_tokens=200, compaction=policy)
    model = fake_model(tool_call("restore_tool_result", "r1", tool_call_id="call-28"), "done")
    agent = create_agent(model, tools=[], middleware=[middleware])
    before = manager.get_history("s1")
    agent.invoke({"messages": [("user", "What did order 1028 say?")]}, CONFIG)
    first = model.seen[0]
    texts = [m.text for m in first]
    assert get_compactions(manager, "s1")  # summarised before the first model call
    assert any("Tool output cleared" in t and "restore_tool_result" in t for t in texts)
    # The restore tool brought the full output back as the tool result.
    second = model.seen[1]
    assert any(isinstance(m, ToolMessage) and "order 1028 status shipped" in m.text for m in second)
    after = manager.get_history("s1")
    assert after[: len(before)] == before  # stored messages unchanged
    assert get_compactions(manager, "s1")
    assert not any(r["role"] == "user" and r["content"].startswith("[Summary") for r in after)


async def test_contextual_chat_uses_compaction_async(manager: ContextManager) -> None:
    _seed(manager)
    model = fake_model("ok")
    policy = CompactionPolicy(summarize_at=2000, keep_recent=16, block=8)
    chat = ContextualChat(manager, model, max_tokens=3000, reserve_tokens=200, compaction=policy)
    await chat.ainvoke("order 1003?", config={"configurable": {"session_id": "s1"}})
    assert get_compactions(manager, "s1")
    assert any(m.text.startswith("[Summary of messages") for m in model.seen[0])
