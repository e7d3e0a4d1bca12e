"""OpenTelemetry spans for store operations, and events as span events (the ``otel`` extra).

Off by default, and then free: a store operation checks one module attribute. Turn it on
once per process with :func:`instrument` (``ctx-memory serve`` does when ``SERVER_TRACING``
is on); :func:`uninstrument` turns it off again. ctx_memory never configures an exporter:
spans go to the tracer provider you pass, else to the global one your application set up.

Once on:

* every store operation is one span named ``ctx_memory.store {Operation}``
  (``ctx_memory.store AppendMessages``), kind ``CLIENT`` for a store behind a socket and
  ``INTERNAL`` for the in-memory one, with ``db.system.name`` (``redis``, ``sqlite``,
  ``postgresql``, ``memory``), ``db.operation.name`` (the operation) and, following the
  GenAI conventions, ``gen_ai.conversation.id`` (the session id) when the operation has one.
  A failed operation records its exception and marks the span as an error;
* every prompt assembly (:meth:`ContextPromptAssembler.build
  <ctx_memory.prompt.ContextPromptAssembler.build>`, which ``ContextualChat`` and
  ``ContextMiddleware`` use) is a span ``ctx_memory.assemble`` with
  ``gen_ai.conversation.id`` and the report's figures as ``ctx_memory.prompt.*`` attributes
  (``total_tokens``, ``budget``, ``messages_included``, ...), its store reads as children;
* every event a manager emits (``message_added``, ``session_evicted``, ...) is added to the
  current span as a span event ``ctx_memory.{type}`` with the session id and the event's
  scalar data, whether or not a listener is registered.

The HTTP service adds its request spans and a ``chat {model}`` span per turn: see
:mod:`ctx_memory.server.tracing`.

Example:
    .. code-block:: python

        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        from ctx_memory import ContextManager
        from ctx_memory.tracing import instrument, uninstrument

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        instrument(provider)
        try:
            with ContextManager() as cm:
                cm.add_user_message("s1", "hi")
        finally:
            uninstrument()
        names = [span.name for span in exporter.get_finished_spans()]
        assert "ctx_memory.store AppendMessages" in names
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from contextlib import AbstractContextManager

    from opentelemetry.trace import Tracer, TracerProvider

    from ctx_memory.events import Event
    from ctx_memory.stores.base import BaseStore
    from ctx_memory.stores.ops import StoreOp

__all__ = [
    "TRACER_NAME",
    "assembly_span",
    "instrument",
    "instrumented",
    "report_attributes",
    "uninstrument",
]

TRACER_NAME = "ctx_memory"

_tracer: Tracer | None = None
"""The tracer while instrumented, else ``None`` (the one check on every operation)."""

_LOCAL_STORES = frozenset({"memory"})


def instrument(tracer_provider: TracerProvider | None = None) -> None:
    """Trace store operations and add events to spans, from now on, in this process.

    Raises:
        ImportError: ``opentelemetry-api`` is not installed (``pip install
            'ctx-memory[otel]'``).
    """
    global _tracer  # noqa: PLW0603 - one switch for the process, like OpenTelemetry's own
    try:
        from opentelemetry import trace  # noqa: PLC0415 - optional dependency
    except ImportError as e:
        msg = "tracing needs opentelemetry-api: pip install 'ctx-memory[otel]'"
        raise ImportError(msg) from e
    _tracer = trace.get_tracer(TRACER_NAME, tracer_provider=tracer_provider)


def uninstrument() -> None:
    """Stop tracing (operations cost nothing extra again)."""
    global _tracer  # noqa: PLW0603
    _tracer = None


def instrumented() -> bool:
    """Whether :func:`instrument` is in effect."""
    return _tracer is not None


def store_span(store: BaseStore, op: StoreOp) -> AbstractContextManager[Any]:
    """The span of one store operation (call only while instrumented)."""
    from opentelemetry.trace import SpanKind  # noqa: PLC0415

    assert _tracer is not None
    name = type(op).__name__
    attributes: dict[str, Any] = {
        "db.system.name": "postgresql" if store.name == "postgres" else store.name,
        "db.operation.name": name,
    }
    session_id = getattr(op, "session_id", None)
    if session_id is not None:
        attributes["gen_ai.conversation.id"] = session_id
    kind = SpanKind.INTERNAL if store.name in _LOCAL_STORES else SpanKind.CLIENT
    return _tracer.start_as_current_span(
        f"ctx_memory.store {name}", kind=kind, attributes=attributes
    )


def assembly_span(session_id: str) -> AbstractContextManager[Any]:
    """The span of one prompt assembly, or a no-op context when tracing is off."""
    if _tracer is None:
        return nullcontext()
    return _tracer.start_as_current_span(
        "ctx_memory.assemble", attributes={"gen_ai.conversation.id": session_id}
    )


def report_attributes(span: Any, report: Callable[[], Mapping[str, Any]]) -> None:
    """Put a report's scalar figures on ``span`` as ``ctx_memory.prompt.*`` (no-op if off).

    ``report`` gives the report as a dict; it is called only while instrumented.
    """
    if span is None:
        return
    span.set_attributes(
        {
            f"ctx_memory.prompt.{key}": value
            for key, value in report().items()
            if isinstance(value, (str, bool, int, float))
        }
    )


def span_event(event: Event) -> None:
    """Add ``event`` to the current span (call only while instrumented)."""
    from opentelemetry import trace  # noqa: PLC0415

    span = trace.get_current_span()
    if not span.is_recording():
        return
    attributes: dict[str, Any] = {"gen_ai.conversation.id": event.session_id}
    for key, value in event.data.items():
        if isinstance(value, (str, bool, int, float)):
            attributes[f"ctx_memory.{key}"] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            attributes[f"ctx_memory.{key}"] = list(value)
    span.add_event(f"ctx_memory.{event.type.value}", attributes)
