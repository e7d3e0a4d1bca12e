"""The access log masks credentials a client put in a URL (docs/server.md: nothing logs a key)."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

import httpx
import pytest
import uvicorn
from server_helpers import KEY_A, free_port

from ctx_memory.server import create_app
from ctx_memory.server.access_log import ACCESS_LOGGER, RedactCredentials, install, redact_url

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ctx_memory import ContextManager


@pytest.mark.parametrize(
    ("url", "logged"),
    [
        ("/v1/sessions?api_key=s3cret", "/v1/sessions?api_key=***"),
        ("/v1/sessions?limit=5&key=a&token=b", "/v1/sessions?limit=5&key=***&token=***"),
        ("/x?apiKey=a;X-API-Key=b&access_token=c", "/x?apiKey=***;X-API-Key=***&access_token=***"),
        ("/x?password=a&client_secret=b&auth=c", "/x?password=***&client_secret=***&auth=***"),
        ("/x?api%5Fkey=a&Api+Key=b", "/x?api%5Fkey=***&Api+Key=***"),
        ("/x?q=passport&session_id=s1&last_k=3", "/x?q=passport&session_id=s1&last_k=3"),
        ("/x?api_key=&key", "/x?api_key=&key"),
        ("/v1/sessions/ctxm_abc-DEF_123/messages", "/v1/sessions/ctxm_***/messages"),
        ("/x?q=ctxm_abcdef", "/x?q=ctxm_***"),
        ("/no/query", "/no/query"),
    ],
)
def test_redact_url_masks_credential_values_only(url: str, logged: str) -> None:
    assert redact_url(url) == logged


class _Lines(logging.Handler):
    """Keeps each record as uvicorn's access formatter writes it."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(
            uvicorn.logging.AccessFormatter('%(client_addr)s "%(request_line)s" %(status_code)s')
        )
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def access_logger() -> Iterator[logging.Logger]:
    """uvicorn's access logger, rid of the filter after the test."""
    logger = logging.getLogger(ACCESS_LOGGER)
    yield logger
    for installed in [f for f in logger.filters if isinstance(f, RedactCredentials)]:
        logger.removeFilter(installed)


def test_uvicorn_access_records_carry_no_key(
    manager: ContextManager, access_logger: logging.Logger
) -> None:
    port = free_port()
    config = uvicorn.Config(create_app(manager), host="127.0.0.1", port=port, log_level="info")
    install()  # after uvicorn configured its loggers, as serve does
    install()  # once is enough
    assert sum(isinstance(f, RedactCredentials) for f in access_logger.filters) == 1
    handler = _Lines()
    access_logger.addHandler(handler)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        url = f"http://127.0.0.1:{port}/v1/sessions"
        assert httpx.get(url, params={"limit": "2", "api_key": KEY_A}).status_code == 200
    finally:
        server.should_exit = True
        thread.join(15)
        access_logger.removeHandler(handler)
    logged = '"GET /v1/sessions?limit=2&api_key=*** HTTP/1.1" 200'
    assert any(logged in line for line in handler.lines), handler.lines
    assert not any(KEY_A in line for line in handler.lines)
