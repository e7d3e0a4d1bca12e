"""A Redis password is never printed, against real servers (issue 8, item 5).

One ``redis-server`` started with ``--requirepass`` (a password holding ``/`` and ``#``,
percent-encoded in the URLs that work) and the suite's password-less server: right and
wrong passwords, in the user-info part and as a query parameter, through the store and the
CLI. The unit half (every malformed form, no server) is tests/unit/test_secrets.py.
"""

from __future__ import annotations

import traceback
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest
from typer.testing import CliRunner

from ctx_memory import ContextManager, CtxMemoryError
from ctx_memory.cli import app
from ctx_memory.stores.redis import RedisStore

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from conftest import RedisServer

pytestmark = pytest.mark.redis

PASSWORD = "Hunter2Pw/sEcR#xYz9"
PIECES = ("Hunter2Pw", "sEcR", "xYz9", quote(PASSWORD, safe=""))
WRONG = "wRoNgPaSsWoRd"
runner = CliRunner()


@pytest.fixture(scope="module")
def server(redis_server_factory: Callable[..., RedisServer]) -> RedisServer:
    return redis_server_factory("--requirepass", PASSWORD)


def texts_of(error: BaseException) -> Iterator[str]:
    seen: set[int] = set()
    stack: list[BaseException | None] = [error]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield str(current)
        yield repr(current)
        yield from (repr(arg) for arg in current.args)
        stack += [current.__cause__, current.__context__]
    yield "".join(traceback.format_exception(error))


def assert_no_secret(*texts: str, pieces: tuple[str, ...] = PIECES) -> None:
    for text in texts:
        for piece in pieces:
            assert piece not in text, f"{piece!r} leaked in {text!r}"


def good_urls(server: RedisServer) -> list[str]:
    encoded = quote(PASSWORD, safe="")
    return [
        f"redis://:{encoded}@127.0.0.1:{server.port}/0",
        f"redis://default:{encoded}@127.0.0.1:{server.port}/0",
        f"redis://127.0.0.1:{server.port}/0?password={encoded}",
    ]


def test_right_password_works_and_is_hidden(server: RedisServer, key_prefix: str) -> None:
    for url in good_urls(server):
        store = RedisStore(url, key_prefix=key_prefix)
        with ContextManager(store=store, token_counter="approximate") as cm:
            cm.add_user_message("s1", "hello")
            assert cm.list_sessions() == ["s1"]
            assert_no_secret(repr(store), store.url, repr(cm))
            assert cm.delete_context("s1")


def test_right_password_through_the_cli(server: RedisServer, key_prefix: str) -> None:
    for url in good_urls(server):
        env = {"CTX_MEMORY_REDIS_URL": url, "CTX_MEMORY_REDIS_KEY_PREFIX": key_prefix}
        assert runner.invoke(app, ["--store", "redis", "demo"], env=env).exit_code == 0
        for command in (["sessions", "list", "-l"], ["stats"], ["show", "demo-session"]):
            result = runner.invoke(app, ["--store", "redis", *command], env=env)
            assert result.exit_code == 0, result.output
            assert_no_secret(result.stdout, result.stderr)
        deleted = runner.invoke(app, ["--store", "redis", "delete", "demo-session"], env=env)
        assert deleted.exit_code == 0


@pytest.mark.parametrize(
    "form",
    [
        "redis://:{pw}@127.0.0.1:{port}/0",
        "redis://default:{pw}@127.0.0.1:{port}/0",
        "redis://127.0.0.1:{port}/0?password={pw}",
    ],
)
def test_wrong_password_is_not_shown(server: RedisServer, form: str) -> None:
    url = form.format(pw=WRONG, port=server.port)
    pieces = (*PIECES, WRONG)
    with RedisStore(url, max_retries=0) as store:
        with pytest.raises(CtxMemoryError) as info:
            store.list_sessions()
        assert_no_secret(*texts_of(info.value), repr(store), pieces=pieces)
    env = {"CTX_MEMORY_REDIS_URL": url, "CTX_MEMORY_REDIS_MAX_RETRIES": "0"}
    result = runner.invoke(app, ["--store", "redis", "sessions", "list"], env=env)
    assert result.exit_code == 1
    assert_no_secret(result.stdout, result.stderr, pieces=pieces)
    assert len(result.stderr.splitlines()) == 1
    assert isinstance(result.exception, SystemExit)


def test_password_sent_to_a_server_without_one(redis_url: str) -> None:
    """The suite's server has no password: AUTH fails, the error does not quote it."""
    host_port = redis_url.removeprefix("redis://").split("/")[0]
    url = f"redis://:{WRONG}@{host_port}/0"
    with RedisStore(url, max_retries=0) as store:
        try:
            store.list_sessions()
        except CtxMemoryError as e:
            assert_no_secret(*texts_of(e), pieces=(WRONG,))
        assert_no_secret(repr(store), pieces=(WRONG,))
