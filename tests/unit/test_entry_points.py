"""Third-party stores registered by entry point: installed as a package, selected by STORE.

The package is the README's own-store example (``my_store.py``, its ``CountingStore``)
with an installed ``.dist-info`` declaring it in the ``ctx_memory.stores`` group, on
``sys.path`` (as ``pip install --target`` leaves it). It is then used through settings,
``ContextManager(store="counting")`` and the CLI, in this process and in a fresh one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner

from ctx_memory import ContextManager
from ctx_memory.cli import app
from ctx_memory.config import load_settings
from ctx_memory.errors import ConfigurationError
from ctx_memory.stores import ENTRY_POINT_GROUP, create_store, registered_stores

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[2]
_EXAMPLE = re.compile(
    r"```python\n(?P<code>[^`]*?from ctx_memory\.testing import StoreContract.*?)```", re.S
)


RAISING_STORES = """
from ctx_memory.stores.base import BaseStore


def raising(settings):
    raise RuntimeError("cannot reach postgresql://app:hunter2@db.internal/app")


class AbstractStore(BaseStore):  # neither handle nor close: cannot be instantiated
    pass
"""


def install(target: Path, name: str, entry_points: dict[str, str], module: str, code: str) -> None:
    """What ``pip install --target`` leaves: the module and its ``.dist-info``."""
    (target / f"{module}.py").write_text(code, encoding="utf-8")
    info = target / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = "".join(f"{key} = {value}\n" for key, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}")
    (info / "RECORD").write_text("")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on ``sys.path`` with the README's store installed as ``counting``."""
    code = _EXAMPLE.search((ROOT / "README.md").read_text(encoding="utf-8"))
    assert code, "the README shows an own-store example"
    install(
        tmp_path,
        "ctx-counting-store",
        {"counting": "my_store:CountingStore", "redis": "my_store:CountingStore"},
        "my_store",
        code["code"],
    )
    install(tmp_path, "ctx-broken-store", {"broken": "no_such_module:Store"}, "unused", "")
    install(
        tmp_path,
        "ctx-failing-stores",
        {
            "raising": "failing_stores:raising",
            "Abstract-Store": "failing_stores:AbstractStore",
        },
        "failing_stores",
        RAISING_STORES,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in list(os.environ):
        if name.startswith("CTX_MEMORY_"):
            monkeypatch.delenv(name)
    yield tmp_path
    sys.modules.pop("my_store", None)


def test_registered_stores_are_listed_without_importing_them(site: Path) -> None:
    found = registered_stores()
    assert {"counting", "broken"} <= set(found)
    assert "redis" not in found  # a built-in name always means the built-in store
    assert "my_store" not in sys.modules


def test_store_name_selects_the_registered_store(site: Path) -> None:
    settings = load_settings(store="counting")
    store = create_store(settings)
    assert type(store).__name__ == "CountingStore"
    assert store.inner.ttl_seconds == settings.ttl_seconds  # type: ignore[attr-defined]
    with ContextManager(store="counting", token_counter="approximate") as cm:
        cm.add_user_message("s1", "hello")
        assert [m.content for m in cm.get_messages("s1")] == ["hello"]
        assert cm.store.name == "counting"
        assert cm.store.counts["AppendMessages"] == 1  # type: ignore[attr-defined]
    store.close()


def test_unknown_store_names_the_known_ones(site: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        load_settings(store="countng")
    message = str(info.value)
    assert info.value.key == "STORE"
    known = "Abstract-Store, broken, counting, memory, postgres, raising, redis, sqlite"
    assert f"known stores: {known}" in message
    assert "ctx_memory.stores" in message


def test_a_store_that_cannot_be_imported_is_a_clear_error(site: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"'broken' \(no_such_module:Store\) cannot be"):
        create_store(load_settings(store="broken"))


@pytest.mark.parametrize(
    ("name", "problem"),
    [("raising", "RuntimeError: cannot reach postgresql://app:***@db.internal/app"),
     ("Abstract-Store", "could not be built: TypeError: ")],
)  # fmt: skip
def test_a_store_that_cannot_be_built_is_a_clear_error_without_secrets(
    site: Path, name: str, problem: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        ContextManager(store=name)
    assert info.value.key == "STORE"
    assert f"{name!r}" in str(info.value)
    assert problem in str(info.value)
    assert info.value.__cause__ is None
    assert "hunter2" not in repr(info.value)
    # The CLI: one line, the name as registered (capitals kept), no secret, no traceback.
    result = CliRunner().invoke(app, ["--store", name, "sessions", "list"])
    assert result.exit_code == 2, result.output
    assert problem in result.output
    assert "hunter2" not in result.output
    assert "Traceback" not in result.output


def test_the_cli_uses_the_registered_store(site: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    result = runner.invoke(
        app, ["sessions", "list", "--long"], env={"CTX_MEMORY_STORE": "counting"}
    )
    assert result.exit_code == 0, result.output
    assert "0 session(s) on counting" in result.output
    result = runner.invoke(app, ["sessions", "list"], env={"CTX_MEMORY_STORE": "nope"})
    assert result.exit_code == 2
    assert "known stores:" in result.output


def test_a_fresh_process_finds_the_installed_store(site: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CTX_MEMORY_")},
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
        "CTX_MEMORY_STORE": "counting",
    }
    run = subprocess.run(
        [sys.executable, "-m", "ctx_memory", "sessions", "list", "--long"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "0 session(s) on counting" in run.stdout + run.stderr
