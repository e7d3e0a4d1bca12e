from __future__ import annotations

import re

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


def test_canned_replies_cite_the_sources_their_prompt_numbers(manager):
    """Each scripted reply's ``[n]`` is the source that says what the reply says."""
    from ctx_memory.demo import ContextPromptAssembler, run_demo

    prompts: list[str] = []
    original = ContextPromptAssembler.assemble

    def assemble(self, *args, **kwargs):
        assembled = original(self, *args, **kwargs)
        prompts.append(assembled.system)
        return assembled

    ContextPromptAssembler.assemble = assemble  # type: ignore[method-assign]
    try:
        run_demo(manager, echo=lambda _: None)
    finally:
        ContextPromptAssembler.assemble = original  # type: ignore[method-assign]
    # What each cited claim needs its source to say, by a word of it.
    claims = {"weeks ahead": "6-8 weeks", "non-stop": "non-stop", "flexible": "Flexible"}
    assert len(prompts) == len(CHAT_TURNS)
    for system, (_, reply) in zip(prompts, CHAT_TURNS, strict=True):
        numbered = dict(re.findall(r"^\[(\d+)\] .*\n(.*)$", system, re.MULTILINE))
        for clause in re.split(r"[;,]|\band\b", reply):
            for cited in re.findall(r"\[(\d+)\]", clause):
                needed = [word for key, word in claims.items() if key in clause.lower()]
                assert needed, clause
                assert cited in numbered, (clause, system)
                assert all(word in numbered[cited] for word in needed), (clause, system)
