"""``ctx-memory import`` writes all or nothing (issue 8, item 8).

A SQLite file holds a few sessions; an export of other sessions is corrupted at the first,
a middle or the last document with something a store would refuse (a lone surrogate, a
value nested too deeply, an integer beyond 64 bits, a string or a JSON text instead of an
object...). Importing it through the real CLI must exit 1 with one ``error:`` line per bad
document naming it and the field, print no traceback, and leave the store exactly as it
was. The Redis half (and a write failing half-way) is in tests/integration/test_cli_redis.py.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from typer.testing import CliRunner

from ctx_memory import ContextManager
from ctx_memory.cli import app

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from typer.testing import Result

runner = CliRunner()
N = 6
LONE = "\\ud83d"  # a lone surrogate, as JSON text escapes it


def open_db(path: str) -> ContextManager:
    return ContextManager(store="sqlite", sqlite_path=path, token_counter="approximate")


def snapshot(path: str) -> dict[str, Any]:
    with open_db(path) as cm:
        return {sid: cm.get_context(sid) for sid in cm.list_sessions()}


@pytest.fixture
def docs(tmp_path: Path) -> list[dict[str, Any]]:
    """N exported session documents (from a scratch SQLite file)."""
    with open_db(str(tmp_path / "source.db")) as cm:
        for i in range(N):
            sid = f"imported-{i}"
            cm.set_system_prompt(sid, f"prompt {i}")
            cm.update_metadata(sid, current_url=f"https://e.example/{i}", tenant=f"t{i}")
            cm.add_user_message(sid, f"question {i}")
            cm.add_assistant_message(sid, f"answer {i}", model="fake")
            cm.add_fetched_context(sid, "web_search", f"body {i}", url=f"https://r/{i}")
            cm.set_context(sid, "plan", {"step": i})
        return [cm.get_context(f"imported-{i}") for i in range(N)]


@pytest.fixture
def db(tmp_path: Path) -> str:
    """The target store: two sessions of its own, one of them also in the file."""
    path = str(tmp_path / "target.db")
    with open_db(path) as cm:
        cm.add_user_message("already-here", "keep me")
        cm.add_user_message("imported-0", "an older imported-0")
    return path


def jsonl(docs: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(d) + "\n" for d in docs)


def run_import(db: str, text: str, *extra: str) -> Result:
    return runner.invoke(app, ["--sqlite-path", db, "import", "-", *extra], input=text)


def assert_rejected(result: Result, *expected: str) -> None:
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert "nothing was imported" in result.stderr
    assert result.stdout == ""
    for text in expected:
        assert text in result.stderr, (text, result.stderr)


def with_lone_surrogate(doc: dict[str, Any]) -> str:
    """``doc`` as one JSON line whose first message holds a lone surrogate."""
    line = json.dumps(doc)
    content = json.dumps(doc["conversation_history"][0]["content"])
    return line.replace(content, content[:-1] + LONE + '"', 1)


POSITIONS = [0, N // 2, N - 1]


@pytest.mark.parametrize("bad", POSITIONS, ids=["first", "middle", "last"])
def test_lone_surrogate_anywhere_imports_nothing(
    docs: list[dict[str, Any]], db: str, bad: int
) -> None:
    before = snapshot(db)
    lines = [json.dumps(d) for d in docs]
    lines[bad] = with_lone_surrogate(docs[bad])
    result = run_import(db, "\n".join(lines) + "\n")
    assert_rejected(
        result,
        f"document {bad + 1} (line {bad + 1}), field conversation_history",
        "surrogate",
        f"1 of {N} document(s) invalid",
    )
    assert snapshot(db) == before


@pytest.mark.parametrize("bad", POSITIONS, ids=["first", "middle", "last"])
def test_json_array_with_a_bad_document_imports_nothing(
    docs: list[dict[str, Any]], db: str, bad: int
) -> None:
    before = snapshot(db)
    items = [json.dumps(d) for d in docs]
    items[bad] = with_lone_surrogate(docs[bad])
    result = run_import(db, "[\n" + ",\n".join(items) + "\n]\n")
    assert_rejected(result, f"document {bad + 1} (line 1)", "surrogate")
    assert snapshot(db) == before


def _deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"d": value}
    return value


def _set_shared(value: object) -> Callable[[dict[str, Any]], object]:
    def corrupt(doc: dict[str, Any]) -> object:
        doc["shared"]["bad"] = value
        return doc

    return corrupt


def _surrogate_key(doc: dict[str, Any]) -> object:
    doc["shared"]["key\ud83d"] = 1
    return doc


def _surrogate_source_type(doc: dict[str, Any]) -> object:
    items = doc["fetched_context"].pop("web_search")
    for item in items:
        item["source_type"] = "web\udc00"
    doc["fetched_context"]["web\udc00"] = items
    return doc


def _surrogate_metadata(doc: dict[str, Any]) -> object:
    doc["metadata"]["current_url"] = "https://e.example/\ud800"
    return doc


def _bad_role(doc: dict[str, Any]) -> object:
    doc["conversation_history"][1]["role"] = "wizard"
    return doc


def _bad_session_id(doc: dict[str, Any]) -> object:
    doc["metadata"]["session_id"] = "  "
    return doc


def _as_string(doc: dict[str, Any]) -> object:
    return "just a string"


def _double_encoded(doc: dict[str, Any]) -> object:
    return json.dumps(doc)  # a JSON string whose content is the document


CORRUPTIONS: dict[str, tuple[Callable[[dict[str, Any]], object], str]] = {
    "surrogate in a shared key": (_surrogate_key, "field shared"),
    "surrogate in a source type": (_surrogate_source_type, "field fetched_context"),
    "surrogate in metadata": (_surrogate_metadata, "field metadata"),
    "nested 150 deep": (_set_shared(_deep(150)), "field shared.bad"),
    "int beyond 64 bits": (_set_shared(2**64), "field shared.bad"),
    "int below 64 bits": (_set_shared(-(2**63) - 1), "field shared.bad"),
    "unknown role": (_bad_role, "field conversation_history.1.role"),
    "blank session id": (_bad_session_id, "field metadata.session_id"),
    "a string": (_as_string, "is a string, expected a session object"),
    "double-encoded": (_double_encoded, "is a string, expected a session object"),
    "a number": (lambda _doc: 42, "is a number, expected a session object"),
    "null": (lambda _doc: None, "is null, expected a session object"),
}


@pytest.mark.parametrize("bad", POSITIONS, ids=["first", "middle", "last"])
@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_any_refused_value_imports_nothing(
    docs: list[dict[str, Any]], db: str, bad: int, kind: str
) -> None:
    corrupt, expected = CORRUPTIONS[kind]
    before = snapshot(db)
    values: list[object] = list(docs)
    values[bad] = corrupt(json.loads(json.dumps(docs[bad])))
    result = run_import(db, "".join(json.dumps(v) + "\n" for v in values))
    assert_rejected(result, f"document {bad + 1}", expected)
    assert snapshot(db) == before


def test_every_bad_document_is_listed(docs: list[dict[str, Any]], db: str) -> None:
    before = snapshot(db)
    lines = [json.dumps(d) for d in docs]
    lines[0] = with_lone_surrogate(docs[0])
    lines[2] = json.dumps(json.dumps(docs[2]))
    lines[-1] = json.dumps(_set_shared(2**70)(json.loads(lines[-1])))
    result = run_import(db, "\n".join(lines))
    assert_rejected(
        result,
        "document 1 (line 1), field conversation_history",
        "document 3 is a string, expected a session object (line 3)",
        "encoded twice",
        f"document {N} (line {N}), field shared.bad",
        f"3 of {N} document(s) invalid",
    )
    assert snapshot(db) == before


def test_array_of_strings_is_named_as_such(db: str) -> None:
    before = snapshot(db)
    result = run_import(db, '["a", "b"]')
    assert_rejected(
        result,
        "document 1 is a string, expected a session object",
        "document 2 is a string, expected a session object",
    )
    assert "not valid JSON" not in result.stderr
    assert snapshot(db) == before


def test_a_double_encoded_file_is_not_imported(docs: list[dict[str, Any]], db: str) -> None:
    before = snapshot(db)
    result = run_import(db, json.dumps(json.dumps(docs[1])))
    assert_rejected(result, "document 1 is a string", "encoded twice")
    assert snapshot(db) == before


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"a": ' + "9" * 5000 + "}", "document 1 (line 1)"),
        ('{"a": 1}\n{"b": }', "document 2 (line 2): not valid JSON"),
    ],
    ids=["deep", "huge-int-literal", "broken"],
)
def test_undecodable_files_import_nothing(db: str, text: str, expected: str) -> None:
    before = snapshot(db)
    result = run_import(db, text)
    assert_rejected(result, expected)
    assert snapshot(db) == before


def test_invalid_utf8_on_stdin(db: str) -> None:
    before = snapshot(db)
    result = runner.invoke(
        app, ["--sqlite-path", db, "import", "-"], input=b'{"a": "\xed\xa0\xbd"}\n'
    )
    assert_rejected(result, "cannot read")
    assert snapshot(db) == before


def test_a_good_file_still_imports_everything(docs: list[dict[str, Any]], db: str) -> None:
    result = run_import(db, jsonl(docs))
    assert result.exit_code == 0, result.output
    after = snapshot(db)
    assert sorted(after) == sorted(["already-here", *(f"imported-{i}" for i in range(N))])
    assert after["imported-0"]["conversation_history"][0]["content"] == "question 0"


def test_dry_run_writes_nothing(docs: list[dict[str, Any]], db: str) -> None:
    before = snapshot(db)
    result = run_import(db, jsonl(docs), "--dry-run")
    assert result.exit_code == 0, result.output
    assert snapshot(db) == before
