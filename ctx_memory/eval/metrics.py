"""The eval's measures as pure functions: no store, no clock, no file.

Each takes what a run produced (the messages of an assembled prompt, the ids of the turns
that hold an answer, the token lists of consecutive requests) and returns numbers:

* :func:`serialize_request` and :func:`request_tokens`: a prompt as a provider receives
  it (LangChain's ``convert_to_openai_messages``, compact JSON) and that text's tokens.
* :func:`common_prefix_length` and :class:`PrefixReuseMeter`: the longest common token
  prefix of consecutive requests, the share of request *n + 1* it covers, and whether it
  reaches a provider's cache minimum (OpenAI: 1,024 tokens).
* :func:`gold_coverage` and :func:`recall_at_k`: the share of gold turns in a prompt, and
  in the first ``k`` ids of a ranked list.
* :func:`tool_pair_problems`: tool results without their call, tool calls without their
  result, by the rule chat APIs enforce.
* :func:`recount_tokens`: a prompt's tokens recounted from the serialised request with
  tiktoken alone (the documented convention of :mod:`ctx_memory.tokens`, not its code).
* :func:`fact_availability`: of the facts planted in tool outputs, how many a prompt
  holds, and how many more it names the tool-call id of (restorable through a tool).
* :func:`percentile` and :func:`mean`: summaries that need no numpy.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langchain_core.messages import convert_to_openai_messages

from ctx_memory.tokens import TokenCounter, block_kind

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping, Sequence

    import tiktoken
    from langchain_core.messages import BaseMessage

__all__ = [
    "MIN_QUOTED_CHARS",
    "quoted_ids",
    "CACHE_MIN_TOKENS",
    "LONG_PROMPT_TOKENS",
    "PrefixReuse",
    "PrefixReuseMeter",
    "FactAvailability",
    "ToolPairProblems",
    "common_prefix_length",
    "fact_availability",
    "gold_coverage",
    "mean",
    "percentile",
    "recall_at_k",
    "recalled_ids",
    "recount_tokens",
    "request_tokens",
    "serialize_request",
    "tool_pair_problems",
]

CACHE_MIN_TOKENS = 1024
"""The shortest prefix OpenAI's prompt cache reuses."""
LONG_PROMPT_TOKENS = 2000
"""Cache stability is reported over requests longer than this (serialised tokens)."""

# The chat-API counting convention documented in ctx_memory.tokens.
_PER_MESSAGE = 3
_PER_NAME = 1
_REPLY_PRIMING = 3


# --------------------------------------------------------------------------- requests


def serialize_request(messages: Sequence[BaseMessage]) -> str:
    """The prompt as a provider receives it: OpenAI-format messages as compact JSON."""
    wire = convert_to_openai_messages(list(messages))
    return json.dumps(wire, ensure_ascii=False, separators=(",", ":"))


def request_tokens(messages: Sequence[BaseMessage], encoding: tiktoken.Encoding) -> list[int]:
    """The serialised request's tokens (what a prefix cache compares)."""
    return encoding.encode_ordinary(serialize_request(messages))


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share.

    Example:
        .. code-block:: python

            from ctx_memory.eval.metrics import common_prefix_length

            assert common_prefix_length([1, 2, 3, 4], [1, 2, 9]) == 2
    """
    lo, hi = 0, min(len(a), len(b))
    if a[:hi] == b[:hi]:
        return hi
    # Invariant: a[:lo] == b[:lo] and a[:hi] != b[:hi]; slices compare in C.
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass(frozen=True)
class PrefixReuse:
    """Cache stability over one or more sequences of consecutive requests.

    Attributes:
        pairs: Consecutive pairs (n, n + 1) whose request n + 1 is longer than
            ``min_tokens`` (the only pairs counted).
        mean_reuse: Mean of common prefix / tokens of request n + 1 (``None`` for no pair).
        share_cacheable: Share of those pairs whose common prefix is at least
            ``cache_min`` tokens (``None`` for no pair).
        mean_prefix_tokens: Mean common prefix in tokens (``None`` for no pair).
        requests: Requests seen, short ones included.
    """

    pairs: int
    mean_reuse: float | None
    share_cacheable: float | None
    mean_prefix_tokens: float | None
    requests: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-native."""
        return {
            "pairs": self.pairs,
            "mean_reuse": self.mean_reuse,
            "share_cacheable": self.share_cacheable,
            "mean_prefix_tokens": self.mean_prefix_tokens,
            "requests": self.requests,
        }


class PrefixReuseMeter:
    """Feeds consecutive requests of one session at a time; sums prefix reuse.

    Call :meth:`start` between sessions (the first request of a session has no
    predecessor). Only pairs whose later request is longer than ``min_tokens`` count.

    Example:
        .. code-block:: python

            from ctx_memory.eval.metrics import PrefixReuseMeter

            meter = PrefixReuseMeter(min_tokens=3, cache_min=4)
            meter.add([1, 2, 3, 4])
            meter.add([1, 2, 3, 4, 5, 6, 7, 8])  # prefix 4 of 8
            meter.add([9, 2, 3, 4, 5, 6, 7, 8])  # prefix 0 of 8
            result = meter.result()
            assert (result.pairs, result.mean_reuse, result.share_cacheable) == (2, 0.25, 0.5)
    """

    def __init__(
        self, *, min_tokens: int = LONG_PROMPT_TOKENS, cache_min: int = CACHE_MIN_TOKENS
    ) -> None:
        self.min_tokens = min_tokens
        self.cache_min = cache_min
        self._previous: Sequence[int] | None = None
        self._reuse: list[float] = []
        self._prefixes: list[int] = []
        self._requests = 0

    def start(self) -> None:
        """A new session begins: the next request has no predecessor."""
        self._previous = None

    def add(self, tokens: Sequence[int]) -> int | None:
        """Feed the next request's tokens; return its common prefix with the previous one."""
        self._requests += 1
        previous, self._previous = self._previous, tokens
        if previous is None:
            return None
        prefix = common_prefix_length(previous, tokens)
        if len(tokens) > self.min_tokens:
            self._reuse.append(prefix / len(tokens))
            self._prefixes.append(prefix)
        return prefix

    def result(self) -> PrefixReuse:
        """What was fed so far."""
        pairs = len(self._reuse)
        if not pairs:
            return PrefixReuse(0, None, None, None, self._requests)
        cacheable = sum(1 for p in self._prefixes if p >= self.cache_min)
        return PrefixReuse(
            pairs=pairs,
            mean_reuse=sum(self._reuse) / pairs,
            share_cacheable=cacheable / pairs,
            mean_prefix_tokens=sum(self._prefixes) / pairs,
            requests=self._requests,
        )


# --------------------------------------------------------------------------- coverage


MIN_QUOTED_CHARS = 20
"""Shortest stored text looked for verbatim inside a prompt message (shorter: by id only)."""


def quoted_ids(contents: Collection[str], candidates: Mapping[str, str]) -> set[str]:
    """The ids in ``candidates`` (id -> stored text) whose text a prompt message quotes.

    The stable layout shows recalled turns as text inside the last user message, not as
    messages of their own, so a turn can be in the prompt without its id. A text shorter
    than :data:`MIN_QUOTED_CHARS` is never matched this way (it could be anywhere).

    Example:
        .. code-block:: python

            from ctx_memory.eval.metrics import quoted_ids

            prompt = ["Earlier turns: [12] user: Caroline: I went to the LGBTQ support group"]
            stored = {"m12": "Caroline: I went to the LGBTQ support group", "m13": "Yes."}
            assert quoted_ids(prompt, stored) == {"m12"}
    """
    joined = chr(10).join(contents)
    return {i for i, text in candidates.items() if len(text) >= MIN_QUOTED_CHARS and text in joined}


def gold_coverage(prompt_ids: Collection[str | None], gold_ids: Collection[str]) -> float:
    """Share of ``gold_ids`` present among ``prompt_ids`` (1.0 when there is no gold).

    Example:
        .. code-block:: python

            from ctx_memory.eval.metrics import gold_coverage

            assert gold_coverage(["m1", "m2", None], ["m2", "m7"]) == 0.5
    """
    gold = set(gold_ids)
    if not gold:
        return 1.0
    present = gold.intersection(i for i in prompt_ids if i is not None)
    return len(present) / len(gold)


def recall_at_k(ranked: Sequence[str], gold_ids: Collection[str], k: int) -> float:
    """Share of ``gold_ids`` among the first ``k`` distinct ids of ``ranked``."""
    gold = set(gold_ids)
    if not gold:
        return 1.0
    top: list[str] = []
    for item in ranked:
        if item not in top:
            top.append(item)
            if len(top) == k:
                break
    return len(gold.intersection(top)) / len(gold)


_ID_KEYS = ("message_ids", "ids", "message_id", "id")


def recalled_ids(recalled: Iterable[Mapping[str, Any]]) -> list[str]:
    """The stored message ids a report's ``recalled`` entries name, in ranking order.

    An entry names its messages under ``message_ids`` / ``ids`` (a list) or ``message_id``
    / ``id`` (one id); the first of those keys an entry has is used.
    """
    out: list[str] = []
    for entry in recalled:
        for key in _ID_KEYS:
            value = entry.get(key)
            if value is None:
                continue
            values = value if isinstance(value, (list, tuple)) else [value]
            out.extend(str(v) for v in values if str(v) not in out)
            break
    return out


# --------------------------------------------------------------------------- integrity


@dataclass(frozen=True)
class ToolPairProblems:
    """Tool messages a chat API would refuse.

    Attributes:
        orphan_results: Tool results not answering a call of the assistant message right
            before their run of tool messages.
        unanswered_calls: Assistant tool calls without a result in the tool messages
            right after them.
    """

    orphan_results: int
    unanswered_calls: int

    @property
    def total(self) -> int:
        """Both kinds together."""
        return self.orphan_results + self.unanswered_calls


def tool_pair_problems(messages: Sequence[BaseMessage]) -> ToolPairProblems:
    """Count orphan tool results and unanswered tool calls in a prompt.

    The rule chat APIs enforce: an assistant message with tool calls is followed at once
    by one tool message per call id; a tool message answers a call of the assistant
    message that opens its run of tool messages.

    Example:
        .. code-block:: python

            from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
            from ctx_memory.eval.metrics import tool_pair_problems

            call = AIMessage("", tool_calls=[{"name": "f", "args": {}, "id": "c1"}])
            assert tool_pair_problems([HumanMessage("q"), call]).unanswered_calls == 1
            assert tool_pair_problems([ToolMessage("r", tool_call_id="c1")]).orphan_results == 1
            assert tool_pair_problems([call, ToolMessage("r", tool_call_id="c1")]).total == 0
    """
    orphans = unanswered = 0
    pending: set[str] = set()
    open_calls: set[str] = set()
    for message in messages:
        if message.type == "tool":
            call_id = str(getattr(message, "tool_call_id", ""))
            if call_id in open_calls:
                open_calls.discard(call_id)
                pending.discard(call_id)
            else:
                orphans += 1
            continue
        unanswered += len(pending)  # the run of tool messages ended
        pending = set()
        open_calls = set()
        calls = [
            *(getattr(message, "tool_calls", None) or ()),
            *(getattr(message, "invalid_tool_calls", None) or ()),  # sent as calls too
        ]
        if message.type == "ai" and calls:
            ids = {str(call.get("id")) for call in calls}
            pending = set(ids)
            open_calls = set(ids)
    unanswered += len(pending)
    return ToolPairProblems(orphans, unanswered)


_FACT_CODE = re.compile(r"FX-[0-9a-f]{8}")
_CALL_ID = re.compile(r"[A-Za-z0-9_\-]+")


@dataclass(frozen=True)
class FactAvailability:
    """Planted facts and one prompt.

    Attributes:
        planted: Facts planted so far.
        in_prompt: Facts whose code the prompt's text holds.
        restorable: Facts not in the prompt whose tool-call id the prompt names (a
            placeholder or summary line, or the call itself), so a restore tool brings
            the output back by that id.
    """

    planted: int
    in_prompt: int
    restorable: int


def fact_availability(
    messages: Sequence[BaseMessage], facts: Iterable[tuple[str, str]]
) -> FactAvailability:
    """Which ``(code, call id)`` facts ``messages`` hold, or name the call id of.

    Example:
        .. code-block:: python

            from langchain_core.messages import HumanMessage
            from ctx_memory.eval.metrics import fact_availability

            got = fact_availability(
                [HumanMessage('code FX-0000000a; cleared: tool_call_id="c2"')],
                [("FX-0000000a", "c1"), ("FX-0000000b", "c2"), ("FX-0000000c", "c3")],
            )
            assert (got.planted, got.in_prompt, got.restorable) == (3, 1, 1)
    """
    codes: set[str] = set()
    words: set[str] = set()
    for message in messages:
        text = message.text if isinstance(message.content, str) else str(message.content)
        codes.update(_FACT_CODE.findall(text))
        words.update(_CALL_ID.findall(text))
        for call in getattr(message, "tool_calls", None) or []:
            words.add(str(call.get("id")))
    planted = in_prompt = restorable = 0
    for code, call_id in facts:
        planted += 1
        if code in codes:
            in_prompt += 1
        elif call_id in words:
            restorable += 1
    return FactAvailability(planted, in_prompt, restorable)


def _content_tokens(content: Any, encoding: tiktoken.Encoding) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return len(encoding.encode_ordinary(content))
    total = 0
    for block in content:
        if isinstance(block, str):
            total += len(encoding.encode_ordinary(block))
        elif (kind := block_kind(block)) in ("text", "file") and isinstance(block.get("text"), str):
            total += len(encoding.encode_ordinary(block["text"]))  # a text-plain file: its text
        elif kind in _PRICED:
            total += _pricing().count_block(block)  # a formula, not text: nothing to recount
        else:
            text = json.dumps(block, separators=(",", ":"), sort_keys=True, default=str)
            total += len(encoding.encode_ordinary(text))
    return total


_PRICED = frozenset(("image", "audio", "file"))


@functools.cache
def _pricing() -> TokenCounter:
    """A counter for the documented image, audio and file prices only."""
    return TokenCounter()


def recount_tokens(messages: Sequence[BaseMessage], encoding: tiktoken.Encoding) -> int:
    """A prompt's tokens, recounted from the OpenAI-format request with tiktoken alone.

    The convention :mod:`ctx_memory.tokens` documents: 3 per message + role + content
    (each text block on its own, as the request's content parts), 1 + name for a named
    message, the call id of a tool result, the compact sorted JSON of
    ``[{name, arguments}]`` for tool calls (malformed ones too, their arguments as the
    raw text: ``ChatOpenAI`` sends them as calls), and 3 priming the reply. Image, audio
    and file blocks are priced by the module's formulas; there is no text to recount.
    """
    total = _REPLY_PRIMING
    for message in messages:
        # one message can be several on the wire (Anthropic-style tool_result blocks
        # become tool messages of their own); its malformed calls are counted once
        for index, wire in enumerate(convert_to_openai_messages([message], text_format="block")):
            total += _wire_tokens(wire, message if index == 0 else None, encoding)
    return total


def _wire_tokens(
    wire: Mapping[str, Any], message: BaseMessage | None, encoding: tiktoken.Encoding
) -> int:
    """One OpenAI-format message's tokens; ``message``'s malformed tool calls with it."""
    total = _PER_MESSAGE + len(encoding.encode_ordinary(wire["role"]))
    total += _content_tokens(wire.get("content"), encoding)
    if wire.get("name"):
        total += _PER_NAME + len(encoding.encode_ordinary(wire["name"]))
    if wire.get("tool_call_id"):
        total += len(encoding.encode_ordinary(wire["tool_call_id"]))
    calls = [
        {
            "name": call["function"]["name"],
            "arguments": json.loads(call["function"]["arguments"] or "{}"),
        }
        for call in wire.get("tool_calls") or ()
    ]
    calls += [
        {"name": call.get("name"), "arguments": call.get("args")}
        for call in getattr(message, "invalid_tool_calls", None) or ()
    ]
    if calls:
        text = json.dumps(calls, separators=(",", ":"), sort_keys=True)
        total += len(encoding.encode_ordinary(text))
    return total


# --------------------------------------------------------------------------- summaries


def mean(values: Iterable[float]) -> float | None:
    """Arithmetic mean, ``None`` for no value."""
    items = list(values)
    return sum(items) / len(items) if items else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100), linear between closest ranks; ``None`` for no value.

    Example:
        .. code-block:: python

            from ctx_memory.eval.metrics import percentile

            assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    """
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
