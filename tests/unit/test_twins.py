"""Each async twin is its sync twin but for ``await`` and async names.

The package is parsed, not imported: for every ``async def aX`` (or ``_aX``, ``async_X``)
whose scope (class or module) also defines ``def X`` (or ``_X``), the two bodies must be
the same syntax tree once ``await`` is dropped, ``async for``/``async with`` read as
``for``/``with``, and names are compared modulo the async prefix (``aexecute`` matches
``execute``, ``_adrive`` matches ``_drive``, ``AsyncClient`` matches ``Client``). Docstrings
are ignored. ``ALLOWED`` lists the justified exceptions, each with its reason.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "ctx_memory"

ALLOWED: dict[str, str] = {
    "manager/_core.py:ManagerCore._aexecute": (
        "with ASYNC_OPERATIONS=false the async twin runs the sync store call in a thread"
    ),
    "manager/_history.py:HistoryMethods._aedit": (
        "a cancelled caller does not stop an edit half-way: its steps run in a task"
        " (run_whole), so the summaries it made stale are removed too"
    ),
    "manager/_history.py:HistoryMethods._aedit_steps": (
        "when the store call runs in a worker thread (SQLite), the stale summaries are"
        " removed in that thread after it: a cancelled caller cannot wait for it to land"
    ),
    "manager/_core.py:ManagerCore.aclose": (
        "first waits for the edits whose cancelled callers left them running (_run_whole)"
    ),
    "stores/base.py:BaseStore.ahandle": "the default async path: a worker thread or inline",
    "stores/base.py:Closeable.aclose": "closing is sync unless a subclass says otherwise",
    "stores/redis.py:RedisStore.aclose": "an asyncio client is closed on its own loop first",
    "stores/postgres.py:PostgresStore._adrive": (
        "one asyncio pool per event loop (_loop_pool) vs one shared sync pool whose"
        " connections the sync path keeps between calls"
    ),
    "stores/postgres.py:PostgresStore._adiscard": "the pool replaced is the running loop's own",
    "stores/postgres.py:PostgresStore.aclose": "the asyncio pool is closed on its own loop first",
    "stores/redis.py:RedisStore._ado": (
        "one client per event loop (async_client) vs one shared client; awaits the script load"
    ),
    "_requests.py:Part.aread": "only the async read can await a body the framework has not read",
    "_requests.py:_astarlette_body": (
        "Starlette reads a body only with await; the sync twin can only use one already read"
    ),
    "_requests.py:_adjango_session": "Django < 5.0 sessions have no async reads: sync fallback",
    "chat.py:ContextualChat._astream_run": "an async iterator is collected by a comprehension",
    "chat.py:ContextualChat.astream": "an async iterator of one input needs a generator",
    "_compaction_background.py:BackgroundCompactor.afinish_for_close": (
        "a sync close can wait for threads only; awaiting lets the loop's own tasks finish"
    ),
    "retrievers.py:SourceRecordingRetriever._aget_relevant_documents": (
        "LangChain's async fallback for a sync-only retriever drops invoke's k: run its"
        " invoke in a thread instead"
    ),
}
"""``module:Class.aX`` → why it differs from ``X``."""


def _twin_name(name: str) -> str | None:
    """The sync name an async function's name mirrors, or None."""
    for prefix, replacement in (("async_", ""), ("_a", "_"), ("a", "")):
        if name.startswith(prefix) and len(name) > len(prefix):
            return replacement + name[len(prefix) :]
    return None


def _names_match(async_name: str, sync_name: str) -> bool:
    if async_name == sync_name:
        return True
    mirrored = _twin_name(async_name)
    if mirrored == sync_name:
        return True
    return async_name.replace("Async", "", 1) == sync_name or async_name.replace(
        "async_", "", 1
    ) == sync_name.replace("sync_", "", 1)


_NAME_FIELDS = {"id", "attr", "name", "arg"}


def _unwrap(node: Any) -> Any:
    while isinstance(node, ast.Await):
        node = node.value
    # An async generator cannot ``yield from``: ``[async] for x in it: yield x`` is the same.
    if (
        isinstance(node, (ast.For, ast.AsyncFor))
        and isinstance(node.target, ast.Name)
        and not node.orelse
        and len(node.body) == 1
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Yield)
        and isinstance(node.body[0].value.value, ast.Name)
        and node.body[0].value.value.id == node.target.id
    ):
        return ast.Expr(ast.YieldFrom(node.iter))
    return node


def _body(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.stmt]:
    body = list(fn.body)
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        body = body[1:]
    return body


_ASYNC_NODES: dict[type, type] = {
    ast.AsyncFor: ast.For,
    ast.AsyncWith: ast.With,
    ast.AsyncFunctionDef: ast.FunctionDef,
}


def _same(a: Any, s: Any, where: list[str]) -> bool:
    a = _unwrap(a)
    if isinstance(a, list) and isinstance(s, list):
        if len(a) != len(s):
            where.append(f"{len(a)} vs {len(s)} items")
            return False
        return all(_same(x, y, where) for x, y in zip(a, s, strict=True))
    if isinstance(a, ast.AST) and isinstance(s, ast.AST):
        kind = _ASYNC_NODES.get(type(a), type(a))
        if kind is not type(s):
            where.append(
                f"line {getattr(a, 'lineno', '?')}: {type(a).__name__} vs {type(s).__name__}"
            )
            return False
        for field in s._fields:
            if field in ("type_comment", "annotation", "returns"):  # types differ by nature
                continue
            av, sv = getattr(a, field, None), getattr(s, field, None)
            if field in _NAME_FIELDS and isinstance(av, str) and isinstance(sv, str):
                if not _names_match(av, sv):
                    where.append(f"line {getattr(a, 'lineno', '?')}: {av!r} vs {sv!r}")
                    return False
                continue
            if not _same(av, sv, where):
                return False
        return True
    if a != s:
        where.append(f"{a!r} vs {s!r}")
        return False
    return True


def _scopes(tree: ast.Module) -> list[tuple[str, list[ast.stmt]]]:
    classes = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    return [("", tree.body), *((c.name + ".", c.body) for c in classes)]


def _pairs() -> list[tuple[str, ast.AsyncFunctionDef, ast.FunctionDef]]:
    pairs = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for owner, body in _scopes(tree):
            sync = {n.name: n for n in body if isinstance(n, ast.FunctionDef)}
            for node in body:
                if not isinstance(node, ast.AsyncFunctionDef):
                    continue
                twin = _twin_name(node.name)
                if twin is not None and twin in sync:
                    pairs.append((f"{module}:{owner}{node.name}", node, sync[twin]))
    return pairs


PAIRS = _pairs()


def test_the_package_has_twins_to_check() -> None:
    names = {key for key, _, _ in PAIRS}
    assert "manager/_history.py:HistoryMethods.aadd_user_message" in names
    assert "stores/base.py:BaseStore.aexecute" in names
    assert len(PAIRS) > 60


def test_every_allowed_exception_still_exists() -> None:
    names = {key for key, _, _ in PAIRS}
    assert set(ALLOWED) <= names, set(ALLOWED) - names


@pytest.mark.parametrize(("key", "async_fn", "sync_fn"), PAIRS, ids=[key for key, _, _ in PAIRS])
def test_async_twin_is_the_sync_twin_but_for_await(
    key: str, async_fn: ast.AsyncFunctionDef, sync_fn: ast.FunctionDef
) -> None:
    where: list[str] = []
    same = _same(_body(async_fn), _body(sync_fn), where) and _same(
        async_fn.args, sync_fn.args, where
    )
    if key in ALLOWED:
        assert not same, f"{key} now matches its twin: drop it from ALLOWED"
        return
    assert same, f"{key} differs from its sync twin beyond await: {where[-1] if where else ''}"


def test_the_checker_catches_a_copied_body_that_drifted() -> None:
    sync = ast.parse("def get(self, k):\n    v = self._store.get(k)\n    return v or {}\n")
    drifted = ast.parse(
        "async def aget(self, k):\n    v = await self._store.aget(k)\n    return v or []\n"
    )
    same = ast.parse(
        "async def aget(self, k):\n    v = await self._store.aget(k)\n    return v or {}\n"
    )
    s_fn = sync.body[0]
    assert isinstance(s_fn, ast.FunctionDef)
    for tree, expected in ((drifted, False), (same, True)):
        a_fn = tree.body[0]
        assert isinstance(a_fn, ast.AsyncFunctionDef)
        assert _same(_body(a_fn), _body(s_fn), []) is expected
