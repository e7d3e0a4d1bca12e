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
