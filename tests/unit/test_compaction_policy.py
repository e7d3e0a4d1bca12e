"""The default ladder: finished turns' tool outputs cleared, one rolling summary, safe cuts."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableLambda

from ctx_memory import ContextManager, ContextPromptAssembler, TokenCounter
from ctx_memory.assembly.compacted import COMPACTIONS_KEY, CompactedView, summary_record
from ctx_memory.compaction import (
    CompactionPolicy,
    ExtractiveSummarizer,
    acompact,
    add_compaction,
    compact,
    get_compactions,
)
from ctx_memory.errors import ValidationError
from ctx_memory.eval.metrics import tool_pair_problems


def _turn(i: int, *, calls: int = 1, words: int = 150) -> list[BaseMessage]:
    ids = [f"call_{i}_{k}" for k in range(calls)]
    return [
        HumanMessage(f"Task {i}: look up order {1000 + i}."),
        AIMessage(
            "",
            tool_calls=[{"name": "lookup", "args": {"k": k}, "id": c} for k, c in enumerate(ids)],
        ),
        *[
            ToolMessage(
                f"order {1000 + i} row {c} " + "data " * words, tool_call_id=c, name="lookup"
            )
            for c in ids
        ],
        AIMessage(f"Order {1000 + i} is shipped."),
    ]


def _session(manager: ContextManager, sid: str, turns: int) -> None:
    for i in range(turns):
        manager.add_messages(sid, _turn(i))


def test_defaults_clear_every_finished_turn_but_keep_the_turn_in_progress(
    manager: ContextManager,
) -> None:
    _session(manager, "s", 6)
    run = _turn(6)[:3]
    stored = manager.add_messages("s", run)  # the run in progress: its tool result is in
    policy = CompactionPolicy(summarize_at=None, clear_tool_outputs_at=1000)
    assert policy.clear_before(manager.get_header("s")["metadata"]) == 27
    assembler = ContextPromptAssembler(manager, max_tokens=8000, compaction=policy)
    # The run as the tail (its stored copies passed over): it keeps its tool output.
    tail = [m.model_copy(update={"id": r["id"]}) for m, r in zip(run, stored, strict=True)]
    result = assembler.build("s", tail, query="and?", skip_ids=frozenset(r["id"] for r in stored))
    tools = [m for m in result.messages if isinstance(m, ToolMessage)]
    assert [m.text.startswith("[Tool output cleared") for m in tools] == [True] * 6 + [False]
    assert result.report.tool_outputs_cleared == [f"call_{i}_0" for i in range(6)]
    assert result.report.total_tokens == TokenCounter().count_chat(result.messages)
    # A tail that asks nothing of its own: the stored turn after the newest user message
    # is the one in progress.
    result = assembler.build("s", [AIMessage("Checking the order.")], query="")
    tools = [m for m in result.messages if isinstance(m, ToolMessage)]
    assert [m.text.startswith("[Tool output cleared") for m in tools] == [True] * 6 + [False]
    # A new question starts a turn: every stored one is finished, the unanswered one too.
    result = assembler.assemble("s", "and?")
    tools = [m for m in result.messages if isinstance(m, ToolMessage)]
    assert [m.text.startswith("[Tool output cleared") for m in tools] == [True] * 7
    assert result.report.tool_outputs_cleared == [f"call_{i}_0" for i in range(7)]


def test_keep_tool_outputs_still_rounds_to_the_block() -> None:
    policy = CompactionPolicy(keep_tool_outputs=10, block=8)
    assert policy.clear_before({"message_count": 45, "token_count": 10**5}) == 32
    assert policy.clear_before({"message_count": 45, "token_count": 10}) == 0


def _summaries(manager: ContextManager, sid: str) -> list[dict[str, Any]]:
    return [c for c in get_compactions(manager, sid) if c["kind"] == "summary"]


def test_a_rolling_summary_takes_in_the_one_before(manager: ContextManager) -> None:
    _session(manager, "s", 10)
    policy = CompactionPolicy(summarize_at=100, keep_recent=8, block=4, min_messages=4)
    first = compact(manager, "s", policy).entry
    assert first is not None
    assert compact(manager, "s", policy).reason == "not needed"
    _session(manager, "t", 0)
    manager.add_messages("s", [m for i in range(10, 16) for m in _turn(i)])
    second = compact(manager, "s", policy).entry
    assert second is not None
    assert second["first_index"] == 0
    assert second["first_id"] == first["first_id"]
    assert _summaries(manager, "s") == [second]  # the first is removed in the same write
    assert manager.get_context("s")["shared"][COMPACTIONS_KEY][first["id"]] is None
    history = manager.get_history("s")
    covered = history[: second["last_index"] + 1]
    assert second["tokens_covered"] == sum(r["token_count"] for r in covered)
    assert second["tool_call_ids"] == [r["tool_call_id"] for r in covered if r["role"] == "tool"]
    assert second["summary_tokens"] == summary_record(second, TokenCounter())["token_count"]
    assert "1000" in second["summary"]  # the first summary's lines live on


async def test_rolling_async_and_an_old_entry_without_ids(manager: ContextManager) -> None:
    _session(manager, "s", 12)
    history = manager.get_history("s")
    old = add_compaction(manager, "s", 0, 15, "Orders 1000-1003 shipped.")
    del old["tool_call_ids"]  # as written before the field existed
    manager.update_partial_context("s", {COMPACTIONS_KEY: {old["id"]: old}}, reserved=True)
    policy = CompactionPolicy(summarize_at=100, keep_recent=8, block=4, min_messages=4)
    entry = (await acompact(manager, "s", policy)).entry
    assert entry is not None
    assert entry["first_index"] == 0
    covered = history[: entry["last_index"] + 1]
    assert entry["tool_call_ids"] == [r["tool_call_id"] for r in covered if r["role"] == "tool"]


def test_not_rolling_stacks(manager: ContextManager) -> None:
    _session(manager, "s", 16)
    policy = CompactionPolicy(
        summarize_at=100, keep_recent=8, block=4, min_messages=4, rolling=False
    )
    first = compact(manager, "s", policy).entry
    manager.add_messages("s", [m for i in range(16, 22) for m in _turn(i)])
    second = compact(manager, "s", policy).entry
    assert first is not None
    assert second is not None
    assert second["first_index"] == first["last_index"] + 1
    assert len(_summaries(manager, "s")) == 2


def test_a_stale_summary_is_not_rolled_in(manager: ContextManager) -> None:
    _session(manager, "s", 12)
    policy = CompactionPolicy(summarize_at=100, keep_recent=8, block=4, min_messages=4)
    first = compact(manager, "s", policy).entry
    assert first is not None
    # deleted below the manager (which would have removed the entry): the entry is stale
    stale = manager.get_history("s")[first["last_index"]]["id"]
    assert manager.store.delete_messages("s", [stale], now="2026-01-01T00:00:00+00:00")
    manager.add_messages("s", [m for i in range(12, 18) for m in _turn(i)])
    second = compact(manager, "s", policy).entry
    assert second is not None
    assert second["first_index"] == first["last_index"] + 1  # stacked, not folded in


def _interleaved(manager: ContextManager, sid: str, *, pending: bool) -> None:
    """Writer A calls a tool; writer B's turn lands before A's result (then a pending call)."""
    _session(manager, sid, 3)
    manager.add_messages(
        sid,
        [
            HumanMessage("A: slow lookup please."),
            AIMessage("", tool_calls=[{"name": "lookup", "args": {}, "id": "slow"}]),
            HumanMessage("B: unrelated question."),
            AIMessage("B: unrelated answer."),
            ToolMessage("slow result " + "data " * 100, tool_call_id="slow", name="lookup"),
            AIMessage("A: done."),
        ],
    )
    if pending:
        manager.add_messages(
            sid,
            [
                HumanMessage("A: another one."),
                AIMessage("", tool_calls=[{"name": "lookup", "args": {}, "id": "pending"}]),
                HumanMessage("B: still there?"),
                AIMessage("B: yes."),
            ],
        )


@pytest.mark.parametrize(
    ("pending", "after"), [(False, "A: slow lookup please."), (True, "A: another one.")]
)
def test_the_cut_never_leaves_a_call_without_its_result(
    manager: ContextManager, pending: bool, after: str
) -> None:
    _interleaved(manager, "s", pending=pending)
    policy = CompactionPolicy(summarize_at=100, keep_recent=0, block=1, min_messages=1)
    entry = compact(manager, "s", policy).entry
    assert entry is not None
    history = manager.get_history("s")
    assert history[entry["last_index"] + 1]["content"] == after
    assert "pending" not in entry["tool_call_ids"]
    assembler = ContextPromptAssembler(manager, max_tokens=4000, compaction=policy)
    result = assembler.assemble("s", "next?")
    assert tool_pair_problems(result.messages).total == 0


def test_the_extractive_summarizer_keeps_an_earlier_summarys_lines() -> None:
    earlier = HumanMessage(
        "[Summary of messages 0-9]\nuser: Flight AF123 leaves at 09:40.\n"
        "tool search [c1]: Hotel Lutetia booked, 3 nights.\n"
        "Tool results restorable with restore_tool_result: c2"
    )
    text = ExtractiveSummarizer().invoke([earlier, HumanMessage("Also rent a car in Nice.")])
    assert text.splitlines() == [
        "user: Flight AF123 leaves at 09:40.",
        "tool search [c1]: Hotel Lutetia booked, 3 nights.",
        "user: Also rent a car in Nice.",
    ]


@pytest.mark.parametrize("layout", ["classic", "stable"])
def test_default_policy_on_tool_traffic_stays_small_and_exact(layout: str) -> None:
    manager = ContextManager()
    assembler = ContextPromptAssembler(
        manager, max_tokens=6000, reserve_tokens=0, compaction=CompactionPolicy(), layout=layout
    )
    full = 0
    counter = TokenCounter()
    for i in range(40):
        for record in manager.add_messages("s", _turn(i, calls=1 + i % 3, words=600)):
            full += record["token_count"]
        result = assembler.assemble("s", f"Task {i + 1}?")
        assert tool_pair_problems(result.messages).total == 0
        assert result.report.total_tokens == counter.count_chat(result.messages)
        assert result.report.total_tokens <= assembler.budget
    assert len(_summaries(manager, "s")) == 1
    assert result.report.total_tokens < 0.15 * full


def test_recalled_turns_can_be_seen_as_the_window_sees_them() -> None:
    counter = TokenCounter()
    view = CompactedView([], counter, clear_before=10, min_tool_tokens=20)
    records = [
        {"role": "user", "content": "q", "id": "m4", "token_count": 5},
        {"role": "assistant", "content": "", "id": "m5", "token_count": 20,
         "tool_calls": [{"name": "f", "args": {}, "id": "c1"}]},
        {"role": "tool", "content": "big " * 50, "id": "m6", "tool_call_id": "c1",
         "token_count": 60},
        {"role": "tool", "content": "tiny", "id": "m7", "tool_call_id": "c2", "token_count": 8},
    ]  # fmt: skip
    out = view.recalled(records, 4)
    assert out[:2] == records[:2]
    assert out[2]["content"].startswith("[Tool output cleared from view (60 tokens, message 6)")
    assert out[2]["token_count"] == counter.count_record(out[2])
    assert out[3] is records[3]  # below min_tool_tokens
    assert view.cleared_calls == {"m6": "c1"}
    assert CompactedView([], counter, clear_before=5).recalled(records, 4)[2] is records[2]


@pytest.mark.parametrize(
    ("summary", "error"),
    [
        # Over 1 MiB of JSON in fewer tokens than it covers (spaces: ~128 a token).
        (("fact" + " " * 400_000) * 3 + "fact", "SharedStateTooLargeError"),
        ("AF100 \ud83d noted", "NotSerializableError"),
    ],
)
async def test_a_summary_the_session_refuses_is_reported_and_changes_nothing(
    manager: ContextManager, summary: str, error: str
) -> None:
    """Too large for the shared state, or not storable: as if the summariser had failed."""
    from langchain_core.runnables import RunnableLambda

    manager.add_user_message("s1", "order history " * 10_000)  # more tokens than the summary
    _session(manager, "s1", 12)
    before = manager.export_session("s1")
    policy = CompactionPolicy(
        summarize_at=300, keep_recent=8, block=4, summarizer=RunnableLambda(lambda _: summary)
    )
    for outcome in (compact(manager, "s1", policy), await acompact(manager, "s1", policy)):
        assert outcome.entry is None
        assert outcome.failed
        assert outcome.reason.startswith(f"summary not stored: {error}: ")
    assert manager.export_session("s1") == before

    # The assembler reports it and the prompt is built.
    assembler = ContextPromptAssembler(manager, max_tokens=4000, compaction=policy)
    result = assembler.assemble("s1", "Which order shipped first?")
    (note,) = result.report.compaction_notes
    assert note.startswith(f"summary not stored: {error}: ")


def test_add_compaction_replaces_the_compactions_it_stands_for(manager: ContextManager) -> None:
    _session(manager, "s1", 4)
    old = add_compaction(manager, "s1", 0, 4, "Orders 1000 and 1001.")
    new = add_compaction(manager, "s1", 0, 9, "Orders 1000 to 1002.", replaces=[old["id"]])
    assert get_compactions(manager, "s1") == [new]
    assert manager.get_header("s1")["shared"][COMPACTIONS_KEY][old["id"]] is None
    before = manager.export_session("s1")
    for bad in ("c-1", [""], [3]):
        with pytest.raises(ValidationError, match="replaces"):
            add_compaction(manager, "s1", 0, 9, "x", replaces=bad)  # type: ignore[arg-type]
    assert manager.export_session("s1") == before


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_two_compactors_racing_leave_no_dead_summary(
    manager: ContextManager, mode: str
) -> None:
    """Another compactor's summary lands while this one's summariser runs. One inside the
    range this one covers is removed by this one's write; one reaching further (this one's
    is then inside it) is removed by the next compaction. ``shared`` stays bounded."""
    _session(manager, "s", 12)
    other: list[tuple[int, int]] = [(0, 7)]

    def summarise(messages: list[BaseMessage]) -> str:
        if other:  # the other compactor finishes first
            first, last = other.pop()
            add_compaction(manager, "s", first, last, f"other {first}-{last}")
        return "ours"

    policy = CompactionPolicy(
        summarize_at=100,
        keep_recent=8,
        block=4,
        min_messages=4,
        summarizer=RunnableLambda(summarise),
    )

    async def run() -> Any:
        if mode == "async":
            return (await acompact(manager, "s", policy)).entry
        return compact(manager, "s", policy).entry

    ours = await run()
    assert ours is not None
    assert (ours["first_index"], ours["last_index"] > 7) == (0, True)
    assert [c["id"] for c in _summaries(manager, "s")] == [ours["id"]]
    # the other way round: the other summary reaches further than ours
    manager.add_messages("s", [m for i in range(12, 16) for m in _turn(i)])
    length = manager.get_metadata("s")["message_count"]
    other.append((0, length - 9))
    second = await run()
    assert second is not None
    manager.add_messages("s", [m for i in range(16, 24) for m in _turn(i)])
    third = await run()
    assert third is not None
    assert [c["id"] for c in _summaries(manager, "s")] == [third["id"]]


def test_an_abandoned_tool_call_stops_blocking_summaries(manager: ContextManager) -> None:
    """A tool call that never got its result (the tool raised, the run was cancelled):
    once ``ABANDONED_AFTER`` user turns passed, summaries cut after it again."""
    from ctx_memory.compaction import ABANDONED_AFTER

    manager.add_messages(
        "s",
        [
            HumanMessage("A: check the order."),
            AIMessage("", tool_calls=[{"name": "lookup", "args": {}, "id": "lost"}]),
        ],
    )
    policy = CompactionPolicy(summarize_at=100, keep_recent=4, block=1, min_messages=1)
    _session(manager, "s", ABANDONED_AFTER - 2)
    assert compact(manager, "s", policy).reason == "no turn boundary"  # may still be running
    _session(manager, "s", 4)
    entry = compact(manager, "s", policy).entry
    assert entry is not None
    assert entry["first_index"] == 0
    assert entry["last_index"] > 2 * ABANDONED_AFTER  # well past the abandoned call
    result = ContextPromptAssembler(manager, max_tokens=4000, compaction=policy).assemble(
        "s", "next?"
    )
    assert tool_pair_problems(result.messages).total == 0


async def test_a_summary_no_shorter_than_what_it_covers_is_refused_and_reported(
    manager: ContextManager,
) -> None:
    """Sent in place of the messages it would take more room; one no window holds would
    leave the whole range out of the prompt."""
    from langchain_core.runnables import RunnableLambda

    _session(manager, "s1", 12)
    before = manager.export_session("s1")
    asked: list[int] = []

    def long_summary(messages: list[object]) -> str:
        asked.append(len(messages))
        return "AF100 shipped first. " * 3000

    policy = CompactionPolicy(
        summarize_at=300, keep_recent=8, block=4, summarizer=RunnableLambda(long_summary)
    )
    for outcome in (compact(manager, "s1", policy), await acompact(manager, "s1", policy)):
        assert outcome.entry is None
        assert outcome.failed
        assert outcome.reason.startswith("summarizer returned ")
        assert outcome.reason.endswith(" covered: not shorter")
    assert manager.export_session("s1") == before
    assert len(asked) == 1  # the same range is not sent again (a chat model's cost)
    result = ContextPromptAssembler(manager, max_tokens=4000, compaction=policy).assemble(
        "s1", "Which order shipped first?"
    )
    (note,) = result.report.compaction_notes
    assert "not shorter" in note
    assert result.report.history_messages == len(manager.get_history("s1"))  # all of it
    assert len(asked) == 1
    for i in range(12, 24):  # once the range grows, it is asked again
        manager.add_messages("s1", _turn(i))
    compact(manager, "s1", policy)
    assert len(asked) == 2
