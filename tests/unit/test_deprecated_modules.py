"""The old module names still import, warn, and hand out the very same objects.

``ctx_memory.memory`` became :mod:`ctx_memory.classic` and ``ctx_memory.integration``
became :mod:`ctx_memory.web`; the old names stay as deprecated aliases for a while, and
nothing inside the package uses them.
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

import ctx_memory

DEPRECATED = {
    "ctx_memory.memory": ("ctx_memory.classic", ["ContextMemory"]),
    "ctx_memory.integration": (
        "ctx_memory.web",
        ["ContextIntegration", "get_context_integration", "reset_context_integration"],
    ),
}


@pytest.mark.parametrize("old", sorted(DEPRECATED))
def test_the_old_module_warns_and_re_exports(old: str, monkeypatch: pytest.MonkeyPatch) -> None:
    new, names = DEPRECATED[old]
    monkeypatch.delitem(sys.modules, old, raising=False)  # a cached module would not warn
    with pytest.warns(DeprecationWarning, match=rf"{old} is deprecated: .*{new}"):
        module = importlib.import_module(old)
    target = importlib.import_module(new)
    assert set(names) <= set(module.__all__)
    for name in module.__all__:
        assert getattr(module, name) is getattr(target, name), name
    monkeypatch.delitem(sys.modules, old, raising=False)


def test_from_import_of_the_old_names_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "ctx_memory.integration", raising=False)
    with pytest.warns(DeprecationWarning, match="ctx_memory.web"):
        from ctx_memory.integration import ContextIntegration
    assert ContextIntegration is ctx_memory.ContextIntegration
    monkeypatch.delitem(sys.modules, "ctx_memory.integration", raising=False)


def test_the_package_never_imports_a_deprecated_module() -> None:
    root = Path(ctx_memory.__file__).parent
    shims = {root / "memory.py", root / "integration.py"}
    for path in sorted(set(root.rglob("*.py")) - shims):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        text = path.read_text(encoding="utf-8")
        for old in DEPRECATED:
            assert old not in imported, f"{path.name} imports {old}"
            assert f'"{old}"' not in text, f"{path.name} names {old} (lazy import?)"
