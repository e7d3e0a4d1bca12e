"""A missing extra's ImportError names commands that work from an index and a checkout."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ctx_memory
from ctx_memory import _extras
from ctx_memory._extras import checkout_dir, install_commands, missing_extra, requirement_of

if TYPE_CHECKING:
    import pytest

CHECKOUT = Path(ctx_memory.__file__).resolve().parent.parent


def test_the_commands_cover_an_index_a_checkout_and_the_checkouts_own_env() -> None:
    commands = [command for command, _ in install_commands("agents", Path("/src/ctx_memory"))]
    assert commands == [
        'pip install "ctx-memory[agents]"',
        'pip install -e "/src/ctx_memory[agents]"',
        "cd /src/ctx_memory && uv sync --extra agents",
    ]
    where = dict(install_commands("agents", Path("/src/ctx_memory")))
    assert "uv add --editable /src/ctx_memory --extra agents" in where[commands[1]]


def test_an_unknown_checkout_gets_a_placeholder_path() -> None:
    commands = [command for command, _ in install_commands("classic", None)]
    assert commands[1] == 'pip install -e "/path/to/ctx_memory[classic]"'


def test_paths_that_need_quoting_are_quoted_for_the_shell() -> None:
    path = Path("/home/me/my $work/ctx_memory")
    command = install_commands("agents", path)[1][0]
    assert shlex.split(command) == ["pip", "install", "-e", f"{path}[agents]"]
    cd = install_commands("agents", path)[2][0]
    assert shlex.split(cd)[:2] == ["cd", str(path)]


def test_the_error_names_module_extra_requirement_cause_and_this_checkout() -> None:
    cause = ModuleNotFoundError("No module named 'langchain'")
    error = missing_extra("agents", "ctx_memory.middleware", cause)
    assert isinstance(error, ImportError)
    assert error.name == "ctx_memory.middleware"
    message = str(error)
    first = message.splitlines()[0]
    assert first.startswith("ctx_memory.middleware needs the 'agents' extra (langchain")
    assert "No module named 'langchain'" in first
    assert 'pip install "ctx-memory[agents]"' in message
    # the test environment is uv's editable install of this checkout
    assert f'pip install -e "{CHECKOUT}[agents]"' in message
    assert f"cd {shlex.quote(str(CHECKOUT))} && uv sync --extra agents" in message


def test_requirements_come_from_the_installed_metadata() -> None:
    agents = requirement_of("agents")
    assert agents is not None
    assert agents.startswith("langchain")
    assert "<2" in agents
    assert requirement_of("classic") == "langchain-classic>=1.0"
    assert requirement_of("no-such-extra") is None


def test_checkout_dir_follows_the_installs_direct_url(monkeypatch: pytest.MonkeyPatch) -> None:
    assert checkout_dir() == CHECKOUT  # uv sync installs the project editable

    class Dist:
        def __init__(self, direct: dict[str, Any] | None) -> None:
            self.direct = direct

        def read_text(self, name: str) -> str | None:
            assert name == "direct_url.json"
            return None if self.direct is None else json.dumps(self.direct)

    def use(direct: dict[str, Any] | None) -> Path | None:
        monkeypatch.setattr(_extras, "distribution", lambda name: Dist(direct))
        return checkout_dir()

    assert use({"url": "file:///src/my%20ctx", "dir_info": {}}) == Path("/src/my ctx")
    assert use({"url": "file:///src/ctx", "dir_info": {"editable": True}}) == Path("/src/ctx")
    assert use(None) is None  # from an index
    assert use({"url": "file:///dl/ctx_memory-0.1.0-py3-none-any.whl", "archive_info": {}}) is None
    assert use({"url": "https://example.org/ctx.tar.gz", "archive_info": {}}) is None


def test_an_adapter_import_without_its_extra_raises_import_error() -> None:
    # Block the extra's package in a fresh interpreter: the adapter fails with an
    # ImportError that names the extra's pip command, and `import ctx_memory` still works.
    code = (
        "import sys\n"
        "sys.modules['langchain'] = None\n"
        "sys.modules['langchain_classic'] = None\n"
        "import ctx_memory\n"
        "adapters = (('ctx_memory.middleware', 'agents'), ('ctx_memory.classic', 'classic'))\n"
        "for name, extra in adapters:\n"
        "    try:\n"
        "        __import__(name)\n"
        "    except ImportError as e:\n"
        "        assert f'ctx-memory[{extra}]' in str(e), str(e)\n"
        "    else:\n"
        "        raise SystemExit(f'{name} imported without its extra')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
