"""``ctx-memory reindex``: the saved recall index rebuilt from the history."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner

from ctx_memory import ContextManager, InMemoryStore
from ctx_memory.cli import app
from ctx_memory.recall import Recall
from ctx_memory.stores.sqlite import SqliteStore

if TYPE_CHECKING:
    from pathlib import Path

    from click.testing import Result

runner = CliRunner()


def fill(cm: ContextManager) -> None:
    for i in range(201):
        cm.add_user_message("long", f"question {i} about the weather in town")
        cm.add_assistant_message("long", f"answer {i}: sunny and mild")
    cm.add_user_message("short", "hello")


@pytest.fixture
def manager() -> ContextManager:
    cm = ContextManager(store=InMemoryStore(), token_counter="approximate")
    fill(cm)
    return cm


def run(cm: ContextManager | None, *args: str) -> Result:
    return runner.invoke(app, list(args), obj=cm)


def test_reindex_saves_the_named_sessions(manager: ContextManager) -> None:
    manager.store.save_recall_segments("long", ["stale"])
    result = run(manager, "reindex", "long", "short")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "long: 402 messages indexed and saved",
        "short: shorter than 256, not saved",
        "1 saved, 1 not saved (short)",
    ]
    [text] = manager.store.get_recall_segments("long")
    assert (json.loads(text)["start"], json.loads(text)["stop"]) == (0, 402)
    assert manager.store.get_recall_segments("short") == []
    recall = Recall()  # a process that has not indexed it yet starts from the saved one
    recall.index(manager, "long", manager.get_header("long"))
    assert (recall.loads, recall.rebuilds) == (1, 0)


def test_reindex_all_on_a_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "ctx.sqlite3"
    with ContextManager(store=SqliteStore(str(path)), token_counter="approximate") as cm:
        fill(cm)
    result = run(None, "--sqlite-path", str(path), "reindex", "--all")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "1 saved, 1 not saved (short)"
    with SqliteStore(str(path)) as store:
        assert len(store.get_recall_segments("long")) == 1


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        ((), "name the sessions to reindex, or pass --all", 2),  # usage errors exit 2
        (("long", "--all"), "name the sessions to reindex, or pass --all", 2),
        (("nope",), "session 'nope' does not exist", 1),
    ],
)
def test_reindex_refuses_bad_input(
    manager: ContextManager, args: tuple[str], message: str, code: int
) -> None:
    result = run(manager, "reindex", *args)
    assert result.exit_code == code
    assert message in result.output
    assert manager.store.get_recall_segments("long") == []


def test_reindex_says_when_the_store_keeps_no_index() -> None:
    class Forgetful(InMemoryStore):
        keeps_recall_segments = False

    cm = ContextManager(store=Forgetful(), token_counter="approximate")
    fill(cm)
    result = run(cm, "reindex", "--all")
    assert result.exit_code == 1
    assert "does not keep a saved recall index" in result.output
