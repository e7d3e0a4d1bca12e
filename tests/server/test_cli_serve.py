"""``ctx-memory serve`` as a user runs it: a real process, a real HTTP client."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from server_helpers import ADMIN, KEY_A, auth, serve_env, sse_events

from ctx_memory.server.keys import hash_api_key

if TYPE_CHECKING:
    from pathlib import Path


def test_serve_runs_the_seed_endpoints_on_the_configured_store(served: Any, tmp_path: Path) -> None:
    db = str(tmp_path / "sessions.sqlite3")
    server = served("--store", "sqlite", "--sqlite-path", db)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        sent = {
            "session_id": "cli",
            "text_content": "Paris from $420",
            "current_url": "https://a.example",
        }
        assert client.post("/add_webtext/", json=sent).status_code == 200
        chat = client.get("/chat_response/", params={"session_id": "cli", "question": "Price?"})
        assert sse_events(chat.text)[-1][0] == "done"
        stats = client.get("/get_memory_stats/", params={"session_id": "cli"}).json()
        assert (stats["message_count"], stats["store"]) == (2, "sqlite")
    err = server.stop()
    assert "serving the sqlite store, no keys" in err
    # the sessions outlive the process: a new server sees them
    again = served("--sqlite-path", db)
    assert httpx.get(f"{again.url}/v1/sessions").json()["sessions"] == ["cli"]


def test_serve_with_keys_from_settings_toml(served: Any, tmp_path: Path) -> None:
    (tmp_path / "settings.toml").write_text(
        "[ctx_memory]\n"
        f'SERVER_API_KEYS = [{{ tenant = "acme", sha256 = "{hash_api_key(KEY_A)}" }}]\n'
        f'SERVER_ADMIN_KEYS = ["{hash_api_key(ADMIN)}"]\n',
        encoding="utf-8",
    )
    server = served()
    assert httpx.get(f"{server.url}/v1/sessions").status_code == 401
    ok = httpx.get(f"{server.url}/v1/whoami", headers=auth(KEY_A))
    assert ok.json()["tenant"] == "acme"
    # a key in the URL is refused, and the access log masks it
    in_url = {"limit": "5", "api_key": KEY_A, "token": ADMIN}
    assert httpx.get(f"{server.url}/v1/sessions", params=in_url).status_code == 401
    assert httpx.get(f"{server.url}/v1/sessions/{KEY_A}", headers=auth(KEY_A)).status_code == 404
    err = server.stop()
    assert "keys required (1 tenant(s), 1 admin key(s))" in err
    access = server.stdout()
    assert '"GET /v1/sessions?limit=5&api_key=***&token=*** HTTP/1.1" 401' in access
    assert '"GET /v1/sessions/ctxm_*** HTTP/1.1" 404' in access
    for printed in (err, access):
        assert KEY_A not in printed
        assert ADMIN not in printed
        assert hash_api_key(KEY_A) not in printed


def _serve_refused(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``ctx-memory serve ARGS`` that must stop before serving (port 1 is never bound)."""
    return subprocess.run(
        [sys.executable, "-m", "ctx_memory", "serve", *args, "--port", "1"],
        cwd=cwd,
        env={**serve_env(), "COLUMNS": "200", "TERM": "dumb"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_serve_refuses_every_interface_without_keys(tmp_path: Path) -> None:
    done = _serve_refused(tmp_path, "--host", "0.0.0.0")
    assert done.returncode == 2
    assert "refusing to serve on 0.0.0.0 without keys" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unknown_log_level_is_a_usage_error_before_serving(tmp_path: Path) -> None:
    done = _serve_refused(tmp_path, "--log-level", "bogus")
    assert done.returncode == 2
    assert "'bogus' is not one of" in done.stderr
    assert "serving" not in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_on_a_port_in_use_is_one_error_line_and_exit_code_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "ctx_memory", "serve", "--port", str(port)],
            cwd=tmp_path,
            env={**serve_env(), "COLUMNS": "200", "TERM": "dumb"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: cannot listen on http://127.0.0.1:{port}: Address already in use"]
    assert "serving" not in done.stderr
    assert "ERROR" not in done.stderr
    assert "Traceback" not in done.stderr


def test_listen_binds_before_serving_and_reports_the_port_it_got() -> None:
    from ctx_memory.server.cli import http_url, listen

    sockets = listen("127.0.0.1", 0, backlog=8)
    try:
        port = sockets[0].getsockname()[1]
        assert port > 0
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # listening already: uvicorn only serves on it
        with pytest.raises(OSError, match="in use"):
            listen("127.0.0.1", port, backlog=8)
    finally:
        for sock in sockets:
            sock.close()
    assert http_url("::1", 8000, "/ctx") == "http://[::1]:8000/ctx"
    assert http_url("localhost", 8000) == "http://localhost:8000"


def test_the_cli_imports_no_web_framework() -> None:
    code = (
        "import sys, ctx_memory.cli, ctx_memory.server, ctx_memory.server.cli;"
        "web = ('fastapi', 'uvicorn', 'starlette', 'sse_starlette');"
        "bad = [m for m in web if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_serve_is_in_the_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ctx_memory", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**serve_env(), "COLUMNS": "200", "TERM": "dumb"},
    )
    assert done.returncode == 0
    for option in ("--host", "--port", "--proxy-headers", "--forwarded-allow-ips", "--root-path"):
        assert option in done.stdout


def test_keys_module_prints_a_new_key_and_its_settings_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ctx_memory.server.keys", "acme"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = done.stdout.splitlines()
    key = lines[1].strip()
    assert key.startswith("ctxm_")
    assert f'sha256 = "{hash_api_key(key)}"' in done.stdout
    assert 'tenant = "acme"' in done.stdout
    assert json.dumps(key) not in done.stderr
