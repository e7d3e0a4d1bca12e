"""The eval's compaction part on a small run: shares, facts, prefix reuse, integrity."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pytest
import tiktoken

from ctx_memory import compaction
from ctx_memory.eval import compaction as eval_compaction
from ctx_memory.eval.compaction import (
    CHAT_COMPACTION,
    COMPACTION,
    SUMMARIZATION,
    run_compaction,
    run_stress,
)
from ctx_memory.eval.contenders import CLASSIC
from ctx_memory.eval.metrics import recount_tokens, tool_pair_problems
from ctx_memory.eval.report import _compaction as _compaction_section
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
        EvalSettings.quick_settings(),
        trace_sessions=1,
        trace_tasks=24,
        trace_budget=8000,
        compaction_traces=150,
    )
    result = run_compaction(
        settings, check, lambda _: None, start=START, system_prompt=AGENT_PROMPT,
        metadata=METADATA, stress_traces=settings.compaction_traces,
    )  # fmt: skip
    result["problems"] = problems
    return result


def test_default_policy_meets_the_targets(part: dict[str, Any]) -> None:
    assert part["problems"] == []
    ours = part["results"][COMPACTION]
    assert ours["calls"] > 20
    # A short trace at half the eval's budget: the target (<= 15 %) is the full run's;
    # here the default policy must send far less than recency alone, every fact reachable.
    assert ours["prompt_share_mean"] <= 0.75 * part["results"][CLASSIC]["prompt_share_mean"]
    assert ours["facts_in_prompt_or_restorable"] == 1.0
    assert part["results"][SUMMARIZATION]["restore_tool"] is False


def test_the_chat_summariser_reuses_the_live_prefix(part: dict[str, Any]) -> None:
    requests = part["compaction_requests"]
    assert requests["contender"] == CHAT_COMPACTION
    assert requests["with_live_request"] > 0
    assert requests["prefix_share_min"] >= 0.9
    # The assembler compacts with the request it built before: every request but one
    # made before any request was built repeats the live request.
    assert requests["requests"] == requests["with_live_request"] + requests["without_live_request"]
    assert requests["without_live_request"] == 0
    assert requests["prompts"]["facts_in_prompt_or_restorable"] == 1.0
    assert (
        requests["prompts"]["prompt_share_mean"]
        <= 0.75 * (part["results"][CLASSIC]["prompt_share_mean"])
    )
    assert CHAT_COMPACTION not in part["results"]


def test_generated_traces_with_a_failing_summariser_stay_intact(part: dict[str, Any]) -> None:
    stress = part["stress"]
    assert stress["traces"] == 150
    for key in (
        "messages_lost_or_altered",
        "orphan_results",
        "unanswered_calls",
        "budget_violations",
        "reported_mismatches",
        "failures_unreported",
        "bad_compactions",
        "tail_over_budget",
    ):
        assert stress[key] == 0, key
    for key in (
        "parallel_calls",
        "pending_at_prompt",
        "interleaved",
        "second_compactor_runs",
        "summarizer_raised",
        "summarizer_empty",
        "compactions_live",
    ):
        assert stress[key] > 0, key  # the traces do exercise it


def test_the_checks_catch_a_cut_that_splits_a_tool_call(monkeypatch: pytest.MonkeyPatch) -> None:
    def at_any_user_message(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        users = [i for i, r in enumerate(records) if i and r.get("role") == "user"]
        return records[: users[-1]] if users else []

    monkeypatch.setattr(compaction, "_covered", at_any_user_message)
    stress = run_stress(200, 3, lambda _: None, tiktoken.get_encoding("o200k_base"))
    assert stress["bad_compactions"] > 0


def test_the_report_renders_the_compaction_part(part: dict[str, Any]) -> None:
    result = {"compaction": part, "integrity": {}}
    text = "\n".join(_compaction_section(result))
    assert "Integrity over 150 small generated sessions" in text
    assert "| stored messages lost or altered | 0 |" in text
    assert "shared as a prefix with that live request" in text
    assert f"| {CHAT_COMPACTION} |" in text


def test_the_stress_counts_do_not_depend_on_the_split(monkeypatch: pytest.MonkeyPatch) -> None:
    encoding = tiktoken.get_encoding("o200k_base")
    monkeypatch.setattr(eval_compaction, "_CHUNK", 40)
    split = run_stress(160, 7, lambda _: None, encoding)  # four chunks, workers if fork
    monkeypatch.setattr(eval_compaction, "_CHUNK", 1000)
    whole = run_stress(160, 7, lambda _: None, encoding)
    assert whole["workers"] == 1
    for key in ("workers", "wall_time_s"):
        split.pop(key)
        whole.pop(key)
    assert split == whole
