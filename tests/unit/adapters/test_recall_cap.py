"""recall_max_tokens: recalled turns never take more than the cap; the window takes the rest."""

from __future__ import annotations

import random

import pytest

from ctx_memory import ContextManager
from ctx_memory.errors import ValidationError
from ctx_memory.prompt import ContextPromptAssembler
from ctx_memory.stores.memory import InMemoryStore

WORDS = [
    "river",
    "market",
    "garden",
    "lunch",
    "museum",
    "ticket",
    "harbour",
    "cinema",
    "bakery",
    "weekend",
]


@pytest.fixture
def manager() -> ContextManager:
    manager = ContextManager(store=InMemoryStore())
    rng = random.Random(3)
    for i in range(900):
        manager.add_user_message("s1", " ".join(rng.choice(WORDS) for _ in range(14)) + f" {i}")
        manager.add_assistant_message("s1", " ".join(rng.choice(WORDS) for _ in range(20)))
    return manager


@pytest.mark.parametrize("layout", ["classic", "stable"])
def test_the_cap_bounds_recall_and_the_window_takes_the_rest(
    manager: ContextManager, layout: str
) -> None:
    question = "river market garden museum?"
    capped = ContextPromptAssembler(
        manager, max_tokens=20_000, reserve_tokens=0, layout=layout, recall_max_tokens=1500
    )
    free = ContextPromptAssembler(
        manager, max_tokens=20_000, reserve_tokens=0, layout=layout, recall_max_tokens=None
    )
    small, large = capped.assemble("s1", question).report, free.assemble("s1", question).report
    assert 0 < small.recall_tokens <= 1500
    assert large.recall_tokens > 1500  # without the cap the share (0.5) takes far more
    # What the cap leaves goes to the recent window (the stable layout's window moves in
    # blocks of half its size, so there it holds at least as much, not always more).
    window_small = small.history_tokens - small.recall_tokens
    window_large = large.history_tokens - large.recall_tokens
    if layout == "classic":
        assert window_small > window_large
    else:
        assert window_small >= window_large
    for report in (small, large):
        assert report.total_tokens <= 20_000


def test_the_default_cap_is_4000(manager: ContextManager) -> None:
    assembler = ContextPromptAssembler(manager, max_tokens=40_000, reserve_tokens=0)
    assert assembler.recall_max_tokens == 4000
    report = assembler.assemble("s1", "river market garden museum?").report
    assert 0 < report.recall_tokens <= 4000


@pytest.mark.parametrize("bad", [-1, 1.5, "4000", True])
def test_a_bad_cap_is_refused(manager: ContextManager, bad: object) -> None:
    with pytest.raises(ValidationError, match="recall_max_tokens"):
        ContextPromptAssembler(manager, recall_max_tokens=bad)  # type: ignore[arg-type]


def test_stable_recall_takes_what_the_window_leaves(manager: ContextManager) -> None:
    """The stable window is read first; recall gets the rest of the history budget.

    A window trimmed in blocks is between half full and full, so recall may take more
    than its share of the history budget, never more than the cap, never past the budget,
    and it reaches every turn before where the window really starts.
    """
    question = "river market garden museum?"
    for max_tokens in (2000, 3000, 4000):  # (larger: recall runs out of hits, 64 at most)
        assembler = ContextPromptAssembler(
            manager, max_tokens=max_tokens, reserve_tokens=0, layout="stable"
        )
        prompt = assembler.assemble("s1", question)
        report = prompt.report
        assert report.total_tokens <= report.budget
        window_tokens = report.history_tokens - report.recall_tokens
        assert report.recall_tokens > 0
        # the window is not changed by recall: the same as with recall off
        alone = ContextPromptAssembler(
            manager, max_tokens=max_tokens, reserve_tokens=0, layout="stable", recall_share=0.0
        )
        assert report.stable_prefix_tokens <= report.total_tokens
        assert window_tokens <= alone.assemble("s1", question).report.history_tokens
        # the prompt uses the budget: what is left is less than one recalled turn or so
        assert report.remaining_tokens < 150, (max_tokens, report.remaining_tokens)
        # the window: the messages between the system message (if any) and the last one,
        # which holds the recalled turns as text
        window = prompt.messages[1 if report.system_tokens else 0 : -1]
        assert (
            window[0].text == manager.get_message_range("s1", 1800 - len(window), -1)[0]["content"]
        )
        recalled = {entry["index"] for entry in report.recalled}
        assert recalled
        assert max(recalled) < 1800 - len(window)  # all of it before the window
    capped = ContextPromptAssembler(
        manager, max_tokens=6000, reserve_tokens=0, layout="stable", recall_max_tokens=300
    )
    assert 0 < capped.assemble("s1", question).report.recall_tokens <= 300


def test_classic_recall_finding_nothing_gives_its_share_back_to_the_window() -> None:
    """The default recall_share must not leave half the budget unused when no turn matches."""
    manager = ContextManager()
    for i in range(200):
        manager.add_user_message("s", f"question {i} " + "pad " * 30)
        manager.add_assistant_message("s", f"answer {i}")
    reports = {
        share: ContextPromptAssembler(
            manager, max_tokens=8000, reserve_tokens=1000, recall_share=share
        )
        .assemble("s", "hi")
        .report
        for share in (0.0, 0.5)
    }
    assert reports[0.5].recalled == []
    assert reports[0.5].total_tokens == reports[0.0].total_tokens > 6900
    assert reports[0.5].history_messages == reports[0.0].history_messages
