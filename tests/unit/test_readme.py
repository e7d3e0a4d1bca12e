"""The README's Quickstart runs as written (the LangChain section has its own test)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def test_quickstart_runs(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", _section("Quickstart"), flags=re.DOTALL)
    assert blocks
    namespace: dict = {"__name__": "__readme__"}
    for block in blocks:
        exec(compile(block, "<README quickstart>", "exec"), namespace)
    cm = namespace["cm"]
    assert cm.get_memory_stats("user-42")["message_count"] == 2
    assert namespace["messages"][0]["role"] == "system"


def test_two_commands_are_documented_and_ci_runs_the_test_command():
    text = README.read_text(encoding="utf-8")
    assert "make demo" in text
    assert "make test" in text
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in ci
