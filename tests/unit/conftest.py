"""Fixtures for the unit tests: in-memory stores and managers, a controllable clock."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from ctx_memory import ContextManager, InMemoryStore

if TYPE_CHECKING:
    from collections.abc import Iterator


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def manager() -> Iterator[ContextManager]:
    """A manager on a fresh in-memory store, no TTL, settings from defaults."""
    with ContextManager(store=InMemoryStore(max_sessions=100)) as cm:
        yield cm


@pytest.fixture(autouse=True)
def _isolated_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """No settings file or CTX_MEMORY_* variable of the developer's leaks into a test."""
    import os

    for name in list(os.environ):
        if name.startswith("CTX_MEMORY_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
