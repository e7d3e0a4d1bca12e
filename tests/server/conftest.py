"""Fixtures for the HTTP service: apps, and clients in process and over real uvicorn.

Every endpoint test runs twice through the ``http`` fixture: with FastAPI's ``TestClient``
(in process) and with ``httpx`` against the same app served by uvicorn on a loopback port.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi.testclient import TestClient
from server_helpers import LiveServer, Served

from ctx_memory import ContextManager
from ctx_memory.server import create_app

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from fastapi import FastAPI


@pytest.fixture
def manager() -> Iterator[ContextManager]:
    with ContextManager() as cm:
        yield cm


@pytest.fixture(params=["testclient", "uvicorn"])
def serve(request: pytest.FixtureRequest) -> Iterator[Any]:
    """``serve(app)`` gives a client of ``app``: TestClient, or httpx over real uvicorn."""
    opened: list[Any] = []

    def start(app: FastAPI) -> Any:
        if request.param == "testclient":
            client: Any = TestClient(app)
            client.__enter__()
            opened.append(client)
            return client
        live = LiveServer(app).__enter__()
        opened.append(live)
        client = httpx.Client(base_url=live.url, timeout=30)
        opened.append(client)
        return client

    yield start
    for thing in reversed(opened):
        if isinstance(thing, LiveServer):
            thing.__exit__(None, None, None)
        elif isinstance(thing, httpx.Client):
            thing.close()
        else:
            thing.__exit__(None, None, None)


@pytest.fixture
def http(serve: Any, manager: ContextManager) -> Any:
    """A client of an open app (no keys) over ``manager``."""
    return serve(create_app(manager))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Any]:
    """``served(*global_args)``: ``ctx-memory serve`` in a process, in ``tmp_path``."""
    started: list[Served] = []

    def start(*args: str) -> Served:
        server = Served(tmp_path, *args)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.stop()


@pytest.fixture(autouse=True)
def _library_tracing_off() -> Iterator[None]:
    """``create_app`` with tracing instruments the library for the process: undo it after."""
    yield
    from ctx_memory import tracing

    tracing.uninstrument()
