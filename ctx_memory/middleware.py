"""ContextMiddleware: session memory for ``langchain.agents.create_agent`` (LangChain 1.x).

Needs the ``agents`` extra (``pip install ctx-memory[agents]``).

On every model call the middleware

1. sends the model: one system message (the agent's own system prompt, then the
   session's system prompt, header and numbered sources ranked against the last human
   message), then as much stored history as fits the token budget (newest whole turns,
   passing over the stored copies of the current run's messages), then the current run
   (the state's messages from the last human message on: the human input, the AI tool
   calls, the tool results), which is never dropped. With a LangGraph checkpointer the
   state also holds earlier runs; those are not sent from the state but from the
   session, so the model gets every message at most once, checkpointer or not;
2. once the model has answered, appends the current run and the reply (with ``model``,
   ``response_time_ms``, ``sources_used`` and ``tools_used`` in its metadata) in one
   write, as the agent state holds them. A failed first model call writes nothing; once
   tools ran, the run is stored before each model call (no tool output is lost). Appends
   are idempotent by message id, so a message the session holds is passed over, whoever
   wrote it and whatever else was written since: another agent on the same session, an
   agent used as a tool that inherits ``configurable.session_id``, or a plain
   :meth:`~ctx_memory.manager.ContextManager.add_user_message`. LangGraph's
   ``add_messages`` reducer gives every state message an id; a message without one gets
   a deterministic id (derived from the session, the message before it and its
   content), and so does a reply without one (derived from the request's last message;
   set on the message itself so the state keeps it), so a re-run stores it once too.

Beside LangChain's ``SummarizationMiddleware`` (which replaces the state's older messages
with one ``HumanMessage`` summary), the summary is never stored as a user turn: it is
stored as a compaction (producer ``langchain.SummarizationMiddleware``) covering the
stored messages it replaced, and the prompt sends it once, in place of them
(:mod:`ctx_memory._compaction_langchain`). The middleware always uses a session's stored
compactions; ``compaction=`` adds clearing and summarising of its own, before the prompt
or, with ``compaction_mode="background"``, after the reply is stored.

After the agent finishes, the current run is appended once more, which stores anything
no model call saw (e.g. the result of a ``return_direct`` tool). A message another
middleware changed once stored (``PIIMiddleware`` redacting it) is replaced then, or at the
next model call.
Messages of earlier runs held only by a checkpointer (say, after
:meth:`~ctx_memory.manager.ContextManager.clear`) are not written back. No orphan tool
message is ever sent: the history window starts at a user message and is repaired
(:func:`~ctx_memory.assembly.window.repair_tool_pairs`), and so is the current run.

Tool schemas are not counted; keep ``reserve_tokens`` large enough for them and the reply.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

from ctx_memory._extras import missing_extra

try:
    from langchain.agents.middleware import AgentMiddleware, AgentState, ModelResponse
    from langchain.agents.middleware.types import PrivateStateAttr
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise missing_extra("agents", __name__, e) from e

from typing import NotRequired

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.runnables.config import var_child_runnable_config
from typing_extensions import override

from ctx_memory._compaction_background import (
    BackgroundCompactions,
    BackgroundCompactor,
    CompactionMode,
    check_mode,
    prompt_policy,
)
from ctx_memory._compaction_langchain import (
    PRODUCER_NAME,
    STATE_START_KEY,
    compaction_id_for,
    known,
    producer_for,
    split_summaries,
    summarised_from,
    summary_body,
    summary_span,
)
from ctx_memory._middleware_replies import LOOK_BACK, StoredDigests, as_in_state
from ctx_memory.assembly.compacted import compactions_of
from ctx_memory.assembly.window import group_tool_results, repair_tool_pairs
from ctx_memory.compaction import (
    CompactionPolicy,
    aadd_compaction,
    add_compaction,
    make_restore_tool,
)
from ctx_memory.errors import ValidationError
from ctx_memory.prompt import ContextPromptAssembler, session_id_from
from ctx_memory.schema import message_to_record, now_iso

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from langchain.agents.middleware import ModelRequest
    from langchain.agents.middleware.types import ModelCallResult
    from langchain_core.embeddings import Embeddings
    from langchain_core.messages import AnyMessage
    from langgraph.runtime import Runtime

    from ctx_memory.assembly.report import AssembledPrompt
    from ctx_memory.manager import ContextManager
    from ctx_memory.ranking import Tokenizer
    from ctx_memory.recall import Recall

__all__ = ["ContextMiddleware"]

logger = logging.getLogger(__name__)

_USE_STORED = CompactionPolicy(clear_tool_outputs_at=None, summarize_at=None)
"""Without ``compaction=``: stored compactions are used, nothing is cleared or written."""


class ContextAgentState(AgentState[Any]):
    """The agent state with the middleware's private marks.

    ``ctx_memory_state_start``: the id of the state's first message when the run began;
    ``ctx_memory_run_start``: the id of the run's first message (the first of this
    invocation's input); ``ctx_memory_seen``: the id of the state's last message when
    the previous run ended (with a checkpointer, what follows it is the new input);
    ``ctx_memory_input_end``: the id of the state's last message when the run began (tool
    results after it came from this run's tools, not from the caller).
    """

    ctx_memory_state_start: NotRequired[Annotated[str, PrivateStateAttr]]
    ctx_memory_run_start: NotRequired[Annotated[str, PrivateStateAttr]]
    ctx_memory_seen: NotRequired[Annotated[str, PrivateStateAttr]]
    ctx_memory_input_end: NotRequired[Annotated[str, PrivateStateAttr]]


_RUN_START_KEY = "ctx_memory_run_start"
_SEEN_KEY = "ctx_memory_seen"
_INPUT_END_KEY = "ctx_memory_input_end"


def _tools_ran(state: Mapping[str, Any], run: Sequence[BaseMessage]) -> bool:
    """Whether the run holds results of tools it ran (after its input, a model's calls).

    Tool results a caller sent with its input do not count: a failed first model call
    writes nothing. Read from the state (a checkpointer keeps it): an interrupted run
    resumed by another process or a new agent counts its tools too.
    """
    end = state.get(_INPUT_END_KEY)
    ids = [message.id for message in run]
    first = ids.index(end) + 1 if end in ids else 0  # no mark (or rewritten): the whole run
    return any(isinstance(message, ToolMessage) for message in run[first:])


_ID_NAMESPACE = uuid.UUID("5b0f1f8e-3c1e-4b5e-9a52-2f6a1d0c7e41")


def _stable_id(session_id: str, *parts: str) -> str:
    """A deterministic message id: the same session and parts give the same id."""
    return str(uuid.uuid5(_ID_NAMESPACE, "\x1f".join((session_id, *parts))))


def _assign_ids(session_id: str, messages: Sequence[BaseMessage]) -> None:
    """Give every message without an id a deterministic one, in place.

    The id derives from the session, the previous message's id, the position and the
    message itself, so the same run seen again (a retried model call, ``after_agent``)
    gets the same ids and the id-idempotent append stores each message once.
    """
    previous = ""
    for index, message in enumerate(messages):
        if message.id is None:
            body = json.dumps(
                [
                    message.type,
                    message.content,
                    message.name,
                    getattr(message, "tool_call_id", None),
                    getattr(message, "tool_calls", None),
                ],
                sort_keys=True,
                default=repr,
            )
            message.id = _stable_id(session_id, previous, str(index), body)
        previous = str(message.id)


def _reply_messages(result: Any) -> list[BaseMessage]:
    """The messages a model call produced, whatever shape the handler returned."""
    if isinstance(result, AIMessage):
        return [result]
    if isinstance(result, ModelResponse):
        return list(result.result)
    inner = getattr(result, "model_response", None)
    return list(inner.result) if isinstance(inner, ModelResponse) else []


def _unstored_summary(message: BaseMessage, error: ValidationError) -> BaseMessage:
    """A LangChain summary the session refused to store (too large, say): sent as it is."""
    logger.warning(
        "LangChain summary %s not stored as a compaction (%s: %s); sent as it is",
        message.id, type(error).__name__, error,
    )  # fmt: skip
    return message


class ContextMiddleware(BackgroundCompactions, AgentMiddleware[ContextAgentState, Any]):
    """Agent middleware that gives ``create_agent`` agents a ctx_memory session.

    The session id is, in order: ``runtime.context["session_id"]`` (or a
    ``session_id`` attribute of the context object), ``config["configurable"]
    ["session_id"]``, the checkpointer's ``config["configurable"]["thread_id"]``, then
    ``session_id``.

    Args:
        manager: Where sessions live.
        session_id: Default session id.
        max_tokens: The model's context size.
        reserve_tokens: Kept free for the reply and the tool schemas.
        max_sources: Most sources to inject (``0`` for none).
        source_token_cap: Tokens each source's text is cut to.
        sources_share: At most this share of the free budget goes to sources.
        pinned_source_types: Fetched-context types always sent first, in the system
            message (besides items pinned by ``"pinned": True`` in their
            ``extracted_data``); see :class:`~ctx_memory.prompt.ContextPromptAssembler`.
        include_header: Add the mode / current URL / local time header.
        persist: Store the run's messages (``False``: read-only memory).
        model_name: Name recorded with replies (default: from the reply or the model).
        tokenizer: Splits the question and sources into terms for ranking (default: the
            built-in one, see :mod:`ctx_memory.ranking`).
        layout: ``"classic"`` or ``"stable"`` (the volatile parts on the current run's
            human message, history trimmed in blocks; see
            :class:`~ctx_memory.prompt.ContextPromptAssembler`).
        recall_share: Share of the history budget for older turns matching the
            question when the history does not fit (``0``: recency only).
        recall_max_tokens: At most this many tokens for recalled turns (``None``: no cap).
        trim_block: Stable layout: share of the window dropped at once when full.
        embeddings: A LangChain ``Embeddings`` for hybrid recall (BM25 and vector
            similarity fused); see :class:`~ctx_memory.prompt.ContextPromptAssembler`.
        recall: The index cache to use (default: the manager's shared one); pass the
            one a ``recall`` tool uses to share its index.
        cache_hints: ``"anthropic"`` (``cache_control`` breakpoints on the messages)
            and/or ``"openai"`` (``prompt_cache_key`` in the request's
            ``model_settings``, which the agent binds to the model).
        compaction: A :class:`~ctx_memory.compaction.CompactionPolicy`: the prompt
            uses stored compactions, clears old tool outputs (and the agent gets the
            ``restore_tool_result`` tool) and summarises old ranges when the policy's
            trigger fires, with no ``SummarizationMiddleware``. Off by default (stored
            compactions are still used).
        compaction_mode: When the policy's summarising rung runs. ``"before"``
            (default): before the prompt is assembled (the model call waits for the
            summariser; a failure is in the report's ``compaction_notes``).
            ``"background"``: once a model call's messages are stored, in a daemon
            thread (``invoke``) or an asyncio task on the agent's loop (``ainvoke``), so
            no reply waits; the next model call uses the summary once it is stored. At
            most one compaction per session runs at a time (repeats are coalesced);
            :meth:`flush_compactions` / :meth:`aflush_compactions` wait for it.
        summarization: The ``SummarizationMiddleware`` running beside this one, if
            any: its model and prompt hash are recorded as the producer of the
            compactions read from its summaries (they are recognised without it).

    Example:
        .. code-block:: python

            from langchain.agents import create_agent
            from langchain_core.language_models import GenericFakeChatModel
            from langchain_core.messages import AIMessage

            from ctx_memory import ContextManager
            from ctx_memory.middleware import ContextMiddleware

            manager = ContextManager()
            manager.set_system_prompt("s1", "You are a travel assistant.")
            model = GenericFakeChatModel(messages=iter([AIMessage("Hi!"), AIMessage("Paris.")]))
            agent = create_agent(model, middleware=[ContextMiddleware(manager)])
            config = {"configurable": {"session_id": "s1"}}

            agent.invoke({"messages": [("user", "Hello")]}, config)
            agent.invoke({"messages": [("user", "Where did I say hello?")]}, config)
            history = manager.get_history("s1")
            assert [r["content"] for r in history] == [
                "Hello", "Hi!", "Where did I say hello?", "Paris."
            ]
    """

    def __init__(
        self,
        manager: ContextManager,
        *,
        session_id: str | None = None,
        max_tokens: int = 8000,
        reserve_tokens: int = 1000,
        max_sources: int | None = 8,
        source_token_cap: int = 400,
        sources_share: float = 0.5,
        pinned_source_types: Sequence[str] = (),
        include_header: bool = True,
        persist: bool = True,
        model_name: str | None = None,
        tokenizer: Tokenizer | None = None,
        layout: Literal["classic", "stable"] = "classic",
        recall_share: float = 0.5,
        recall_max_tokens: int | None = 4000,
        trim_block: float = 0.5,
        embeddings: Embeddings | None = None,
        recall: Recall | None = None,
        cache_hints: Sequence[Literal["anthropic", "openai"]] = (),
        compaction: CompactionPolicy | None = None,
        summarization: AgentMiddleware[Any, Any] | None = None,
        compaction_mode: CompactionMode = "before",
    ) -> None:
        super().__init__()
        self.compaction_mode = check_mode(compaction_mode, compaction, owner="ContextMiddleware")
        self._background: BackgroundCompactor | None = None
        prompt_compaction = compaction or _USE_STORED
        if self.compaction_mode == "background" and compaction is not None:
            prompt_compaction = prompt_policy(compaction)
        self.manager = manager
        self.session_id = session_id
        self.persist = persist
        self.model_name = model_name
        self.summarization = summarization
        self.assembler = ContextPromptAssembler(
            manager,
            max_tokens=max_tokens,
            reserve_tokens=reserve_tokens,
            max_sources=max_sources,
            source_token_cap=source_token_cap,
            sources_share=sources_share,
            pinned_source_types=pinned_source_types,
            include_header=include_header,
            tokenizer=tokenizer,
            layout=layout,
            recall_share=recall_share,
            recall_max_tokens=recall_max_tokens,
            trim_block=trim_block,
            embeddings=embeddings,
            recall=recall,
            cache_hints=cache_hints,
            compaction=prompt_compaction,
        )
        self._stored = StoredDigests()  # what was stored, until the agent ends
        background = self.compaction_mode == "background" and compaction is not None
        if background and compaction is not None and compaction.summarize_at is not None:
            sent = self.assembler.sent  # the compactor repeats the request just answered
            self._background = BackgroundCompactor(manager, compaction, sent=sent)
        if compaction is not None and compaction.clear_tool_outputs_at is not None:
            self.tools = [make_restore_tool(manager, session_id)]

    def __repr__(self) -> str:
        return f"ContextMiddleware(session_id={self.session_id!r}, assembler={self.assembler!r})"

    # ------------------------------------------------------------ pure helpers

    def _session(self, runtime: Any) -> str:
        context = getattr(runtime, "context", None)
        if isinstance(context, Mapping) and context.get("session_id"):
            return str(context["session_id"])
        if context is not None and getattr(context, "session_id", None):
            return str(context.session_id)
        config = var_child_runnable_config.get() or {}
        configurable = config.get("configurable") or {}
        default = configurable.get("thread_id") or self.session_id
        return session_id_from(config, default, owner="ContextMiddleware")

    state_schema = ContextAgentState

    @staticmethod
    def _current_run(
        messages: Sequence[BaseMessage], state: Mapping[str, Any]
    ) -> list[BaseMessage]:
        """The run: from this invocation's first input message, or its last human message.

        The first input message is marked in the state as the run begins
        (:meth:`_start_of`); the run starts there, or earlier at the last human message
        (a run resumed after an interrupt has no input of its own: its question came
        before the mark). Without a mark (a state rewritten since, or made before the
        mark existed) the run is taken from the last human message on (all of it if
        there is none). LangChain summaries are left out: they are never a user turn.
        """
        _, messages = split_summaries(messages)
        human = next(
            (i for i in range(len(messages) - 1, -1, -1) if isinstance(messages[i], HumanMessage)),
            0,
        )
        start = state.get(_RUN_START_KEY)
        if isinstance(start, str):
            for index, message in enumerate(messages):
                if message.id == start:
                    return list(messages[min(index, human) :])
        return list(messages[human:])

    def _run_of(self, session_id: str, request: ModelRequest[Any]) -> list[BaseMessage]:
        """The current run (every message of the request if not persisting), with ids.

        Not persisting, a LangChain summary stays in the run: nothing it covers is
        stored, so it is sent as the agent state holds it.
        """
        run: list[BaseMessage] = list(request.messages)
        if self.persist:
            state = request.state if isinstance(request.state, Mapping) else {}
            run = self._current_run(run, state)
        _assign_ids(session_id, run)
        return run

    @staticmethod
    def _prompt_parts(
        request: ModelRequest[Any], run: list[BaseMessage]
    ) -> tuple[list[BaseMessage], str, str, frozenset[str]]:
        """What the prompt is built from: the repaired run and its question.

        Also the agent's own system prompt and the ids the stored history passes over.
        """
        tail = group_tool_results(repair_tool_pairs(run)[0])  # each result after its call
        query = next((m.text for m in reversed(tail) if isinstance(m, HumanMessage)), "")
        system = request.system_message.text if request.system_message is not None else ""
        skip = frozenset(str(m.id) for m in run if m.id)
        return tail, query, system, skip

    @staticmethod
    def _override(request: ModelRequest[Any], prompt: AssembledPrompt) -> ModelRequest[Any]:
        messages = prompt.messages
        system = None
        if messages and isinstance(messages[0], SystemMessage):
            system, messages = messages[0], messages[1:]
        settings = request.model_settings
        if prompt.model_kwargs:
            settings = {**settings, **prompt.model_kwargs}
        return request.override(
            system_message=system,
            messages=cast("list[AnyMessage]", messages),
            model_settings=settings,
        )

    def _written(
        self,
        session_id: str,
        request: ModelRequest[Any],
        run: list[BaseMessage],
        result: Any,
        *,
        started: float,
        prompt: AssembledPrompt,
        asked: str,
    ) -> list[BaseMessage | dict[str, Any]]:
        """What to append once the model answered: the current run and the reply.

        Gives replies without an id their deterministic one first, persisting or not.
        Nothing (``[]``) without ``persist``. The run's messages carry ``asked`` (the
        model call's start: they were all there by then), the replies the time they came.
        """
        replies = _reply_messages(result)
        anchor = str(request.messages[-1].id) if request.messages else ""
        for index, reply in enumerate(replies):
            if reply.id is None:
                # Set on the message itself: the state keeps this id, so the next call
                # passes over the stored copy; and a re-run of this call gets it again.
                reply.id = _stable_id(session_id, anchor, "reply", str(index))
        if not self.persist:
            return []
        stamped: list[BaseMessage | dict[str, Any]] = []
        for message in as_in_state(request, run):
            record = message_to_record(message, timestamp=asked)
            del record["token_count"]  # counted by the manager
            stamped.append(record)
            self._stored.remember(session_id, message)
        if not replies:
            return stamped
        model = request.model
        name = self.model_name or next(
            (
                v
                for v in (
                    replies[-1].response_metadata.get("model_name"),
                    getattr(model, "model_name", None),
                    getattr(model, "model", None),
                )
                if isinstance(v, str) and v
            ),
            type(model).__name__,
        )
        tools = [c["name"] for r in replies if isinstance(r, AIMessage) for c in r.tool_calls]
        metadata = {
            "model": name,
            "response_time_ms": round((time.perf_counter() - started) * 1000, 3),
            "sources_used": [source["url"] for source in prompt.sources_used()],
            "tools_used": tools,
        }
        now = now_iso()
        records: list[BaseMessage | dict[str, Any]] = []
        for reply in replies:
            record = message_to_record(reply, timestamp=now, metadata=metadata)
            del record["token_count"]  # counted by the manager
            records.append(record)
            self._stored.remember(session_id, reply, metadata)
        return [*stamped, *records]

    def _seed(self, session_id: str, messages: list[BaseMessage]) -> None:
        """Read back the stored copies of replies another agent stored (a resumed run)."""
        if self._stored.unseen_replies(session_id, messages):
            self._stored.seed(session_id, self.manager.get_history(session_id, last_k=LOOK_BACK))

    async def _aseed(self, session_id: str, messages: list[BaseMessage]) -> None:
        """Async :meth:`_seed`."""
        if self._stored.unseen_replies(session_id, messages):
            self._stored.seed(
                session_id, await self.manager.aget_history(session_id, last_k=LOOK_BACK)
            )

    def _summaries_of(self, request: ModelRequest[Any]) -> list[BaseMessage]:
        """The request's LangChain summaries this middleware handles (none if not persisting)."""
        return split_summaries(request.messages)[0] if self.persist else []

    @staticmethod
    def _needs_history(header: Mapping[str, Any] | None, summaries: Sequence[BaseMessage]) -> bool:
        """Whether some summary is new to the session (its covered range must be read)."""
        shared = header["shared"] if header else None
        return any(not known(shared, compaction_id_for(m)) for m in summaries)

    def _summary_writes(
        self,
        header: Mapping[str, Any] | None,
        records: Sequence[Mapping[str, Any]],
        request: ModelRequest[Any],
        summaries: Sequence[BaseMessage],
    ) -> tuple[list[tuple[BaseMessage, dict[str, Any]]], list[BaseMessage]]:
        """The compactions to add for new summaries, and the summaries to send as they are.

        A summary already recorded (or recorded and since removed) is neither; one whose
        covered range is unknown (its messages were never stored) is sent, not stored.
        """
        shared = header["shared"] if header else None
        state = request.state if isinstance(request.state, Mapping) else {}
        start = state.get(STATE_START_KEY)
        start = start if isinstance(start, str) else None
        last = max(i for i, m in enumerate(request.messages) if any(m is s for s in summaries))
        kept = list(request.messages[last + 1 :])
        writes: list[tuple[BaseMessage, dict[str, Any]]] = []
        unsent: list[BaseMessage] = []
        for message in summaries:
            compaction_id = compaction_id_for(message)
            body = summary_body(message)
            if known(shared, compaction_id) or not body:
                continue
            origin = summarised_from(shared, start)  # past a re-summary of this run
            span = summary_span(records, kept, origin, compactions_of(shared))
            if span is None and start is not None and known(shared, f"lc-summary-{start}"):
                # It summarises on from a summary whose compaction was removed: what both
                # cover is stored, and the session assembles it whole, so it is not sent.
                logger.info("LangChain summary %s: follows a removed compaction", message.id)
                continue
            if span is None:
                logger.info("LangChain summary %s: covered messages not stored", message.id)
                unsent.append(message)
                continue
            first, end = span
            # A re-summary takes in the LangChain summaries inside its range (their text
            # was in what it summarised): they are removed as it is written.
            taken = [
                c
                for c in compactions_of(shared)
                if (c.get("producer") or {}).get("name") == PRODUCER_NAME
                and first <= int(c["first_index"]) <= int(c["last_index"]) <= end
            ]
            # with what they took in: the chain a later run's start is followed along
            replaces = list(dict.fromkeys(
                [str(r) for c in taken for r in c.get("replaces") or ()]
                + [str(c["id"]) for c in taken]
            ))  # fmt: skip
            writes.append((message, {
                "first_index": first,
                "last_index": end,
                "summary": body,
                "producer": producer_for(self.summarization),
                "compaction_id": compaction_id,
                "first_id": str(records[first].get("id")),
                "last_id": str(records[end].get("id")),
                "replaces": replaces,
            }))  # fmt: skip
        return writes, unsent

    @staticmethod
    def _start_of(state: AgentState[Any]) -> dict[str, Any] | None:
        """The state update marking where the state and this run begin, as the run begins.

        The run's first message is the first after the one the previous run ended with
        (a checkpointer's state). Without that mark (no checkpointer: the caller sends
        the input, perhaps after the history it keeps itself), the input messages that
        end the state: the last human message and the human and system messages just
        before it (a history the caller sends back ends each earlier run with an AI
        message, which stops the walk).
        """
        messages = state.get("messages") or []
        if not messages or messages[0].id is None:
            return None
        update = {STATE_START_KEY: str(messages[0].id), _INPUT_END_KEY: str(messages[-1].id)}
        ids = [m.id for m in messages]
        seen = state.get(_SEEN_KEY)
        first = ids.index(seen) + 1 if seen in ids else None
        if seen is None:
            first = len(messages)
            while first > 0 and isinstance(messages[first - 1], (HumanMessage, SystemMessage)):
                first -= 1
        if first is not None and first < len(messages) and messages[first].id is not None:
            update[_RUN_START_KEY] = str(messages[first].id)
        else:  # the mark is gone (the state was rewritten): the last-human rule decides
            update[_RUN_START_KEY] = ""
        return update

    @staticmethod
    def _end_of(state: AgentState[Any]) -> dict[str, Any] | None:
        """The state update marking the state's last message (before a model call, at the end)."""
        messages = state.get("messages") or []
        last = messages[-1].id if messages else None
        return None if last is None else {_SEEN_KEY: str(last)}

    def _final_run(self, session_id: str, state: AgentState[Any]) -> list[BaseMessage]:
        """The current run when the agent finishes, with ids (persisting or not)."""
        run = self._current_run(state["messages"], state)
        _assign_ids(session_id, run)
        return run if self.persist else []

    # ------------------------------------------------------------ writes, then hooks (I/O twins)

    def _store(self, session_id: str, messages: Sequence[BaseMessage | dict[str, Any]]) -> None:
        """Append ``messages`` in one write; the session passes over ids it holds."""
        if messages:
            self.manager.add_messages(session_id, messages)

    async def _astore(
        self, session_id: str, messages: Sequence[BaseMessage | dict[str, Any]]
    ) -> None:
        """Async :meth:`_store`."""
        if messages:
            await self.manager.aadd_messages(session_id, messages)

    def _record_summaries(self, session_id: str, request: ModelRequest[Any]) -> list[BaseMessage]:
        """Store new LangChain summaries as compactions; returns those to send as they are."""
        summaries = self._summaries_of(request)
        if not summaries:
            return []
        header = self.manager.get_header(session_id)
        records = []
        if self._needs_history(header, summaries):
            records = self.manager.get_history(session_id)
        writes, unsent = self._summary_writes(header, records, request, summaries)
        for message, write in writes:
            try:
                add_compaction(self.manager, session_id, **write)
            except ValidationError as e:
                unsent.append(_unstored_summary(message, e))
        return unsent

    async def _arecord_summaries(
        self, session_id: str, request: ModelRequest[Any]
    ) -> list[BaseMessage]:
        """Async :meth:`_record_summaries`."""
        summaries = self._summaries_of(request)
        if not summaries:
            return []
        header = await self.manager.aget_header(session_id)
        records = []
        if self._needs_history(header, summaries):
            records = await self.manager.aget_history(session_id)
        writes, unsent = self._summary_writes(header, records, request, summaries)
        for message, write in writes:
            try:
                await aadd_compaction(self.manager, session_id, **write)
            except ValidationError as e:
                unsent.append(_unstored_summary(message, e))
        return unsent

    @override
    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ModelCallResult[Any]:
        session_id = self._session(request.runtime)
        run = self._run_of(session_id, request)
        self._seed(session_id, run)
        for message, metadata in self._stored.changed(session_id, as_in_state(request, run)):
            self.manager.replace_message(session_id, str(message.id), message, metadata=metadata)
        # A LangChain summary is stored as a compaction (not a turn) before the prompt
        # is built, so the prompt sends it once, in place of what it covers.
        unsent = self._record_summaries(session_id, request)
        tail, query, system, skip = self._prompt_parts(request, [*unsent, *run])
        prompt = self.assembler.build(
            session_id, tail, query=query, skip_ids=skip, system_prefix=system
        )
        asked, started = now_iso(), time.perf_counter()
        result = handler(self._override(request, prompt))
        written = self._written(
            session_id, request, run, result, started=started, prompt=prompt, asked=asked
        )
        self._store(session_id, written)
        self._compact_later(session_id)
        return result

    @override
    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ModelCallResult[Any]:
        session_id = self._session(request.runtime)
        run = self._run_of(session_id, request)
        await self._aseed(session_id, run)
        for message, metadata in self._stored.changed(session_id, as_in_state(request, run)):
            await self.manager.areplace_message(
                session_id, str(message.id), message, metadata=metadata
            )
        # A LangChain summary is stored as a compaction (not a turn) before the prompt
        # is built, so the prompt sends it once, in place of what it covers.
        unsent = await self._arecord_summaries(session_id, request)
        tail, query, system, skip = self._prompt_parts(request, [*unsent, *run])
        prompt = await self.assembler.abuild(
            session_id, tail, query=query, skip_ids=skip, system_prefix=system
        )
        asked, started = now_iso(), time.perf_counter()
        result = await handler(self._override(request, prompt))
        written = self._written(
            session_id, request, run, result, started=started, prompt=prompt, asked=asked
        )
        await self._astore(session_id, written)
        self._acompact_later(session_id)
        return result

    @override
    def before_agent(self, state: AgentState[Any], runtime: Runtime[Any]) -> dict[str, Any] | None:
        return self._start_of(state)

    @override
    async def abefore_agent(
        self, state: AgentState[Any], runtime: Runtime[Any]
    ) -> dict[str, Any] | None:
        return self._start_of(state)

    @override
    def before_model(self, state: AgentState[Any], runtime: Runtime[Any]) -> dict[str, Any] | None:
        # Once tools ran, the run so far is stored before the model is called again: a
        # failure from here on (the model, the budget, another middleware) loses no tool
        # output and leaves no stored call unanswered.
        session_id = self._session(runtime)
        run = self._final_run(session_id, state)
        if _tools_ran(state, run):
            self._seed(session_id, run)  # first: a reply another agent stored is compared
            for message in run:
                self._stored.remember(session_id, message)
            self._store(session_id, run)
        # Marked before each model call too: the input of a run whose model call fails
        # is not taken for the next run's input (it was neither answered nor stored).
        return self._end_of(state)

    @override
    async def abefore_model(
        self, state: AgentState[Any], runtime: Runtime[Any]
    ) -> dict[str, Any] | None:
        session_id = self._session(runtime)
        run = self._final_run(session_id, state)
        if _tools_ran(state, run):
            await self._aseed(session_id, run)
            for message in run:
                self._stored.remember(session_id, message)
            await self._astore(session_id, run)
        return self._end_of(state)

    @override
    def after_agent(self, state: AgentState[Any], runtime: Runtime[Any]) -> dict[str, Any] | None:
        session_id = self._session(runtime)
        run = self._final_run(session_id, state)
        self._seed(session_id, run)
        self._store(session_id, run)
        for message, metadata in self._stored.changed(session_id, run, forget=True):
            self.manager.replace_message(session_id, str(message.id), message, metadata=metadata)
        return self._end_of(state)

    @override
    async def aafter_agent(
        self, state: AgentState[Any], runtime: Runtime[Any]
    ) -> dict[str, Any] | None:
        session_id = self._session(runtime)
        run = self._final_run(session_id, state)
        await self._aseed(session_id, run)
        await self._astore(session_id, run)
        for message, metadata in self._stored.changed(session_id, run, forget=True):
            await self.manager.areplace_message(
                session_id, str(message.id), message, metadata=metadata
            )
        return self._end_of(state)
