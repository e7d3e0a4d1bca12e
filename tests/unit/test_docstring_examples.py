"""Every public class's ``Example:`` block runs as written on the in-memory store."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import textwrap

import pytest

import ctx_memory

# Needs a running server: tests/integration/test_redis_docstring_example.py runs it.
NEEDS_SERVER = {"ctx_memory.stores.redis"}
# Deprecated aliases of renamed modules (importing one warns); their classes are walked in
# the modules they now live in (ctx_memory.classic, ctx_memory.web).
DEPRECATED_ALIASES = {"ctx_memory.memory", "ctx_memory.integration"}

_BLOCK = re.compile(
    r"Example:\s*\n\s*\.\. code-block:: python\s*\n\n(?P<code>(?:[ \t]+.*\n|\s*\n)+)"
)


def _examples():
    found = []
    for info in pkgutil.walk_packages(ctx_memory.__path__, "ctx_memory."):
        if info.name in NEEDS_SERVER | DEPRECATED_ALIASES:
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if name.startswith("_") or not inspect.isclass(obj) or obj.__module__ != info.name:
                continue
            doc = inspect.getdoc(obj) or ""
            match = _BLOCK.search(doc + "\n")
            if match:
                found.append(pytest.param(textwrap.dedent(match["code"]), id=f"{info.name}.{name}"))
    return found


EXAMPLES = _examples()


def test_examples_were_found():
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("code", EXAMPLES)
def test_example_runs(code, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "<docstring example>", "exec"), {"__name__": "__example__"})
