"""Data written by the previous release opens with this one; newer formats are refused.

The fixtures in ``tests/fixtures`` were written by the release at commit 028122d (before
versions were recorded everywhere) from one scripted workload:

* ``document-v1.json``: ``export_session("s1")``, a session document without
  ``format_version`` (version 1);
* ``sqlite-v2.sqlite3``: the SQLite file of the same workload (schema version 2);
* ``redis-layout-1.json``: every key that workload left on a Redis server (type, value and
  TTL; key names without their prefix), before the layout version key existed.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import redis

from ctx_memory import ContextManager
from ctx_memory.errors import DocumentImportError, StoreError, StoreVersionError
from ctx_memory.schema import DOCUMENT_FORMAT_VERSION, parse_document
from ctx_memory.stores._redis_keys import LAYOUT_VERSION, layout_key
from ctx_memory.stores.redis import RedisStore
from ctx_memory.stores.sqlite import SCHEMA_VERSION, SqliteStore

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DOCUMENT: dict[str, Any] = json.loads((FIXTURES / "document-v1.json").read_text())
SESSIONS = ["s1", "s2 ü ✓"]


def _without_volatile(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k != "format_version"}


def _content(document: dict[str, Any]) -> dict[str, Any]:
    """What the workload wrote, without the times and ids it happened to get."""
    volatile = {"timestamp", "created_at", "id"}

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in volatile}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(_without_volatile(document))  # type: ignore[no-any-return]


# ------------------------------------------------------------------ the session document


def test_a_document_without_format_version_is_version_one() -> None:
    assert "format_version" not in DOCUMENT
    assert parse_document(DOCUMENT).format_version == 1
    with ContextManager(store="memory") as cm:
        assert cm.import_session(DOCUMENT) == "s1"
        exported = json.loads(cm.export_session("s1"))
    assert exported["format_version"] == DOCUMENT_FORMAT_VERSION
    assert next(iter(exported)) == "format_version"
    assert _without_volatile(exported)["conversation_history"] == DOCUMENT["conversation_history"]
    assert exported["shared"] == DOCUMENT["shared"]


@pytest.mark.parametrize("version", [DOCUMENT_FORMAT_VERSION + 1, 99])
def test_a_newer_document_is_refused_naming_its_version(version: int) -> None:
    with ContextManager(store="memory") as cm:
        with pytest.raises(DocumentImportError, match="upgrade ctx_memory") as caught:
            cm.import_session({**DOCUMENT, "format_version": version})
        assert caught.value.field == "format_version"
        assert str(version) in str(caught.value)
        assert cm.list_sessions() == []  # nothing written


@pytest.mark.parametrize("version", [0, "1", True, None])
def test_a_malformed_format_version_is_refused(version: object) -> None:
    with pytest.raises(DocumentImportError) as caught:
        parse_document({**DOCUMENT, "format_version": version})
    assert caught.value.field == "format_version"


# ------------------------------------------------------------------ SQLite


def test_the_previous_releases_sqlite_file_opens_and_takes_writes(tmp_path: Path) -> None:
    path = tmp_path / "ctx.sqlite3"
    shutil.copy(FIXTURES / "sqlite-v2.sqlite3", path)
    with ContextManager(store=SqliteStore(str(path))) as cm:
        assert cm.list_sessions() == SESSIONS
        document = cm.get_context("s1")
        assert document == DOCUMENT
        cm.add_user_message("s1", "still here?")
        assert cm.get_memory_stats("s1")["message_count"] == 3
    (version,) = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()
    assert version == SCHEMA_VERSION


def _newer_sqlite_file(tmp_path: Path) -> Path:
    path = tmp_path / "ctx.sqlite3"
    shutil.copy(FIXTURES / "sqlite-v2.sqlite3", path)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = DELETE")  # as a newer release might have left it
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    return path


def test_a_newer_sqlite_schema_is_refused(tmp_path: Path) -> None:
    path = _newer_sqlite_file(tmp_path)
    with pytest.raises(StoreVersionError, match="upgrade ctx_memory"):
        SqliteStore(str(path)).list_sessions()


def test_a_newer_sqlite_file_is_left_exactly_as_it_was(tmp_path: Path) -> None:
    """Before, the store set WAL mode on the file before reading its version."""
    path = _newer_sqlite_file(tmp_path)
    before = path.read_bytes()
    with pytest.raises(StoreVersionError):
        SqliteStore(str(path))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ctx.sqlite3"]


def test_the_http_service_says_a_newer_store_needs_an_upgrade(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not 503 "retry later" (retrying cannot help): 500 ``store_version``; and ``serve``
    does not start on it."""
    import uvicorn
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from ctx_memory.cli import app as cli
    from ctx_memory.config import load_settings
    from ctx_memory.server import create_app

    path = _newer_sqlite_file(tmp_path)
    settings = load_settings(store="sqlite", sqlite_path=str(path))
    with TestClient(create_app(settings=settings)) as client:
        response = client.get("/v1/sessions")
    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "store_version"
    assert "upgrade ctx_memory" in body["detail"]
    assert str(tmp_path) not in body["detail"]  # the path is logged, not sent
    served: list[object] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, *a, **k: served.append(self))
    result = CliRunner().invoke(cli, ["--sqlite-path", str(path), "serve", "--port", "0"])
    assert served == []  # before, it served: every request then answered 503
    assert result.exit_code == 1
    assert "upgrade ctx_memory" in result.output
    assert "serving" not in result.output


# ------------------------------------------------------------------ Redis


def _restore(client: redis.Redis, prefix: str) -> None:
    """Write the fixture's keys under ``prefix``, with their TTLs."""
    for entry in json.loads((FIXTURES / "redis-layout-1.json").read_text()):
        key, value = prefix + entry["key"], entry["value"]
        if entry["type"] == "hash":
            client.hset(key, mapping=value)
        elif entry["type"] == "list":
            client.rpush(key, *value)
        elif entry["type"] == "zset":
            client.zadd(key, dict(value))
        elif entry["type"] == "set":
            client.sadd(key, *value)
        else:
            client.set(key, value)
        if entry["ttl_ms"] > 0:
            client.pexpire(key, entry["ttl_ms"])


@pytest.mark.redis
def test_the_previous_releases_redis_data_opens_and_takes_writes(
    redis_url: str, key_prefix: str
) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    _restore(client, key_prefix)
    assert client.get(layout_key(key_prefix)) is None  # written before the version key
    store = RedisStore(redis_url, key_prefix=key_prefix, max_sessions=100)
    with ContextManager(store=store) as cm:
        assert cm.list_sessions() == SESSIONS
        assert _content(cm.get_context("s1")) == _content(DOCUMENT)
        cm.add_user_message("s1", "still here?")
        cm.add_fetched_context("s1", "web_search", "another page", url="https://b.example")
        assert cm.get_memory_stats("s1")["message_count"] == 3
        assert len(cm.get_fetched_context("s1")["web_search"]) == 2
    assert client.get(layout_key(key_prefix)) == str(LAYOUT_VERSION)
    client.close()


@pytest.mark.redis
async def test_redis_layout_one_data_is_migrated_to_this_layout(
    redis_url: str, key_prefix: str
) -> None:
    """Layout 1 data (the version key written) needs no change: only the version is set."""
    assert LAYOUT_VERSION == 2
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    _restore(client, key_prefix)
    client.set(layout_key(key_prefix), "1")
    before = {k: client.type(k) for k in client.scan_iter(match=f"{key_prefix}:*")}
    store = RedisStore(redis_url, key_prefix=key_prefix)
    assert store.get_recall_segments("s1") == []  # the first call migrates
    assert client.get(layout_key(key_prefix)) == "2"
    assert {k: client.type(k) for k in client.scan_iter(match=f"{key_prefix}:*")} == before
    with ContextManager(store=store) as cm:
        assert cm.list_sessions() == SESSIONS
        assert _content(cm.get_context("s1")) == _content(DOCUMENT)
        assert store.save_recall_segments("s1", ["seg"])
        assert store.get_recall_segments("s1") == ["seg"]
        assert cm.delete_context("s1")
        assert store.get_recall_segments("s1") == []
    assert not [k for k in client.scan_iter(match=f"{key_prefix}:*") if k.endswith(":r")]
    # A second store (another process) finds layout 2 and leaves it as it is.
    other = RedisStore(redis_url, key_prefix=key_prefix)
    assert await other.aget_recall_segments("s2 ü ✓") == []
    assert client.get(layout_key(key_prefix)) == "2"
    await other.aclose()
    store.close()
    client.close()


@pytest.mark.redis
@pytest.mark.parametrize("version", ["two", "1.5", ""])
def test_an_unreadable_redis_layout_is_refused(
    redis_url: str, key_prefix: str, version: str
) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.set(layout_key(key_prefix), version)
    with (
        RedisStore(redis_url, key_prefix=key_prefix) as store,
        pytest.raises(StoreError, match="unreadable layout version"),
    ):
        store.list_sessions()
    assert client.get(layout_key(key_prefix)) == version  # left as it was
    client.delete(layout_key(key_prefix))
    client.close()


@pytest.mark.redis
async def test_a_newer_redis_layout_is_refused(redis_url: str, key_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    _restore(client, key_prefix)
    client.set(layout_key(key_prefix), str(LAYOUT_VERSION + 1))
    store = RedisStore(redis_url, key_prefix=key_prefix)
    with pytest.raises(StoreVersionError, match="upgrade ctx_memory"):
        store.get_header("s1")
    with pytest.raises(StoreVersionError, match=f"layout version {LAYOUT_VERSION + 1}"):
        await store.aget_header("s1")
    await store.aclose()
    client.close()
