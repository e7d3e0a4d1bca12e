from __future__ import annotations

from ctx_memory.demo import CHAT_TURNS, run_chat_loop, run_demo


def test_demo_runs_the_chat_loop(manager):
    lines: list[str] = []
    document = run_demo(manager, echo=lines.append)
    printed = "\n".join(lines)
    assert "Chat loop (ContextualChat + GenericFakeChatModel" in printed
    assert "[1] " in printed
    history = document["conversation_history"]
    assert len(history) == 4 + 2 * len(CHAT_TURNS)
    assert history[-1]["content"] == CHAT_TURNS[-1][1]
    assert history[-1]["metadata"]["model"] == "fake-chat-model"
    assert history[-1]["metadata"]["sources_used"]
    assert printed.rindex("Memory stats:") > printed.rindex("Chat loop")


def test_chat_loop_alone_stays_in_budget(manager):
    lines: list[str] = []
    replies = run_chat_loop(manager, session_id="s", echo=lines.append, max_tokens=400)
    assert [r.content for r in replies] == [reply for _, reply in CHAT_TURNS]
    for line in lines:
        if line.strip().startswith("prompt:"):
            used, budget = line.split()[1].split("/")
            assert int(used) <= int(budget)
