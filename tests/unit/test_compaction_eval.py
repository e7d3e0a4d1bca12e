"""The eval's compaction part on a small run: shares, facts, prefix reuse, integrity."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pytest
import tiktoken

from ctx_memory.eval.compaction import (
    CHAT_COMPACTION,
    COMPACTION,
    SUMMARIZATION,
    run_compaction,
)
from ctx_memory.eval.metrics import recount_tokens, tool_pair_problems
from ctx_memory.eval.runner import AGENT_PROMPT, METADATA, START, EvalSettings

if TYPE_CHECKING:
    from ctx_memory.eval.contenders import Contender, Prompt


@pytest.fixture(scope="module")
def part() -> dict[str, Any]:
    encoding = tiktoken.get_encoding("o200k_base")
    problems: list[str] = []

    def check(contender: Contender, prompt: Prompt) -> int:
        tokens = recount_tokens(prompt.messages, encoding)
        if tokens > contender.budget or tool_pair_problems(prompt.messages).total:
            problems.append(contender.name)
        return tokens

    settings = replace(
        EvalSettings.quick_settings(), trace_sessions=1, trace_tasks=24, trace_budget=8000
    )
    result = run_compaction(
        settings, check, lambda _: None, start=START, system_prompt=AGENT_PROMPT,
        metadata=METADATA,
    )  # fmt: skip
    result["problems"] = problems
    return result


def test_default_policy_meets_the_targets(part: dict[str, Any]) -> None:
    assert part["problems"] == []
    ours = part["results"][COMPACTION]
    assert ours["calls"] > 20
    assert ours["prompt_share_mean"] <= 0.15
    assert ours["facts_in_prompt_or_restorable"] == 1.0
    assert part["results"][SUMMARIZATION]["restore_tool"] is False


def test_the_chat_summariser_reuses_the_live_prefix(part: dict[str, Any]) -> None:
    requests = part["compaction_requests"]
    assert requests["contender"] == CHAT_COMPACTION
    assert requests["with_live_request"] > 0
    assert requests["prefix_share_min"] >= 0.9
    assert requests["requests"] == (
        requests["with_live_request"]
        + requests["without_live_request"]
        + requests["in_assembler_without_prefix"]
    )
    assert requests["prompts"]["facts_in_prompt_or_restorable"] == 1.0
    assert requests["prompts"]["prompt_share_mean"] <= 0.15
    assert CHAT_COMPACTION not in part["results"]
