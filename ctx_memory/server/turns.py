"""Chat, research and agent turns over HTTP: Server-Sent Events or one JSON reply.

A chat turn is :class:`~ctx_memory.chat.ContextualChat` itself, so it is recorded exactly
as the library records it: the question and the reply land together once the model's last
token was read, with the model, response time, sources used and citations. A stream that
does not finish records nothing: when the client goes away mid-stream the server stops
reading the model, and the session is as if the question had not been asked (but for
the request's mode and page in the metadata of a session the request created: see
``_Context``).

The stream's events (``text/event-stream``; each ``data`` is one JSON object):

=========  ================================================================================
event      data
=========  ================================================================================
sources    research only, first: ``[{"title", "url"}]``, the search results just recorded
token      ``{"content": "..."}``, as the model streams
done       last, once the turn is recorded: ``session_id``, ``message_id``, ``model``,
           ``sources_used`` (``[{"n", "url", "title", "source_type"}]``, the numbered
           sources of the prompt), ``cited`` (the ``n`` the reply cites) and ``report``
           (the prompt's token budget report)
error      instead of ``done`` when the turn failed after the stream began
           (``{"error", "detail"}``); nothing was recorded
=========  ================================================================================

When the server shuts down (SIGTERM, Ctrl-C) an open stream's turn has
:data:`SHUTDOWN_GRACE_SECONDS` to finish and end with ``done``; past that the server stops
reading the model and the stream ends with ``error`` ``shutting_down`` (nothing recorded),
rather than breaking off (sse-starlette cancels its streams when uvicorn shuts down unless
given a grace period: :class:`_Drain`).

Research mode first asks the configured retriever and records its documents as
``fetched_context["web_search"]`` items (deduplicated, so a retried question adds none),
then runs the chat turn, whose prompt numbers them as sources the reply cites as ``[n]``.
The sources are recorded before the answer streams (the prompt is assembled from the
session), so a research request cancelled mid-answer keeps them and records no turn.

The agent turn runs ``create_agent`` with :class:`~ctx_memory.middleware.ContextMiddleware`
and returns JSON once the agent finished (the middleware records each model call's
messages as it documents).
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from typing import TYPE_CHECKING, Any

import anyio
from fastapi.responses import JSONResponse
from langchain_core.messages import AIMessage, HumanMessage
from sse_starlette import EventSourceResponse

from ctx_memory.chat import METADATA_KEY
from ctx_memory.errors import CtxMemoryError, StoreError, StoreVersionError
from ctx_memory.server.security import STORE_VERSION_DETAIL, ServiceError
from ctx_memory.server.tracing import turn_attributes
from ctx_memory.web import ContextIntegration

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from langchain_core.documents import Document
    from langchain_core.messages import BaseMessage
    from opentelemetry.trace import Span
    from starlette.responses import Response

    from ctx_memory.manager import ContextManager
    from ctx_memory.schema import ContextMode
    from ctx_memory.server.app import ServerState

__all__ = ["SHUTDOWN_GRACE_SECONDS", "SHUTTING_DOWN", "document_result", "run_agent", "run_chat"]

logger = logging.getLogger("ctx_memory.server")

SHUTDOWN_GRACE_SECONDS = 5.0
"""How long a streamed turn may go on once the server starts shutting down."""

_CLOSING_SECONDS = 5.0
"""Then, how long the stream has to take the turn's context back and send ``error``."""

SHUTTING_DOWN = {
    "error": "shutting_down",
    "detail": "the server shut down before the turn finished: nothing was recorded",
}
"""The ``error`` event's data of a stream the shutdown cut."""


def document_result(document: Document) -> dict[str, Any]:
    """A search result (``title``, ``url``, ``body``, ...) from a retriever's document (pure)."""
    meta = document.metadata or {}
    result: dict[str, Any] = {
        "title": meta.get("title"),
        "url": meta.get("url") or meta.get("source") or meta.get("link"),
        "body": document.page_content,
    }
    for key in ("snippet", "site_name", "published_date"):
        if meta.get(key) is not None:
            result[key] = meta[key]
    return result


def _reply_json(session_id: str, reply: BaseMessage, model: str | None) -> dict[str, Any]:
    meta = reply.response_metadata.get(METADATA_KEY, {})
    return {
        "session_id": session_id,
        "message_id": reply.id,
        "response": reply.text,
        "model": model,
        "sources_used": meta.get("sources_used", []),
        "cited": meta.get("cited", []),
        "report": meta.get("report", {}),
    }


def _event(name: str, data: Any) -> dict[str, str]:
    return {"event": name, "data": json.dumps(data, ensure_ascii=False)}


class _TurnSpan:
    """The ``chat {model}`` span of one turn (does nothing without a tracer)."""

    def __init__(self, state: ServerState, session_id: str, operation: str) -> None:
        self.span: Span | None = None
        if state.tracer is None:
            return
        from opentelemetry import trace  # noqa: PLC0415 - optional dependency

        model = state.model_name or _model_of(state.chat_model)
        self.span = state.tracer.start_span(
            f"{operation} {model}",
            kind=trace.SpanKind.INTERNAL,
            attributes=turn_attributes(
                session_id=session_id, model=model, operation=operation, report=None
            ),
        )

    def first_token(self) -> None:
        if self.span is not None:
            self.span.add_event("first_token")

    def finish(self, reply: BaseMessage) -> None:
        if self.span is None:
            return
        self.span.set_attribute("gen_ai.response.id", str(reply.id))
        usage = getattr(reply, "usage_metadata", None) or {}
        for ours, theirs in (("input_tokens", "input"), ("output_tokens", "output")):
            if isinstance(usage.get(ours), int):
                self.span.set_attribute(f"gen_ai.usage.{theirs}_tokens", usage[ours])
        report = reply.response_metadata.get(METADATA_KEY, {}).get("report", {})
        for key, value in turn_attributes(
            session_id="", model="", operation="", report=report
        ).items():
            if key.startswith("ctx_memory."):
                self.span.set_attribute(key, value)

    def fail(self, error: BaseException) -> None:
        if self.span is None:
            return
        from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415

        self.span.record_exception(error)
        self.span.set_status(Status(StatusCode.ERROR, type(error).__name__))

    def end(self) -> None:
        if self.span is not None:
            self.span.end()


def _model_of(model: Any) -> str:
    for name in ("model_name", "model"):
        value = getattr(model, name, None)
        if isinstance(value, str) and value:
            return value
    return type(model).__name__


class _Context:
    """What a turn's request wrote to the session before the turn, to take back if it fails.

    The request's mode and page go into the session's metadata before the prompt is built
    (the prompt shows them). A turn that then records nothing (over the budget, a model
    error, a client gone mid-stream) takes them back: the previous values where it changed
    them and nobody changed them since.

    A session this request created stays, holding the request's mode and page. Deleting
    it would take a check (nothing in it) and a delete, two store calls with no store
    operation to make them one: another client's write landing between them (an append
    already answered ``201``) would be deleted with it.
    """

    def __init__(self, manager: ContextManager, session_id: str) -> None:
        self.manager = manager
        self.session_id = session_id
        self.existed = True
        self.messages = 0
        self.before: dict[str, Any] = {}
        self.written: dict[str, Any] = {}

    async def write(self, **fields: Any) -> None:
        header = await self.manager.aget_header(self.session_id)
        self.existed = header is not None
        meta = header["metadata"] if header is not None else {}
        self.messages = int(meta.get("message_count") or 0)
        self.before = {key: meta.get(key) for key in fields}
        await self.manager.aupdate_metadata(self.session_id, **fields)
        if not self.existed:
            return  # nothing to take back (the class's docstring says why)
        left = await self.manager.aget_header(self.session_id)
        written = left["metadata"] if left is not None else {}
        self.written = {key: written.get(key) for key in fields}

    async def take_back(self) -> None:
        if not self.existed:
            return  # never deleted: another client may have written to it meanwhile
        with anyio.CancelScope(shield=True):
            try:
                stats = await self.manager.aget_memory_stats(self.session_id)
                if not stats.get("exists") or stats.get("message_count") != self.messages:
                    return  # gone, or the turn (or another writer) recorded messages: kept
                now = (await self.manager.aget_metadata(self.session_id)) or {}
                back = {
                    key: value
                    for key, value in self.before.items()
                    if now.get(key) == self.written.get(key) != value
                }
                if back:
                    await self.manager.aupdate_metadata(self.session_id, **back)
            except Exception as e:  # noqa: BLE001 - the turn's own error is what the client gets
                logger.warning(
                    "ctx_memory.server: could not take back a failed turn's context: %s", e
                )


class _ShuttingDown(Exception):  # noqa: N818 - a state, not a failure
    """The server shut down and the turn's grace ran out before it finished."""


class _Drain:
    """How a stream ends when the server shuts down: its turn gets a grace to finish.

    sse-starlette sets :attr:`shutdown` when uvicorn starts shutting down and then waits
    ``SHUTDOWN_GRACE_SECONDS + _CLOSING_SECONDS`` for the stream to end before cancelling
    it. :meth:`watch` runs beside the stream (its ``data_sender_callable``): once shutdown
    began it gives the read of the model a deadline ``SHUTDOWN_GRACE_SECONDS`` away, and
    :meth:`next` raises :class:`_ShuttingDown` when a read reached it, so the stream can
    end with an ``error`` event before it is cancelled.
    """

    def __init__(self) -> None:
        self.shutdown = anyio.Event()
        self.deadline = math.inf
        self.reading: anyio.CancelScope | None = None

    async def watch(self) -> None:
        await self.shutdown.wait()
        self.deadline = anyio.current_time() + SHUTDOWN_GRACE_SECONDS
        if self.reading is not None:
            self.reading.deadline = self.deadline

    async def next(self, replies: AsyncIterator[AIMessage]) -> AIMessage | None:
        """The turn's next item (``None``: the end).

        Raises:
            _ShuttingDown: The deadline passed first (the model's stream is then closed:
                a cancelled stream records nothing).
        """
        with anyio.CancelScope(deadline=self.deadline) as self.reading:
            return await anext(replies, None)
        raise _ShuttingDown


def _upstream(error: BaseException) -> None:
    """Raise a failure of the model, the retriever or the agent as ``502 upstream_error``.

    ctx_memory's own errors (a store outage, a question over the budget) and the
    service's keep their status; a cancellation is not an error. The exception's text
    may echo what a provider sent (a key, a URL): the client gets its type, the log the
    traceback.
    """
    if isinstance(error, CtxMemoryError | ServiceError) or not isinstance(error, Exception):
        return
    logger.error("ctx_memory.server: the model, retriever or agent failed", exc_info=error)
    detail = f"the model, retriever or agent failed ({type(error).__name__})"
    raise ServiceError(502, "upstream_error", detail) from error


async def _record_sources(
    state: ServerState, manager: ContextManager, session_id: str, question: str
) -> tuple[list[dict[str, Any]], int]:
    """The search results (title and URL each), and how many were new to the session."""
    documents = await state.retriever.ainvoke(question)
    results = [document_result(d) for d in documents if d.page_content]
    added = 0
    if results:
        added = await ContextIntegration(manager).aadd_search_results(session_id, results)
    return [{"title": r.get("title"), "url": r.get("url")} for r in results], added


async def run_chat(
    state: ServerState,
    manager: ContextManager,
    session_id: str,
    question: str,
    *,
    mode: ContextMode,
    page: Mapping[str, str | None],
    research: bool,
    stream: bool,
) -> Response:
    """Record the request's metadata, (research) the sources, then run the chat turn.

    Errors before the first token (a store outage, a question over the budget) are HTTP
    errors; later ones end the stream with an ``error`` event.
    """
    fields = {k: v for k, v in page.items() if v is not None}
    context = _Context(manager, session_id)
    await context.write(mode=mode, **fields)
    found: list[dict[str, Any]] | None = None
    added = 0
    try:
        if research:
            found, added = await _record_sources(state, manager, session_id, question)
    except BaseException as e:
        await context.take_back()
        _upstream(e)
        raise
    undo = context if not added else None  # new sources stay, with their context
    chat = state.chat(manager)
    payload = {"question": question, "session_id": session_id}
    span = _TurnSpan(state, session_id, "chat")
    model = state.model_name or _model_of(state.chat_model)
    if not stream:
        try:
            reply = await chat.ainvoke(payload)
        except BaseException as e:
            span.fail(e)
            span.end()
            if undo is not None:
                await undo.take_back()
            _upstream(e)
            raise
        span.finish(reply)
        span.end()
        body = _reply_json(session_id, reply, model)
        if found is not None:
            body["search_results"] = found
        return JSONResponse(body)
    replies = chat.astream(payload)
    try:
        first: AIMessage | None = await anext(replies)
    except StopAsyncIteration:
        first = None
    except BaseException as e:
        span.fail(e)
        span.end()
        if undo is not None:
            await undo.take_back()
        _upstream(e)
        raise
    span.first_token()
    drain = _Drain()
    return EventSourceResponse(
        _events(
            replies,
            first=first,
            found=found,
            session_id=session_id,
            model=model,
            span=span,
            undo=undo,
            drain=drain,
        ),
        ping=15,
        headers={"Cache-Control": "no-store"},
        data_sender_callable=drain.watch,
        shutdown_event=drain.shutdown,
        shutdown_grace_period=SHUTDOWN_GRACE_SECONDS + _CLOSING_SECONDS,
    )


def _failed_mid_stream(error: Exception) -> dict[str, str]:
    """The ``error`` event of a turn that failed after its stream began (logs the error)."""
    if isinstance(error, StoreVersionError):
        logger.error("ctx_memory.server: store refused mid-stream: %s", error)
        return {"error": "store_version", "detail": STORE_VERSION_DETAIL}
    if isinstance(error, StoreError):
        logger.warning("ctx_memory.server: store error mid-stream: %s", error)
        return {"error": "store_unavailable", "detail": "the session store is unavailable"}
    name = type(error).__name__
    logger.error("ctx_memory.server: turn failed mid-stream: %s: %s", name, error)
    return {"error": "turn_failed", "detail": "the model or the store failed"}


async def _events(
    replies: AsyncIterator[AIMessage],
    *,
    first: AIMessage | None,
    found: list[dict[str, Any]] | None,
    session_id: str,
    model: str,
    span: _TurnSpan,
    undo: _Context | None = None,
    drain: _Drain,
) -> AsyncIterator[dict[str, str]]:
    done = False
    try:
        if found is not None:
            yield _event("sources", found)
        item = first
        while item is not None:
            if item.text:
                yield _event("token", {"content": item.text})
            meta = item.response_metadata.get(METADATA_KEY)
            if meta is not None:
                done = True
                span.finish(item)
                yield _event(
                    "done",
                    {
                        "session_id": session_id,
                        "message_id": item.id,
                        "model": model,
                        "sources_used": meta.get("sources_used", []),
                        "cited": meta.get("cited", []),
                        "report": meta.get("report", {}),
                    },
                )
            item = await drain.next(replies)
    except _ShuttingDown as e:
        if not done:
            span.fail(e)
            logger.warning("ctx_memory.server: a streamed turn cut by the shutdown")
            yield _event("error", SHUTTING_DOWN)
    except Exception as e:  # noqa: BLE001 - the status is sent: the client gets an event
        span.fail(e)
        yield _event("error", _failed_mid_stream(e))
    except BaseException as e:  # the client went away (cancelled): nothing recorded
        span.fail(e)
        raise
    finally:
        with anyio.CancelScope(shield=True):
            await replies.aclose()  # type: ignore[attr-defined]
            if not done and undo is not None:
                await undo.take_back()
        span.end()


async def run_agent(
    state: ServerState,
    manager: ContextManager,
    session_id: str,
    question: str,
    *,
    mode: ContextMode,
    page: Mapping[str, str | None],
) -> dict[str, Any]:
    """Run the agent on the question; return its reply and the tools it used."""
    fields = {k: v for k, v in page.items() if v is not None}
    context = _Context(manager, session_id)
    await context.write(mode=mode, **fields)
    agent = state.agent(manager)
    span = _TurnSpan(state, session_id, "invoke_agent")
    question_message = HumanMessage(question, id=str(uuid.uuid4()))
    try:
        result = await agent.ainvoke(
            {"messages": [question_message]}, {"configurable": {"session_id": session_id}}
        )
    except BaseException as e:
        span.fail(e)
        span.end()
        await context.take_back()  # unless the agent stored some of its run
        _upstream(e)
        raise
    messages = list(result.get("messages", []))
    start = next(
        (i for i, m in enumerate(messages) if m.id == question_message.id), len(messages) - 1
    )
    run = messages[start:]
    replies = [m for m in run if isinstance(m, AIMessage)]
    last = replies[-1] if replies else AIMessage("")
    span.finish(last)
    span.end()
    return {
        "session_id": session_id,
        "message_id": last.id,
        "response": last.text,
        "model": state.model_name or _model_of(state.chat_model),
        "tools_used": [call["name"] for m in replies for call in m.tool_calls],
    }
