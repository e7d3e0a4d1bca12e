"""A Redis password is never printed (issue 8, item 5).

Every URL form below goes through settings, ``RedisStore``, ``ContextManager`` and the CLI
(typer's runner and the real ``python -m ctx_memory`` process); every text they produce —
``repr``, ``url``, messages, chained causes and contexts, tracebacks, CLI output — is
scanned for each piece of the password. Connections go to a loopback port nobody listens
on; the real-server half (a server with ``requirepass``) is
tests/integration/test_secrets_redis.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import traceback
from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner

from ctx_memory import ConfigurationError, ContextManager, CtxMemoryError, load_settings
from ctx_memory.cli import app
from ctx_memory.config import redact_url, url_secrets, validate_postgres_url, validate_redis_url
from ctx_memory.stores.redis import RedisStore

if TYPE_CHECKING:
    from collections.abc import Iterator

runner = CliRunner()

# Pieces of the passwords below: none may appear anywhere (a password with '/', '#' or '?'
# must not leak in parts either).
PIECES = ("Hunter2Pw", "sEcR", "3tPaRt", "xYz9", "qRsT", "uNiXpW", "qUeRyPw")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


PORT = _closed_port()

# Well-formed URLs: accepted, and the password is masked wherever the URL is shown.
VALID = [
    f"redis://:Hunter2Pw@127.0.0.1:{PORT}/0",
    f"redis://alice:Hunter2Pw@127.0.0.1:{PORT}/0",
    f"redis://127.0.0.1:{PORT}/0?password=qUeRyPw",
    f"redis://alice@127.0.0.1:{PORT}/0?password=qUeRyPw&db=0",
    f"rediss://:Hunter2Pw@127.0.0.1:{PORT}/0",
    f"rediss://alice:Hunter2Pw@127.0.0.1:{PORT}/1",
    f"redis://:Hunter2Pw%2FsEcR%23xYz9@127.0.0.1:{PORT}/0",  # encoded '/', '#'
    "unix://:uNiXpW@/nonexistent/ctx-memory-test.sock?password=qUeRyPw",
]

# Malformed URLs: ConfigurationError naming REDIS_URL, password masked.
MALFORMED = [
    f"redis://:sEcR/3tPaRt#xYz9?qRsT@127.0.0.1:{PORT}/0",  # unencoded '/', '#', '?'
    f"redis://:sEcR/3tPaRt@127.0.0.1:{PORT}/0",  # unencoded '/'
    f"redis://:sEcR?3tPaRt@127.0.0.1:{PORT}/0",  # unencoded '?'
    f"redis://:sEcR#3tPaRt@127.0.0.1:{PORT}/0",  # unencoded '#'
    f"redis://127.0.0.1:{PORT}/0?password=sEcR#3tPaRt",  # '#' in a query password
    f"127.0.0.1:{PORT}",  # no scheme
    f":Hunter2Pw@127.0.0.1:{PORT}",  # no scheme, a password
    f"alice:Hunter2Pw@127.0.0.1:{PORT}/0",  # no scheme, a user and a password
    f"http://alice:Hunter2Pw@127.0.0.1:{PORT}/0",  # wrong scheme
    "redis://:Hunter2Pw@127.0.0.1:notaport/0",
    f"redis://:Hunter2Pw@127.0.0.1:{PORT}/0?db=notanumber",
    f"redis://:Hunter2Pw@127.0.0.1:{PORT}/0 ",  # trailing space
    f"redis://:Hunter2Pw@127.0.0.1:{PORT}/0\n",
    "unix://",  # no socket path
]


def texts_of(error: BaseException) -> Iterator[str]:
    """Every text an exception can show: str, repr, args, the whole chain, the traceback."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [error]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield str(current)
        yield repr(current)
        yield from (repr(arg) for arg in current.args)
        stack += [current.__cause__, current.__context__]
    yield "".join(traceback.format_exception(error))


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for piece in PIECES:
            assert piece not in text, f"{piece!r} leaked in {text!r}"


def raised(call: object) -> BaseException:
    assert callable(call)
    try:
        call()
    except Exception as e:
        return e
    pytest.fail("no exception")


# --------------------------------------------------------------------------- redaction


@pytest.mark.parametrize("url", VALID + MALFORMED)
def test_redact_url_masks_every_form(url: str) -> None:
    assert_no_secret(redact_url(url))


def test_redact_url_keeps_what_is_not_secret() -> None:
    assert redact_url("redis://alice:pw@h:6379/0") == "redis://alice:***@h:6379/0"
    assert redact_url("redis://h:6379/0?password=pw&db=2") == "redis://h:6379/0?password=***&db=2"
    assert redact_url("redis://:p/a#s?s@h:6379/0") == "redis://:***@h:6379/0"
    assert (
        redact_url("unix://:pw@/run/r.sock?password=pw") == "unix://:***@/run/r.sock?password=***"
    )
    assert redact_url(":pw@h") == ":***@h"
    assert redact_url("localhost:6379") == "localhost:6379"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"


def test_url_secrets() -> None:
    assert url_secrets("redis://u:p%2Fw@h/0?password=q") == ["p%2Fw", "p/w", "q"]
    assert url_secrets("redis://h:6379/0") == []


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize("url", VALID)
def test_settings_accept_and_hide_valid_urls(url: str) -> None:
    settings = load_settings(redis_url=url)
    assert settings.redis_url == url
    assert_no_secret(repr(settings), str(settings))


@pytest.mark.parametrize("url", MALFORMED)
def test_settings_reject_malformed_urls_naming_redis_url(url: str) -> None:
    error = raised(lambda: load_settings(redis_url=url))
    assert isinstance(error, ConfigurationError)
    assert error.key == "REDIS_URL"
    assert "REDIS_URL" in str(error)
    assert error.__cause__ is None
    assert error.__context__ is None  # pydantic's error quotes the raw input
    assert_no_secret(*texts_of(error))


@pytest.mark.parametrize("url", MALFORMED)
def test_malformed_url_from_environment_and_file(
    url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.setenv("CTX_MEMORY_REDIS_URL", url)
    error = raised(load_settings)
    assert isinstance(error, ConfigurationError)
    assert error.key == "REDIS_URL"
    assert_no_secret(*texts_of(error))


def test_unreadable_secrets_file_does_not_quote_it(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pathlib import Path

    root = Path(str(tmp_path))
    (root / ".secrets.toml").write_text('REDIS_URL = "redis://:Hunter2Pw@h:6379/0\n')
    monkeypatch.chdir(root)
    error = raised(load_settings)
    assert isinstance(error, ConfigurationError)
    assert_no_secret(*texts_of(error))


# --------------------------------------------------------------------------- stores


@pytest.mark.parametrize("url", VALID)
def test_store_repr_url_and_connection_errors(url: str) -> None:
    store = RedisStore(url, max_retries=0, socket_timeout=0.5)
    try:
        assert_no_secret(repr(store), store.url)
        error = raised(store.list_sessions)
        assert isinstance(error, CtxMemoryError)
        assert_no_secret(*texts_of(error))
        with ContextManager(store=store) as cm:
            assert_no_secret(repr(cm))
            assert_no_secret(*texts_of(raised(lambda: cm.add_user_message("s", "hi"))))
    finally:
        store.close()


@pytest.mark.parametrize("url", MALFORMED)
def test_store_rejects_malformed_urls(url: str) -> None:
    error = raised(lambda: RedisStore(url))
    assert isinstance(error, ConfigurationError)
    assert error.key == "REDIS_URL"
    assert error.__cause__ is None
    assert error.__context__ is None
    assert_no_secret(*texts_of(error))


@pytest.mark.parametrize("url", VALID)
def test_async_connection_errors(url: str) -> None:
    import asyncio

    store = RedisStore(url, max_retries=0, socket_timeout=0.5)
    try:
        error = raised(lambda: asyncio.run(store.alist_sessions()))
        assert_no_secret(*texts_of(error))
    finally:
        store.close()


def test_validate_redis_url() -> None:
    assert validate_redis_url("redis://localhost:6379/0") == "redis://localhost:6379/0"
    assert validate_redis_url("unix:///run/redis.sock?db=2") == "unix:///run/redis.sock?db=2"
    with pytest.raises(ConfigurationError, match="REDIS_URL"):
        validate_redis_url(6379)
    with pytest.raises(ConfigurationError, match="percent-encode"):
        validate_redis_url("redis://:a/b@h/0")


# --------------------------------------------------------------------------- CLI


def cli_env(url: str | None = None) -> dict[str, str]:
    env = {"CTX_MEMORY_REDIS_MAX_RETRIES": "0", "CTX_MEMORY_REDIS_SOCKET_TIMEOUT": "0.5"}
    if url is not None:
        env["CTX_MEMORY_REDIS_URL"] = url
    return env


def assert_one_line_error(result: object, code: int) -> None:
    out = f"{result.stdout}{result.stderr}"  # type: ignore[attr-defined]
    assert_no_secret(out)
    assert result.exit_code == code, out  # type: ignore[attr-defined]
    assert isinstance(result.exception, SystemExit)  # type: ignore[attr-defined]
    lines = result.stderr.splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    assert "Traceback" not in out


@pytest.mark.parametrize("url", MALFORMED)
@pytest.mark.parametrize("command", [["sessions", "list"], ["stats"], ["show", "x"], ["gc"]])
def test_cli_malformed_url_option_exits_2_with_one_line(url: str, command: list[str]) -> None:
    result = runner.invoke(app, ["--redis-url", url, *command], env=cli_env())
    assert_one_line_error(result, 2)
    assert "REDIS_URL" in result.stderr


@pytest.mark.parametrize("url", MALFORMED)
def test_cli_malformed_url_from_environment_exits_2(url: str) -> None:
    result = runner.invoke(app, ["--store", "redis", "sessions", "list"], env=cli_env(url))
    assert_one_line_error(result, 2)


@pytest.mark.parametrize("url", VALID)
@pytest.mark.parametrize(
    "command", [["sessions", "list"], ["sessions", "list", "-l"], ["stats"], ["export", "--all"]]
)
def test_cli_unreachable_server_exits_1_with_one_line(url: str, command: list[str]) -> None:
    result = runner.invoke(app, ["--redis-url", url, *command], env=cli_env())
    assert_one_line_error(result, 1)
    result = runner.invoke(app, ["--store", "redis", *command], env=cli_env(url))
    assert_one_line_error(result, 1)


@pytest.mark.parametrize("url", [MALFORMED[0], MALFORMED[6], VALID[2], VALID[-1]])
def test_real_entry_point_prints_no_secret_and_no_traceback(url: str) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CTX_MEMORY_")},
        **cli_env(url),
    }
    done = subprocess.run(
        [sys.executable, "-m", "ctx_memory", "--store", "redis", "sessions", "list", "-l"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert_no_secret(done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.returncode == (2 if url in MALFORMED else 1)


def test_cli_options_repr_hides_the_url() -> None:
    from ctx_memory.cli import _Options

    assert_no_secret(repr(_Options(redis_url=VALID[0])))


PASSWORD = "s3cr3tpw"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (f"host=db.internal port=5432 user=app password={PASSWORD}", "must start with"),
        (f"postgresql://u:s3cr@{PASSWORD}@127.0.0.1:1/db", "unencoded '@'"),
        (f"postgresql://u:{PASSWORD}%ZZ@127.0.0.1:1/db", "%XX escape"),
    ],
)
def test_postgres_urls_libpq_would_misread_are_refused_without_the_password(
    url: str, problem: str
) -> None:
    """A libpq key=value string, an unencoded '@' or a bad %-escape in the password: refused
    at settings time, the password never in the message (psycopg's pool would log it)."""
    with pytest.raises(ConfigurationError) as info:
        validate_postgres_url(url)
    assert problem in str(info.value)
    with pytest.raises(ConfigurationError) as settings_info:
        ContextManager(store="postgres", postgres_url=url)
    for error in (info.value, settings_info.value):
        assert error.key == "POSTGRES_URL"
        assert PASSWORD not in str(error)
        assert "3tpw" not in str(error)
    assert validate_postgres_url("postgresql://u:s3cr%403tpw@127.0.0.1:1/db")  # encoded: fine
