"""Helpers of the HTTP service tests: keys, uvicorn in a thread or ``ctx-memory serve`` in a
process, SSE parsing."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import uvicorn

from ctx_memory.config import load_settings
from ctx_memory.server.keys import hash_api_key
from ctx_memory.server.models import DemoChatModel

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from fastapi import FastAPI
    from langchain_core.outputs import ChatGenerationChunk

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

KEY_A = "ctxm_tenant-a-key-0123456789abcdef"
KEY_B = "ctxm_tenant-b-key-fedcba9876543210"
ADMIN = "ctxm_admin-key-00112233445566778899"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keyed_settings(**overrides: Any) -> Any:
    """Settings with two tenants (a, b) and one admin key, on the in-memory store."""
    values: dict[str, Any] = {
        "server_api_keys": [
            {"tenant": "a", "sha256": hash_api_key(KEY_A)},
            {"tenant": "b", "sha256": hash_api_key(KEY_B)},
        ],
        "server_admin_keys": [hash_api_key(ADMIN)],
        "server_cookie_secret": "test-cookie-secret",
        **overrides,
    }
    return load_settings(**values)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class LiveServer:
    """An app served by uvicorn in a thread, on a free loopback port."""

    def __init__(self, app: FastAPI, *, root_path: str = "") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            root_path=root_path,  # as `ctx-memory serve --root-path` configures it
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                msg = "uvicorn did not start"
                raise RuntimeError(msg)
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def serve_env() -> dict[str, str]:
    """This process's environment without ``CTX_MEMORY_*`` (settings come from the cwd)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CTX_MEMORY_")}


class Served:
    """``ctx-memory [ARGS] serve --port <free>`` in a process, in ``cwd``, up and answering."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "ctx_memory", *args, "serve", "--port", str(self.port)]
        # A file, not a pipe: nobody reads a pipe while it serves, and a full one (the
        # access log of many requests) would block the server.
        self.log = cwd / f"serve-{self.port}.err"
        self.access_log = cwd / f"serve-{self.port}.out"  # uvicorn's access log: stdout
        with self.log.open("wb") as err, self.access_log.open("wb") as out:
            self.proc = subprocess.Popen(command, cwd=cwd, env=serve_env(), stdout=out, stderr=err)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait(10)
                pytest.fail(f"ctx-memory serve did not start: {self.stderr()[-2000:]}")
            time.sleep(0.1)

    def stderr(self) -> str:
        """What it wrote to stderr so far."""
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stdout(self) -> str:
        """What it wrote to stdout so far (uvicorn's access log)."""
        return self.access_log.read_text(encoding="utf-8", errors="replace")

    def stop(self, sig: int = signal.SIGINT) -> str:
        """Stop it with ``sig``; what it wrote to stderr."""
        self.proc.send_signal(sig)
        self.proc.wait(60)
        return self.stderr()


def sse_events(text: str) -> list[tuple[str, str]]:
    """``(event, data)`` of each Server-Sent Event in a body."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        if data:
            events.append((name, "\n".join(data)))
    return events


class SlowModel(DemoChatModel):
    """The demo model, waiting ``delay`` seconds before each streamed chunk."""

    delay: float = 0.05

    async def _astream(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in self._stream(messages, stop=stop, **kwargs):
            await asyncio.sleep(self.delay)
            yield chunk
