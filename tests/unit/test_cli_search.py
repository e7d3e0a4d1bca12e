"""``ctx-memory search`` and ``ctx-memory prompt`` on a real in-memory manager."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ctx_memory import ContextManager, InMemoryStore, TokenCounter
from ctx_memory.cli import app
from ctx_memory.recall import search_history

runner = CliRunner()


@pytest.fixture
def manager() -> ContextManager:
    cm = ContextManager(store=InMemoryStore(max_sessions=None))
    cm.set_system_prompt("s1", "You are terse.")
    for i in range(200):
        cm.add_user_message("s1", f"question {i} about the weather in town")
        cm.add_assistant_message("s1", f"answer {i}: sunny and mild")
        if i == 5:
            cm.add_user_message("s1", "My passport number is X1234567")
            cm.add_assistant_message("s1", "Saved your passport number.")
    return cm


def run(cm: ContextManager, *args: str) -> object:
    return runner.invoke(app, list(args), obj=cm)


def test_search_shows_old_messages_best_first(manager: ContextManager) -> None:
    result = run(manager, "search", "s1", "passport number?")
    assert result.exit_code == 0, result.output
    first, second = search_history(manager, "s1", "passport number?")
    assert first.score >= second.score > 0  # a tie: the newer first
    assert result.stdout.splitlines() == [
        f"[13 assistant] score {first.score:.2f} · passport, number",
        "  Saved your passport number.",
        f"[12 user] score {second.score:.2f} · passport, number",
        "  My passport number is X1234567",
    ]


def test_search_json_and_limit(manager: ContextManager) -> None:
    result = run(manager, "search", "s1", "weather", "--limit", "3", "--json")
    payload = json.loads(result.stdout)
    assert payload["session_id"] == "s1"
    assert payload["query"] == "weather"
    assert len(payload["hits"]) == 3
    history = manager.get_history("s1")
    for hit in payload["hits"]:
        assert hit["terms"] == ["weather"]
        assert history[hit["position"]] == hit["message"]


def test_search_without_hits_and_without_session(manager: ContextManager) -> None:
    assert run(manager, "search", "s1", "zeppelin").stdout == "no message matches\n"
    missing = run(manager, "search", "nobody", "passport")
    assert missing.exit_code == 1
    assert "session 'nobody' does not exist" in missing.stderr
    assert run(manager, "search", "s1", "x", "--limit", "0").exit_code == 2
    assert run(manager, "search", "s1", "x", "--limit", "101").exit_code == 2


def test_search_prints_stored_text_literally(manager: ContextManager) -> None:
    manager.add_user_message("s1", "evil \x1b[31mred[/] [bold]zeppelin[/bold]\nsecond line")
    out = run(manager, "search", "s1", "zeppelin").stdout
    assert "\x1b" not in out
    assert "\\x1b[31mred[/] [bold]zeppelin[/bold]" in out


def test_search_shortens_long_text_unless_full(manager: ContextManager) -> None:
    manager.add_user_message("s1", "zeppelin " + "word " * 200)
    short = run(manager, "search", "s1", "zeppelin").stdout.splitlines()[1]
    assert short.endswith(" …")
    assert len(short) < 310
    full = run(manager, "search", "s1", "zeppelin", "--full").stdout.splitlines()[1]
    assert len(full) > 1000


def test_prompt_shows_what_the_model_gets_and_writes_nothing(manager: ContextManager) -> None:
    before = manager.get_context("s1")
    args = ["prompt", "s1", "What is my passport number?", "--max-tokens", "700"]
    args += ["--reserve-tokens", "100", "--layout", "stable"]
    result = run(manager, *args)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("── system ──\nYou are terse.")
    assert "[12 user] My passport number is X1234567" in out  # recalled, as text
    assert "recalled: message 12 (passport, number)" in out
    assert manager.get_context("s1") == before
    data = json.loads(run(manager, *args, "--json").stdout)
    assert (data["session_id"], data["question"]) == ("s1", "What is my passport number?")
    report = data["report"]
    assert report["budget"] == 600
    assert report["layout"] == "stable"
    assert 0 < report["total_tokens"] <= 600
    assert report["total_tokens"] == TokenCounter().count_chat(data["messages"])
    assert data["messages"][0]["role"] == "system"
    assert data["messages"][-1]["role"] == "user"
    assert data["messages"][-1]["content"].endswith("What is my passport number?")
    assert {r["index"] for r in report["recalled"]} >= {12}
    assert manager.get_context("s1") == before


def test_prompt_refuses_bad_input(manager: ContextManager) -> None:
    missing = run(manager, "prompt", "nobody", "hi")
    assert missing.exit_code == 1
    assert "session 'nobody' does not exist" in missing.stderr
    assert run(manager, "prompt", "s1", "hi", "--max-tokens", "500").exit_code == 2
    assert run(manager, "prompt", "s1", "hi", "--layout", "fancy").exit_code == 2
