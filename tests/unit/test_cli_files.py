"""``ctx-memory export`` and ``migrate`` at the edges: what -o points at, odd arguments."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner

from ctx_memory import ContextManager
from ctx_memory.cli import app
from ctx_memory.config import validate_redis_url
from ctx_memory.errors import ConfigurationError, StoreError
from ctx_memory.stores.sqlite import SqliteStore

if TYPE_CHECKING:
    from pathlib import Path

runner = CliRunner()


def _db(tmp_path: Path, *, approximate: bool = False) -> str:
    path = str(tmp_path / "a.sqlite3")
    counter = {"token_counter": "approximate"} if approximate else {}
    with ContextManager(store=SqliteStore(path), **counter) as cm:  # type: ignore[arg-type]
        for sid in ("s1", "s2"):
            cm.add_user_message(sid, f"hello from {sid}")
            cm.add_assistant_message(sid, "hi")
    return path


def _cli(db: str, *args: str) -> list[str]:
    return ["--store", "sqlite", "--sqlite-path", db, *args]


def test_export_writes_through_a_symlink_and_keeps_it(tmp_path: Path) -> None:
    db = _db(tmp_path)
    target = tmp_path / "target.jsonl"
    target.write_text("old\n")
    target.chmod(0o644)
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    result = runner.invoke(app, _cli(db, "export", "--all", "-o", str(link)))
    assert result.exit_code == 0, result.output
    assert link.is_symlink()
    lines = target.read_text().splitlines()
    assert [json.loads(line)["metadata"]["session_id"] for line in lines] == ["s1", "s2"]
    assert target.stat().st_mode & 0o777 == 0o644  # a file replaced keeps its permissions


def test_export_to_a_pipe_writes_into_it(tmp_path: Path) -> None:
    """A FIFO (like /dev/stdout or a device) is written to, never replaced by a file."""
    db = _db(tmp_path)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    result = runner.invoke(app, _cli(db, "export", "--all", "-o", str(fifo)))
    reader.join(timeout=10)
    assert result.exit_code == 0, result.output
    assert fifo.is_fifo()
    assert len(received[0].splitlines()) == 2


def test_export_of_an_id_given_twice_can_be_imported(tmp_path: Path) -> None:
    db = _db(tmp_path)
    out = tmp_path / "dup.jsonl"
    result = runner.invoke(app, _cli(db, "export", "s1", "s1", "s2", "-o", str(out)))
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 2
    other = str(tmp_path / "b.sqlite3")
    result = runner.invoke(app, _cli(other, "import", str(out)))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("source", ["typo.sqlite3", "", "sqlite://"])
def test_migrate_refuses_a_source_that_is_no_store(
    tmp_path: Path, source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["migrate", "--from", source, "--to", "memory://"])
    assert result.exit_code == 2
    assert "error:" in result.output
    assert not (tmp_path / "typo.sqlite3").exists()  # not created as an empty store


def test_migrate_refuses_a_libpq_string_without_showing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = _db(tmp_path)
    monkeypatch.chdir(tmp_path)
    target = "host=db user=app password=hunter2 dbname=app"
    result = runner.invoke(app, ["migrate", "--from", db, "--to", target])
    assert result.exit_code == 2
    assert "hunter2" not in result.output
    assert not any("hunter2" in p.name for p in tmp_path.iterdir())


def test_migrate_copies_sessions_counted_approximately(tmp_path: Path) -> None:
    db = _db(tmp_path, approximate=True)
    target = str(tmp_path / "b.sqlite3")
    result = runner.invoke(app, ["migrate", "--from", db, "--to", target, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.splitlines()[-1])
    assert (report["sessions"], report["copied"], report["mismatches"]) == (2, 2, [])


def test_migrate_to_a_server_that_is_down_prints_one_error_line(tmp_path: Path) -> None:
    """psycopg_pool's per-attempt warnings stay off stderr, as for the global options."""
    db = _db(tmp_path)
    url = "postgresql://u:pw@127.0.0.1:1/db?schema=x&connect_timeout=1"
    result = runner.invoke(app, ["migrate", "--from", db, "--to", url])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error:")
    assert ":pw@" not in result.output


@pytest.mark.parametrize("url", ["redis://h/0?foo=1", "redis://h/0?key_prefix=x"])
def test_a_redis_url_parameter_redis_py_does_not_take_is_refused_at_load(url: str) -> None:
    with pytest.raises(ConfigurationError, match="is not one redis-py takes"):
        validate_redis_url(url)
    result = runner.invoke(app, ["--store", "redis", "--redis-url", url, "sessions", "list"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_redis_url_parameters_redis_py_takes_are_accepted() -> None:
    validate_redis_url("redis://h/0?client_name=app&socket_timeout=2&max_connections=5")
    validate_redis_url("rediss://h/0?ssl_cert_reqs=none")
    validate_redis_url("unix:///run/redis.sock?db=1")


def test_an_import_whose_undo_fails_says_where_the_replaced_sessions_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills up: the write fails, and so does the undo. What the replaced sessions
    held was saved before the first write; the message names that file, which puts them
    back once the disk has room."""
    db = str(tmp_path / "s.db")
    with ContextManager(store="sqlite", sqlite_path=db, token_counter="approximate") as cm:
        for i in range(4):
            cm.add_user_message(f"s{i}", f"original {i}")
        old = {f"s{i}": cm.get_context(f"s{i}") for i in range(4)}
        text = "".join(
            json.dumps(
                {
                    **old[f"s{i}"],
                    "conversation_history": [
                        {
                            "role": "user",
                            "content": f"new {i}",
                            "timestamp": "2026-01-01T00:00:00+00:00",
                        }
                    ],
                }
            )
            + "\n"
            for i in range(4)
        )
    real = ContextManager.import_session
    calls: list[str] = []

    def full_after_two(self: ContextManager, data: object, **kwargs: object) -> str:
        calls.append(str(kwargs.get("session_id")))
        if len(calls) > 2:
            raise StoreError("database or disk is full")
        return real(self, data, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ContextManager, "import_session", full_after_two)
    result = runner.invoke(app, ["--sqlite-path", db, "import", "-"], input=text)
    assert result.exit_code == 1
    assert "could not undo 2 session(s): 's1', 's0'" in result.stderr
    saved = result.stderr.split("what they held before the import is in ")[1].split(" ")[0]
    assert oct(os.stat(saved).st_mode & 0o777) == "0o600"
    monkeypatch.setattr(ContextManager, "import_session", real)
    restored = runner.invoke(app, ["--sqlite-path", db, "import", "--overwrite", saved])
    assert restored.exit_code == 0, restored.output
    with ContextManager(store="sqlite", sqlite_path=db, token_counter="approximate") as cm:
        assert [cm.get_history(f"s{i}")[0]["content"] for i in range(4)] == [
            f"original {i}" for i in range(4)
        ]
    os.unlink(saved)


def test_a_successful_import_leaves_no_saved_copy(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    with ContextManager(store="sqlite", sqlite_path=db, token_counter="approximate") as cm:
        cm.add_user_message("s0", "original")
        text = json.dumps(cm.get_context("s0"))
    before = set(os.listdir(tempfile.gettempdir()))
    assert runner.invoke(app, ["--sqlite-path", db, "import", "-"], input=text).exit_code == 0
    made = set(os.listdir(tempfile.gettempdir())) - before
    assert not [name for name in made if name.startswith("ctx-memory-before-import-")]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full on this platform")
def test_an_export_that_cannot_be_written_is_one_error_line(tmp_path: Path) -> None:
    """A full disk (``/dev/full`` answers every write with ENOSPC): no traceback."""
    db = _db(tmp_path)
    result = runner.invoke(app, [*_cli(db, "export", "--all", "-o", "/dev/full")])
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: /dev/full: cannot write: No space left on device"


def test_an_import_stopped_by_sigterm_is_undone(tmp_path: Path) -> None:
    """``timeout``, ``docker stop`` and systemd send SIGTERM: undone as Ctrl-C is."""
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    db = tmp_path / "s.db"
    with ContextManager(store="sqlite", sqlite_path=str(db), token_counter="approximate") as cm:
        cm.add_user_message("pre", "existing")
    when = "2026-01-01T00:00:00+00:00"
    docs = [
        {
            "metadata": {"session_id": f"imp{i:04d}", "created_at": when, "timestamp": when},
            "conversation_history": [{"role": "user", "content": f"hi {i}", "timestamp": when}],
        }
        for i in range(3000)
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(d) + "\n" for d in docs))
    command = [sys.executable, "-m", "ctx_memory", "--sqlite-path", str(db), "import", str(source)]
    env = {**os.environ, "CTX_MEMORY_TOKEN_COUNTER": "approximate"}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    written = 0
    while written < 5 and time.monotonic() < deadline and process.poll() is None:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            written = conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] - 1
        time.sleep(0.01)
    assert written >= 5, "the import finished before it could be stopped"
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "interrupted (Ctrl-C or SIGTERM)" in err
    assert "nothing was imported" in err
    with ContextManager(store="sqlite", sqlite_path=str(db), token_counter="approximate") as cm:
        assert cm.list_sessions() == ["pre"]


def _import_file(tmp_path: Path, count: int) -> Path:
    when = "2026-01-01T00:00:00+00:00"
    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(
            json.dumps(
                {
                    "metadata": {"session_id": f"imp{i}", "created_at": when, "timestamp": when},
                    "conversation_history": [{"role": "user", "content": "hi", "timestamp": when}],
                }
            )
            + "\n"
            for i in range(count)
        )
    )
    return source


def _signal_at(
    monkeypatch: pytest.MonkeyPatch, method: str, session_id: str, signum: str, *, after: bool
) -> list[str]:
    """Make ``ContextManager.<method>`` send itself ``signum`` for ``session_id``.

    Before the real call, or ``after`` it returned; the ids it was called for come back.
    """
    import signal

    real = getattr(ContextManager, method)
    calls: list[str] = []

    def signalling(self: ContextManager, *args: object, **kwargs: object) -> object:
        target = kwargs.get("session_id", args[-1] if args else None)
        if not after and target == session_id:
            os.kill(os.getpid(), getattr(signal, signum))
        result = real(self, *args, **kwargs)
        calls.append(str(target))
        if after and target == session_id:
            os.kill(os.getpid(), getattr(signal, signum))
        return result

    monkeypatch.setattr(ContextManager, method, signalling)
    return calls


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_a_signal_between_two_documents_stops_the_import_and_undoes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signum: str
) -> None:
    """The signal lands outside any store call (just after a write returned): still undone."""
    db = _db(tmp_path)
    source = _import_file(tmp_path, 6)
    calls = _signal_at(monkeypatch, "import_session", "imp2", signum, after=True)
    result = runner.invoke(app, _cli(db, "import", str(source)))
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == (
        f"error: {source}: document 4 (line 4): interrupted (Ctrl-C or SIGTERM); "
        "nothing was imported (the 3 written were undone)"
    )
    assert calls == ["imp0", "imp1", "imp2"]
    with ContextManager(store=SqliteStore(db)) as cm:
        assert sorted(cm.list_sessions()) == ["s1", "s2"]


def test_a_second_signal_stops_the_undo_and_names_what_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signal

    db = _db(tmp_path)
    source = _import_file(tmp_path, 6)
    _signal_at(monkeypatch, "import_session", "imp3", "SIGINT", after=True)
    # the second: raised before imp2's delete, the first of the undo (newest first)
    _signal_at(monkeypatch, "delete_context", "imp2", "SIGINT", after=False)
    result = runner.invoke(app, _cli(db, "import", str(source)))
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == (
        f"error: {source}: document 5 (line 5): interrupted (Ctrl-C or SIGTERM); "
        "the undo was stopped: 3 may hold the import: 'imp2', 'imp1', 'imp0'"
    )
    with ContextManager(store=SqliteStore(db)) as cm:
        assert sorted(cm.list_sessions()) == ["imp0", "imp1", "imp2", "s1", "s2"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


@pytest.mark.parametrize(
    ("url", "plain", "taken"),
    [
        ("redis://h/0?key_prefix=plus+x", "redis://h/0", {"key_prefix": "plus+x"}),
        ("redis://h/0?key_prefix=a%2Bb&cluster=true", "redis://h/0", {"key_prefix": "a+b",
                                                                        "cluster": "true"}),
        ("redis://h/0?socket_timeout=2&key_prefix=p%20q", "redis://h/0?socket_timeout=2",
         {"key_prefix": "p q"}),
        ("postgresql://u:p%40w@h/db?schema=s_1&sslmode=require",
         "postgresql://u:p%40w@h/db?sslmode=require", {"schema": "s_1"}),
    ],
)  # fmt: skip
def test_migrate_takes_its_own_url_parameters_as_written(
    url: str, plain: str, taken: dict[str, str]
) -> None:
    """``+`` in a key prefix is a ``+`` (form decoding read it as a space: another, empty
    prefix); the driver's parameters stay as they were written."""
    from ctx_memory.migrate import _take

    assert _take(url, "key_prefix", "cluster", "schema") == (plain, taken)


@pytest.mark.parametrize(
    ("args", "stdout"),
    [
        (["sessions", "list"], "full"),
        (["show", "s1", "--json"], "full"),
        (["stats"], "full"),
        (["export", "--all"], "closed"),
        (["show", "s1"], "closed"),
    ],
)
def test_output_that_cannot_be_written_is_one_error_line(
    tmp_path: Path, args: list[str], stdout: str
) -> None:
    """A full disk (``> /dev/full``) or a closed stdout (``>&-``): one line, exit 1."""
    import subprocess
    import sys

    db = tmp_path / "s.db"
    with ContextManager(store="sqlite", sqlite_path=str(db), token_counter="approximate") as cm:
        cm.add_user_message("s1", "hello")
    command = [sys.executable, "-m", "ctx_memory", "--sqlite-path", str(db), *args]
    env = {**os.environ, "CTX_MEMORY_TOKEN_COUNTER": "approximate"}
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            command,
            stdout=full if stdout == "full" else None,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            check=False,
            close_fds=True,
            pass_fds=(),
            **({"preexec_fn": lambda: os.close(1)} if stdout == "closed" else {}),
        )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: stdout: cannot write")


def test_an_export_stopped_by_sigterm_leaves_no_temporary_file(tmp_path: Path) -> None:
    """SIGTERM (``timeout``) stops a command as Ctrl-C does: its cleanups run (the export's
    temporary file goes, the file it replaces stays) and it says it was interrupted."""
    import signal
    import subprocess
    import sys
    import time

    db = tmp_path / "s.db"
    with ContextManager(store="sqlite", sqlite_path=str(db), token_counter="approximate") as cm:
        for i in range(3000):
            cm.add_user_message(f"s{i:04d}", "hello " * 50)
    out = tmp_path / "out"
    out.mkdir()
    backup = out / "backup.jsonl"
    backup.write_text("kept\n")
    command = [sys.executable, "-m", "ctx_memory", "--sqlite-path", str(db), "export", "--all",
               "-o", str(backup)]  # fmt: skip
    env = {**os.environ, "CTX_MEMORY_TOKEN_COUNTER": "approximate"}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if any(p.name != "backup.jsonl" for p in out.iterdir()):
            break  # writing its temporary file
        time.sleep(0.005)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    if process.returncode == 0:
        pytest.fail("the export ended before the signal: make it longer")
    assert process.returncode == 130
    assert "interrupted" in err
    assert [p.name for p in out.iterdir()] == ["backup.jsonl"]
    assert backup.read_text() == "kept\n"
