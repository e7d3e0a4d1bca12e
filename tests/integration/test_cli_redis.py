"""The CLI moves many sessions SQLite → file → Redis → file → SQLite with nothing lost.

Uses the real ``redis-server`` the suite starts (``redis_url`` fixture) and a SQLite file;
each test writes under its own Redis key prefix and deletes it afterwards.
"""

from __future__ import annotations

import json
import socket
from typing import TYPE_CHECKING, Any

import pytest
import redis
import redis.cluster
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from typer.testing import CliRunner

from ctx_memory import ContextManager, ContextMode, load_settings
from ctx_memory.cli import app

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.redis

N_SESSIONS = 250
runner = CliRunner()


@pytest.fixture
def redis_env(redis_url: str, key_prefix: str) -> Iterator[dict[str, str]]:
    """Environment pointing the CLI at the test server under a unique key prefix."""
    yield {"CTX_MEMORY_REDIS_URL": redis_url, "CTX_MEMORY_REDIS_KEY_PREFIX": key_prefix}
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{key_prefix}:*", count=1000):
        client.delete(key)
    client.close()


def redis_keys(redis_url: str, key_prefix: str) -> list[bytes]:
    client = redis.Redis.from_url(redis_url)
    try:
        return list(client.scan_iter(match=f"{key_prefix}:*", count=1000))
    finally:
        client.close()


def session_id(i: int) -> str:
    """Ids that stress key naming: braces (hash tags), colons, spaces, unicode."""
    return ["plain-{i}", "user:{i}:chat", "{{tag}}-{i}", "spaces and ✓ {i}", "a/b\\c {i}"][
        i % 5
    ].format(i=i)


def fill(db: Path) -> list[str]:
    """Write N_SESSIONS varied sessions into a SQLite file with the library itself."""
    settings = load_settings(store="sqlite", sqlite_path=str(db)).model_copy(
        update={"max_sessions": None}  # keyword overrides ignore None
    )
    ids = []
    with ContextManager(settings) as cm:
        for i in range(N_SESSIONS):
            sid = session_id(i)
            ids.append(sid)
            if i % 3:
                cm.set_system_prompt(sid, f"You are assistant #{i}. Ünïcödé ok.")
            cm.update_metadata(
                sid, mode=ContextMode.RESEARCH if i % 2 else ContextMode.NORMAL, tenant=f"t{i % 7}"
            )
            cm.add_user_message(sid, f"question {i}: what about «{i}»?")
            cm.add_fetched_context(
                sid,
                "web_search",
                f"result body {i}",
                url=f"https://example.com/{i}",
                extracted_data={"title": f"Result {i}", "site_name": "Example", "rank": i},
            )
            if i % 4 == 0:
                cm.add_messages(
                    sid,
                    [
                        AIMessage(
                            content="",
                            tool_calls=[{"name": "search", "args": {"q": str(i)}, "id": f"c{i}"}],
                        ),
                        ToolMessage(content=f"tool output {i}", tool_call_id=f"c{i}"),
                        HumanMessage(content=[{"type": "text", "text": f"block {i}"}]),
                    ],
                )
            cm.add_assistant_message(
                sid, f"answer {i}", model="fake", response_time_ms=i, sources_used=[f"u{i}"]
            )
            cm.update_partial_context(sid, {"plan": {"step": i, "done": [1, 2]}, "flag": True})
    return ids


def load(path: Path) -> dict[str, dict[str, Any]]:
    docs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return {d["metadata"]["session_id"]: d for d in docs}


def normalised(docs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``system_prompt_tokens: 0`` written by import for prompt-less sessions = absent."""
    for doc in docs.values():
        if doc["metadata"].get("system_prompt_tokens") == 0:
            del doc["metadata"]["system_prompt_tokens"]
    return docs


def cli(args: list[str], env: dict[str, str] | None = None, input: str | None = None) -> Any:
    return runner.invoke(app, args, env=env, input=input)


@pytest.mark.slow
def test_round_trip_sqlite_file_redis_file_sqlite(
    tmp_path: Path, redis_env: dict[str, str], redis_url: str, key_prefix: str
) -> None:
    first_db, second_db = tmp_path / "first.db", tmp_path / "second.db"
    file1, file2, file3 = (tmp_path / f"export{n}.jsonl" for n in (1, 2, 3))
    ids = fill(first_db)

    sqlite1 = ["--sqlite-path", str(first_db), "--max-sessions", "0"]
    to_redis = ["--store", "redis", "--max-sessions", "0"]
    sqlite2 = ["--sqlite-path", str(second_db), "--max-sessions", "0"]

    result = cli([*sqlite1, "export", "--all", "-o", str(file1)])
    assert result.exit_code == 0, result.output
    assert f"exported {N_SESSIONS} session(s)" in result.stderr

    result = cli([*to_redis, "import", str(file1)], env=redis_env)
    assert result.exit_code == 0, result.output
    assert f"imported {N_SESSIONS} session(s)" in result.stderr

    listed = cli([*to_redis, "sessions", "list"], env=redis_env)
    assert sorted(listed.stdout.splitlines()) == sorted(ids)

    result = cli([*to_redis, "export", "--all", "-o", str(file2)], env=redis_env)
    assert result.exit_code == 0, result.output

    first, second = load(file1), load(file2)
    assert len(first) == N_SESSIONS
    assert normalised(second) == normalised(first)

    # and back into a fresh SQLite file: byte-identical export
    assert cli([*sqlite2, "import", str(file2)]).exit_code == 0
    assert cli([*sqlite2, "export", "--all", "-o", str(file3)]).exit_code == 0
    assert file3.read_bytes() == file2.read_bytes()

    # one session, pretty JSON, the same document everywhere
    sid = session_id(8)
    from_sqlite = cli([*sqlite1, "show", sid, "--json"])
    from_redis = cli([*to_redis, "show", sid, "--json"], env=redis_env)
    assert normalised({sid: json.loads(from_redis.stdout)}) == normalised(
        {sid: json.loads(from_sqlite.stdout)}
    )
    assert redis_keys(redis_url, key_prefix)


def test_bad_file_writes_nothing_to_redis(
    tmp_path: Path, redis_env: dict[str, str], redis_url: str, key_prefix: str
) -> None:
    db = tmp_path / "s.db"
    fill_small = load_settings(store="sqlite", sqlite_path=str(db))
    with ContextManager(fill_small) as cm:
        for i in range(5):
            cm.add_user_message(f"s{i}", f"hello {i}")
    good = cli(["--sqlite-path", str(db), "export", "--all"]).stdout.splitlines()
    bad = good[:]
    doc = json.loads(bad[4])
    doc["conversation_history"][0]["token_count"] = -3
    bad[4] = json.dumps(doc)
    result = cli(["--store", "redis", "import", "-"], env=redis_env, input="\n".join(bad))
    assert result.exit_code == 1
    assert "document 5 (line 5), field conversation_history.0.token_count" in result.stderr
    assert "nothing was imported" in result.stderr
    assert redis_keys(redis_url, key_prefix) == []


def test_unreachable_redis_exits_1_without_the_password(
    redis_env: dict[str, str], key_prefix: str
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    url = f"redis://user:hunter2@127.0.0.1:{port}/0"
    env = {**redis_env, "CTX_MEMORY_REDIS_MAX_RETRIES": "0"}
    result = cli(["--redis-url", url, "sessions", "list"], env=env)
    assert result.exit_code == 1
    assert "hunter2" not in result.output
    assert "***" in result.stderr


@pytest.mark.cluster
def test_round_trip_through_redis_cluster(
    tmp_path: Path, redis_cluster_url: str, key_prefix: str
) -> None:
    """Sessions spread over three masters come back the same (each session in one slot)."""
    db = tmp_path / "first.db"
    fill(db)
    file1, file2 = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    env = {
        "CTX_MEMORY_REDIS_URL": redis_cluster_url,
        "CTX_MEMORY_REDIS_CLUSTER": "true",
        "CTX_MEMORY_REDIS_KEY_PREFIX": key_prefix,
    }
    cluster = ["--store", "redis", "--max-sessions", "0"]
    try:
        assert (
            cli(
                [
                    "--sqlite-path",
                    str(db),
                    "--max-sessions",
                    "0",
                    "export",
                    "--all",
                    "-o",
                    str(file1),
                ]
            ).exit_code
            == 0
        )
        imported = cli([*cluster, "import", str(file1)], env=env)
        assert imported.exit_code == 0, imported.output
        exported = cli([*cluster, "export", "--all", "-o", str(file2)], env=env)
        assert exported.exit_code == 0, exported.output
        assert normalised(load(file2)) == normalised(load(file1))
    finally:
        client = redis.cluster.RedisCluster.from_url(redis_cluster_url)
        for key in client.scan_iter(match=f"{key_prefix}:*", count=1000):
            client.delete(key)
        client.close()


# --------------------------------------------------------------------------- issue 8


def redis_manager(redis_url: str, key_prefix: str) -> ContextManager:
    return ContextManager(
        store="redis", redis_url=redis_url, redis_key_prefix=key_prefix, token_counter="approximate"
    )


def snapshot(redis_url: str, key_prefix: str) -> dict[str, dict[str, Any]]:
    with redis_manager(redis_url, key_prefix) as cm:
        return normalised({sid: cm.get_context(sid) for sid in cm.list_sessions()})


@pytest.mark.parametrize("bad", [0, 2, 4], ids=["first", "middle", "last"])
def test_lone_surrogate_anywhere_writes_nothing_to_redis(
    tmp_path: Path, redis_env: dict[str, str], redis_url: str, key_prefix: str, bad: int
) -> None:
    with redis_manager(redis_url, key_prefix) as cm:
        cm.add_user_message("already-here", "keep me")
        cm.add_user_message("s1", "an older s1")
    before, keys = snapshot(redis_url, key_prefix), sorted(redis_keys(redis_url, key_prefix))
    db = tmp_path / "s.db"
    with ContextManager(load_settings(store="sqlite", sqlite_path=str(db))) as cm:
        for i in range(5):
            cm.add_user_message(f"s{i}", f"hello {i}")
    lines = cli(["--sqlite-path", str(db), "export", "--all"]).stdout.splitlines()
    lines[bad] = lines[bad].replace(f'"hello {bad}"', f'"hello {bad}\\ud83d"')
    result = cli(["--store", "redis", "import", "-"], env=redis_env, input="\n".join(lines))
    assert result.exit_code == 1, result.output
    assert f"document {bad + 1} (line {bad + 1}), field conversation_history" in result.stderr
    assert "nothing was imported" in result.stderr
    assert "Traceback" not in result.output
    assert snapshot(redis_url, key_prefix) == before
    assert sorted(redis_keys(redis_url, key_prefix)) == keys


def test_a_write_failing_half_way_is_undone(
    redis_server_factory: Any, tmp_path: Path, key_prefix: str
) -> None:
    """The server refuses the file's 6th session (a request over ``proto-max-bulk-len``),
    which validation cannot know: the sessions written before are taken back."""
    server = redis_server_factory("--proto-max-bulk-len", "1mb")
    with redis_manager(server.url, key_prefix) as cm:
        cm.add_user_message("s0", "the original s0")  # in the file too: restored
        cm.add_user_message("already-here", "keep me")
    before = snapshot(server.url, key_prefix)
    with ContextManager(
        store="sqlite", sqlite_path=str(tmp_path / "s.db"), token_counter="approximate"
    ) as cm:
        for i in range(8):
            cm.add_user_message(f"s{i}", f"imported {i} " + ("x" * 1_500_000 if i == 5 else ""))
        text = "".join(json.dumps(cm.get_context(f"s{i}")) + "\n" for i in range(8))
    env = {
        "CTX_MEMORY_REDIS_URL": server.url,
        "CTX_MEMORY_REDIS_KEY_PREFIX": key_prefix,
        "CTX_MEMORY_TOKEN_COUNTER": "approximate",
        "CTX_MEMORY_REDIS_MAX_RETRIES": "0",
    }
    result = cli(["--store", "redis", "import", "-"], env=env, input=text)
    assert result.exit_code == 1, result.output
    assert "document 6 (line 6)" in result.stderr
    assert "nothing was imported (the 5 written were undone)" in result.stderr
    assert "Traceback" not in result.output
    assert snapshot(server.url, key_prefix) == before


def test_hostile_values_are_printed_literally_from_redis(
    redis_env: dict[str, str], redis_url: str, key_prefix: str
) -> None:
    with redis_manager(redis_url, key_prefix) as cm:
        for sid in ("[/]", "[bold]x[/bold]"):
            cm.update_metadata(sid, current_url="[/]", note="\x1b[31mred\r\n")
            cm.add_fetched_context(sid, "[/]", "body", extracted_data={"title": "[b]t"})
            cm.set_context(sid, "[/]", 1)
            cm.add_user_message(sid, "[bold]hi[/bold]")
    env = {**redis_env, "COLUMNS": "250"}
    for command in (
        ["sessions", "list"],
        ["sessions", "list", "-l"],
        ["show", "[/]"],
        ["show", "[bold]x[/bold]"],
        ["stats", "[/]"],
        ["stats"],
    ):
        result = cli(["--store", "redis", *command], env=env)
        assert result.exit_code == 0, (command, result.output)
        assert "\x1b" not in result.stdout
        assert "\r" not in result.stdout
    shown = cli(["--store", "redis", "show", "[bold]x[/bold]"], env=env).stdout
    for literal in (
        "session [bold]x[/bold]",
        "[/]",
        "\\x1b[31mred\\r\\n",
        "[b]t",
        "[bold]hi[/bold]",
    ):
        assert literal in shown, literal
    assert "[bold]x[/bold]" in cli(["--store", "redis", "sessions", "list", "-l"], env=env).stdout
