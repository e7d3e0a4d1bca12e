from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import ctx_memory._requests as requests_module
import ctx_memory.web as web_module
from ctx_memory import ContextIntegration, ContextMode, InvalidSessionIdError, ValidationError


@pytest.fixture
def integration(manager):
    return ContextIntegration(manager)


def test_session_id_from_mapping_object_header_and_session(integration):
    assert integration.get_session_id({"session_id": "a"}) == "a"
    assert integration.get_session_id(SimpleNamespace(GET={"session_id": "b"}, POST={})) == "b"
    assert integration.get_session_id(SimpleNamespace(data={"sessionId": "c"})) == "c"
    assert integration.get_session_id(SimpleNamespace(headers={"X-Session-ID": "d"})) == "d"
    assert integration.get_session_id(SimpleNamespace(GET={}, session={"session_id": "e"})) == "e"
    assert integration.get_session_id({}, default="f") == "f"
    with pytest.raises(InvalidSessionIdError, match="no session id"):
        integration.get_session_id(SimpleNamespace(GET={}))


def test_a_framework_session_key_is_never_the_session_id(integration):
    # Django's session key is the browser's credential: it must not name stored sessions.
    request = SimpleNamespace(GET={}, session=SimpleNamespace(session_key="secret-cookie"))
    with pytest.raises(InvalidSessionIdError, match="no session id"):
        integration.get_session_id(request)


def test_mapping_header_names_in_any_case(integration):
    # dict(request.headers) of Django spells it X-Session-Id, of Starlette x-session-id.
    assert integration.get_session_id({"X-Session-Id": "a"}) == "a"
    assert integration.get_session_id({"x-session-id": "b"}) == "b"
    assert integration.get_mode({"x-context-mode": "research"}) is ContextMode.RESEARCH
    # Parameter keys come before header names.
    assert integration.get_session_id({"x-session-id": "h", "session_id": "k"}) == "k"


def test_precedence_query_header_body_form_session(integration):
    parts = {
        "GET": {"session_id": "query"},
        "headers": {"X-Session-ID": "header"},
        "json": {"session_id": "body"},
        "POST": {"session_id": "form"},
        "session": {"session_id": "session"},
    }
    for name in ["GET", "headers", "json", "POST", "session"]:
        assert integration.get_session_id(SimpleNamespace(**parts)) == parts[name].popitem()[1]
    assert integration.get_session_id(SimpleNamespace(**parts), default="d") == "d"
    # Empty values do not count.
    request = SimpleNamespace(GET={"session_id": ""}, headers={"X-Session-ID": "h"})
    assert integration.get_session_id(request) == "h"


def test_configurable_names(manager):
    integration = ContextIntegration(
        manager,
        session_keys="chat",
        session_headers=("X-Chat",),
        mode_keys=["m"],
        mode_headers="X-M",
    )
    assert integration.get_session_id({"chat": "a"}) == "a"
    assert integration.get_session_id(SimpleNamespace(headers={"x-chat": "b"})) == "b"
    assert integration.get_mode({"m": "thinking"}) is ContextMode.THINKING
    assert integration.get_mode(SimpleNamespace(headers={"X-M": "research"})).value == "research"
    with pytest.raises(InvalidSessionIdError, match=r"chat .*X-Chat"):
        integration.get_session_id({"session_id": "default names are off"})


def test_bad_ids_say_where_they_came_from(integration):
    with pytest.raises(InvalidSessionIdError, match=r"mapping|key 'session_id'"):
        integration.get_session_id({"session_id": "x" * 300})
    with pytest.raises(InvalidSessionIdError, match="header 'X-Session-ID'"):
        integration.get_session_id(SimpleNamespace(headers={"X-Session-ID": "a\nb"}))
    with pytest.raises(InvalidSessionIdError, match="must be a string, got dict"):
        integration.get_session_id(SimpleNamespace(json={"session_id": {"nested": 1}}))
    assert integration.get_session_id({"session_id": 42}) == "42"
    with pytest.raises(InvalidSessionIdError, match="got bool"):
        integration.get_session_id({"session_id": True})


def test_mode_from_request(integration):
    assert integration.get_mode({"mode": "thinking"}) is ContextMode.THINKING
    assert integration.get_mode({"research": "true"}) is ContextMode.RESEARCH
    assert integration.get_mode(SimpleNamespace(GET={"deep_research": "1"})) is ContextMode.RESEARCH
    assert integration.get_mode({}) is ContextMode.NORMAL
    with pytest.raises(ValidationError, match="unknown mode 'sleepy' in the key 'mode'"):
        integration.get_mode({"mode": "sleepy"})
    assert integration.get_mode({"mode": " Research "}) is ContextMode.RESEARCH
    assert integration.get_mode({"research": "false", "thinking": True}) is ContextMode.THINKING


def test_prepare_request_records_metadata(integration, manager):
    sid = integration.prepare_request(
        {
            "session_id": "s",
            "mode": "research",
            "current_url": "https://p",
            "timezone": "Europe/Paris",
        }
    )
    meta = manager.get_metadata(sid)
    assert (meta["mode"], meta["current_url"], meta["user_timezone"]) == (
        "research",
        "https://p",
        "Europe/Paris",
    )


def test_add_search_results(integration, manager):
    added = integration.add_search_results(
        "s",
        [
            {
                "title": "Latest News",
                "snippet": "short",
                "url": "https://news.com",
                "body": "long body",
            },
            {"title": "Only snippet", "snippet": "just this", "url": "https://b.com"},
        ],
    )
    assert added == 2
    items = manager.get_fetched_context("s")["web_search"]
    assert items[0]["content"] == "long body"
    assert items[0]["url"] == "https://news.com"
    assert items[0]["extracted_data"] == {"title": "Latest News", "snippet": "short"}
    assert items[1]["content"] == "just this"
    # The same results again are not stored twice.
    assert (
        integration.add_search_results(
            "s",
            [
                {
                    "title": "Latest News",
                    "snippet": "short",
                    "url": "https://news.com",
                    "body": "long body",
                }
            ],
        )
        == 0
    )


def test_add_web_content(integration, manager):
    request = SimpleNamespace(POST={"session_id": "s"}, GET={})
    item = integration.add_web_content(
        request=request,
        text_content="Main content of the page...",
        current_url="https://example.com",
        source_type="js_scraping",
    )
    assert item["source_type"] == "js_scraping"
    assert (
        manager.get_fetched_context("s")["js_scraping"][0]["content"]
        == "Main content of the page..."
    )
    assert manager.get_metadata("s")["current_url"] == "https://example.com"


def test_bad_search_result(integration, manager):
    with pytest.raises(ValidationError, match=r"results\[1\]"):
        integration.add_search_results("s", [{"title": "ok"}, "not a mapping"])
    assert manager.list_sessions() == []


def test_prepare_request_reads_everything_before_writing(integration, manager):
    with pytest.raises(ValidationError, match="unknown mode"):
        integration.prepare_request({"session_id": "s", "mode": "sleepy", "url": "https://p"})
    assert manager.list_sessions() == []


def test_explicit_session_id_comes_first(integration, manager):
    integration.add_web_content({"session_id": "from-request"}, "text", session_id="explicit")
    assert manager.list_sessions() == ["explicit"]


async def test_async_twins_on_a_mapping(integration, manager):
    request = {"session_id": "s", "mode": "thinking", "tz": "Asia/Tokyo"}
    assert await integration.aget_session_id(request) == "s"
    assert await integration.aget_session_id({}, default="d") == "d"
    assert await integration.aget_mode(request) is ContextMode.THINKING
    assert await integration.aprepare_request(request) == "s"
    item = await integration.aadd_web_content(request, "page", "https://p", title="P")
    assert item["extracted_data"] == {"title": "P"}
    assert await integration.aadd_search_results("s", [{"title": "t", "url": "https://t"}]) == 1
    meta = manager.get_metadata("s")
    assert (meta["mode"], meta["user_timezone"], meta["current_url"]) == (
        "thinking",
        "Asia/Tokyo",
        "https://p",
    )
    with pytest.raises(InvalidSessionIdError, match="no session id"):
        await integration.aadd_web_content({}, "orphan")
    assert manager.list_sessions() == ["s"]


def _method_bodies() -> dict[str, ast.AsyncFunctionDef | ast.FunctionDef]:
    tree = ast.parse(Path(web_module.__file__).read_text(encoding="utf-8"))
    cls = next(
        n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ContextIntegration"
    )
    return {n.name: n for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


class _Unasync(ast.NodeTransformer):
    """An async body as its sync twin would read: no await, ``aname`` -> ``name``."""

    def __init__(self, sync_names: set[str]) -> None:
        self.sync_names = sync_names

    def visit_Await(self, node: ast.Await) -> ast.AST:
        return self.visit(node.value)

    def _sync(self, name: str) -> str:
        for prefix in ("a", "_a"):
            if name.startswith(prefix) and prefix[:-1] + name[len(prefix) :] in self.sync_names:
                return prefix[:-1] + name[len(prefix) :]
        return name

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        node.attr = self._sync(node.attr)
        return self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> ast.AST:
        node.id = self._sync(node.id)
        return node


def test_every_request_helper_has_an_async_twin_that_differs_by_await_only():
    methods = _method_bodies()
    public = {name for name in methods if not name.startswith("_")}
    twins = {name for name in public if name.startswith("a") and name[1:] in public}
    assert twins >= {
        "aget_session_id",
        "aget_mode",
        "aprepare_request",
        "aadd_web_content",
        "aadd_search_results",
    }
    for name in public - twins - {"search_result_items"}:
        assert f"a{name}" in twins, f"{name} has no async twin"
    names = {
        n.id
        for n in ast.walk(ast.parse(Path(web_module.__file__).read_text()))
        if isinstance(n, ast.Name)
    } | {"add_fetched_context", "update_metadata", "add_fetched_items"}
    for twin in sorted(twins):
        sync, async_ = methods[twin[1:]], methods[twin]
        assert isinstance(async_, ast.AsyncFunctionDef)
        sync_body = [ast.dump(n) for n in sync.body[1:]]  # docstrings differ
        async_body = [ast.dump(_Unasync(names | set(methods)).visit(n)) for n in async_.body[1:]]
        assert async_body == sync_body, twin
        assert ast.dump(sync.args) == ast.dump(async_.args), twin


FRAMEWORKS = ("starlette", "fastapi", "flask", "werkzeug", "django", "rest_framework")


@pytest.mark.parametrize("module", [web_module, requests_module], ids=lambda m: m.__name__)
def test_reading_requests_never_imports_a_web_framework(module):
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    imported = {
        alias.name for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names
    }
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {name.split(".")[0] for name in imported} & set(FRAMEWORKS)


def test_works_where_no_web_framework_is_installed():
    # A finder that makes every framework look uninstalled, as on a machine without them.
    code = f"""
import sys
from types import SimpleNamespace

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {FRAMEWORKS!r}:
            raise ModuleNotFoundError(name)
        return None

sys.meta_path.insert(0, NotInstalled())
from ctx_memory import ContextIntegration, ContextManager
integration = ContextIntegration(ContextManager(store="memory"))
request = SimpleNamespace(GET={{}}, headers={{"X-Session-ID": "h"}}, session={{"mode": "research"}})
print(integration.prepare_request(request), integration.get_mode(request).value)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert out.split() == ["h", "research"]
