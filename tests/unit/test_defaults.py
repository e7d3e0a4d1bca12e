"""Defaults never silently delete a user's data (issue 8, item 4: the settings part).

The seed's 100 sessions / one hour are the in-memory store's defaults; SQLite and Redis
default to no session limit and a 30-day TTL. A value the user sets (file, environment,
keyword) applies to every store. The Redis half is tests/integration/test_defaults_redis.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from ctx_memory import ConfigurationError, ContextManager, load_settings
from ctx_memory.config import (
    MEMORY_MAX_SESSIONS,
    MEMORY_TTL_SECONDS,
    PERSISTENT_TTL_SECONDS,
    with_overrides,
)
from ctx_memory.stores.base import MAX_TTL_SECONDS

if TYPE_CHECKING:
    from pathlib import Path

DAY = 86_400


def test_the_documented_values() -> None:
    assert (MEMORY_MAX_SESSIONS, MEMORY_TTL_SECONDS) == (100, 3600)
    assert PERSISTENT_TTL_SECONDS == 30 * DAY


@pytest.mark.parametrize(
    ("overrides", "max_sessions", "ttl"),
    [
        ({}, 100, 3600),
        ({"store": "memory"}, 100, 3600),
        ({"store": "sqlite"}, None, 30 * DAY),
        ({"store": "redis"}, None, 30 * DAY),
        ({"use_redis_caching": True}, None, 30 * DAY),  # the seed's flag selects Redis
    ],
)
def test_defaults_depend_on_the_store(
    overrides: dict[str, object], max_sessions: int | None, ttl: float
) -> None:
    settings = load_settings(**overrides)
    assert settings.max_sessions == max_sessions
    assert settings.ttl_seconds == ttl
    assert "max_sessions" not in settings.model_fields_set


def test_store_from_file_or_environment_picks_its_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "settings.toml").write_text('[ctx_memory]\nSTORE = "sqlite"\n')
    assert (load_settings().max_sessions, load_settings().ttl_seconds) == (None, 30 * DAY)
    monkeypatch.setenv("CTX_MEMORY_STORE", "memory")
    assert (load_settings().max_sessions, load_settings().ttl_seconds) == (100, 3600)


@pytest.mark.parametrize("store", ["memory", "sqlite", "redis"])
def test_values_set_in_a_file_apply_to_every_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "settings.toml").write_text(
        f'[ctx_memory]\nSTORE = "{store}"\nMAX_SESSIONS = 100\nSESSION_EXPIRATION_SECONDS = 3600\n'
    )
    settings = load_settings()
    assert (settings.max_sessions, settings.ttl_seconds) == (100, 3600)


@pytest.mark.parametrize("store", ["memory", "sqlite", "redis"])
def test_values_set_in_the_environment_apply_to_every_store(
    monkeypatch: pytest.MonkeyPatch, store: str
) -> None:
    monkeypatch.setenv("CTX_MEMORY_STORE", store)
    monkeypatch.setenv("CTX_MEMORY_MAX_SESSIONS", "7")
    monkeypatch.setenv("CTX_MEMORY_SESSION_EXPIRATION_SECONDS", "60")
    settings = load_settings()
    assert (settings.max_sessions, settings.ttl_seconds) == (7, 60)


def test_explicit_no_limit_and_no_expiry_on_memory() -> None:
    settings = load_settings(max_sessions=0, session_expiration_seconds=0)
    assert (settings.max_sessions, settings.ttl_seconds) == (None, None)


def test_overriding_the_store_of_loaded_settings_keeps_defaults_defaults(tmp_path: Path) -> None:
    base = load_settings()  # memory: 100 sessions, one hour, both defaults
    moved = with_overrides(base, store="sqlite", sqlite_path=str(tmp_path / "x.db"))
    assert (moved.max_sessions, moved.ttl_seconds) == (None, 30 * DAY)
    # a value the user gave survives the move
    pinned = with_overrides(load_settings(max_sessions=5), store="sqlite")
    assert (pinned.max_sessions, pinned.ttl_seconds) == (5, 30 * DAY)
    with ContextManager(base, store="sqlite", sqlite_path=str(tmp_path / "y.db")) as cm:
        assert (cm.store.max_sessions, cm.store.ttl_seconds) == (None, 30 * DAY)


def test_150_sessions_on_a_default_sqlite_store_are_all_kept(tmp_path: Path) -> None:
    path = str(tmp_path / "sessions.db")
    with ContextManager(store="sqlite", sqlite_path=path, token_counter="approximate") as cm:
        assert cm.store.max_sessions is None
        assert cm.store.ttl_seconds == 30 * DAY
        for i in range(150):
            cm.add_user_message(f"user-{i}", f"hello {i}")
        assert len(cm.list_sessions()) == 150
        assert cm.get_memory_stats()["sessions_evicted"] == 0
    with ContextManager(store="sqlite", sqlite_path=path, token_counter="approximate") as again:
        assert sorted(again.list_sessions()) == sorted(f"user-{i}" for i in range(150))


def test_the_memory_store_still_evicts_beyond_100() -> None:
    with ContextManager(token_counter="approximate") as cm:
        assert cm.store.max_sessions == 100
        for i in range(150):
            cm.add_user_message(f"user-{i}", f"hello {i}")
        kept = cm.list_sessions()
        assert len(kept) == 100
        assert "user-0" not in kept
        assert "user-149" in kept


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("session_expiration_seconds", MAX_TTL_SECONDS + 1),
        ("session_expiration_seconds", 10**12),
        ("session_expiration_seconds", float("inf")),
        ("session_expiration_seconds", float("nan")),
        ("session_expiration_seconds", True),
        ("max_sessions", True),
        ("max_sessions", False),
        ("gc_interval_seconds", True),
        ("redis_max_retries", True),
        ("redis_socket_timeout", True),
    ],
)
def test_out_of_range_and_boolean_numbers_fail_naming_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        load_settings(**{key: value})
    assert info.value.key == key.upper()
    assert key.upper() in str(info.value)


def test_the_longest_ttl_is_accepted() -> None:
    assert load_settings(session_expiration_seconds=MAX_TTL_SECONDS).ttl_seconds == MAX_TTL_SECONDS


@pytest.mark.parametrize(
    ("env", "value", "key"),
    [
        ("CTX_MEMORY_MAX_SESSIONS", "true", "MAX_SESSIONS"),
        ("CTX_MEMORY_SESSION_EXPIRATION_SECONDS", "true", "SESSION_EXPIRATION_SECONDS"),
        ("CTX_MEMORY_SESSION_EXPIRATION_SECONDS", "1e12", "SESSION_EXPIRATION_SECONDS"),
        (
            "CTX_MEMORY_SESSION_EXPIRATION_SECONDS",
            str(MAX_TTL_SECONDS + 1),
            "SESSION_EXPIRATION_SECONDS",
        ),
    ],
)
def test_bad_numbers_in_the_environment(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, key: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    assert info.value.key == key


def test_bad_numbers_in_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "settings.toml").write_text("[ctx_memory]\nMAX_SESSIONS = true\n")
    with pytest.raises(ConfigurationError, match="MAX_SESSIONS"):
        load_settings()
