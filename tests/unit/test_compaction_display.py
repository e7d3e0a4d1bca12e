"""Compactions are shown by ``ctx-memory show`` and the HTML view (stored text literal)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from typer.testing import CliRunner

from ctx_memory import ContextManager
from ctx_memory.cli import app
from ctx_memory.compaction import add_compaction
from ctx_memory.display import render_session_html

if TYPE_CHECKING:
    from pathlib import Path

HOSTILE = "<script>alert(1)</script> [bold]x[/bold] \x1b[31mred"


def _session(path: str) -> None:
    with ContextManager(store="sqlite", sqlite_path=path) as cm:
        for i in range(6):
            cm.add_user_message("s1", f"question {i} about flight AF{100 + i}")
            cm.add_assistant_message("s1", f"answer {i}")
        add_compaction(
            cm,
            "s1",
            0,
            5,
            f"Asked about AF100-AF102. {HOSTILE}",
            producer={"name": "test", "model": "gpt-<i>4o", "prompt_hash": "9f3a"},
        )


def test_show_lists_compactions_and_prints_their_text_literally(tmp_path: Path) -> None:
    path = str(tmp_path / "db.sqlite3")
    _session(path)
    result = CliRunner().invoke(app, ["--sqlite-path", path, "show", "s1"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Compactions" in out
    assert "0-5" in out
    assert "Summary of messages 0-5" in out
    assert "Asked about AF100-AF102." in out
    assert "[bold]x[/bold]" in out  # not read as markup
    assert "\x1b" not in out  # control characters escaped
    assert "ctx_memory.compactions" not in out  # not repeated as shared state
    assert "test (gpt-<i>4o, prompt 9f3a)" in out  # what wrote it: name, model, prompt hash


def test_the_html_view_has_a_compactions_section_escaped(tmp_path: Path) -> None:
    path = str(tmp_path / "db.sqlite3")
    _session(path)
    with ContextManager(store="sqlite", sqlite_path=path) as cm:
        html = render_session_html(cm.get_context("s1"))
    assert "<h4>Compactions (1)</h4>" in html
    assert "messages 0-5" in html
    assert "test (gpt-&lt;i&gt;4o, prompt 9f3a)" in html
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Shared state" not in html  # the only shared key is the compactions'


def test_the_compactions_key_is_reserved_for_ctx_memory() -> None:
    import pytest

    from ctx_memory.errors import ValidationError

    with ContextManager() as cm:
        cm.add_user_message("s1", "hi")
        with pytest.raises(ValidationError, match="reserved"):
            cm.update_partial_context("s1", {"ctx_memory.compactions": {"x": {"id": "x"}}})
        with pytest.raises(ValidationError, match="reserved"):
            cm.set_context("s1", "ctx_memory.anything", 1)
        assert "ctx_memory.compactions" not in cm.get_context("s1")["shared"]
        cm.update_partial_context("s1", {"ctx_memory_note": 1})  # only the dotted prefix


def test_even_a_reserved_write_of_compactions_holds_only_well_formed_entries() -> None:
    """The features' own write (``reserved=True``) is checked like an import: a malformed
    entry is refused naming its field, so no store holds one an import would refuse."""
    import pytest

    from ctx_memory.errors import ValidationError

    entry = {"id": "c1", "kind": "summary", "first_index": 0, "last_index": 0, "summary": ""}
    with ContextManager() as cm:
        cm.add_user_message("s1", "hi")
        with pytest.raises(ValidationError, match="compaction summary: is empty"):
            cm.update_partial_context(
                "s1", {"ctx_memory.compactions": {"c1": entry}}, reserved=True
            )
        with pytest.raises(ValidationError, match="compaction entries: must be a mapping"):
            cm.update_partial_context("s1", {"ctx_memory.compactions": [entry]}, reserved=True)
        assert "ctx_memory.compactions" not in cm.get_context("s1")["shared"]
        entry["summary"] = "said hi"
        cm.update_partial_context("s1", {"ctx_memory.compactions": {"c1": entry}}, reserved=True)
        cm.update_partial_context("s1", {"ctx_memory.compactions": {"c1": None}}, reserved=True)
