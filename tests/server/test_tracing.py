"""OpenTelemetry: one SERVER span per request and a GenAI span per chat turn."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from ctx_memory.config import load_settings
from ctx_memory.server import create_app

if TYPE_CHECKING:
    from ctx_memory import ContextManager

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def test_a_chat_turn_makes_a_server_span_and_a_chat_span(manager: ContextManager) -> None:
    provider, exporter = _provider()
    with TestClient(create_app(manager, tracer_provider=provider)) as client:
        response = client.get(
            "/chat_response/",
            params={"session_id": "s1", "question": "Hello?"},
            headers={"traceparent": TRACEPARENT, "user-agent": "ext/1.0"},
        )
        assert response.status_code == 200
    spans = {span.name: span for span in exporter.get_finished_spans()}
    server = spans["GET /chat_response/"]
    assert server.kind is SpanKind.SERVER
    attributes = dict(server.attributes or {})
    assert attributes["http.request.method"] == "GET"
    assert attributes["http.route"] == "/chat_response/"
    assert attributes["http.response.status_code"] == 200
    assert attributes["user_agent.original"] == "ext/1.0"
    assert attributes["ctx_memory.tenant"] == "default"
    assert format(server.context.trace_id, "032x") == TRACEPARENT.split("-")[1]
    chat = spans["chat fake"]
    assert chat.parent is not None
    assert chat.parent.span_id == server.context.span_id
    chat_attributes = dict(chat.attributes or {})
    assert chat_attributes["gen_ai.operation.name"] == "chat"
    assert chat_attributes["gen_ai.conversation.id"] == "s1"
    assert chat_attributes["gen_ai.request.model"] == "fake"
    assert chat_attributes["gen_ai.response.id"] == manager.get_history("s1")[1]["id"]
    assert chat_attributes["ctx_memory.prompt.total_tokens"] > 0
    assert [event.name for event in chat.events] == ["first_token"]


def test_the_route_template_names_the_span_never_the_session_id(manager: ContextManager) -> None:
    provider, exporter = _provider()
    with TestClient(create_app(manager, tracer_provider=provider)) as client:
        assert client.get("/v1/sessions/private-user-42").status_code == 404
    (span,) = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert span.name == "GET /v1/sessions/{session_id}"
    assert "private-user-42" not in span.name


def test_a_5xx_marks_the_span_as_an_error() -> None:
    from server_helpers import free_port

    provider, exporter = _provider()
    settings = load_settings(
        store="redis",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        redis_max_retries=0,
        redis_socket_timeout=0.5,
    )
    with TestClient(create_app(settings=settings, tracer_provider=provider)) as client:
        assert client.get("/v1/sessions").status_code == 503
    spans = exporter.get_finished_spans()
    (span,) = [s for s in spans if s.kind is SpanKind.SERVER]
    assert span.status.status_code is StatusCode.ERROR
    # the store operation that failed is a child span of the request, marked too
    (store,) = [s for s in spans if s.name.startswith("ctx_memory.store ")]
    assert store.parent is not None
    assert store.parent.span_id == span.context.span_id
    assert store.status.status_code is StatusCode.ERROR


def test_tracing_off_adds_no_middleware(manager: ContextManager) -> None:
    from ctx_memory.server.tracing import TracingMiddleware

    app = create_app(manager, load_settings(server_tracing=False))
    assert all(m.cls is not TracingMiddleware for m in app.user_middleware)
