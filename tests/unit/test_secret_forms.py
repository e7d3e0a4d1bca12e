"""More forms a password takes, none of them printed (the third review's findings).

A percent-encoded parameter name, an unencoded ``&`` inside a password, a URL or key-value
setting of the wrong type, URLs libpq refuses while quoting them (psycopg_pool logs each
attempt), and ``migrate`` arguments that are URLs with a typo.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner

from ctx_memory import ConfigurationError, load_settings
from ctx_memory._store_urls import hide_in_logs
from ctx_memory.cli import app
from ctx_memory.config import redact_url, url_secrets, validate_postgres_url, validate_redis_url
from ctx_memory.migrate import open_store

if TYPE_CHECKING:
    from pathlib import Path

SECRET = "S3cr3t"
TAIL = "P4ssTail"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"redis://h/0?p%61ssword={SECRET}&db=1", "redis://h/0?p%61ssword=***&db=1"),
        (f"redis://h/0?PASS%57ORD={SECRET}", "redis://h/0?PASS%57ORD=***"),
        (f"redis://h/0?password={SECRET}&{TAIL}", "redis://h/0?password=***"),
        (f"redis://h/0?password={SECRET}&{TAIL}&db=2", "redis://h/0?password=***&db=2"),
        (
            f"postgresql://h/db?sslpassword={SECRET}&user=u",
            "postgresql://h/db?sslpassword=***&user=u",
        ),
    ],
)
def test_redact_url_masks_encoded_names_and_unencoded_ampersands(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert SECRET in url_secrets(url)


def test_a_query_part_without_a_value_is_refused_unnamed() -> None:
    with pytest.raises(ConfigurationError) as info:
        validate_redis_url(f"redis://h:6379/0?password={SECRET}&{TAIL}")
    assert "%26" in str(info.value)
    assert SECRET not in str(info.value)
    assert TAIL not in str(info.value)
    assert validate_redis_url("redis://h:6379/0?db=1&")  # an empty part is nothing


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis://h:6379/0?max_connections=-1", "'max_connections' must be 0"),
        (f"redis+sentinel://:{SECRET}@h:26379/mymaster?foo=bar", "'foo' is not one redis-py"),
    ],
)
def test_query_parameters_redis_py_would_crash_on_are_refused_at_load(
    url: str, problem: str
) -> None:
    with pytest.raises(ConfigurationError, match=problem) as info:
        validate_redis_url(url)
    assert SECRET not in str(info.value)
    for ok in (
        "redis+sentinel://:pw@h:26379/mymaster?sentinel_password=x&socket_timeout=2",
        "redis://h:6379/0?max_connections=0",  # redis-py's default pool size
    ):
        assert validate_redis_url(ok) == ok


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (f"postgresql://app:{SECRET}%00@h:5432/db", "%00"),
        (f"postgresql://app@h:5432/db?password={SECRET}%00", "%00"),
        (f"postgresql://app:{SECRET}@[::1]x/db", "host"),  # (some Pythons: urlsplit refuses)
    ],
)
def test_urls_libpq_would_quote_are_refused(url: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem) as info:
        validate_postgres_url(url)
    assert SECRET not in str(info.value)
    for ok in (
        "postgresql://app:pw@[::1]:5432/db",
        "postgresql://app:pw@[::1],127.0.0.1/db?port=5432,5433",  # libpq's several hosts
        "postgresql://app:pw@h1:5432,[::1]:5433/db",
    ):
        assert validate_postgres_url(ok) == ok


def test_a_client_librarys_log_records_are_scrubbed(caplog: pytest.LogCaptureFixture) -> None:
    """Records naming the tag lose the URL's passwords; others are left as they are."""
    url = f"postgresql://app:{SECRET}-x@h/db?sslpassword={SECRET}-y"
    short = "postgresql://postgres:e@postgres/db"  # a toy password: masked in the URL only
    logger = logging.getLogger("ctx_memory.tests.client")
    assert hide_in_logs("ctx_memory.tests.client", url, tag="ctx_memory-a") == url
    hide_in_logs("ctx_memory.tests.client", short, tag="ctx_memory-b")
    with caplog.at_level(logging.WARNING, logger="ctx_memory.tests.client"):
        logger.warning(
            "error connecting in %r: cannot use %r (%s)", "ctx_memory-a", url, f"{SECRET}-x"
        )
        logger.warning("error connecting in %r: %s: host postgres", "ctx_memory-b", short)
        logger.warning("error connecting in %r: %s", "someone-elses-pool", "server error")
    lines = caplog.text.splitlines()
    assert SECRET not in caplog.text
    assert "cannot use 'postgresql://app:***@h/db?sslpassword=***'" in lines[0]
    assert "postgresql://postgres:***@postgres/db: host postgres" in lines[1]
    assert "someone-elses-pool" in lines[2]
    assert "server error" in lines[2]


@pytest.mark.parametrize(
    ("env", "value", "key"),
    [
        ("CTX_MEMORY_REDIS_URL", f'["redis://:{SECRET}@h:6379/0"]', "REDIS_URL"),  # a list
        (
            "CTX_MEMORY_SERVER_CHAT_MODEL_KWARGS",
            f'{{api_key="sk-{SECRET}"',
            "SERVER_CHAT_MODEL_KWARGS",
        ),
        ("CTX_MEMORY_STORE", f"app:{SECRET}@db.internal", "STORE"),  # no scheme to mask by
        ("CTX_MEMORY_STORE", f'["redis://:{SECRET}@h:6379/0"]', "STORE"),  # in a list
    ],
)
def test_a_setting_holding_secrets_is_not_quoted_when_wrong(
    env: str, value: str, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    assert info.value.key == key
    assert SECRET not in str(info.value)
    assert "not shown" in str(info.value)


@pytest.mark.parametrize(
    "value", [f"redis://:{SECRET}@127.0.0.1:6379/0", f"postgresql://app:{SECRET}@db/app"]
)
def test_a_url_where_a_store_name_goes_is_shown_masked(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """STORE is a name; a URL given there (flag, environment, file) is quoted masked."""
    monkeypatch.setenv("CTX_MEMORY_STORE", value)
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    assert info.value.key == "STORE"
    assert SECRET not in str(info.value)
    assert ":***@" in str(info.value)
    monkeypatch.delenv("CTX_MEMORY_STORE")
    result = CliRunner().invoke(app, ["--store", value, "sessions", "list"])
    assert result.exit_code == 2
    assert SECRET not in result.output


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["prompt", "s1", "q", "--max-tokens", "10", "--reserve-tokens", "20"],
         "--reserve-tokens"),
        (["prompt", "s1", "q", "--max-token", "10"], "--max-token"),
        (["show", "--pass"], "--pass"),
    ],
)  # fmt: skip
def test_usage_errors_name_the_option_typed(args: list[str], named: str) -> None:
    """An option's name is no secret, whatever words it holds."""
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert named in result.output


@pytest.mark.parametrize(
    "argument",
    [
        f"redis:/:{SECRET}@127.0.0.1:6379/0",
        f"postgresql:/app:{SECRET}@db.internal:5432/app",
        f"'host=db.internal password={SECRET}'",
        f"dbname=app password={SECRET}",
    ],
)
def test_migrate_takes_no_url_typo_for_a_file(
    argument: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError) as info:
        open_store(argument)
    assert SECRET not in str(info.value)
    result = CliRunner().invoke(app, ["migrate", "--from", "memory://", "--to", argument])
    assert result.exit_code != 0
    assert SECRET not in result.output
    assert list(tmp_path.iterdir()) == []  # no file made under a name holding the password


@pytest.mark.parametrize(
    "args",
    [
        ["--store", "redis", f"redis://:{SECRET}@cache.internal:6379/0", "stats"],
        ["migrate", "--from", "a.db", "--to", "memory://", f"redis://:{SECRET}@h:6379/0"],
        ["sessions", f"postgresql://app:{SECRET}@db/app"],
        ["sessions", "list", f"--bogus=password={SECRET}"],
        [f"redis://:{SECRET}'P@h/0"],  # a quote in the password
        [f"admin:{SECRET}@db.example.com"],  # user info without a scheme
        ["show", "s1", f"PGPASSWORD={SECRET}"],
        ["show", "s1", f"host=db sentinel_password={SECRET}"],
        [f"redis://:{SECRET}@h/0?x=" + "a" * 100_000],  # long: no pattern to backtrack on
    ],
)
def test_usage_errors_quote_no_password(args: list[str]) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert SECRET not in result.output
    assert "***" in result.output or "Usage" in result.output


@pytest.mark.parametrize("name", ["run=3.db", "./run=3.db", "./k=v.sqlite3", "old-password=x.db"])
def test_file_names_with_an_equals_sign_are_still_files(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    if name == "run=3.db":
        with pytest.raises(ConfigurationError, match="libpq"):  # the shape of "host=x"
            open_store(name)
        return
    store = open_store(name)
    store.close()
    assert (tmp_path / name.removeprefix("./")).is_file()
