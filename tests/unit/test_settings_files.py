"""Settings that live in the user's app (issue 9, item 3).

ctx_memory reads only the ``[ctx_memory]`` table of ``settings.toml`` / ``.secrets.toml``:
the app's own top-level keys are never taken for ours. Every file here is a real file in
``tmp_path``; the unit conftest clears ``CTX_MEMORY_*`` and moves to an empty directory.
"""

from __future__ import annotations

import re
import traceback
from pathlib import Path
from typing import Any

import pytest

from ctx_memory import ConfigurationError, ContextManager, load_settings
from ctx_memory.config import Settings

APP_SETTINGS = """\
# the app's own settings
DEBUG = true
STORE = "shop-42"
REDIS_URL = "redis://app-cache:6379/3"
MAX_SESSIONS = "many"

[database]
url = "postgres://app@db/app"
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def refused(**kwargs: Any) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as info:
        load_settings(**kwargs)
    return info.value


# ------------------------------------------------------------------ the namespace


def test_the_table_beside_the_apps_own_top_level_keys(tmp_path: Path) -> None:
    write(
        tmp_path / "settings.toml",
        APP_SETTINGS + '\n[ctx_memory]\nSTORE = "sqlite"\nSQLITE_PATH = "ctx.db"\n',
    )
    settings = load_settings(root=tmp_path)
    assert settings.store == "sqlite"
    assert settings.sqlite_path == "ctx.db"
    assert settings.redis_url == "redis://localhost:6379/0"  # not the app's REDIS_URL
    assert settings.max_sessions is None  # not the app's "many": SQLite's default


def test_an_empty_table_says_the_top_level_keys_are_the_apps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "settings.toml", APP_SETTINGS + "\n[ctx_memory]\n")
    monkeypatch.chdir(tmp_path)
    with ContextManager() as cm:
        assert cm.settings == Settings()
        assert cm.store.name == "memory"


def test_table_in_secrets_beside_the_apps_secrets(tmp_path: Path) -> None:
    write(tmp_path / "settings.toml", '[ctx_memory]\nSTORE = "redis"\nMAX_SESSIONS = 7\n')
    write(
        tmp_path / ".secrets.toml",
        'REDIS_URL = "redis://:app-secret@app-cache/0"\n'  # the app's
        '[ctx_memory]\nREDIS_URL = "redis://:ours@cache:6380/2"\nMAX_SESSIONS = 9\n',
    )
    settings = load_settings(root=tmp_path)
    assert settings.redis_url == "redis://:ours@cache:6380/2"
    assert settings.max_sessions == 9  # .secrets.toml wins key by key...
    assert settings.store == "redis"  # ...and the other keys of settings.toml stay


def test_secrets_alone_and_table_name_in_any_case(tmp_path: Path) -> None:
    write(tmp_path / ".secrets.toml", '[CTX_MEMORY]\nredis_url = "redis://:pw@cache/1"\n')
    assert load_settings(root=tmp_path).redis_url == "redis://:pw@cache/1"
    write(tmp_path / "settings.toml", "ctx_memory.max_sessions = 4\n")  # a dotted key
    assert load_settings(root=tmp_path).max_sessions == 4


def test_environment_overrides_the_file_and_arguments_override_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(
        tmp_path / "settings.toml",
        '[ctx_memory]\nSTORE = "sqlite"\nMAX_SESSIONS = 7\nTOKEN_COUNTER = "approximate"\n',
    )
    write(tmp_path / ".secrets.toml", "[ctx_memory]\nMAX_SESSIONS = 8\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CTX_MEMORY_MAX_SESSIONS", "9")
    monkeypatch.setenv("CTX_MEMORY_STORE", "memory")
    settings = load_settings()
    assert (settings.max_sessions, settings.store) == (9, "memory")
    assert settings.token_counter == "approximate"  # from the file, nothing overrides it
    assert load_settings(max_sessions=3).max_sessions == 3
    # an argument that fixes a bad file or env value is the value checked
    monkeypatch.setenv("CTX_MEMORY_MAX_SESSIONS", "-1")
    assert load_settings(max_sessions=3).max_sessions == 3


def test_dynaconf_tokens_still_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHE_HOST", "cache.internal")
    write(
        tmp_path / "settings.toml",
        '[ctx_memory]\nMAX_SESSIONS = "@int 12"\n'
        'REDIS_URL = "@format redis://{env[CACHE_HOST]}:6379/0"\n',
    )
    monkeypatch.setenv("CTX_MEMORY_GC_INTERVAL_SECONDS", "@float 2.5")
    monkeypatch.setenv("CTX_MEMORY_EVENT_EMISSION", "False")  # Dynaconf's True/False fix
    settings = load_settings(root=tmp_path)
    assert settings.max_sessions == 12
    assert settings.redis_url == "redis://cache.internal:6379/0"
    assert settings.gc_interval_seconds == 2.5
    assert settings.event_emission is False


def test_the_apps_dynaconf_variables_do_not_configure_ctx_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "app"
    elsewhere.mkdir()
    app_file = write(elsewhere / "app.toml", '[ctx_memory]\nSTORE = "redis"\n[default]\nX = 1\n')
    write(tmp_path / "settings.toml", '[ctx_memory]\nSTORE = "sqlite"\n')
    for name, value in {
        "DYNACONF_STORE": "redis",  # Dynaconf's global prefix
        "SETTINGS_FILE_FOR_DYNACONF": str(app_file),
        "INCLUDES_FOR_DYNACONF": str(app_file),
        "ENVIRONMENTS_FOR_DYNACONF": "true",
        "VAULT_ENABLED_FOR_DYNACONF": "true",  # hvac is not installed: this used to fail
        "AUTO_CAST_FOR_DYNACONF": "false",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CTX_MEMORY_MAX_SESSIONS", "@int 5")
    settings = load_settings(root=tmp_path)
    assert (settings.store, settings.max_sessions) == ("sqlite", 5)


# ------------------------------------------------------------------ unknown keys


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("STOER", "STORE"),
        ("MAX_SESSION", "MAX_SESSIONS"),
        ("max_sesions", "MAX_SESSIONS"),
        ("REDIS_ULR", "REDIS_URL"),
        ("SESSION_EXPIRATION", "SESSION_EXPIRATION_SECONDS"),
    ],
)
def test_a_typo_in_the_table_names_file_key_and_suggestion(
    tmp_path: Path, typo: str, meant: str
) -> None:
    path = write(tmp_path / "settings.toml", f'[ctx_memory]\nSTORE = "memory"\n{typo} = 5\n')
    error = refused(root=tmp_path)
    assert error.key == typo.upper()
    assert str(path) in str(error)
    assert f"{typo} (did you mean {meant}?)" in str(error)


def test_every_typo_is_listed_at_once_and_secrets_are_checked(tmp_path: Path) -> None:
    write(tmp_path / "settings.toml", '[ctx_memory]\nSTOER = "sqlite"\nMAX_SESSION = 3\n')
    message = str(refused(root=tmp_path))
    assert "MAX_SESSION (did you mean MAX_SESSIONS?)" in message
    assert "STOER (did you mean STORE?)" in message
    write(tmp_path / "settings.toml", "[ctx_memory]\n")
    secrets = write(tmp_path / ".secrets.toml", '[ctx_memory]\nREDIS_URLS = "redis://h/0"\n')
    error = refused(root=tmp_path)
    assert (error.key, str(secrets) in str(error)) == ("REDIS_URLS", True)
    assert "did you mean REDIS_URL?" in str(error)


def test_an_unknown_key_with_no_near_miss_lists_the_settings(tmp_path: Path) -> None:
    write(tmp_path / "settings.toml", "[ctx_memory]\nzzz = 1\n")
    message = str(refused(root=tmp_path))
    assert "zzz" in message
    assert all(name.upper() in message for name in Settings.model_fields)


def test_typos_in_the_environment_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTX_MEMORY_STOER", "sqlite")
    error = refused()
    assert error.key == "STOER"
    assert "CTX_MEMORY_STOER (did you mean CTX_MEMORY_STORE?)" in str(error)


def test_sub_tables_and_duplicates_in_the_table(tmp_path: Path) -> None:
    write(tmp_path / "settings.toml", '[ctx_memory.redis]\nurl = "redis://h/0"\n')
    assert refused(root=tmp_path).key == "REDIS"
    write(tmp_path / "settings.toml", '[ctx_memory]\nstore = "sqlite"\nSTORE = "redis"\n')
    error = refused(root=tmp_path)
    assert error.key == "STORE"
    assert "twice" in str(error)
    write(tmp_path / "settings.toml", 'ctx_memory = "sqlite"\n')
    assert "must be a table" in str(refused(root=tmp_path))


# ------------------------------------------------------------------ booleans for numbers

NUMERIC = sorted(
    name
    for name, field in Settings.model_fields.items()
    if {int, float} & set(getattr(field.annotation, "__args__", (field.annotation,)))
)


def test_the_numeric_settings_are_the_ones_tested() -> None:
    assert NUMERIC == [
        "gc_interval_seconds",
        "max_sessions",
        "postgres_connect_timeout",
        "postgres_pool_size",
        "redis_max_retries",
        "redis_socket_timeout",
        "server_max_body_bytes",
        "server_max_tokens",
        "server_max_webtext_bytes",
        "server_rate_limit_burst",
        "server_rate_limit_per_minute",
        "server_retriever_k",
        "session_expiration_seconds",
    ]


@pytest.mark.parametrize("name", NUMERIC)
@pytest.mark.parametrize("value", ["true", "false"])
def test_booleans_are_refused_for_numbers_in_a_file(tmp_path: Path, name: str, value: str) -> None:
    path = write(tmp_path / "settings.toml", f"[ctx_memory]\n{name.upper()} = {value}\n")
    error = refused(root=tmp_path)
    assert error.key == name.upper()
    assert "not a boolean" in str(error)
    assert str(path) in str(error)


@pytest.mark.parametrize("name", NUMERIC)
@pytest.mark.parametrize("value", ["true", "True", "false", "@bool 1"])
def test_booleans_are_refused_for_numbers_in_the_environment(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(f"CTX_MEMORY_{name.upper()}", value)
    error = refused()
    assert error.key == name.upper()
    assert f"CTX_MEMORY_{name.upper()}" in str(error)


@pytest.mark.parametrize("name", NUMERIC)
def test_booleans_are_refused_for_numbers_as_arguments(name: str) -> None:
    assert refused(**{name: True}).key == name.upper()


def test_a_wrong_value_in_secrets_is_not_echoed(tmp_path: Path) -> None:
    write(tmp_path / ".secrets.toml", '[ctx_memory]\nREDIS_KEY_PREFIX = ""\nSTORE = "hunter2"\n')
    error = refused(root=tmp_path)
    assert error.key in {"STORE", "REDIS_KEY_PREFIX"}
    assert ".secrets.toml" in str(error)
    assert "hunter2" not in str(error)


# ------------------------------------------------------------------ broken files


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('[ctx_memory]\nSTORE = "sqlite"\nMAX_SESSIONS = = 3\n', "line 3, column 16"),
        ("[ctx_memory]\nSTORE = sqlite\n", "line 2, column 9"),
        ('[ctx_memory]\nREDIS_URL = "redis://:hunter2@h/0\nSTORE = "x"\n', "line 2"),
        ('[ctx_memory]\nREDIS_URL = "redis://:hunter2@h/0', "line 2 (the end of the file)"),
        ("[ctx_memory]\nSTORE = 1\n[ctx_memory]\n", "line 3"),  # a table declared twice
        ("[ctx_memory\n", "line 1"),
    ],
)
@pytest.mark.parametrize("file_name", ["settings.toml", ".secrets.toml"])
def test_broken_toml_names_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, where: str, file_name: str
) -> None:
    path = write(tmp_path / file_name, text)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError) as info:
        ContextManager()
    error = info.value
    assert error.key == "SETTINGS_FILE"
    assert f"{path} is not valid TOML" in str(error)
    assert where in str(error)
    assert "hunter2" not in str(error)
    # no parser error chained, no frame of the parser's (or Dynaconf's) in the traceback
    assert error.__cause__ is None
    assert error.__context__ is None
    frames = traceback.extract_tb(error.__traceback__)
    assert not [frame for frame in frames if "dynaconf" in frame.filename]
    assert frames[-1].filename.endswith("config.py")


def test_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_bytes(b'[ctx_memory]\nSTORE = "sqlite"\nREDIS_URL = "redis://:p\xe4ss@h/0"\n')
    error = refused(root=tmp_path)
    assert (error.key, error.__context__) == ("SETTINGS_FILE", None)
    assert f"{path} is not UTF-8 text" in str(error)
    assert "line 3" in str(error)
    assert "p\\xe4ss" not in str(error)
    assert "ss@h" not in str(error)


def test_a_settings_path_that_cannot_be_read(tmp_path: Path) -> None:
    (tmp_path / "settings.toml").mkdir()
    error = refused(root=tmp_path)
    assert (error.key, error.__context__) == ("SETTINGS_FILE", None)
    assert f"cannot read {tmp_path / 'settings.toml'}" in str(error)


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "settings.toml").write_bytes(b'\xef\xbb\xbf[ctx_memory]\nSTORE = "sqlite"\n')
    assert load_settings(root=tmp_path).store == "sqlite"


# ------------------------------------------------------------------ files of earlier versions


def test_top_level_keys_without_a_table_are_refused_not_read(tmp_path: Path) -> None:
    path = write(tmp_path / "settings.toml", 'STORE = "sqlite"\nMAX_SESSIONS = 10\nDEBUG = 1\n')
    error = refused(root=tmp_path)
    assert error.key == "MAX_SESSIONS"
    message = str(error)
    assert f"MAX_SESSIONS, STORE at the top level of {path}" in message
    assert "[ctx_memory]" in message
    assert "DEBUG" not in message  # not a ctx_memory key


def test_top_level_keys_in_secrets_are_refused_too(tmp_path: Path) -> None:
    path = write(tmp_path / ".secrets.toml", 'REDIS_URL = "redis://:hunter2@h/0"\n')
    error = refused(root=tmp_path)
    assert (error.key, str(path) in str(error)) == ("REDIS_URL", True)
    assert "hunter2" not in str(error)


def test_a_table_in_either_file_makes_every_top_level_key_the_apps(tmp_path: Path) -> None:
    write(tmp_path / "settings.toml", 'STORE = "shop"\nREDIS_URL = "redis://app/1"\n')
    write(tmp_path / ".secrets.toml", "[ctx_memory]\nMAX_SESSIONS = 3\n")
    settings = load_settings(root=tmp_path)
    assert (settings.store, settings.redis_url) == ("memory", "redis://localhost:6379/0")
    assert settings.max_sessions == 3


def test_a_file_of_only_the_apps_keys_is_fine(tmp_path: Path) -> None:
    write(tmp_path / "settings.toml", 'DEBUG = true\nTITLE = "shop"\n[database]\nurl = "x"\n')
    assert load_settings(root=tmp_path) == Settings()


# ------------------------------------------------------------------ the documented examples


def test_the_documented_configuration_examples_load_as_documented(tmp_path: Path) -> None:
    docs = Path(__file__).resolve().parents[2] / "docs"
    section = (docs / "configuration.md").read_text(encoding="utf-8")
    blocks = dict(
        re.findall(r"```toml\n# (settings\.toml|\.secrets\.toml)[^\n]*\n(.*?)```", section, re.S)
    )
    assert set(blocks) == {"settings.toml", ".secrets.toml"}
    for name, text in blocks.items():
        write(tmp_path / name, text)
    settings = load_settings(root=tmp_path)
    assert settings.store == "redis"
    assert settings.redis_url == "rediss://alice:secret@cache.internal:6380/0"  # not the app's
    assert (settings.max_sessions, settings.ttl_seconds) == (10_000, 86_400)
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", section, re.M))
    assert documented == {name.upper() for name in Settings.model_fields}
