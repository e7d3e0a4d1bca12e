"""OpenTelemetry spans for the HTTP layer (optional: the ``otel`` extra).

With ``opentelemetry-api`` installed and ``SERVER_TRACING`` on (the default), every HTTP
request is one ``SERVER`` span, named ``{method} {route}`` (``GET /v1/sessions/{session_id}``:
the route template, never the raw path with its session id), continuing the caller's trace
from a W3C ``traceparent`` header. Attributes follow the HTTP semantic conventions:
``http.request.method``, ``http.route``, ``url.path``, ``url.scheme``,
``http.response.status_code``, ``server.address``, ``client.address``,
``user_agent.original``; plus ``ctx_memory.tenant`` once the key is known. A 5xx response
or an exception marks the span as an error.

A chat, research or agent turn adds an ``INTERNAL`` child span ``chat {model}`` following
the GenAI conventions where they apply (``gen_ai.operation.name``,
``gen_ai.conversation.id`` = the session id, ``gen_ai.request.model``,
``gen_ai.response.id``, ``gen_ai.usage.*`` when the model reports usage) with the
assembly's figures (``ctx_memory.prompt.*``) and a ``first_token`` event.

Without the API (or with ``SERVER_TRACING`` off) nothing is imported and no middleware is
added. Spans go to the tracer provider passed to ``create_app(tracer_provider=...)``, else
to the global one the application configured (the SDK, an exporter): ctx_memory never
configures exporters itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from opentelemetry.trace import Tracer, TracerProvider
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["TracingMiddleware", "get_tracer", "turn_attributes"]

TRACER_NAME = "ctx_memory.server"


def get_tracer(provider: TracerProvider | None = None) -> Tracer | None:
    """The server's tracer, or ``None`` when ``opentelemetry-api`` is not installed."""
    try:
        from opentelemetry import trace  # noqa: PLC0415 - optional dependency
    except ImportError:
        return None
    return trace.get_tracer(TRACER_NAME, tracer_provider=provider)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def request_attributes(scope: Scope) -> dict[str, Any]:
    """The span attributes known when a request arrives (pure)."""
    attributes: dict[str, Any] = {
        "http.request.method": scope.get("method", ""),
        "url.path": scope.get("path", ""),
        "url.scheme": scope.get("scheme", "http"),
    }
    server = scope.get("server")
    if server:
        attributes["server.address"] = str(server[0])
        if server[1] is not None:
            attributes["server.port"] = int(server[1])
    client = scope.get("client")
    if client:
        attributes["client.address"] = str(client[0])
    agent = _header(scope, b"user-agent")
    if agent:
        attributes["user_agent.original"] = agent[:256]
    return attributes


def turn_attributes(
    *, session_id: str, model: str, operation: str, report: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The GenAI and assembly attributes of a chat turn's span (pure)."""
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.conversation.id": session_id,
        "gen_ai.request.model": model,
    }
    for key, value in (report or {}).items():
        if isinstance(value, (int, float, str, bool)):
            attributes[f"ctx_memory.prompt.{key}"] = value
    return attributes


class TracingMiddleware:
    """ASGI middleware: one ``SERVER`` span per HTTP request (see the module docstring).

    Args:
        app: The ASGI app to wrap.
        tracer: Where spans go.
    """

    def __init__(self, app: ASGIApp, tracer: Tracer) -> None:
        from opentelemetry import propagate, trace  # noqa: PLC0415 - optional dependency

        self.app = app
        self.tracer = tracer
        self._propagate = propagate
        self._trace = trace

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request inside its span."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier = {
            bytes(k).decode("latin-1"): bytes(v).decode("latin-1")
            for k, v in scope.get("headers") or ()
            if k in (b"traceparent", b"tracestate", b"baggage")
        }
        parent = self._propagate.extract(carrier) if carrier else None
        method = scope.get("method", "HTTP")
        status: list[int] = []

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        with self.tracer.start_as_current_span(
            method,
            context=parent,
            kind=self._trace.SpanKind.SERVER,
            attributes=request_attributes(scope),
            record_exception=True,
            set_status_on_exception=True,
        ) as span:
            try:
                await self.app(scope, receive, send_status)
            finally:
                route = getattr(scope.get("route"), "path", None)
                if isinstance(route, str):
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                tenant = (scope.get("state") or {}).get("ctx_memory_tenant")
                if isinstance(tenant, str):
                    span.set_attribute("ctx_memory.tenant", tenant)
                if status:
                    span.set_attribute("http.response.status_code", status[0])
                    if status[0] >= 500:
                        span.set_status(self._trace.StatusCode.ERROR)
