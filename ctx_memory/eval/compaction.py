"""The eval's compaction part: tool-heavy agent traces with facts planted in tool outputs.

The seeded :func:`~ctx_memory.eval.data.agent_trace` sessions (with ``facts=True``) are
replayed as the agent middleware runs them (every message written as it happens, a request
at each model call with the current run as the tail) for three contenders, same data,
same budget:

* ``ctx_memory classic + compaction``: the assembler as ``ContextMiddleware`` builds it
  (classic layout, default recall share) with the default
  :class:`~ctx_memory.compaction.CompactionPolicy` (finished turns' tool outputs cleared
  to a placeholder naming the tool-call id, one rolling extractive summary of the older
  history stored as a compaction, naming the call ids it covers); it has the
  ``restore_tool_result`` tool, so a fact whose call id the prompt names is restorable.
* ``ctx_memory classic (recency)``: the same assembler, recency only, no compaction.
* ``SummarizationMiddleware``: LangChain's middleware itself (its ``before_model`` on a
  state holding the whole thread, as with a checkpointer), with the same extractive
  summariser, triggered at 80 % of the budget and keeping the newest 40 %; the request is
  the system message and its state. It has no restore tool.

Every contender builds a request at every model call (as the agent would); the measures
are over the model calls once the history exceeds the budget. Per contender: prompt
tokens as a share of the full history's tokens (mean over those calls, and at the last
call), the share of planted facts in the prompt or restorable (mean over those calls; a
fact counts as planted once its tool output is written), and the requests' integrity
(the runner's recount and orphan checks, over every request).
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage

from ctx_memory.compaction import CompactionPolicy, ExtractiveSummarizer
from ctx_memory.eval.contenders import (
    CLASSIC,
    AssemblerContender,
    Contender,
    Prompt,
    system_text,
)
from ctx_memory.eval.data import agent_trace
from ctx_memory.eval.metrics import fact_availability, mean
from ctx_memory.manager import ContextManager
from ctx_memory.stores.memory import InMemoryStore

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from datetime import datetime

    from ctx_memory.tokens import TokenCounter

__all__ = [
    "COMPACTION",
    "SUMMARIZATION",
    "SummarizationContender",
    "run_compaction",
]

COMPACTION = "ctx_memory classic + compaction"
SUMMARIZATION = "SummarizationMiddleware"


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


def _contenders(
    manager: ContextManager, session_id: str, budget: int, system_prompt: str, metadata: Any
) -> list[Contender]:
    return [
        AssemblerContender(
            COMPACTION, manager, session_id, budget, {"compaction": CompactionPolicy()}
        ),
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
) -> dict[str, Any]:
    """Replay the fact traces for the three contenders; their rows, keyed by name.

    Args:
        settings: The run's :class:`~ctx_memory.eval.runner.EvalSettings`.
        check: Recounts a request and checks its integrity (the runner's), returning
            its tokens.
        progress: Gets a line per session.
        start: The simulated clock's start.
        system_prompt: The agents' system prompt.
        metadata: The sessions' metadata.
    """
    rows: dict[str, _Row] = defaultdict(_Row)
    calls = messages = 0
    for index in range(settings.trace_sessions):
        seed = settings.seed * 1000 + index
        tasks = agent_trace(seed, settings.trace_tasks, facts=True)
        progress(f"compaction trace {index + 1}/{settings.trace_sessions}: {len(tasks)} tasks")
        manager = ContextManager(store=InMemoryStore())
        session_id = f"facts-{seed}"
        manager.set_system_prompt(session_id, system_prompt)
        manager.update_metadata(session_id, **metadata)
        contenders = _contenders(
            manager, session_id, settings.trace_budget, system_prompt, metadata
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
                counted = full > settings.trace_budget
                calls += counted
                for contender in contenders:
                    prompt = contender.prompt(run, task.query, now)
                    tokens = check(contender, prompt)
                    if not counted:
                        continue  # built (as the agent would), measured once over budget
                    got = fact_availability(prompt.messages, facts)
                    row = rows[contender.name]
                    row.shares.append(tokens / full)
                    last[contender.name] = tokens / full
                    row.in_prompt.append(got.in_prompt / max(got.planted, 1))
                    restorable = got.restorable if contender.name == COMPACTION else 0
                    row.available.append((got.in_prompt + restorable) / max(got.planted, 1))
        for name, share in last.items():
            rows[name].last_share.append(share)
    return {
        "sessions": settings.trace_sessions,
        "tasks_per_session": settings.trace_tasks,
        "messages": messages,
        "model_calls_counted": calls,
        "budget": settings.trace_budget,
        "results": {name: row.as_dict(name == COMPACTION) for name, row in rows.items()},
    }
