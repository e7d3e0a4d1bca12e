"""The README: its two commands first, a quickstart that runs as written, links that resolve.

The rest of the manual is the docs site (``docs/``); ``tests/test_docs.py`` builds it and
runs its examples.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


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
    assert cm.get_memory_stats("user-42")["message_count"] == 4  # 2, then ContextualChat's turn
    assert namespace["messages"][0]["role"] == "system"
    report = namespace["reply"].response_metadata["ctx_memory"]["report"]
    assert 0 < report["total_tokens"] <= report["budget"]
    assert cm.get_history("user-42")[-1]["content"] == "Yes: a flexible fare [1]."


def test_the_first_two_commands_are_demo_and_test_and_ci_runs_them():
    text = README.read_text(encoding="utf-8")
    first_block = re.search(r"```(?:bash|sh)\n(.*?)```", text, flags=re.DOTALL)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands == ["make demo", "make test"]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make demo" in ci
    assert "make test" in ci


def test_links_resolve_and_every_docs_page_is_linked():
    text = README.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    local = {t for t in targets if not t.startswith(("http://", "https://"))}
    for target in sorted(local):
        assert (ROOT / target).is_file(), f"README links to a missing file: {target}"
    guide = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "docs").rglob("*.md")
        if p.parent.name != "reference"
        and p.name not in ("index.md", "benchmarks.md", "changelog.md")
    }
    guide.add("docs/langchain/index.md")
    assert guide <= local, f"pages the README does not link: {sorted(guide - local)}"
