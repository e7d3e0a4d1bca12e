"""The HTTP service: seed 001's endpoints, a versioned JSON API and a session inspector.

Needs the ``server`` extra (``pip install "ctx-memory[server]"``: FastAPI, uvicorn,
sse-starlette); ``ctx-memory serve`` runs it (docs/server.md). Importing this package
imports no web framework: :func:`create_app` loads FastAPI when first used.

* :func:`create_app` (:mod:`ctx_memory.server.app`): the FastAPI app;
* :mod:`ctx_memory.server.api`: the routes; :mod:`ctx_memory.server.turns`: chat,
  research and agent turns streamed as Server-Sent Events;
* :mod:`ctx_memory.server.keys`: hashed API keys, tenants, rate limits (no framework);
  :mod:`ctx_memory.server.security`: the key check as FastAPI dependencies;
  :mod:`ctx_memory.server.tenants`: one namespace of storage per tenant;
* :mod:`ctx_memory.server.inspector`: the browser inspector;
* :mod:`ctx_memory.server.models`: the chat model, search retriever and agent tools from
  settings, with stand-ins for the demo and tests;
* :mod:`ctx_memory.server.tracing`: OpenTelemetry spans (the ``otel`` extra);
* :mod:`ctx_memory.server.cli`: ``ctx-memory serve``; :mod:`ctx_memory.server.access_log`:
  its access log, with the credentials a client put in a URL masked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ctx_memory.server.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from ctx_memory.server.app import create_app  # noqa: PLC0415 - the lazy part

        return create_app
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
