"""The eval's pure measures on hand-built cases with known answers."""

from __future__ import annotations

import pytest
import tiktoken
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from ctx_memory import ContextManager, TokenCounter
from ctx_memory.eval.compaction import COMPACTION, SUMMARIZATION, run_compaction
from ctx_memory.eval.contenders import CLASSIC
from ctx_memory.eval.data import agent_trace, parse_locomo
from ctx_memory.eval.metrics import (
    PrefixReuseMeter,
    common_prefix_length,
    fact_availability,
    gold_coverage,
    percentile,
    recall_at_k,
    recalled_ids,
    recount_tokens,
    request_tokens,
    serialize_request,
    tool_pair_problems,
)
from ctx_memory.eval.report import _compaction as _compaction_section
from ctx_memory.eval.runner import AGENT_PROMPT, METADATA, START, EvalSettings, _Checks

ENC = tiktoken.get_encoding("o200k_base")


def call(call_id: str) -> AIMessage:
    return AIMessage("", tool_calls=[{"name": "search", "args": {"q": "x"}, "id": call_id}])


# --------------------------------------------------------------------------- prefix reuse


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([], [], 0),
        ([1, 2, 3], [1, 2, 3], 3),
        ([1, 2, 3], [1, 2, 3, 4, 5], 3),
        ([1, 2, 3, 4], [1, 2, 9, 4], 2),
        ([7], [8], 0),
        (list(range(1000)), [*range(999), -1], 999),
    ],
)
def test_common_prefix_length(a: list[int], b: list[int], expected: int) -> None:
    assert common_prefix_length(a, b) == expected
    assert common_prefix_length(b, a) == expected


def test_prefix_reuse_counts_only_long_requests_and_restarts_per_session() -> None:
    meter = PrefixReuseMeter(min_tokens=4, cache_min=3)
    meter.add([1, 2, 3])  # first request: no pair
    meter.add([1, 2, 3, 4, 5])  # prefix 3 of 5: reuse 0.6, cacheable
    meter.add([1, 2, 9, 9, 9, 9, 9, 9, 9, 9])  # prefix 2 of 10: reuse 0.2, not cacheable
    meter.add([1, 2])  # too short to count
    meter.start()  # a new session: no pair with the previous request
    meter.add([1, 2, 9, 9, 9, 9, 9, 9, 9, 9])
    result = meter.result()
    assert result.pairs == 2
    assert result.requests == 5
    assert result.mean_reuse == pytest.approx((0.6 + 0.2) / 2)
    assert result.share_cacheable == 0.5
    assert result.mean_prefix_tokens == 2.5


def test_prefix_reuse_without_pairs_is_none_not_zero() -> None:
    meter = PrefixReuseMeter()
    meter.add([1] * 10)
    assert meter.result().mean_reuse is None
    assert meter.result().share_cacheable is None


def test_a_changed_system_message_breaks_the_prefix_at_the_change() -> None:
    history = [HumanMessage("hello " * 50), AIMessage("world " * 50)]
    first = request_tokens([SystemMessage("time 10:00"), *history], ENC)
    same = request_tokens([SystemMessage("time 10:00"), *history, HumanMessage("next")], ENC)
    moved = request_tokens([SystemMessage("time 10:01"), *history, HumanMessage("next")], ENC)
    assert common_prefix_length(first, same) >= len(first) - 2  # only the closing bracket
    assert 0 < common_prefix_length(first, moved) < 20  # up to "...content":"time 10:0


def test_serialised_request_is_what_a_provider_receives() -> None:
    text = serialize_request([SystemMessage("s"), HumanMessage("q"), call("c1")])
    assert text.startswith('[{"role":"system","content":"s"},{"role":"user","content":"q"}')
    assert '"tool_calls":[{"type":"function","id":"c1"' in text


# --------------------------------------------------------------------------- coverage


def test_gold_coverage() -> None:
    assert gold_coverage(["a", "b", None], ["a", "c"]) == 0.5
    assert gold_coverage(["a", "b"], ["a", "b"]) == 1.0
    assert gold_coverage([], ["a"]) == 0.0
    assert gold_coverage([None], []) == 1.0


def test_recall_at_k_uses_the_first_k_distinct_ids() -> None:
    ranked = ["x", "x", "g1", "y", "g2"]
    assert recall_at_k(ranked, ["g1", "g2"], 2) == 0.5
    assert recall_at_k(ranked, ["g1", "g2"], 4) == 1.0
    assert recall_at_k([], ["g1"], 5) == 0.0


def test_recalled_ids_read_each_entrys_ids_in_order() -> None:
    entries = [{"message_id": "m3", "score": 2.0}, {"message_ids": ["m1", "m3", "m2"]}, {"x": 1}]
    assert recalled_ids(entries) == ["m3", "m1", "m2"]


# --------------------------------------------------------------------------- integrity


def test_tool_pairs_whole() -> None:
    messages = [HumanMessage("q"), call("c1"), ToolMessage("r", tool_call_id="c1"), AIMessage("a")]
    assert tool_pair_problems(messages).total == 0


def test_tool_result_without_its_call_is_an_orphan() -> None:
    messages = [HumanMessage("q"), ToolMessage("r", tool_call_id="c1"), AIMessage("a")]
    problems = tool_pair_problems(messages)
    assert (problems.orphan_results, problems.unanswered_calls) == (1, 0)


def test_tool_call_without_its_result_is_unanswered() -> None:
    messages = [HumanMessage("q"), call("c1"), AIMessage("a")]
    assert (tool_pair_problems(messages).unanswered_calls, tool_pair_problems(messages).total) == (
        1,
        1,
    )
    assert tool_pair_problems([call("c1")]).unanswered_calls == 1


def test_tool_result_after_another_message_is_an_orphan_and_its_call_unanswered() -> None:
    messages = [call("c1"), HumanMessage("interrupt"), ToolMessage("r", tool_call_id="c1")]
    problems = tool_pair_problems(messages)
    assert (problems.orphan_results, problems.unanswered_calls) == (1, 1)


def test_a_result_answering_another_call_is_an_orphan() -> None:
    messages = [call("c1"), ToolMessage("r", tool_call_id="c2")]
    problems = tool_pair_problems(messages)
    assert (problems.orphan_results, problems.unanswered_calls) == (1, 1)


# --------------------------------------------------------------------------- budget recount


def test_recount_matches_the_documented_convention_by_hand() -> None:
    # 3 per message + role + content, 3 for the reply: "hello world" is 2 tokens, "user" 1.
    assert recount_tokens([HumanMessage("hello world")], ENC) == 3 + 1 + 2 + 3


@pytest.mark.parametrize(
    "messages",
    [
        [SystemMessage("You are terse."), HumanMessage("Hi"), AIMessage("Hello! Where to?")],
        [HumanMessage("q"), call("c1"), ToolMessage("a result", tool_call_id="c1", name="search")],
        [HumanMessage([{"type": "text", "text": "block text"}])],
    ],
)
def test_recount_agrees_with_token_counter(messages: list) -> None:
    assert recount_tokens(messages, ENC) == TokenCounter(encoding="o200k_base").count_chat(messages)


def test_recount_sees_a_prompt_over_budget() -> None:
    prompt = [SystemMessage("s"), HumanMessage("word " * 100)]
    assert recount_tokens(prompt, ENC) > 100


# --------------------------------------------------------------------------- summaries, data


def test_percentile() -> None:
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0], 100) == 3.0
    assert percentile([5.0], 95) == 5.0
    assert percentile([], 50) is None


def test_locomo_speakers_map_to_roles_by_first_speaker() -> None:
    blob = {
        "conversations": [
            {
                "conv_id": "c",
                "docs": [
                    {"id": "s1::D1:1", "text": "Ann: hi"},
                    {"id": "s1::D1:2", "text": "Bob: hey"},
                    {"id": "s1::D1:3", "text": "Bob: again"},
                ],
                "queries": [
                    {
                        "id": "c#0",
                        "query": "Who?",
                        "gold_turns": ["s1::D1:2"],
                        "question_type": "cat4",
                    }
                ],
            }
        ]
    }
    (conv,) = parse_locomo(blob)
    assert (conv.user, conv.assistant) == ("Ann", "Bob")
    assert [t.role for t in conv.turns] == ["user", "assistant", "assistant"]
    assert conv.questions[0].gold_turns == ("s1::D1:2",)


def test_agent_traces_are_seeded_and_sized() -> None:
    first, again = agent_trace(3, 20), agent_trace(3, 20)
    assert [m.content for t in first for m in t.messages] == [
        m.content for t in again for m in t.messages
    ]
    assert agent_trace(4, 20)[0].messages[0].content != first[0].messages[0].content
    sizes = [len(ENC.encode(m.text)) for t in first for m in t.messages if m.type == "tool"]
    assert sizes
    assert min(sizes) >= 200
    assert max(sizes) <= 2000
    for task in first:
        assert tool_pair_problems(list(task.messages)).total == 0


def test_a_turn_quoted_inside_a_message_counts_as_present() -> None:
    from ctx_memory.eval.metrics import MIN_QUOTED_CHARS, gold_coverage, quoted_ids

    long_text = "Melanie: we camped at the lake last summer"
    stored = {"g1": long_text, "g2": "Sure!", "g3": "Caroline: the adoption agency called"}
    prompt = [f"Recalled turns:\n[40] {long_text}\n[41] Sure!", "Sure!"]
    found = quoted_ids(prompt, stored)
    assert found == {"g1"}  # "Sure!" is too short to be looked for; g3 is not there
    assert len("Sure!") < MIN_QUOTED_CHARS
    assert gold_coverage([*found, "m9"], ["g1", "g3"]) == 0.5


# --------------------------------------------------------------------------- compaction


def test_planted_facts_are_seeded_and_leave_the_trace_as_it_was() -> None:
    plain, planted = agent_trace(5, 6), agent_trace(5, 6, facts=True)
    assert planted == agent_trace(5, 6, facts=True)
    assert all(task.facts == () for task in plain)
    codes = [f.code for task in planted for f in task.facts]
    assert (
        len(codes)
        == len(set(codes))
        == sum(1 for task in planted for m in task.messages if m.type == "tool")
    )
    for before, after in zip(plain, planted, strict=True):
        outputs = {m.tool_call_id: m.text for m in after.messages if m.type == "tool"}
        for fact in after.facts:
            assert fact.code in outputs[fact.call_id]
        for old, new in zip(before.messages, after.messages, strict=True):
            fact_rows = [r for r in new.text.split("\n") if '"fact"' in r]
            rest = "\n".join(r for r in new.text.split("\n") if '"fact"' not in r)
            assert rest == old.text
            assert len(fact_rows) == (1 if new.type == "tool" else 0)


def test_fact_availability_counts_codes_then_named_call_ids() -> None:
    call = AIMessage("", tool_calls=[{"name": "f", "args": {}, "id": "call_1_0_0"}])
    messages = [
        call,
        ToolMessage("row FX-000000aa", tool_call_id="call_1_0_0"),
        HumanMessage('[Tool output cleared (...)] tool_call_id="call_1_0_1"'),
    ]
    facts = [("FX-000000aa", "call_1_0_0"), ("FX-000000bb", "call_1_0_1"), ("FX-000000cc", "x")]
    got = fact_availability(messages, facts)
    assert (got.planted, got.in_prompt, got.restorable) == (3, 1, 1)


def test_compaction_part_runs_clean_and_is_reported() -> None:
    settings = EvalSettings(trace_sessions=1, trace_tasks=14, trace_budget=8000)
    checks = _Checks(tiktoken.get_encoding(ContextManager().token_counter.encoding_name))
    part = run_compaction(
        settings, checks.check, lambda _: None, start=START, system_prompt=AGENT_PROMPT,
        metadata=METADATA,
    )  # fmt: skip
    assert set(part["results"]) == {COMPACTION, CLASSIC, SUMMARIZATION}
    for name, row in part["results"].items():
        integrity = checks.integrity[name]
        assert integrity.prompts == row["calls"] == part["model_calls_counted"] > 0
        assert integrity.budget_violations == 0
        assert integrity.orphan_results == integrity.unanswered_calls == 0
        assert 0 < row["prompt_share_mean"] < 1
        assert row["facts_in_prompt"] <= row["facts_in_prompt_or_restorable"] <= 1
    ours = part["results"][COMPACTION]
    assert ours["facts_in_prompt_or_restorable"] > ours["facts_in_prompt"]  # placeholders
    assert not part["results"][SUMMARIZATION]["restore_tool"]
    result = {"compaction": part, "integrity": {k: vars(v) for k, v in checks.integrity.items()}}
    text = "\n".join(_compaction_section(result))
    assert "## Compaction: tool-heavy traces with planted facts" in text
    assert f"| {COMPACTION} |" in text
    assert "| 0 / 0 |" in text


def test_recount_counts_each_text_block_and_prices_images_like_the_counter() -> None:
    import base64
    import struct

    import tiktoken
    from langchain_core.messages import AIMessage, HumanMessage

    from ctx_memory import TokenCounter
    from ctx_memory.eval.metrics import recount_tokens

    encoding = tiktoken.get_encoding("o200k_base")
    png = (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", 13)
        + b"IHDR"
        + struct.pack(">II", 1400, 900)
        + b"\x08\x02\x00\x00\x00"
        + b"\x00" * 6000
    )
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    blocks = [{"type": "text", "text": "first part"}, {"type": "text", "text": "second"}]
    messages = [
        HumanMessage([*blocks, {"type": "image_url", "image_url": {"url": url}}]),
        AIMessage(["plain", {"type": "text", "text": "block"}]),
    ]
    counted = TokenCounter("o200k_base").count_chat(messages)
    assert recount_tokens(messages, encoding) == counted
    # The image's price, not its base64 text (which would be thousands of tokens).
    assert counted < 1200


def test_recount_counts_a_message_sent_as_several() -> None:
    """An Anthropic-style ``tool_result`` block goes on the OpenAI wire as a tool message
    of its own: counted as the messages it becomes."""
    asked = HumanMessage("What's the weather?")
    calling = call("toolu_1")
    blocks = HumanMessage(
        [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny, 21 C"},
            {"type": "text", "text": "And tomorrow?"},
        ]
    )
    as_sent = [ToolMessage("Sunny, 21 C", tool_call_id="toolu_1"), HumanMessage("And tomorrow?")]
    assert recount_tokens([asked, calling, blocks], ENC) == recount_tokens(
        [asked, calling, *as_sent], ENC
    )
