"""The README's ``## LangChain`` examples run as written."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[3] / "README.md"


def _blocks() -> list:
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## LangChain\n")
    end = text.index("\n## ", start + 1)
    code = re.findall(r"```python\n(.*?)```", text[start:end], flags=re.DOTALL)
    return [pytest.param(block, id=f"block{i}") for i, block in enumerate(code)]


BLOCKS = _blocks()


def test_every_class_has_an_example():
    joined = "\n".join(p.values[0] for p in BLOCKS)
    for name in (
        "ContextualChat",
        "ContextMiddleware",
        "ContextPromptAssembler",
        "FetchedContextRetriever",
        "SourceRecordingRetriever",
        "ContextChatMessageHistory",
        "ContextMemory",
    ):
        assert f"{name}(" in joined, name


@pytest.mark.parametrize("code", BLOCKS)
def test_readme_example_runs(code, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        # langchain_classic.agents imports langchain-community when installed (bench group),
        # which announces its own sunset: theirs, not ours.
        warnings.filterwarnings("ignore", message=".*langchain-community.*")
        exec(compile(code, "<README example>", "exec"), {"__name__": "__readme__"})
