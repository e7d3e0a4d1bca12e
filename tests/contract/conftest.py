"""The contract suite runs against every store; see ``tests/conftest.py`` for the stores."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _no_developer_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CTX_MEMORY_* variable of the developer's leaks into a contract test."""
    for name in list(os.environ):
        if name.startswith("CTX_MEMORY_"):
            monkeypatch.delenv(name)
