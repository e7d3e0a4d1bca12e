"""``ctx-memory --postgres-url``: the CLI on a real PostgreSQL server the suite starts."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest
from typer.testing import CliRunner

from ctx_memory.cli import app

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.postgres

runner = CliRunner()


def test_postgres_url_selects_the_store(postgres_url: str, pg_schema: str, tmp_path: Path) -> None:
    env = {"CTX_MEMORY_POSTGRES_SCHEMA": pg_schema}
    args = ["--postgres-url", postgres_url]
    demo = runner.invoke(app, [*args, "demo"], env=env)
    assert demo.exit_code == 0, demo.output
    listed = runner.invoke(app, [*args, "sessions", "list"], env=env)
    assert listed.stdout.split() == ["demo-session"]
    dump = tmp_path / "demo.json"
    exported = runner.invoke(app, [*args, "export", "demo-session", "-o", str(dump)], env=env)
    assert exported.exit_code == 0, exported.output
    document = json.loads(dump.read_text())
    assert document["metadata"]["session_id"] == "demo-session"
    assert len(document["conversation_history"]) >= 2
    # The same server and schema through --store and the environment: one setting moves.
    env["CTX_MEMORY_POSTGRES_URL"] = postgres_url
    shown = runner.invoke(app, ["--store", "postgres", "show", "demo-session", "--json"], env=env)
    assert json.loads(shown.stdout)["conversation_history"] == document["conversation_history"]
    password = urlsplit(postgres_url).password
    assert password
    assert password not in f"{demo.output}{listed.output}{exported.output}{shown.output}"
