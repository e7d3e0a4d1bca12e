"""The ``ctx-memory`` command line, driven with typer's CliRunner on real in-memory stores.

The in-memory store lives as long as one process, so most tests hand the CLI an existing
manager (``invoke(app, args, obj=manager)``, the documented embedding hook); the global
``--store`` options are tested separately.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from travel import travel_session
from typer.testing import CliRunner

from ctx_memory import ContextManager, InMemoryStore
from ctx_memory.cli import InputFileError, app, read_documents

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from typer.testing import Result

runner = CliRunner()


def new_manager() -> ContextManager:
    return ContextManager(store=InMemoryStore(max_sessions=None))


@pytest.fixture
def source() -> Iterator[ContextManager]:
    """A manager with the demo session and a few others."""
    with new_manager() as cm:
        travel_session(cm)
        for i in range(5):
            cm.add_user_message(f"user-{i}", f"question {i} [bold]not markup[/bold]")
            cm.add_assistant_message(f"user-{i}", f"answer {i}", model="fake")
            cm.set_context(f"user-{i}", "step", i)
        yield cm


@pytest.fixture
def target() -> Iterator[ContextManager]:
    with new_manager() as cm:
        yield cm


def run(manager: ContextManager | None, *args: str, input: str | None = None) -> Result:
    return runner.invoke(app, list(args), obj=manager, input=input)


def documents(cm: ContextManager) -> dict[str, dict[str, Any]]:
    """Every session's document; ``system_prompt_tokens: 0`` counts as absent.

    ``import_session`` writes that key even for sessions that never had a system prompt
    (reported to the manager's owner); everything else must survive unchanged.
    """
    out = {}
    for sid in cm.list_sessions():
        document = cm.get_context(sid)
        if document["metadata"].get("system_prompt_tokens") == 0:
            del document["metadata"]["system_prompt_tokens"]
        out[sid] = document
    return out


COMMANDS = [
    [],
    ["demo"],
    ["sessions"],
    ["sessions", "list"],
    ["show"],
    ["export"],
    ["import"],
    ["delete"],
    ["stats"],
    ["gc"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "root")
def test_help_everywhere(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_root_help_explains_memory_store_and_exit_codes() -> None:
    out = runner.invoke(app, ["--help"], terminal_width=200).output
    assert "in-memory store" in out
    assert "Exit codes" in out


@pytest.mark.parametrize("args", [[], ["sessions"], ["show"], ["nonsense"], ["--store", "x"]])
def test_usage_errors_exit_2(args: list[str]) -> None:
    assert runner.invoke(app, args).exit_code == 2


def test_demo_runs_on_default_memory_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no settings.toml from the checkout
    result = runner.invoke(app, ["demo", "--session-id", "d1"])
    assert result.exit_code == 0, result.output
    assert '"session_id": "d1"' in result.stdout


def test_memory_store_does_not_persist_between_invocations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(app, ["--store", "memory", "demo"]).exit_code == 0
    result = runner.invoke(app, ["--store", "memory", "sessions", "list"])
    assert result.exit_code == 0
    assert result.stdout == ""


def test_bad_setting_is_a_usage_error_naming_the_key() -> None:
    result = runner.invoke(app, ["--redis-url", "http://user:hunter2@x", "sessions", "list"])
    assert result.exit_code == 2
    assert "REDIS_URL" in result.stderr
    assert "hunter2" not in result.output


def test_both_paths_without_store_is_a_usage_error(tmp_path: Path) -> None:
    args = ["--sqlite-path", str(tmp_path / "x.db"), "--redis-url", "redis://h", "gc"]
    assert runner.invoke(app, args).exit_code == 2


# --------------------------------------------------------------------------- reading


def test_sessions_list(source: ContextManager) -> None:
    result = run(source, "sessions", "list")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == source.list_sessions()
    as_json = run(source, "sessions", "list", "--json")
    assert json.loads(as_json.stdout) == source.list_sessions()
    long = run(source, "sessions", "list", "--long")
    assert long.exit_code == 0
    assert "research" in long.stdout
    assert "6 session(s)" in long.stderr


def test_sessions_list_pages(source: ContextManager) -> None:
    everyone = source.list_sessions()
    first = run(source, "sessions", "list", "--limit", "4")
    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines() == everyone[:4]
    assert f"--after {everyone[3]}" in first.stderr
    rest = run(source, "sessions", "list", "--limit", "4", "--after", everyone[3], "--json")
    assert json.loads(rest.stdout) == everyone[4:8]
    users = run(source, "sessions", "list", "--prefix", "user-")
    assert users.stdout.splitlines() == [s for s in everyone if s.startswith("user-")]
    assert run(source, "sessions", "list", "--limit", "0").exit_code == 2


def test_show_pretty_keeps_brackets_literal(source: ContextManager) -> None:
    result = run(source, "show", "user-1")
    assert result.exit_code == 0, result.output
    assert "question 1 [bold]not markup[/bold]" in result.stdout
    assert "Conversation (2 messages, showing 2)" in result.stdout


def test_show_last_and_sources(source: ContextManager) -> None:
    result = run(source, "show", "demo-session", "--last", "1")
    assert result.exit_code == 0
    assert "showing 1" in result.stdout
    assert "Flights to Paris" in result.stdout
    assert "Choose a flexible economy fare" in result.stdout
    assert "How do I book" not in result.stdout


def test_show_json_is_the_document(source: ContextManager) -> None:
    result = run(source, "show", "demo-session", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == source.get_context("demo-session")


def test_show_missing_exits_1(source: ContextManager) -> None:
    result = run(source, "show", "nope")
    assert result.exit_code == 1
    assert "session 'nope' does not exist" in result.stderr


def test_stats(source: ContextManager) -> None:
    one = run(source, "stats", "demo-session", "--json")
    assert one.exit_code == 0
    assert json.loads(one.stdout) == source.get_memory_stats("demo-session")
    store = run(source, "stats", "--json")
    assert json.loads(store.stdout)["session_count"] == 6
    pretty = run(source, "stats", "demo-session")
    assert "total_tokens" in pretty.stdout
    assert run(source, "stats", "nope").exit_code == 1


def test_gc(source: ContextManager) -> None:
    result = run(source, "gc")
    assert result.exit_code == 0
    assert "removed 0 expired session(s)" in result.stdout


def test_delete(source: ContextManager) -> None:
    result = run(source, "delete", "user-0", "user-1")
    assert result.exit_code == 0
    assert not source.session_exists("user-0")
    assert not source.session_exists("user-1")
    missing = run(source, "delete", "user-2", "nope")
    assert missing.exit_code == 1
    assert "'nope'" in missing.stderr
    assert not source.session_exists("user-2")


# --------------------------------------------------------------------------- export / import


def test_export_one_to_stdout_round_trips(source: ContextManager, target: ContextManager) -> None:
    exported = run(source, "export", "demo-session")
    assert exported.exit_code == 0
    assert exported.stdout.startswith("{\n")  # one pretty document
    imported = run(target, "import", "-", input=exported.stdout)
    assert imported.exit_code == 0, imported.output
    assert target.get_context("demo-session") == source.get_context("demo-session")


def test_export_all_to_file_round_trips(
    source: ContextManager, target: ContextManager, tmp_path: Path
) -> None:
    path = tmp_path / "all.jsonl"
    result = run(source, "export", "--all", "-o", str(path))
    assert result.exit_code == 0, result.output
    assert "exported 6 session(s)" in result.stderr
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 6
    assert all(json.loads(line)["metadata"]["session_id"] for line in lines)
    imported = run(target, "import", str(path))
    assert imported.exit_code == 0, imported.output
    assert "imported 6 session(s)" in imported.stderr
    assert documents(target) == documents(source)


def test_export_several_ids_is_jsonl(source: ContextManager) -> None:
    result = run(source, "export", "user-1", "user-2")
    assert result.exit_code == 0
    ids = [json.loads(line)["metadata"]["session_id"] for line in result.stdout.splitlines()]
    assert ids == ["user-1", "user-2"]


def test_export_errors(source: ContextManager, tmp_path: Path) -> None:
    assert run(source, "export").exit_code == 2
    assert run(source, "export", "user-1", "--all").exit_code == 2
    path = tmp_path / "out.json"
    missing = run(source, "export", "nope", "-o", str(path))
    assert missing.exit_code == 1
    assert not path.exists()
    several = run(source, "export", "user-1", "nope", "-o", str(path))
    assert several.exit_code == 1
    assert not path.exists()
    no_dir = run(source, "export", "user-1", "-o", str(tmp_path / "no" / "such.json"))
    assert no_dir.exit_code == 1


def test_import_accepts_array_and_concatenated_documents(
    source: ContextManager, target: ContextManager, tmp_path: Path
) -> None:
    docs = list(documents(source).values())
    array = tmp_path / "array.json"
    array.write_text(json.dumps(docs, indent=2), encoding="utf-8")
    assert run(target, "import", str(array)).exit_code == 0
    assert documents(target) == documents(source)

    with new_manager() as again:
        concatenated = "\n".join(json.dumps(d, indent=2) for d in docs)
        assert run(again, "import", "-", input=concatenated).exit_code == 0
        assert documents(again) == documents(source)


def test_import_dry_run_writes_nothing(source: ContextManager, target: ContextManager) -> None:
    exported = run(source, "export", "--all").stdout
    result = run(target, "import", "-", "--dry-run", input=exported)
    assert result.exit_code == 0
    assert "6 valid document(s)" in result.stderr
    assert target.list_sessions() == []


def test_import_session_id_renames_single_document(
    source: ContextManager, target: ContextManager
) -> None:
    exported = run(source, "export", "user-1").stdout
    assert run(target, "import", "-", "--session-id", "renamed", input=exported).exit_code == 0
    assert target.list_sessions() == ["renamed"]
    several = run(source, "export", "--all").stdout
    assert run(target, "import", "-", "--session-id", "x", input=several).exit_code == 2


def _jsonl(source: ContextManager) -> list[dict[str, object]]:
    return [json.loads(line) for line in run(source, "export", "--all").stdout.splitlines()]


def test_bad_document_rejects_whole_file_naming_document_and_field(
    source: ContextManager, target: ContextManager, tmp_path: Path
) -> None:
    docs = _jsonl(source)
    docs[2]["conversation_history"][0]["role"] = "wizard"  # type: ignore[index]
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    result = run(target, "import", str(path))
    assert result.exit_code == 1
    assert "document 3 (line 3)" in result.stderr
    assert "conversation_history.0.role" in result.stderr
    assert "nothing was imported" in result.stderr
    assert target.list_sessions() == []


def test_what_only_the_write_would_refuse_fails_the_file_first(
    source: ContextManager, target: ContextManager
) -> None:
    """A NUL message id, a ``shared`` over its limit or a NUL source type in document 2 fail
    the file before document 1 is written (they were found only when writing it)."""
    docs = _jsonl(source)
    docs[1]["conversation_history"][0]["id"] = "a\x00b"  # type: ignore[index]
    docs[2]["shared"] = {"blob": "x" * (1024 * 1024)}  # type: ignore[index]
    docs[3]["fetched_context"] = {"web\x00": []}  # type: ignore[index]
    target.add_user_message(str(docs[0]["metadata"]["session_id"]), "kept")  # type: ignore[index]
    before = target.export_session(str(docs[0]["metadata"]["session_id"]))  # type: ignore[index]
    text = "".join(json.dumps(d) + "\n" for d in docs)
    result = run(target, "import", "-", input=text)
    assert result.exit_code == 1
    assert "document 2 (line 2), field conversation_history.0.id" in result.stderr
    assert "document 3 (line 3), field shared" in result.stderr
    assert "document 4 (line 4), field fetched_context" in result.stderr
    assert "nothing was imported" in result.stderr
    assert target.export_session(str(docs[0]["metadata"]["session_id"])) == before  # type: ignore[index]


def test_every_invalid_document_is_reported(source: ContextManager, target: ContextManager) -> None:
    docs = _jsonl(source)
    docs[0]["metadata"]["session_id"] = ""  # type: ignore[index]
    del docs[4]["metadata"]  # type: ignore[attr-defined]
    text = "".join(json.dumps(d) + "\n" for d in docs)
    result = run(target, "import", "-", input=text)
    assert result.exit_code == 1
    assert "document 1 (line 1), field metadata.session_id" in result.stderr
    assert "document 5 (line 5), field metadata" in result.stderr
    assert "2 of 6 document(s) invalid" in result.stderr
    assert target.list_sessions() == []


def test_broken_json_line_is_located(source: ContextManager, target: ContextManager) -> None:
    lines = run(source, "export", "--all").stdout.splitlines()
    lines[3] = lines[3][:40]  # truncated line
    result = run(target, "import", "-", input="\n".join(lines))
    assert result.exit_code == 1
    assert "document 4 (line 4): not valid JSON" in result.stderr
    assert target.list_sessions() == []


def test_duplicate_session_ids_rejected(source: ContextManager, target: ContextManager) -> None:
    one = json.dumps(source.get_context("user-1"))
    result = run(target, "import", "-", input=f"{one}\n{one}\n")
    assert result.exit_code == 1
    assert "also in document 1 (line 1)" in result.stderr
    assert target.list_sessions() == []


def test_no_overwrite_checks_before_writing(source: ContextManager, target: ContextManager) -> None:
    target.add_user_message("user-3", "already here")
    exported = run(source, "export", "--all").stdout
    result = run(target, "import", "-", "--no-overwrite", input=exported)
    assert result.exit_code == 1
    assert "'user-3' already exists" in result.stderr
    assert target.list_sessions() == ["user-3"]
    assert target.get_history("user-3")[0]["content"] == "already here"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", "empty"), ("  \n", "empty"), ("[]", "empty JSON array"), ("42", "document 1")],
)
def test_unusable_files(target: ContextManager, text: str, expected: str) -> None:
    result = run(target, "import", "-", input=text)
    assert result.exit_code == 1
    assert expected in result.stderr


def test_missing_file_exits_1(target: ContextManager, tmp_path: Path) -> None:
    result = run(target, "import", str(tmp_path / "missing.json"))
    assert result.exit_code == 1
    assert "no such file" in result.stderr


# --------------------------------------------------------------------------- read_documents


def test_read_documents_formats() -> None:
    assert [d.data for d in read_documents('{"a": 1}')] == [{"a": 1}]
    assert [d.data for d in read_documents('[{"a": 1}, {"b": 2}]')] == [{"a": 1}, {"b": 2}]
    jsonl = read_documents('{"a": 1}\n\n{"b": 2}\n')
    assert [(d.index, d.line) for d in jsonl] == [(1, 1), (2, 3)]
    pretty = read_documents('{\n "a": 1\n}\n{\n "b": 2\n}')
    assert [(d.index, d.line, d.data) for d in pretty] == [(1, 1, {"a": 1}), (2, 4, {"b": 2})]


def test_read_documents_locates_errors() -> None:
    with pytest.raises(InputFileError, match=r"document 2 \(line 2\).*line 2 column"):
        read_documents('{"a": 1}\n{"b": }\n')
    with pytest.raises(InputFileError, match="document 1"):
        read_documents('{\n "a": 1,\n}')


def test_import_refuses_to_overflow_max_sessions(source: ContextManager) -> None:
    exported = run(source, "export", "--all").stdout
    with ContextManager(store=InMemoryStore(max_sessions=4)) as small:
        small.add_user_message("keep-me", "hello")
        result = run(small, "import", "-", input=exported)
        assert result.exit_code == 1
        assert "would hold 7 sessions but MAX_SESSIONS is 4" in result.stderr
        assert small.list_sessions() == ["keep-me"]


# --------------------------------------------------------------------------- SQLite


def test_sqlite_file_persists_between_invocations(
    source: ContextManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    db = str(tmp_path / "sessions.db")
    dump = tmp_path / "all.jsonl"
    assert run(source, "export", "--all", "-o", str(dump)).exit_code == 0

    imported = runner.invoke(app, ["--sqlite-path", db, "import", str(dump)])
    assert imported.exit_code == 0, imported.output
    listed = runner.invoke(app, ["--store", "sqlite", "--sqlite-path", db, "sessions", "list"])
    assert listed.stdout.splitlines() == source.list_sessions()
    shown = runner.invoke(app, ["--sqlite-path", db, "show", "demo-session", "--json"])
    assert json.loads(shown.stdout) == source.get_context("demo-session")
    deleted = runner.invoke(app, ["--sqlite-path", db, "delete", "user-0"])
    assert deleted.exit_code == 0
    again = runner.invoke(app, ["--sqlite-path", db, "export", "--all"])
    assert len(again.stdout.splitlines()) == 5
    assert runner.invoke(app, ["--sqlite-path", db, "gc"]).exit_code == 0


def test_settings_file_selects_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "settings.toml").write_text(
        '[ctx_memory]\nSTORE = "sqlite"\nSQLITE_PATH = "s.db"\n'
    )
    assert runner.invoke(app, ["demo", "--session-id", "from-settings"]).exit_code == 0
    listed = runner.invoke(app, ["sessions", "list"])
    assert listed.stdout.splitlines() == ["from-settings"]
    assert (tmp_path / "s.db").exists()
    # --store on the command line wins over the file
    assert runner.invoke(app, ["--store", "memory", "sessions", "list"]).stdout == ""


def test_an_unknown_store_is_a_usage_error_naming_the_known_ones() -> None:
    result = runner.invoke(app, ["--store", "mongo", "sessions", "list"])
    assert result.exit_code == 2
    assert "known stores: memory, postgres, redis, sqlite" in result.output


# --------------------------------------------------------------------------- --postgres-url


def test_bad_postgres_url_is_a_usage_error_naming_the_key() -> None:
    result = runner.invoke(app, ["--postgres-url", "http://u:hunter2@x/db", "sessions", "list"])
    assert result.exit_code == 2
    assert "POSTGRES_URL" in result.stderr
    assert "hunter2" not in result.output


@pytest.mark.parametrize(
    "pair",
    [
        ["--sqlite-path", "x.db", "--postgres-url", "postgresql://h/db"],
        ["--redis-url", "redis://h", "--postgres-url", "postgresql://h/db"],
    ],
)
def test_two_implied_stores_without_store_is_a_usage_error(pair: list[str]) -> None:
    result = runner.invoke(app, [*pair, "gc"])
    assert result.exit_code == 2
    assert "--postgres-url" in result.output


def test_unreachable_postgres_is_one_line_without_the_password() -> None:
    """psycopg_pool's per-attempt warnings stay off stderr: one line, no secret."""
    import socket

    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql://alice:hunter2@127.0.0.1:{port}/db"
    env = {"CTX_MEMORY_POSTGRES_CONNECT_TIMEOUT": "1"}
    result = runner.invoke(app, ["--postgres-url", url, "sessions", "list"], env=env)
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        f"error: PostgreSQL at postgresql://alice:***@127.0.0.1:{port}/db is unavailable: "
        "couldn't get a connection after 1.00 sec (connecting: "
    )
    assert "Connection refused" in line  # why, in the server's (libpq's) words
    assert "hunter2" not in result.output
