"""The Redis store's Lua scripts are package data, and its keys and codecs are pure."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from importlib import resources

from ctx_memory.stores import _redis_lua

LUA_FILES = (
    "append.lua",
    "append_new.lua",
    "common.lua",
    "index.lua",
    "session.lua",
    "touch.lua",
)


def test_the_scripts_are_found_as_package_resources() -> None:
    lua = resources.files("ctx_memory.stores").joinpath("lua")
    found = sorted(entry.name for entry in lua.iterdir() if entry.name.endswith(".lua"))
    assert found == list(LUA_FILES)
    for name in LUA_FILES:
        assert lua.joinpath(name).read_text(encoding="utf-8").strip()
    # One file per operation, each a script of its own.
    for kind in ("session", "index"):
        names = sorted(e.name for e in lua.joinpath(kind).iterdir() if e.name.endswith(".lua"))
        expected = sorted(
            s.value.split("/")[1] for s in _redis_lua.Script if s.value.startswith(f"{kind}/")
        )
        assert names == expected


def test_one_script_per_operation_and_none_picks_its_operation_from_an_argument() -> None:
    sources = _redis_lua.SOURCES
    assert set(sources) == set(_redis_lua.Script)
    common = resources.files("ctx_memory.stores").joinpath("lua", "common.lua").read_text()
    for script, source in sources.items():
        assert not _redis_lua._INCLUDE.search(source), script
        assert "FIRST" not in source, script
        assert "op ==" not in source, script  # no dispatch on an operation name
        if script in (_redis_lua.Script.APPEND, _redis_lua.Script.TOUCH, _redis_lua.Script.LAYOUT):
            assert common not in source
        else:
            assert common in source, script
    assert "for i = 5, #ARGV, 3 do" in sources[_redis_lua.Script.UPSERT_APPEND]
    assert "for i = 2, #ARGV, 3 do" in sources[_redis_lua.Script.APPEND]
    assert len({hashlib.sha1(s.encode()).hexdigest() for s in sources.values()}) == len(sources)


def test_keys_codecs_and_scripts_import_no_redis_client() -> None:
    code = (
        "import sys\n"
        "import ctx_memory.stores._redis_codec, ctx_memory.stores._redis_keys\n"
        "import ctx_memory.stores._redis_lua\n"
        "assert not [m for m in sys.modules if m == 'redis' or m.startswith('redis.')]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_key_names_are_still_importable_from_the_store_module() -> None:
    from ctx_memory.stores import _redis_keys, redis

    for name in ("session_keys", "SessionKeys", "index_key", "lex_key", "session_tag"):
        assert getattr(redis, name) is getattr(_redis_keys, name)
    assert redis.member_id is _redis_keys.member_id
