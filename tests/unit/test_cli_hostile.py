"""The CLI prints stored data literally (issue 8, item 6).

Sessions whose ids, metadata, source types, titles, URLs, models, shared keys and contents
hold rich markup (``[/]``, ``[bold]x[/bold]``) and control characters (ESC, CR LF, NUL,
BEL) are written to a SQLite file with the library; every command then runs through the
real CLI (``--sqlite-path``). Nothing may crash, markup must show as typed, and no raw
control character may reach the terminal (newlines only between lines, and inside message
bodies).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import pytest
from typer.testing import CliRunner

from ctx_memory import ContextManager
from ctx_memory.cli import app, printable

if TYPE_CHECKING:
    from pathlib import Path

    from typer.testing import Result

runner = CliRunner()

MARKUP_IDS = ["[/]", "[bold]x[/bold]", "a]b[", "[red]", "[link=https://evil.example]go[/link]"]
EVIL_ID = "evil\r\n\x1b[31mid\x00"  # stored behind the manager's back: new ids refuse it
RAW_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")  # anything but the line feed
WIDE = {"COLUMNS": "300"}


@pytest.fixture
def db(tmp_path: Path) -> str:
    """Sessions with markup in their ids and hostile values everywhere else."""
    path = str(tmp_path / "hostile.db")
    with ContextManager(store="sqlite", sqlite_path=path, token_counter="approximate") as cm:
        for sid in MARKUP_IDS:
            cm.update_metadata(
                sid,
                current_url="[/]",
                **{"[/]extra": "\x1b[31mred\r\nline", "note": "[red]n\x07"},
            )
            # a zone the manager now refuses, as a session stored before it checked them has
            header = cm.get_header(sid)
            assert header is not None
            header["metadata"] = {**header["metadata"], "user_timezone": "[bold]tz[/bold]"}
            cm.store.replace_document(sid, header, [], [])
            cm.set_system_prompt(sid, "You are [bold]bold[/bold]\x1b[2J.")
            cm.add_fetched_context(
                sid,
                "[/]",
                "body [/]",
                url="https://x.example/[/]",
                extracted_data={"title": "[bold]T[/bold]\x1b[2J"},
            )
            cm.add_fetched_context(sid, "web\r\n\x1b[31msearch", "c", url="u\x1b]8;;x\x07")
            cm.set_context(sid, "[/]", "[red]v")
            cm.set_context(sid, "key\r\n\x1b[31m", 1)
            cm.add_user_message(sid, "hello [/] \x1b[31mred\r\nsecond line")
            cm.add_assistant_message(sid, "[bold]reply[/bold]", model="[/]model\x1b[0m")
    return path


@pytest.fixture
def evil_db(db: str) -> str:
    """``db`` plus a session whose id holds control characters, written to the store
    directly (the manager refuses such new ids)."""
    with ContextManager(store="sqlite", sqlite_path=db, token_counter="approximate") as cm:
        header = cm.get_header(MARKUP_IDS[0])
        assert header is not None
        header["metadata"] = {**header["metadata"], "session_id": EVIL_ID}
        cm.store.replace_document(EVIL_ID, header, [], [])
        assert EVIL_ID in cm.list_sessions()
    return db


def run(db: str, *args: str, env: dict[str, str] | None = None) -> Result:
    return runner.invoke(app, ["--sqlite-path", db, *args], env={**WIDE, **(env or {})})


def contexts(db: str) -> dict[str, Any]:
    with ContextManager(store="sqlite", sqlite_path=db, token_counter="approximate") as cm:
        return {sid: cm.get_context(sid) for sid in cm.list_sessions()}


def assert_clean(result: Result) -> None:
    """Ran to the end, with no raw control character and no traceback."""
    out = result.stdout + result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), out
    assert RAW_CONTROL.search(out) is None, repr(out)
    assert "Traceback" not in out


def test_printable() -> None:
    assert printable("a\r\nb\x1b[31m\x00\x7f") == "a\\r\\nb\\x1b[31m\\x00\\x7f"
    assert printable("a\nb\tc\rd", multiline=True) == "a\nb\tc\\rd"
    assert printable("\u202eevil\u2028") == "\\u202eevil\\u2028"
    assert printable("[bold]x[/bold] é ✓") == "[bold]x[/bold] é ✓"


def test_sessions_list_plain_and_json(evil_db: str) -> None:
    db = evil_db
    result = run(db, "sessions", "list")
    assert result.exit_code == 0, result.output
    assert_clean(result)
    ids = sorted([*MARKUP_IDS, EVIL_ID])
    assert sorted(result.stdout.splitlines()) == sorted(printable(i) for i in ids)
    assert "evil\\r\\n\\x1b[31mid\\x00" in result.stdout
    listed = run(db, "sessions", "list", "--json")
    assert sorted(json.loads(listed.stdout)) == ids


def test_sessions_list_long(evil_db: str) -> None:
    """One session the manager cannot read does not hide the others."""
    db = evil_db
    result = run(db, "sessions", "list", "-l")
    assert result.exit_code == 0, result.output
    assert_clean(result)
    for sid in MARKUP_IDS:
        assert sid in result.stdout
    assert "evil\\r\\n\\x1b[31mid\\x00" in result.stdout


@pytest.mark.parametrize("sid", MARKUP_IDS)
def test_show(db: str, sid: str) -> None:
    result = run(db, "show", sid, "--full")
    assert result.exit_code == 0, result.output
    assert_clean(result)
    out = result.stdout
    for literal in (
        f"session {sid}",
        "[bold]tz[/bold]",
        "[/]extra",
        "\\x1b[31mred\\r\\nline",
        "[red]n\\x07",
        "You are [bold]bold[/bold]\\x1b[2J.",
        "[bold]T[/bold]\\x1b[2J",
        "web\\r\\n\\x1b[31msearch",
        "u\\x1b]8;;x\\x07",
        "[/]model\\x1b[0m",
        "[bold]reply[/bold]",
        "hello [/] \\x1b[31mred\\r",
        "second line",
        '{\n  "[/]": "[red]v",\n',  # shared state: indented JSON, one key a line
        "key\\r\\n\\u001b[31m",  # shared state is shown as JSON
    ):
        assert literal in out, literal


@pytest.mark.parametrize("command", ["show", "stats", "export", "delete"])
def test_commands_on_the_session_with_a_control_character_id(evil_db: str, command: str) -> None:
    """Shown escaped if the manager reads such an id, else refused in one escaped line."""
    result = run(evil_db, command, EVIL_ID)
    assert_clean(result)
    assert result.exit_code in (0, 1)
    if result.exit_code == 1:
        assert "evil\\r\\n\\x1b[31mid\\x00" in result.stderr
    elif command in ("show", "stats"):
        assert "evil\\r\\n\\x1b[31mid\\x00" in result.stdout


def test_markup_is_not_rendered_even_on_a_colour_terminal(db: str) -> None:
    result = run(db, "show", "[bold]x[/bold]", env={"FORCE_COLOR": "1", "TERM": "xterm"})
    assert result.exit_code == 0, result.output
    assert "[bold]x[/bold]" in result.stdout
    assert "[bold]reply[/bold]" in result.stdout
    assert "\x1b[31m" not in result.stdout  # the stored ESC never reaches the terminal
    listed = run(db, "sessions", "list", "-l", env={"FORCE_COLOR": "1", "TERM": "xterm"})
    assert listed.exit_code == 0, listed.output
    assert "[bold]x[/bold]" in listed.stdout


@pytest.mark.parametrize("sid", MARKUP_IDS)
def test_show_json_is_the_document(db: str, sid: str) -> None:
    result = run(db, "show", sid, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == contexts(db)[sid]


@pytest.mark.parametrize("sid", MARKUP_IDS)
def test_stats_of_a_session(db: str, sid: str) -> None:
    result = run(db, "stats", sid)
    assert result.exit_code == 0, result.output
    assert_clean(result)
    assert "[/]" in result.stdout  # a source type and a shared key
    assert "web\\r\\n\\u001b[31msearch" in result.stdout  # source types: shown as JSON
    as_json = run(db, "stats", sid, "--json")
    assert json.loads(as_json.stdout)["shared_keys"] == sorted(["[/]", "key\r\n\x1b[31m"])


def test_stats_of_the_store(db: str) -> None:
    result = run(db, "stats")
    assert result.exit_code == 0, result.output
    assert_clean(result)
    assert json.loads(run(db, "stats", "--json").stdout)["session_count"] == len(MARKUP_IDS)


def test_export_and_import_keep_every_value(db: str, tmp_path: Path) -> None:
    one = run(db, "export", "[/]")
    assert one.exit_code == 0, one.output
    assert json.loads(one.stdout) == {"format_version": 1, **contexts(db)["[/]"]}
    dump = tmp_path / "all.jsonl"
    every = run(db, "export", "--all", "-o", str(dump))
    assert every.exit_code == 0, every.output
    assert_clean(every)
    copy = str(tmp_path / "copy.db")
    imported = run(copy, "import", str(dump))
    assert imported.exit_code == 0, imported.output
    assert_clean(imported)
    original, copied = contexts(db), contexts(copy)
    assert sorted(copied) == sorted(original)
    for sid in MARKUP_IDS:
        assert copied[sid]["shared"] == original[sid]["shared"]
        assert copied[sid]["fetched_context"].keys() == original[sid]["fetched_context"].keys()
        assert (
            copied[sid]["conversation_history"][0]["content"]
            == (original[sid]["conversation_history"][0]["content"])
        )


def test_delete_and_gc(db: str) -> None:
    deleted = run(db, "delete", "[/]", "[bold]x[/bold]")
    assert deleted.exit_code == 0, deleted.output
    assert sorted(contexts(db)) == sorted(MARKUP_IDS[2:])
    missing = run(db, "delete", "[/]", "\x1b[31mnope\r\n")
    assert missing.exit_code == 1
    assert_clean(missing)
    assert "\\x1b[31mnope\\r\\n" in missing.stderr
    assert_clean(run(db, "gc"))


def test_missing_hostile_session_error_is_escaped(db: str) -> None:
    for command in ("show", "stats", "export"):
        result = run(db, command, "\x1b[2Jgone\r\n[/]")
        assert result.exit_code == 1
        assert_clean(result)
        assert "\\x1b[2Jgone\\r\\n[/]" in result.stderr


def test_demo_on_a_hostile_session(db: str) -> None:
    result = run(db, "demo", "--session-id", "[bold]x[/bold]")
    assert result.exit_code == 0, result.output
    assert_clean(result)
    assert "[bold]x[/bold]" in result.stdout
