"""The eval's compaction part: tool-heavy agent traces with facts planted in tool outputs.

The seeded :func:`~ctx_memory.eval.data.agent_trace` sessions (with ``facts=True``) are
replayed as the agent middleware runs them (every message written as it happens, a request
at each model call with the current run as the tail) for three contenders and a variant,
same data, same budget:

* ``ctx_memory classic + compaction``: the assembler as ``ContextMiddleware`` builds it
  (classic layout, default recall share) with the default
  :class:`~ctx_memory.compaction.CompactionPolicy` (finished turns' tool outputs cleared
  to a placeholder naming the tool-call id, one rolling extractive summary of the older
  history stored as a compaction, naming the call ids it covers); it has the
  ``restore_tool_result`` tool, so a fact whose call id the prompt names is restorable.
* ``ctx_memory classic (recency)``: the same assembler, recency only, no compaction.
* ``ctx_memory classic + compaction (chat summariser)``, the variant: the same with
  :func:`~ctx_memory.compaction.chat_summarizer` on an offline stand-in chat model (it
  answers with the extractive summary of what it is sent). The assembler compacts
  before each request and gives the summariser the request it built before
  (``prefix_messages`` of :func:`~ctx_memory.compaction.compact`), as ``ContextualChat``
  and ``ContextMiddleware`` do. Each summarisation request is compared with the live
  request before it: the share of its serialised tokens
  (:func:`~ctx_memory.eval.metrics.request_tokens`) that is their common prefix (what a
  provider's prompt cache serves).
* ``SummarizationMiddleware``: LangChain's middleware itself (its ``before_model`` on a
  state holding the whole thread, as with a checkpointer), with the same extractive
  summariser, triggered at 80 % of the budget and keeping the newest 40 %; the request is
  the system message and its state. It has no restore tool.

Per contender: prompt tokens as a share of the full history's tokens (mean over the model
calls once the history exceeds the budget, and at the last call), the share of planted
facts in the prompt or restorable (mean over those calls; a fact counts as planted once
its tool output is written), and the requests' integrity (the runner's recount and
orphan checks). The chat-summariser variant's row is under ``compaction_requests``
with its requests' prefix reuse (its first compaction of a session comes before any
request it could share a prefix with, and is counted apart).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
import time
import warnings
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from langchain_core.language_models import BaseChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableLambda
from pydantic import Field
from typing_extensions import override

from ctx_memory.assembly.compacted import compactions_of, summary_record
from ctx_memory.assembly.window import repair_tool_pairs
from ctx_memory.compaction import (
    CompactionPolicy,
    ExtractiveSummarizer,
    chat_summarizer,
    compact,
)
from ctx_memory.errors import BudgetExceededError
from ctx_memory.eval.contenders import (
    CLASSIC,
    AssemblerContender,
    Contender,
    Prompt,
    system_text,
)
from ctx_memory.eval.data import _WORDS, agent_trace
from ctx_memory.eval.metrics import (
    common_prefix_length,
    fact_availability,
    mean,
    recount_tokens,
    request_tokens,
    tool_pair_problems,
)
from ctx_memory.manager import ContextManager
from ctx_memory.prompt import ContextPromptAssembler
from ctx_memory.stores.memory import InMemoryStore

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from datetime import datetime

    import tiktoken
    from langchain_core.callbacks import CallbackManagerForLLMRun

    from ctx_memory.tokens import TokenCounter

__all__ = [
    "CHAT_COMPACTION",
    "COMPACTION",
    "SUMMARIZATION",
    "ChatCompactionContender",
    "SummarizationContender",
    "run_compaction",
]

COMPACTION = "ctx_memory classic + compaction"
CHAT_COMPACTION = "ctx_memory classic + compaction (chat summariser)"
SUMMARIZATION = "SummarizationMiddleware"
RESTORABLE = (COMPACTION, CHAT_COMPACTION)
"""Contenders with the ``restore_tool_result`` tool."""


class StandInSummaryModel(BaseChatModel):
    """An offline chat model for the eval: records each request, answers extractively.

    The answer is the :class:`~ctx_memory.compaction.ExtractiveSummarizer` summary of the
    request's messages between its first and its last (what a real model would be asked
    about); what is measured is the request's shape, not the summary's quality.
    """

    requests: list[list[BaseMessage]] = Field(default_factory=list)

    @property
    @override
    def _llm_type(self) -> str:
        return "ctx-memory-eval-stand-in"

    @override
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.requests.append(list(messages))
        text = ExtractiveSummarizer().summarize(messages[1:-1] or messages)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(text or "(nothing)"))])


class ChatCompactionContender(AssemblerContender):
    """The default policy with a chat summariser fed the previous request as its prefix.

    It compacts, so it keeps a session of its own (every message written there too, with
    the same ids) rather than share the one the default policy compacts.
    """

    def __init__(
        self,
        session_id: str,
        budget: int,
        system_prompt: str,
        metadata: Mapping[str, Any],
        encoding: tiktoken.Encoding,
    ) -> None:
        manager = ContextManager(store=InMemoryStore())
        manager.set_system_prompt(session_id, system_prompt)
        manager.update_metadata(session_id, **metadata)
        self.model = StandInSummaryModel()
        self.policy = CompactionPolicy(summarizer=chat_summarizer(self.model))
        super().__init__(CHAT_COMPACTION, manager, session_id, budget, {"compaction": self.policy})
        self.manager = manager
        self.encoding = encoding
        self.last: list[BaseMessage] | None = None
        self.prefix_shares: list[float] = []
        self.without_live = 0

    @override
    def observe(self, messages: Sequence[BaseMessage]) -> None:
        """Write the messages to its own session, with their ids."""
        self.manager.add_messages(self.session_id, list(messages))

    @override
    def prompt(self, tail: Sequence[BaseMessage], query: str, now: datetime) -> Prompt:
        """Assemble as usual: the assembler compacts first, repeating the previous request.

        Every summarisation request the model gets meanwhile is compared with the
        request before it (the one the assembler keeps as the prefix).
        """
        seen = len(self.model.requests)
        prompt = super().prompt(tail, query, now)
        for request in self.model.requests[seen:]:
            if self.last is None:
                self.without_live += 1
                continue
            live = request_tokens(self.last, self.encoding)
            asked = request_tokens(request, self.encoding)
            self.prefix_shares.append(common_prefix_length(live, asked) / max(len(asked), 1))
        self.last = prompt.messages
        return prompt


class SummarizationContender:
    """LangChain's ``SummarizationMiddleware`` on a state holding the whole thread."""

    def __init__(
        self,
        budget: int,
        counter: TokenCounter,
        system_prompt: str,
        metadata: Mapping[str, Any],
    ) -> None:
        from langchain.agents.middleware import SummarizationMiddleware  # noqa: PLC0415

        self.name = SUMMARIZATION
        self.budget = budget
        self.counter = counter
        self.system_prompt = system_prompt
        self.metadata = dict(metadata)
        self.state: list[BaseMessage] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.middleware = SummarizationMiddleware(
                model=GenericFakeChatModel(messages=iter(())),  # not called: summarizer is
                summarizer=cast("Any", ExtractiveSummarizer()),
                trigger=("tokens", int(budget * 0.8)),
                keep=("tokens", int(budget * 0.4)),
                token_counter=cast("Any", counter.count_chat),
                trim_tokens_to_summarize=None,
            )

    def observe(self, messages: Sequence[BaseMessage]) -> None:
        """The agent state gets every message."""
        self.state.extend(messages)

    def prompt(self, tail: Sequence[BaseMessage], query: str, now: datetime) -> Prompt:
        """Its ``before_model`` on the state (which may summarise), then system + state."""
        state = cast("Any", {"messages": self.state})
        update = self.middleware.before_model(state, cast("Any", None))
        if update is not None:
            self.state = list(update["messages"][1:])  # after RemoveMessage(REMOVE_ALL)
        system = SystemMessage(system_text(self.system_prompt, self.metadata, now))
        return Prompt(messages=[system, *self.state])


def _contenders(  # noqa: PLR0917 - what the replay has, in its order
    manager: ContextManager,
    session_id: str,
    budget: int,
    system_prompt: str,
    metadata: Any,
    chat: ChatCompactionContender,
) -> list[Contender]:
    return [
        AssemblerContender(
            COMPACTION, manager, session_id, budget, {"compaction": CompactionPolicy()}
        ),
        chat,
        AssemblerContender(
            CLASSIC, manager, session_id, budget, {"layout": "classic", "recall_share": 0.0}
        ),
        SummarizationContender(budget, manager.token_counter, system_prompt, metadata),
    ]


class _Row:
    def __init__(self) -> None:
        self.shares: list[float] = []
        self.in_prompt: list[float] = []
        self.available: list[float] = []
        self.last_share: list[float] = []

    def as_dict(self, restorable: bool) -> dict[str, Any]:
        return {
            "calls": len(self.shares),
            "prompt_share_mean": mean(self.shares),
            "prompt_share_last": mean(self.last_share),
            "facts_in_prompt": mean(self.in_prompt),
            "facts_in_prompt_or_restorable": mean(self.available),
            "restore_tool": restorable,
        }


def run_compaction(
    settings: Any,
    check: Callable[[Contender, Prompt], int],
    progress: Callable[[str], None],
    *,
    start: datetime,
    system_prompt: str,
    metadata: Mapping[str, Any],
    stress_traces: int = 0,
) -> dict[str, Any]:
    """Replay the fact traces for the contenders; their rows, keyed by name.

    The chat-summariser variant's compaction requests, their prefix reuse and its own
    row are under ``compaction_requests``; ``stress_traces`` generated traces with a
    failing summariser (:func:`run_stress`; the runner passes
    ``settings.compaction_traces``) under ``stress``.

    Args:
        settings: The run's :class:`~ctx_memory.eval.runner.EvalSettings`.
        check: Recounts a request and checks its integrity (the runner's), returning
            its tokens.
        progress: Gets a line per session.
        start: The simulated clock's start.
        system_prompt: The agents' system prompt.
        metadata: The sessions' metadata.
        stress_traces: How many generated traces :func:`run_stress` runs (0: none).
    """
    import tiktoken  # noqa: PLC0415 - the bench group's, as the runner's

    rows: dict[str, _Row] = defaultdict(_Row)
    calls = messages = 0
    chats: list[ChatCompactionContender] = []
    encoding = tiktoken.get_encoding(
        ContextManager(store=InMemoryStore()).token_counter.encoding_name
    )
    for index in range(settings.trace_sessions):
        seed = settings.seed * 1000 + index
        tasks = agent_trace(seed, settings.trace_tasks, facts=True)
        progress(f"compaction trace {index + 1}/{settings.trace_sessions}: {len(tasks)} tasks")
        manager = ContextManager(store=InMemoryStore())
        session_id = f"facts-{seed}"
        manager.set_system_prompt(session_id, system_prompt)
        manager.update_metadata(session_id, **metadata)
        chat = ChatCompactionContender(
            session_id, settings.trace_budget, system_prompt, metadata, encoding
        )
        chats.append(chat)
        contenders = _contenders(
            manager, session_id, settings.trace_budget, system_prompt, metadata, chat
        )
        facts: list[tuple[str, str]] = []
        full = 3  # the whole history as one request: its messages' exact counts + priming
        now = start
        last: dict[str, float] = {}
        for task in tasks:
            planted = {f.call_id: (f.code, f.call_id) for f in task.facts}
            run: list[BaseMessage] = []
            for message in task.messages:
                record = manager.add_messages(session_id, [message])[0]
                stored = message.model_copy(update={"id": record["id"]})
                messages += 1
                run.append(stored)
                full += int(record["token_count"])
                if (fact := planted.get(str(record.get("tool_call_id")))) is not None:
                    facts.append(fact)  # planted once its tool output exists
                for contender in contenders:
                    contender.observe([stored])
                if isinstance(stored, AIMessage):
                    continue  # a model call follows the user's message and each tool result
                now += timedelta(seconds=20)
                if full <= settings.trace_budget:
                    continue
                calls += 1
                for contender in contenders:
                    prompt = contender.prompt(run, task.query, now)
                    tokens = check(contender, prompt)
                    got = fact_availability(prompt.messages, facts)
                    row = rows[contender.name]
                    row.shares.append(tokens / full)
                    last[contender.name] = tokens / full
                    row.in_prompt.append(got.in_prompt / max(got.planted, 1))
                    restorable = got.restorable if contender.name in RESTORABLE else 0
                    row.available.append((got.in_prompt + restorable) / max(got.planted, 1))
        for name, share in last.items():
            rows[name].last_share.append(share)
    return {
        "sessions": settings.trace_sessions,
        "tasks_per_session": settings.trace_tasks,
        "messages": messages,
        "model_calls_counted": calls,
        "budget": settings.trace_budget,
        "results": {
            name: row.as_dict(name in RESTORABLE)
            for name, row in rows.items()
            if name != CHAT_COMPACTION
        },
        "compaction_requests": {
            **_requests(chats),
            "prompts": rows[CHAT_COMPACTION].as_dict(restorable=True),
        },
        "stress": run_stress(stress_traces, settings.seed, progress, encoding),
    }


def _requests(chats: Sequence[ChatCompactionContender]) -> dict[str, Any]:
    """The chat summariser's requests over every session: prefix reuse with the live one."""
    shares = [share for chat in chats for share in chat.prefix_shares]
    return {
        "contender": CHAT_COMPACTION,
        "requests": sum(len(chat.model.requests) for chat in chats),
        "with_live_request": len(shares),
        "prefix_share_mean": mean(shares),
        "prefix_share_min": min(shares, default=None),
        "without_live_request": sum(chat.without_live for chat in chats),
    }


# --------------------------------------------------------------------------- stress


@dataclass
class _StressCounts:
    """What the generated traces did and every integrity problem found (all should be 0)."""

    traces: int = 0
    messages: int = 0
    prompts: int = 0
    parallel_calls: int = 0
    pending_at_prompt: int = 0
    interleaved: int = 0
    second_compactor_runs: int = 0
    summarizer_calls: int = 0
    summarizer_raised: int = 0
    summarizer_empty: int = 0
    compactions_live: int = 0
    failures_unreported: int = 0
    messages_lost_or_altered: int = 0
    orphan_results: int = 0
    unanswered_calls: int = 0
    budget_violations: int = 0
    reported_mismatches: int = 0
    tail_over_budget: int = 0
    bad_compactions: int = 0


class _FlakySummarizer:
    """Fails at random: raises, or returns nothing (``""``, blanks, ``None``, an empty reply)."""

    def __init__(self, rng: random.Random, counts: _StressCounts) -> None:
        self.rng = rng
        self.counts = counts
        self.failed = 0

    def __call__(self, messages: list[BaseMessage]) -> Any:
        self.counts.summarizer_calls += 1
        roll = self.rng.random()
        if roll < 0.15:
            self.counts.summarizer_raised += 1
            self.failed += 1
            raise RuntimeError("summariser down")
        if roll < 0.30:
            self.counts.summarizer_empty += 1
            self.failed += 1
            return self.rng.choice(["", "  \n ", None, AIMessage("")])
        last = messages[-1].text if messages else ""
        return f"{len(messages)} messages; last: " + " ".join(last.split()[:10])


_RECORD_KEYS = ("id", "role", "content", "tool_calls", "tool_call_id", "name", "token_count")


def _key(record: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(str(record.get(k)) for k in _RECORD_KEYS)


class _Writer:
    """One agent writing to the shared session: its run, and the calls it waits for."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.run: list[BaseMessage] = []
        self.pending: list[str] = []
        self.rounds = 0


def _stress_policy(rng: random.Random, summarizer: Runnable[Any, Any]) -> CompactionPolicy:
    return CompactionPolicy(
        clear_tool_outputs_at=rng.choice([None, 100, 400, 1000]),
        keep_tool_outputs=rng.choice([0, 0, 2, 6]),
        tool_output_min_tokens=rng.choice([0, 20, 60]),
        summarize_at=rng.choice([150, 300, 600]),
        keep_recent=rng.choice([0, 2, 4, 8]),
        block=rng.choice([1, 2, 4]),
        min_messages=rng.choice([1, 2, 4]),
        rolling=rng.random() < 0.8,
        summarizer=summarizer,
    )


def _check_compactions(
    history: Sequence[Mapping[str, Any]],
    compactions: Sequence[Mapping[str, Any]],
    counter: TokenCounter,
) -> int:
    """How many live compactions disagree with the stored history (0 expected)."""
    bad = 0
    for entry in compactions:
        first, last = int(entry["first_index"]), int(entry["last_index"])
        covered = history[first : last + 1]
        ok = (
            len(covered) == last - first + 1
            and covered[0].get("id") == entry["first_id"]
            and covered[-1].get("id") == entry["last_id"]
        )
        if ok and entry.get("kind") == "summary":
            calls = {str(c["id"]) for r in covered for c in r.get("tool_calls") or ()}
            results = [str(r["tool_call_id"]) for r in covered if r.get("role") == "tool"]
            ok = (
                entry["tokens_covered"] == sum(int(r["token_count"]) for r in covered)
                and entry["summary_tokens"] == summary_record(entry, counter)["token_count"]
                and sorted(entry.get("tool_call_ids") or []) == sorted(set(results))
                and calls <= set(results)  # no call summarised without its result
            )
        bad += not ok
    return bad


def _stress_trace(  # noqa: PLR0915 - one generated session, start to end
    seed: int, manager: ContextManager, counts: _StressCounts, encoding: tiktoken.Encoding
) -> None:
    """One small generated session: writers, parallel and pending calls, prompts, checks."""
    rng = random.Random(seed)
    session_id = f"stress-{seed}"
    flaky = _FlakySummarizer(rng, counts)
    summarizer = RunnableLambda(flaky, name="flaky")
    policy = _stress_policy(rng, summarizer)
    base = rng.randint(300, 1500)  # raised per request to what its tail needs
    assembler = ContextPromptAssembler(
        manager, max_tokens=base, reserve_tokens=0, max_sources=0, compaction=policy,
        layout=rng.choice(["classic", "stable"]), recall_share=rng.choice([0.0, 0.5]),
    )  # fmt: skip
    second = replace(policy, rolling=not policy.rolling, keep_recent=policy.keep_recent + 2)
    writers = [_Writer("A")] + ([_Writer("B")] if rng.random() < 0.5 else [])
    stored: list[dict[str, Any]] = []
    reported = 0
    calls = 0

    def write(writer: _Writer, message: BaseMessage) -> BaseMessage:
        record = manager.add_messages(session_id, [message])[0]
        stored.append(record)
        counts.messages += 1
        copy = message.model_copy(update={"id": record["id"]})
        writer.run.append(copy)
        if any(w.pending for w in writers if w is not writer):
            counts.interleaved += 1
        return copy

    def model_call(writer: _Writer) -> None:
        nonlocal reported
        counts.prompts += 1
        if any(w.pending for w in writers):
            counts.pending_at_prompt += 1
        if rng.random() < 0.2:  # a chat-style question, not stored
            tail: list[BaseMessage] = [HumanMessage(f"question {counts.prompts}?")]
            skip: frozenset[str] = frozenset()
        else:  # an agent's run as the tail, repaired as ContextMiddleware does
            tail = repair_tool_pairs(writer.run)[0]
            skip = frozenset(str(m.id) for m in writer.run if m.id)
        count = len(stored)
        budget = max(base, manager.token_counter.count_chat(tail) + 120)
        try:
            prompt = assembler.build(
                session_id, tail, query="question", skip_ids=skip, budget=budget
            )
        except BudgetExceededError:
            counts.tail_over_budget += 1
            return
        if len(manager.get_history(session_id)) != count:
            counts.messages_lost_or_altered += 1
        reported += sum(1 for note in prompt.report.compaction_notes if note.startswith("summ"))
        tokens = recount_tokens(prompt.messages, encoding)
        counts.budget_violations += tokens > budget
        counts.reported_mismatches += tokens != prompt.report.total_tokens
        problems = tool_pair_problems(prompt.messages)
        counts.orphan_results += problems.orphan_results
        counts.unanswered_calls += problems.unanswered_calls
        if rng.random() < 0.1:  # a second compactor on the same session, another policy
            counts.second_compactor_runs += 1
            if compact(manager, session_id, second).failed:
                reported += 1

    for _ in range(rng.randint(10, 26)):
        writer = rng.choice(writers)
        if not writer.run:  # idle: a new request
            write(writer, HumanMessage(f"{writer.name}: task {rng.getrandbits(20)} please."))
            writer.rounds = rng.randint(0, 3)
            model_call(writer)
        elif writer.pending:  # a tool finishes (in any order)
            call_id = writer.pending.pop(rng.randrange(len(writer.pending)))
            words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(5, 90)))
            write(writer, ToolMessage(f"{call_id}: {words}", tool_call_id=call_id, name="tool"))
            if not writer.pending:
                model_call(writer)
        elif writer.rounds > 0:  # the model calls tools, one to three at once
            writer.rounds -= 1
            n = rng.choice([1, 1, 2, 3])
            ids = []
            for _ in range(n):
                calls += 1
                ids.append(f"{writer.name.lower()}{seed}_{calls}")
            counts.parallel_calls += n > 1
            message = AIMessage(
                "", tool_calls=[{"name": "tool", "args": {"n": i}, "id": i} for i in ids]
            )
            write(writer, message)
            writer.pending = ids
        else:  # the answer ends the run
            write(writer, AIMessage(f"{writer.name}: done, {rng.getrandbits(16)}."))
            writer.run = []
    history = manager.get_history(session_id)
    counts.messages_lost_or_altered += sum(
        1 for a, b in zip(history, stored, strict=False) if _key(a) != _key(b)
    ) + abs(len(history) - len(stored))
    header = manager.get_header(session_id)
    compactions = compactions_of(header["shared"] if header else None)
    counts.compactions_live += len(compactions)
    counts.bad_compactions += _check_compactions(history, compactions, manager.token_counter)
    counts.failures_unreported += max(flaky.failed - reported, 0)
    counts.traces += 1


_CHUNK = 1000
"""Generated traces per chunk (one in-memory store each; a worker process runs a chunk)."""


def _stress_chunk(first: int, stop: int, seed: int, encoding_name: str) -> dict[str, int]:
    """Traces ``first``..``stop - 1`` of a stress run, their counts (runs in a worker too)."""
    import tiktoken  # noqa: PLC0415 - the bench group's, as the runner's

    encoding = tiktoken.get_encoding(encoding_name)
    counts = _StressCounts()
    manager = ContextManager(store=InMemoryStore())
    log = logging.getLogger("ctx_memory.compaction")
    level = log.level
    log.setLevel(logging.ERROR)  # thousands of failures on purpose: counted, not logged
    try:
        for index in range(first, stop):
            _stress_trace(seed * 100_000 + index, manager, counts, encoding)
    finally:
        log.setLevel(level)
    return asdict(counts)


def run_stress(
    traces: int, seed: int, progress: Callable[[str], None], encoding: tiktoken.Encoding
) -> dict[str, Any]:
    """``traces`` small generated sessions with a summariser that fails at random.

    Each: one or two writers sharing the session (one's messages landing between the
    other's tool call and its result), one to three parallel tool calls per AI message,
    results in any order, prompts built while a call is pending, a random policy
    (rolling or not, thresholds, blocks), layout, recall share and budget, and now and
    then a second compactor with another policy on the same session. Checked: every
    stored message against what was written (after each prompt and at the end), every
    prompt recounted against its budget and for orphan results and unanswered calls,
    every summariser failure reported (a prompt's ``compaction_notes`` or the outcome),
    every live compaction against the history (ids at its positions, exact counts, the
    tool-call ids it covers, no call summarised without its result).

    Each trace is seeded from ``seed`` and its number alone, so the counts are the same
    however the run is split: in chunks of 1,000 over two worker processes where
    ``fork`` is available and there are more than one chunk and CPU, else in this
    process.
    """
    started = time.perf_counter()
    chunks = [(a, min(a + _CHUNK, traces)) for a in range(0, traces, _CHUNK)]
    workers = min(os.cpu_count() or 1, 2, len(chunks))
    totals = _StressCounts()

    def add(done: Mapping[str, int], first: int, stop: int) -> None:
        for name, value in done.items():
            setattr(totals, name, getattr(totals, name) + value)
        progress(f"compaction stress: traces {first + 1:,}-{stop:,} of {traces:,} checked")

    if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {
                pool.submit(_stress_chunk, a, b, seed, encoding.name): (a, b) for a, b in chunks
            }
            for future in as_completed(futures):
                add(future.result(), *futures[future])
    else:
        for a, b in chunks:
            add(_stress_chunk(a, b, seed, encoding.name), a, b)
    out: dict[str, Any] = asdict(totals)
    out["workers"] = workers
    out["wall_time_s"] = time.perf_counter() - started
    return out
