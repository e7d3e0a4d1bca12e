"""Store operations as spans and events as span events, with the SDK's in-memory exporter."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from ctx_memory import ContextManager, tracing
from ctx_memory.errors import MessageNotFoundError
from ctx_memory.stores.sqlite import SqliteStore

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracing.instrument(provider)
    try:
        yield spans
    finally:
        tracing.uninstrument()


def test_each_store_operation_is_a_span(exporter: InMemorySpanExporter) -> None:
    with ContextManager() as cm:
        cm.add_user_message("s1", "hi")
        cm.get_history("s1", last_k=5)
        cm.list_sessions()
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == [
        "ctx_memory.store AppendMessages",
        "ctx_memory.store GetMessages",
        "ctx_memory.store ListSessions",
    ]
    append = spans[0]
    assert append.kind is SpanKind.INTERNAL
    assert append.attributes is not None
    assert append.attributes["db.system.name"] == "memory"
    assert append.attributes["db.operation.name"] == "AppendMessages"
    assert append.attributes["gen_ai.conversation.id"] == "s1"
    assert "gen_ai.conversation.id" not in (spans[2].attributes or {})  # no session


async def test_async_operations_on_a_file_store_are_client_spans(
    exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    async with ContextManager(store=SqliteStore(str(tmp_path / "db.sqlite3"))) as cm:
        await cm.aadd_user_message("s2", "hello")
        await cm.aget_header("s2")
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == [
        "ctx_memory.store AppendMessages",
        "ctx_memory.store GetHeader",
    ]
    assert all(s.kind is SpanKind.CLIENT for s in spans)
    assert spans[0].attributes is not None
    assert spans[0].attributes["db.system.name"] == "sqlite"


def test_events_are_span_events_of_the_current_span(exporter: InMemorySpanExporter) -> None:
    tracer = TracerProvider()
    tracer.add_span_processor(SimpleSpanProcessor(exporter))
    with ContextManager() as cm, tracer.get_tracer("app").start_as_current_span("request"):
        cm.add_user_message("s3", "a question")  # no listener registered: still an event
        cm.add_fetched_context("s3", "web", "a page", url="https://a.example")
    request = next(s for s in exporter.get_finished_spans() if s.name == "request")
    names = [e.name for e in request.events]
    assert names == [
        "ctx_memory.session_created",
        "ctx_memory.message_added",
        "ctx_memory.fetched_added",
    ]
    added = request.events[1].attributes
    assert added is not None
    assert added["gen_ai.conversation.id"] == "s3"
    assert added["ctx_memory.count"] == 1
    assert list(added["ctx_memory.roles"]) == ["user"]  # type: ignore[arg-type]
    children = [s for s in exporter.get_finished_spans() if s.parent is not None]
    assert {s.parent.span_id for s in children if s.parent} == {request.context.span_id}


def test_a_failed_operation_marks_its_span(exporter: InMemorySpanExporter) -> None:
    with ContextManager() as cm:
        cm.add_user_message("s4", "hi")
        with pytest.raises(MessageNotFoundError):
            cm.truncate_after("s4", "no-such-id")
    truncate = exporter.get_finished_spans()[-1]
    assert truncate.name == "ctx_memory.store TruncateMessages"
    assert truncate.status.status_code is StatusCode.UNSET  # the store answered: not found


def test_nothing_is_traced_unless_instrumented() -> None:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracing.instrument(provider)
    tracing.uninstrument()
    assert not tracing.instrumented()
    with ContextManager() as cm:
        cm.add_user_message("s5", "hi")
    assert spans.get_finished_spans() == ()


def test_an_exception_in_the_store_is_recorded(
    exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    store = SqliteStore(str(tmp_path / "db.sqlite3"))
    store.close()
    with pytest.raises(Exception, match="closed"):
        store.get_header("s6")
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]


async def test_an_assembly_is_a_span_with_the_reports_figures(
    exporter: InMemorySpanExporter,
) -> None:
    from langchain_core.messages import HumanMessage

    from ctx_memory import ContextPromptAssembler

    with ContextManager() as cm:
        cm.add_user_message("s7", "an earlier question")
        cm.add_assistant_message("s7", "an earlier answer")
        assembler = ContextPromptAssembler(cm, session_id="s7", max_tokens=2000)
        exporter.clear()
        prompt = assembler.build("s7", [HumanMessage("now?")], query="now?")
        await assembler.abuild("s7", [HumanMessage("now?")], query="now?")
    spans = exporter.get_finished_spans()
    assemblies = [s for s in spans if s.name == "ctx_memory.assemble"]
    assert len(assemblies) == 2
    attributes = assemblies[0].attributes or {}
    assert attributes["gen_ai.conversation.id"] == "s7"
    assert attributes["ctx_memory.prompt.total_tokens"] == prompt.report.total_tokens
    assert attributes["ctx_memory.prompt.budget"] == prompt.report.budget
    reads = [s for s in spans if s.name.startswith("ctx_memory.store ")]
    assert reads
    assert {s.parent.span_id for s in reads if s.parent} <= {a.context.span_id for a in assemblies}
