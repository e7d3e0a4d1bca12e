"""Settings: precedence, validation and redaction.

Files, namespaces, typos, broken TOML and the singleton are in ``test_settings_*.py``.
"""

from __future__ import annotations

import pytest

from ctx_memory import ConfigurationError, ContextManager, load_settings
from ctx_memory.config import redact_url, setting_differences


def test_defaults():
    s = load_settings()
    assert s.backend == "memory"
    assert s.max_sessions == 100
    assert s.ttl_seconds == 3600
    assert s.token_counter == "tiktoken"


def test_files_env_and_explicit_precedence(tmp_path, monkeypatch):
    (tmp_path / "settings.toml").write_text(
        '[ctx_memory]\nMAX_SESSIONS = 7\nSTORE = "sqlite"\nDEFAULT_MODEL = "gpt-4"\n'
    )
    (tmp_path / ".secrets.toml").write_text(
        '[ctx_memory]\nREDIS_URL = "redis://user:s3cret@cache:6380/2"\n'
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CTX_MEMORY_MAX_SESSIONS", "9")
    monkeypatch.setenv("CTX_MEMORY_EVENT_EMISSION", "false")
    s = load_settings()
    assert s.max_sessions == 9  # env beats file
    assert s.store == "sqlite"
    assert s.default_model == "gpt-4"
    assert s.event_emission is False
    assert s.redis_url == "redis://user:s3cret@cache:6380/2"
    assert load_settings(max_sessions=3).max_sessions == 3  # explicit beats env
    assert "s3cret" not in repr(s)


def test_use_redis_caching_selects_redis():
    s = load_settings(use_redis_caching=True, store="memory")
    assert s.backend == "redis"


@pytest.mark.parametrize(
    ("env", "value", "key"),
    [
        ("CTX_MEMORY_MAX_SESSIONS", "abc", "MAX_SESSIONS"),
        ("CTX_MEMORY_MAX_SESSIONS", "-1", "MAX_SESSIONS"),
        ("CTX_MEMORY_SESSION_EXPIRATION_SECONDS", "-5", "SESSION_EXPIRATION_SECONDS"),
        ("CTX_MEMORY_USE_REDIS_CACHING", "maybe", "USE_REDIS_CACHING"),
        ("CTX_MEMORY_STORE", "mongodb", "STORE"),  # no such store (postgres is one now)
        ("CTX_MEMORY_TOKEN_COUNTER", "words", "TOKEN_COUNTER"),
        ("CTX_MEMORY_REDIS_URL", "http://x", "REDIS_URL"),
        ("CTX_MEMORY_MAX_SESION", "5", "MAX_SESION"),
        ("CTX_MEMORY_SQLITE_PATH", "", "SQLITE_PATH"),  # SQLite: a temporary database
        ("CTX_MEMORY_SQLITE_PATH", "  ", "SQLITE_PATH"),
        ("CTX_MEMORY_TOKEN_ENCODING", "bogus", "TOKEN_ENCODING"),
        ("CTX_MEMORY_REDIS_KEY_PREFIX", "a{b}", "REDIS_KEY_PREFIX"),
        # beyond what a thread can wait: the collector died on its first wait
        ("CTX_MEMORY_GC_INTERVAL_SECONDS", "1e10", "GC_INTERVAL_SECONDS"),
        # a collector looping without pause against the store
        ("CTX_MEMORY_GC_INTERVAL_SECONDS", "1e-9", "GC_INTERVAL_SECONDS"),
        # libpq refuses it when connecting (after the pool's timeout): refused at load
        ("CTX_MEMORY_POSTGRES_URL", "postgresql://u:pw@h/db?schema=s", "POSTGRES_URL"),
    ],
)
def test_wrong_values_fail_at_load_naming_the_key(monkeypatch, env, value, key):
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    assert info.value.key == key
    assert key in str(info.value)


def test_wrong_value_in_settings_file(tmp_path, monkeypatch):
    (tmp_path / "settings.toml").write_text("[ctx_memory]\nGARBAGE_COLLECTION = 3\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match="GARBAGE_COLLECTION") as info:
        ContextManager()
    assert info.value.key == "GARBAGE_COLLECTION"
    assert str(tmp_path / "settings.toml") in str(info.value)  # where it was set


def test_unknown_explicit_override():
    with pytest.raises(ConfigurationError, match="NOT_A_SETTING"):
        load_settings(not_a_setting=1)
    with pytest.raises(ConfigurationError, match=r"max_session \(did you mean max_sessions\?\)"):
        ContextManager(max_session=5)


def test_constructor_overrides_settings(monkeypatch):
    monkeypatch.setenv("CTX_MEMORY_MAX_SESSIONS", "50")
    with ContextManager(max_sessions=2) as cm:
        assert cm.settings.max_sessions == 2
        assert cm.store.max_sessions == 2


def test_redaction():
    assert redact_url("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert redact_url("rediss://user:pw@h/1") == "rediss://user:***@h/1"
    assert redact_url("redis://h:6379") == "redis://h:6379"
    with pytest.raises(ConfigurationError) as info:
        load_settings(redis_url="http://user:topsecret@h")
    assert "topsecret" not in str(info.value)


def test_settings_object_plus_overrides_reads_no_file(tmp_path, monkeypatch):
    base = load_settings(max_sessions=5)
    (tmp_path / "settings.toml").write_text("[ctx_memory]\nMAX_SESSIONS = 77\n")
    monkeypatch.chdir(tmp_path)
    with ContextManager(base, event_emission=False) as cm:
        assert cm.settings.max_sessions == 5
        assert cm.settings.event_emission is False
    with pytest.raises(ConfigurationError, match="MAX_SESSIONS"):
        ContextManager(base, max_sessions=-1)


def test_zero_max_sessions_means_no_limit(monkeypatch):
    monkeypatch.setenv("CTX_MEMORY_MAX_SESSIONS", "0")
    assert load_settings().max_sessions is None
    with ContextManager() as cm:
        for i in range(150):
            cm.create_session(f"s{i}")
        assert len(cm.list_sessions()) == 150


def test_store_name_as_constructor_argument(tmp_path):
    with ContextManager(store="sqlite", sqlite_path=str(tmp_path / "x.sqlite3")) as cm:
        assert cm.store.name == "sqlite"
        assert cm.settings.store == "sqlite"


def test_a_raw_key_where_a_digest_goes_is_not_shown(monkeypatch):
    raw = "ctxm_this-is-a-raw-api-key-0123456789"
    monkeypatch.setenv("CTX_MEMORY_SERVER_ADMIN_KEYS", f'["{raw}"]')
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    assert info.value.key == "SERVER_ADMIN_KEYS"
    assert raw not in str(info.value)
    assert info.value.__cause__ is None


def test_a_key_opens_one_tenant_and_is_not_also_an_admin_key():
    """Refused at load, naming the entries, never a hash: one key for two tenants would
    open one of them only; a tenant's key among the admin keys would open every tenant."""
    from ctx_memory.server.keys import hash_api_key

    digest = hash_api_key("ctxm_shared")
    twice = [{"tenant": "acme", "sha256": digest}, {"tenant": "globex", "sha256": digest}]
    with pytest.raises(
        ConfigurationError, match=r"entry 1 \(tenant 'globex'\) has the key of entry 0"
    ) as info:
        load_settings(server_api_keys=twice)
    assert info.value.key == "SERVER_API_KEYS"
    assert digest not in str(info.value)
    acme = [{"tenant": "acme", "sha256": digest}]
    with pytest.raises(ConfigurationError, match="also the key of tenant 'acme'") as info:
        load_settings(server_api_keys=acme, server_admin_keys=[digest])
    assert info.value.key == "SERVER_ADMIN_KEYS"
    assert digest not in str(info.value)
    assert load_settings(server_api_keys=acme * 2).server_api_keys  # listed twice: harmless


def test_chat_model_credentials_are_masked_when_settings_are_shown():
    kwargs = {
        "api_key": "sk-secret",
        "temperature": 0,
        "max_tokens": 512,
        "default_headers": {"Authorization": "Bearer sk-proxy", "X-Trace": "t"},
    }
    settings = load_settings(server_chat_model_kwargs=kwargs)
    assert "sk-secret" not in repr(settings)
    assert "sk-proxy" not in repr(settings)  # nested headers too
    assert "'temperature': 0" in repr(settings)
    assert "'max_tokens': 512" in repr(settings)  # no credential
    assert "'X-Trace': 't'" in repr(settings)
    assert settings.server_chat_model_kwargs["api_key"] == "sk-secret"  # kept, only masked
    differences = setting_differences(settings, load_settings())
    assert all("sk-secret" not in text for _, text in differences)


def test_a_sqlite_path_under_home_is_expanded(tmp_path, monkeypatch):
    """``~/sessions.db`` names a file in the home directory, as in a shell."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CTX_MEMORY_SQLITE_PATH", "~/sessions.db")
    settings = load_settings(store="sqlite")
    assert settings.sqlite_path == str(tmp_path / "sessions.db")
    with ContextManager(settings) as cm:
        cm.add_user_message("s", "hi")
    assert (tmp_path / "sessions.db").is_file()
    from ctx_memory.stores.sqlite import SqliteStore

    store = SqliteStore("~/direct.db")
    store.close()
    assert (tmp_path / "direct.db").is_file()
