"""The docs site (``docs/``, ``mkdocs.yml``) builds strictly and its examples run as written.

``mkdocs build --strict`` fails on a broken link, a cross-reference without a target, a page
missing from the navigation or a missing included file; the same build is ``make docs`` and
a step of CI. Every ``python`` block of a page runs here, in order, in one namespace per page
(the README's quickstart has its own test, ``tests/unit/test_readme.py``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
# Public modules whose interface is the command line (docs/cli.md), not an API page.
COMMAND_LINE_MODULES = {"ctx_memory.cli", "ctx_memory.demo"}
# Deprecated aliases of renamed modules: they re-export another module's names, which have
# their page there (ctx_memory.classic, ctx_memory.web); the CHANGELOG records the rename.
DEPRECATED_ALIASES = {"ctx_memory.memory", "ctx_memory.integration"}


def _page_id(path: Path) -> str:
    return path.relative_to(DOCS).with_suffix("").as_posix()


@pytest.mark.slow
def test_the_site_builds_strictly(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # mkdocs-material's banner, not a warning
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-5000:]
    assert (tmp_path / "index.html").is_file()
    assert (tmp_path / "reference" / "manager" / "index.html").is_file()
    for image in DOCS.glob("*.png"):  # the screenshots the HTML view page shows
        assert (tmp_path / image.name).is_file(), image.name


@pytest.mark.parametrize(
    "page", [p for p in PAGES if PYTHON_BLOCK.search(p.read_text("utf-8"))], ids=_page_id
)
def test_examples_run_as_written(
    page: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # settings.toml is read from the working directory
    namespace: dict[str, object] = {"__name__": f"docs_{_page_id(page).replace('/', '_')}"}
    with warnings.catch_warnings():
        # langchain_classic.agents imports langchain-community when installed (bench group),
        # which announces its own sunset: theirs, not ours.
        warnings.filterwarnings("ignore", message=".*langchain-community.*")
        for i, block in enumerate(PYTHON_BLOCK.findall(page.read_text("utf-8"))):
            exec(compile(block, f"<{_page_id(page)} block {i}>", "exec"), namespace)


def test_every_langchain_class_has_an_example() -> None:
    code = "\n".join(
        block
        for page in sorted((DOCS / "langchain").glob("*.md"))
        for block in PYTHON_BLOCK.findall(page.read_text("utf-8"))
    )
    for name in (
        "ContextualChat",
        "ContextMiddleware",
        "ContextPromptAssembler",
        "FetchedContextRetriever",
        "SourceRecordingRetriever",
        "ContextChatMessageHistory",
        "ContextMemory",
    ):
        assert f"{name}(" in code, name


def _public_modules() -> set[str]:
    modules = set()
    for path in (ROOT / "ctx_memory").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if not any(part.startswith("_") for part in parts):
            modules.add(".".join(parts))
    return modules - COMMAND_LINE_MODULES - DEPRECATED_ALIASES - {"ctx_memory"}


def test_every_public_module_has_an_api_page() -> None:
    documented = {
        match
        for page in (DOCS / "reference").glob("*.md")
        for match in re.findall(r"^::: ([\w.]+)$", page.read_text("utf-8"), re.MULTILINE)
    }
    assert "ctx_memory" in documented  # the package's own docstring opens the reference
    assert documented - {"ctx_memory"} == _public_modules()
