"""Token-budgeted prompt assembly: system prompt, sources, history and the question.

The assembled prompt is, in order::

    SystemMessage   system prompt + a short header (mode, current URL, user's local time)
                    + numbered sources (title, URL), most relevant to the question first,
                      each cut to a per-source token cap
    ...history      as much stored history as fits, newest first, whole turns (a turn
                    starts at a user message), never an orphan tool message nor an AI
                    tool call without its results
    HumanMessage    the question

Counted the way the chat API counts (:meth:`TokenCounter.count_chat`), it never exceeds
``max_tokens - reserve_tokens``. The system prompt and the question are never dropped: if
they alone do not fit, :class:`~ctx_memory.errors.BudgetExceededError` is raised.

Stored history is never re-encoded: each message's ``token_count`` was cached when it was
written, so choosing the history window adds integers. History is read newest first in
chunks sized from the session's average message size, so assembling from a 10,000-message
session reads about as many messages as fit.

The module is split the way the rest of the package is: pure functions and classes that
touch no store (:func:`~ctx_memory.ranking.rank_sources`, in :mod:`ctx_memory.ranking`
with the tokenizer and BM25, :func:`format_header`,
:func:`format_sources`, :class:`HistoryWindow`, :func:`repair_tool_pairs`,
:func:`plan_sources`) and thin I/O shells (:class:`ContextPromptAssembler`) that read
through the manager's public API, once with its sync methods and once with its async
twins, driving the same generator (:func:`drive` / :func:`adrive`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, cast

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.prompt_values import ChatPromptValue
from langchain_core.runnables import Runnable
from langchain_core.runnables.utils import ConfigurableFieldSpec
from typing_extensions import override

from ctx_memory.errors import BudgetExceededError, ValidationError
from ctx_memory.ranking import bm25_scores, item_key, item_title, rank_sources, tokenize
from ctx_memory.schema import record_to_message
from ctx_memory.tokens import REPLY_PRIMING

if TYPE_CHECKING:
    from collections import Counter
    from collections.abc import Callable, Generator, Iterable, Mapping, MutableMapping, Sequence

    from langchain_core.callbacks import (
        AsyncCallbackManagerForChainRun,
        CallbackManagerForChainRun,
    )
    from langchain_core.runnables import RunnableConfig

    from ctx_memory.manager import ContextManager
    from ctx_memory.ranking import Tokenizer
    from ctx_memory.tokens import TokenCounter

__all__ = [
    "AssembledPrompt",
    "AssemblyReport",
    "ContextPromptAssembler",
    "HistoryWindow",
    "PromptInput",
    "Question",
    "SESSION_ID_SPEC",
    "SourcePlan",
    "adrive",
    "bm25_scores",
    "drive",
    "format_header",
    "format_sources",
    "history_window_flow",
    "parse_question",
    "plan_sources",
    "rank_sources",
    "repair_tool_pairs",
    "session_id_from",
    "tokenize",
]

R = TypeVar("R")

PromptInput = str | BaseMessage | dict[str, Any]
"""What the assembler accepts: a question, a HumanMessage, or a dict holding one."""

SESSION_ID_SPEC = ConfigurableFieldSpec(
    id="session_id",
    annotation=str,
    name="Session ID",
    description="The ctx_memory session to read and write.",
    default="",
    is_shared=True,
)
"""``config["configurable"]["session_id"]``, declared the way LangChain's own
history-aware runnables declare it (visible in ``config_specs``)."""

# --------------------------------------------------------------------------- I/O driving


class Call(NamedTuple):
    """One manager call a flow needs: the sync method's name and its arguments.

    The async driver calls ``"a" + method`` instead, the manager's native async twin.
    """

    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}  # noqa: RUF012 - NamedTuple default, never mutated


def drive(manager: ContextManager, flow: Generator[Call, Any, R]) -> R:
    """Run ``flow`` with the manager's sync methods and return its result."""
    try:
        call = next(flow)
        while True:
            call = flow.send(getattr(manager, call.method)(*call.args, **call.kwargs))
    except StopIteration as done:
        return cast("R", done.value)


async def adrive(manager: ContextManager, flow: Generator[Call, Any, R]) -> R:
    """Run ``flow`` with the manager's async twins (``a`` + name) and return its result."""
    try:
        call = next(flow)
        while True:
            result = await getattr(manager, "a" + call.method)(*call.args, **call.kwargs)
            call = flow.send(result)
    except StopIteration as done:
        return cast("R", done.value)


def session_id_from(
    config: RunnableConfig | None,
    default: str | None = None,
    *,
    payload: Any = None,
    owner: str = "ctx_memory",
) -> str:
    """The session id for a run: ``payload["session_id"]``, else the config's, else default.

    The config's id is ``config["configurable"]["session_id"]``, as LangChain's own
    history-aware runnables take it.

    Raises:
        ValidationError: No session id anywhere (the message says where to put one).
    """
    if isinstance(payload, dict) and payload.get("session_id"):
        return str(payload["session_id"])
    configurable = (config or {}).get("configurable") or {}
    session_id = configurable.get("session_id") or default
    if not session_id:
        msg = (
            f"{owner} needs a session id: pass session_id= to the constructor or "
            'config={"configurable": {"session_id": "..."}} when invoking'
        )
        raise ValidationError(msg)
    return str(session_id)


# --------------------------------------------------------------------------- BM25
# Tokenization and BM25 live in ctx_memory.ranking; the names stay importable from here.

_item_key = item_key
_title = item_title


# --------------------------------------------------------------------------- formatting


def format_header(
    metadata: Mapping[str, Any] | None,
    *,
    now: datetime | None = None,
) -> str:
    """The short session header: mode, current URL and the user's local time.

    Only what is known is shown; the default ``normal`` mode is not. The user's local
    time is ``metadata.user_time`` (with ``user_timezone`` in brackets); without it, but
    with a timezone, it is ``now`` converted to that zone.
    """
    meta = metadata or {}
    lines: list[str] = []
    mode = meta.get("mode")
    if mode and str(mode) != "normal":
        lines.append(f"Mode: {mode}")
    if meta.get("current_url"):
        lines.append(f"Current page: {meta['current_url']}")
    zone = meta.get("user_timezone")
    local = meta.get("user_time")
    if not local and zone and now is not None:
        local = _now_in(zone, now)
    if local:
        lines.append(f"User's local time: {local}" + (f" ({zone})" if zone else ""))
    return "\n".join(lines)


def _now_in(zone: str, now: datetime) -> str | None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # noqa: PLC0415 - rarely needed

    try:
        return now.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")
    except (ZoneInfoNotFoundError, ValueError):
        return None


SOURCES_HEADING = "Sources (most relevant first; cite as [n]):"


def _source_heading(number: int, item: Mapping[str, Any]) -> str:
    data = item.get("extracted_data") or {}
    line = f"[{number}] {_title(item)}"
    if item.get("url") and item.get("url") != _title(item):
        line += f" - {item['url']}"
    extras = [str(data[k]) for k in ("site_name", "published_date") if data.get(k)]
    if extras:
        line += f" ({', '.join(extras)})"
    return line


def format_sources(sources: Sequence[tuple[Mapping[str, Any], str]]) -> str:
    """The numbered sources block for ``(item, content)`` pairs, or ``""`` for none."""
    if not sources:
        return ""
    parts = [SOURCES_HEADING]
    parts.extend(
        f"{_source_heading(n, item)}\n{content}" for n, (item, content) in enumerate(sources, 1)
    )
    return "\n\n".join(parts)


def system_text(head: str, sources_block: str) -> str:
    """The system message text: system prompt and header, then the sources block."""
    return "\n\n".join(part for part in (head, sources_block) if part)


def head_text(system_prompt: str | None, header: str) -> str:
    """The system prompt followed by the session header."""
    return "\n\n".join(part for part in (system_prompt or "", header) if part)


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class SourcePlan:
    """The sources chosen for a prompt.

    Attributes:
        chosen: ``(item, content)`` pairs in prompt order; content cut to the cap.
        truncated: How many of ``chosen`` were cut to the per-source cap.
        dropped: How many ranked sources were left out (over ``max_sources`` or budget).
        system_tokens: Exact tokens of the system message holding ``chosen``
            (0 when there is no system message at all).
        text: The system message text.
    """

    chosen: tuple[tuple[Mapping[str, Any], str], ...]
    truncated: int
    dropped: int
    system_tokens: int
    text: str


def plan_sources(
    head: str,
    ranked: Sequence[Mapping[str, Any]],
    *,
    counter: TokenCounter,
    allowance: int,
    per_source_tokens: int,
    max_sources: int | None,
    cache: MutableMapping[tuple[Any, ...], str] | None = None,
) -> SourcePlan:
    """Choose sources, most relevant first, so the system message fits ``allowance``.

    ``allowance`` bounds the whole system message (overhead, system prompt, header and
    sources). Each source is cut to ``per_source_tokens``. Sources are added while their
    estimated cost fits; the finished system message is then counted exactly once and
    the least relevant source is dropped until it fits. An empty ``head`` and no sources
    give no system message (0 tokens).
    """
    base_tokens = counter.count_message("system", head) if head else 0
    chosen: list[tuple[Mapping[str, Any], str, int]] = []
    limit = len(ranked) if max_sources is None else min(max_sources, len(ranked))
    estimate = (base_tokens or counter.count_message("system", "")) + counter.count(
        "\n\n" + SOURCES_HEADING
    )
    for item in ranked[:limit]:
        content, cut = _cut(item, counter, per_source_tokens, cache)
        if not content.strip():
            continue
        cost = counter.count(_source_heading(len(chosen) + 1, item)) + 3  # + separators
        cost += min(int(item.get("token_count") or counter.count(content)), per_source_tokens)
        if estimate + cost > allowance:
            break
        estimate += cost
        chosen.append((item, content, cut))
    while True:
        pairs = [(item, content) for item, content, _ in chosen]
        text = system_text(head, format_sources(pairs))
        tokens = counter.count_message("system", text) if text else 0
        if tokens <= allowance or not chosen:
            break
        chosen.pop()  # the least relevant source goes first
    truncated = sum(cut for _, _, cut in chosen)
    return SourcePlan(tuple(pairs), truncated, len(ranked) - len(chosen), tokens, text)


def _cut(
    item: Mapping[str, Any],
    counter: TokenCounter,
    cap: int,
    cache: MutableMapping[tuple[Any, ...], str] | None,
) -> tuple[str, int]:
    content = (item.get("content") or "").strip()
    tokens = item.get("token_count")
    if tokens is not None and int(tokens) <= cap:
        return content, 0
    key = (*_item_key(item), cap)
    cut = cache.get(key) if cache is not None else None
    if cut is None:
        # A token is rarely longer than 12 characters: encoding a prefix is enough, and
        # a shorter cut is still within the cap.
        cut = counter.truncate(content[: cap * 12], cap).rstrip()
        if cache is not None:
            cache[key] = cut
    return cut, int(cut != content)


# --------------------------------------------------------------------------- history


def _is_tool_call(record: Mapping[str, Any]) -> bool:
    return record.get("role") == "assistant" and bool(record.get("tool_calls"))


class HistoryWindow:
    """Chooses the newest whole turns of a history that fit a token budget.

    Feed records newest first (in any number of chunks); the window keeps the longest
    suffix that starts at a user message and whose cached ``token_count`` values add up
    to at most ``budget``. At the very start of the history, leading messages before the
    first user message are kept too if they fit. The result is then passed through
    :func:`repair_tool_pairs`, so it never holds an orphan tool message nor an AI tool
    call without all its results, and :func:`group_tool_results`, so each result
    follows its call.

    Args:
        budget: Tokens available for history.
        cost: Tokens of one record (default: its cached ``token_count``).
        skip: Returns true for records to pass over entirely (e.g. messages the caller
            sends anyway); they neither count nor end a turn.

    Example:
        .. code-block:: python

            from ctx_memory.prompt import HistoryWindow

            history = [
                {"role": "user", "content": "a", "token_count": 5},
                {"role": "assistant", "content": "b", "token_count": 5},
                {"role": "user", "content": "c", "token_count": 5},
                {"role": "assistant", "content": "d", "token_count": 5},
            ]
            window = HistoryWindow(budget=12)
            window.feed(reversed(history))
            kept = window.finish(at_start=True)
            assert [r["content"] for r in kept] == ["c", "d"]
    """

    def __init__(
        self,
        budget: int,
        *,
        cost: Callable[[Mapping[str, Any]], int] | None = None,
        skip: Callable[[Mapping[str, Any]], bool] | None = None,
    ) -> None:
        self.budget = max(budget, 0)
        self._cost = cost or _cached_cost
        self._skip = skip
        self.seen = 0
        self.seen_tokens = 0
        self.skipped = 0
        self.skipped_tokens = 0
        self.done = False
        self._pending: list[Mapping[str, Any]] = []
        self._pending_tokens = 0
        self._selected: list[Mapping[str, Any]] = []
        self.tokens = 0
        self.dropped: list[Mapping[str, Any]] = []
        self.chosen: list[Mapping[str, Any]] = []
        self._tool_traffic = False

    def feed(self, records: Iterable[Mapping[str, Any]]) -> bool:
        """Consume records, newest first; return true once no older record can fit."""
        if self.done:
            return True
        cost_of, skip, budget = self._cost, self._skip, self.budget
        pending = self._pending
        for record in records:
            if skip is not None and skip(record):
                self.skipped += 1
                self.skipped_tokens += int(record.get("token_count") or 0)
                continue
            cost = int(record["token_count"]) if cost_of is _cached_cost else cost_of(record)
            self.seen += 1
            self.seen_tokens += cost
            if self.tokens + self._pending_tokens + cost > budget:
                self.done = True
                return True
            pending.append(record)
            self._pending_tokens += cost
            role = record["role"]
            if role == "tool" or (role == "assistant" and record.get("tool_calls")):
                self._tool_traffic = True
            if role == "user":
                self._selected.extend(pending)
                self.tokens += self._pending_tokens
                pending.clear()
                self._pending_tokens = 0
        return False

    def finish(self, *, at_start: bool) -> list[Mapping[str, Any]]:
        """The chosen records, oldest first.

        Args:
            at_start: The oldest record fed was the first of the history, so messages
                before the first user message (a greeting, say) may be kept.
        """
        if at_start and not self.done and self._pending:
            self._selected.extend(self._pending)
            self.tokens += self._pending_tokens
        self._pending = []
        self._pending_tokens = 0
        chosen = list(reversed(self._selected))
        if not self._tool_traffic:
            return chosen
        kept, dropped = repair_tool_pairs(chosen)
        if dropped:
            self.tokens -= sum(self._cost(r) for r in dropped)
            self.dropped = dropped
        return group_tool_results(kept)


def _cached_cost(record: Mapping[str, Any]) -> int:
    return int(record["token_count"])


def _calls_of(message: Mapping[str, Any] | BaseMessage) -> list[str]:
    calls = (
        getattr(message, "tool_calls", None)
        if isinstance(message, BaseMessage)
        else message.get("tool_calls")
    )
    return [str(c.get("id")) for c in calls or () if c.get("id")]


def _has_tool_calls(message: Mapping[str, Any] | BaseMessage) -> bool:
    if isinstance(message, BaseMessage):
        return bool(getattr(message, "tool_calls", None))
    return bool(message.get("tool_calls"))


def _role_of(message: Mapping[str, Any] | BaseMessage) -> str:
    if isinstance(message, BaseMessage):
        return {"human": "user", "ai": "assistant"}.get(message.type, message.type)
    return str(message.get("role"))


def _tool_call_id_of(message: Mapping[str, Any] | BaseMessage) -> str | None:
    if isinstance(message, BaseMessage):
        value = getattr(message, "tool_call_id", None)
    else:
        value = message.get("tool_call_id")
    return str(value) if value else None


M = TypeVar("M", "Mapping[str, Any]", BaseMessage)


def repair_tool_pairs(messages: Sequence[M]) -> tuple[list[M], list[M]]:
    """Drop orphan tool messages and AI tool calls without all their results.

    Works on stored records and on LangChain messages alike. An AI message whose tool
    calls are not all answered by later tool messages is dropped, and then every tool
    message whose call is not in an earlier kept AI message.

    Returns:
        ``(kept, dropped)``, both in the original order.
    """
    if not any(_role_of(m) == "tool" or _has_tool_calls(m) for m in messages):
        return list(messages), []  # the common case: no tool traffic at all
    answered: set[str] = set()
    for message in messages:
        if _role_of(message) == "tool" and (call_id := _tool_call_id_of(message)):
            answered.add(call_id)
    kept: list[M] = []
    dropped: list[M] = []
    open_calls: set[str] = set()
    for message in messages:
        role = _role_of(message)
        if role == "assistant":
            calls = _calls_of(message)
            if _has_tool_calls(message) and (not calls or not set(calls) <= answered):
                dropped.append(message)
                continue
            open_calls.update(calls)
        elif role == "tool":
            call_id = _tool_call_id_of(message)
            if call_id is None or call_id not in open_calls:
                dropped.append(message)
                continue
        kept.append(message)
    return kept, dropped


def group_tool_results(messages: Sequence[M]) -> list[M]:
    """Move each tool result right after the AI message that called it.

    A shared session can hold other messages between an AI tool call and its results
    (an agent used as a tool writes its own turn there; so can any writer while a tool
    runs). Chat APIs want the results right after the call (here in the order of the
    calls), so the messages in between move after the results; nothing is dropped. Run
    after :func:`repair_tool_pairs`.
    """
    results: dict[str, list[M]] = {}
    for message in messages:
        if _role_of(message) == "tool" and (call_id := _tool_call_id_of(message)):
            results.setdefault(call_id, []).append(message)
    if not results:
        return list(messages)
    out: list[M] = []
    placed: set[int] = set()
    for message in messages:
        if id(message) in placed:
            continue
        out.append(message)
        if _role_of(message) == "assistant":
            for call_id in _calls_of(message):
                for result in results.pop(call_id, ()):
                    if id(result) not in placed:
                        placed.add(id(result))
                        out.append(result)
    return out


def history_chunks(end: int, first: int) -> Iterable[tuple[int, int]]:
    """Inclusive ``(start, stop)`` index ranges from ``end - 1`` down to 0, doubling."""
    size = max(first, 1)
    while end > 0:
        start = max(0, end - size)
        yield start, end - 1
        end = start
        size *= 2


def history_window_flow(
    session_id: str,
    metadata: Mapping[str, Any],
    budget: int,
    *,
    counter: TokenCounter,
    end: int | None = None,
    skip_ids: frozenset[str] = frozenset(),
) -> Generator[Call, Any, HistoryWindow]:
    """Read the newest whole turns that fit ``budget``, newest first in chunks.

    ``metadata`` is the session's (for ``message_count``, ``token_count`` and
    ``token_encoding``); the first chunk is sized from the average message so one read
    usually suffices. Messages before index ``end`` (default: all) are considered.
    Cached counts are used unless the session was counted in another encoding.

    Returns:
        The finished window; its ``chosen`` records are oldest first.
    """
    stored = int(metadata.get("message_count", 0))
    end = stored if end is None else min(end, stored)
    same_encoding = metadata.get("token_encoding") in (None, counter.encoding_name)
    window = HistoryWindow(
        budget,
        cost=None if same_encoding else counter.count_record,
        skip=(lambda r: r.get("id") in skip_ids) if skip_ids else None,
    )
    average = max(int(metadata.get("token_count", 0)) // max(stored, 1), 1)
    reached = end
    for start, stop in history_chunks(end, budget // average + 8 + len(skip_ids)):
        records = yield Call("get_message_range", (session_id, start, stop))
        reached = start
        if window.feed(reversed(records)) or not records:
            break
    window.chosen = window.finish(at_start=reached == 0)
    return window


# --------------------------------------------------------------------------- messages

_PLAIN_CLASSES: dict[str, type[BaseMessage]] = {
    "user": HumanMessage,
    "assistant": AIMessage,
    "system": SystemMessage,
}
_RICH_KEYS = (
    "name",
    "additional_kwargs",
    "response_metadata",
    "tool_calls",
    "invalid_tool_calls",
    "usage_metadata",
)
_RICH_KEY_SET = frozenset(_RICH_KEYS)
_set_attr = object.__setattr__


class _PlainMessageFactory:
    """Builds ``cls(content=text, id=id)`` without re-running pydantic validation.

    A message with plain string content, a str id (every stored message has one) and
    nothing else (no name, kwargs, tool calls) always validates to the same field values:
    the defaults plus ``content`` and ``id``.
    This factory copies those values from one validated prototype (with fresh empty
    containers, so no two messages share a mutable default) and sets the same fields-set,
    extra and private state pydantic would, about 4x faster than the constructor. It
    checks itself against the real constructor once and, if anything differs (another
    pydantic or langchain-core version), builds messages the ordinary way instead.
    """

    __slots__ = ("cls", "containers", "ok", "template")

    def __init__(self, cls: type[BaseMessage]) -> None:
        self.cls = cls
        proto = cls(content="")
        self.template = dict(proto.__dict__)
        self.containers = tuple(
            (key, type(value))
            for key, value in self.template.items()
            if isinstance(value, (dict, list))
        )
        self.ok = (
            getattr(cls, "__pydantic_post_init__", None) is None
            and proto.model_fields_set == {"content"}
            and proto.__pydantic_extra__ == {}
            and proto.__pydantic_private__ is None
            and all(not self.template[key] for key, _ in self.containers)
        )
        if self.ok:
            for probe, probe_id in (("", None), ("probe text", "id-1"), (" \n[1] x\u00e9 ", "é")):
                fast = self._build(probe, probe_id)
                slow = cls(content=probe) if probe_id is None else cls(content=probe, id=probe_id)
                if not (
                    fast == slow
                    and fast.model_dump() == slow.model_dump()
                    and fast.model_fields_set == slow.model_fields_set
                    and fast.__pydantic_extra__ == slow.__pydantic_extra__
                    and fast.__pydantic_private__ == slow.__pydantic_private__
                    and type(fast) is type(slow)
                ):
                    self.ok = False
                    break

    def _build(self, content: str, message_id: str | None = None) -> BaseMessage:
        values = self.template.copy()
        values["content"] = content
        for key, factory in self.containers:
            values[key] = factory()
        message = self.cls.__new__(self.cls)
        if message_id is None:
            fields_set = {"content"}
        else:
            values["id"] = message_id
            fields_set = {"content", "id"}
        _set_attr(message, "__dict__", values)
        _set_attr(message, "__pydantic_fields_set__", fields_set)
        _set_attr(message, "__pydantic_extra__", {})
        _set_attr(message, "__pydantic_private__", None)
        return message

    def __call__(self, content: str, message_id: str | None = None) -> BaseMessage:
        if self.ok:
            return self._build(content, message_id)
        if message_id is None:
            return self.cls(content=content)
        return self.cls(content=content, id=message_id)


_factories: dict[str, _PlainMessageFactory] = {}


def _factory(role: str) -> _PlainMessageFactory:
    factory = _factories.get(role)
    if factory is None:
        factory = _factories[role] = _PlainMessageFactory(_PLAIN_CLASSES[role])
    return factory


def records_to_messages(records: Iterable[Mapping[str, Any]]) -> list[BaseMessage]:
    """``[record_to_message(r) for r in records]``, equal message for message, faster.

    Plain text records (user, assistant or system; string content; a str id or none; no
    name, kwargs, response metadata or tool calls), most of any history, take a fast path
    that skips
    re-validating what is known valid (see :class:`_PlainMessageFactory`); all others
    go through :func:`~ctx_memory.schema.record_to_message`.
    """
    out: list[BaseMessage] = []
    append = out.append
    set_attr, isdisjoint = _set_attr, _RICH_KEY_SET.isdisjoint
    for record in records:
        role = record.get("role")
        content = record.get("content")
        message_id = record.get("id")
        if (
            type(content) is str
            and role in _PLAIN_CLASSES
            and (message_id is None or type(message_id) is str)
            and (isdisjoint(record) or all(record.get(key) is None for key in _RICH_KEYS))
        ):
            factory = _factory(role)
            if not factory.ok:
                append(factory(content, message_id))
                continue
            # Inlined _PlainMessageFactory._build (this loop is the hot path).
            values = factory.template.copy()
            values["content"] = content
            for key, container in factory.containers:
                values[key] = container()
            message = factory.cls.__new__(factory.cls)
            if message_id is None:
                fields_set = {"content"}
            else:
                values["id"] = message_id
                fields_set = {"content", "id"}
            set_attr(message, "__dict__", values)
            set_attr(message, "__pydantic_fields_set__", fields_set)
            set_attr(message, "__pydantic_extra__", {})
            set_attr(message, "__pydantic_private__", None)
            append(message)
        else:
            append(record_to_message(record))
    return out


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class AssemblyReport:
    """What an assembled prompt spends, section by section, and what it left out.

    Every ``*_tokens`` section includes its messages' chat overhead, so
    ``system_tokens + sources_tokens + history_tokens + question_tokens +
    priming_tokens == total_tokens`` and ``total_tokens`` is what
    :meth:`TokenCounter.count_chat` returns for the messages.

    Attributes:
        session_id: The session the prompt was assembled from.
        budget: ``max_tokens - reserve_tokens``; ``total_tokens`` never exceeds it.
        max_tokens: The model's context size the caller gave.
        reserve_tokens: Tokens kept free for the reply.
        total_tokens: Tokens of the whole prompt, reply priming included.
        system_tokens: The system message with system prompt and header only.
        sources_tokens: What the sources added to the system message.
        history_tokens: The history messages included.
        question_tokens: The question message (for the agent middleware: the current
            run's messages, from the last human message on).
        priming_tokens: The reply priming the API adds to every request.
        sources_included: Sources in the prompt.
        sources_truncated: Of those, how many were cut to the per-source cap.
        sources_dropped: Sources left out (over ``max_sources`` or over budget).
        source_urls: URLs (or titles) of the sources included, in prompt order.
        history_messages: Stored messages in the history window.
        history_left_out_messages: Stored messages left out of the prompt.
        history_left_out_tokens: Their tokens (from cached counts).
        history_repaired_messages: Messages dropped from the window as orphan tool
            messages or tool calls without results (included in the left-out counts).
        encoding: The tiktoken encoding the counts are in.
    """

    session_id: str
    budget: int
    max_tokens: int
    reserve_tokens: int
    total_tokens: int
    system_tokens: int
    sources_tokens: int
    history_tokens: int
    question_tokens: int
    priming_tokens: int
    sources_included: int
    sources_truncated: int
    sources_dropped: int
    source_urls: tuple[str, ...]
    history_messages: int
    history_left_out_messages: int
    history_left_out_tokens: int
    history_repaired_messages: int
    encoding: str

    @property
    def remaining_tokens(self) -> int:
        """Budget not used by the prompt."""
        return self.budget - self.total_tokens

    def as_dict(self) -> dict[str, Any]:
        """The report as a plain, JSON-native dict."""
        from dataclasses import asdict  # noqa: PLC0415

        out = asdict(self)
        out["source_urls"] = list(self.source_urls)
        out["remaining_tokens"] = self.remaining_tokens
        return out

    def _repr_html_(self) -> str | None:
        return _render_html(self)


def _render_html(value: Any) -> str | None:
    try:
        from ctx_memory import display  # noqa: PLC0415 - optional surface, built elsewhere
    except ImportError:
        return None
    render = getattr(display, "render_assembly_html", None)
    return None if render is None else cast("str", render(value))


@dataclass(frozen=True)
class AssembledPrompt:
    """An assembled prompt: the messages, the report and the sources used.

    Attributes:
        messages: System message (if any), history, then the question.
        report: Tokens per section and what was left out.
        sources: The fetched items in the prompt, numbered from 1 in this order.
        system: The system message text (system prompt, header and sources).
        history: The history messages.
        question: The question message.
        head: The system prompt and header without sources.
        sources_text: The numbered sources block alone (``""`` for none).
    """

    messages: list[BaseMessage]
    report: AssemblyReport
    sources: tuple[Mapping[str, Any], ...] = ()
    system: str = ""
    history: list[BaseMessage] = field(default_factory=list)
    question: BaseMessage | None = None
    head: str = ""
    sources_text: str = ""

    def to_prompt_value(self) -> ChatPromptValue:
        """The messages as a :class:`ChatPromptValue`, what a chat model takes."""
        return ChatPromptValue(messages=self.messages)

    def sources_used(self) -> list[dict[str, Any]]:
        """The numbered sources in the prompt, as the model saw them.

        One JSON-native dict per source, in prompt order: ``n`` (the ``[n]`` the prompt
        shows, from 1), ``url`` (``None`` for a source without one), ``title`` (as in
        the prompt's heading: the title, else the site name, else the URL) and
        ``source_type`` (its ``fetched_context`` key, e.g. ``"web_search"``).
        """
        return [
            {
                "n": n,
                "url": str(item["url"]) if item.get("url") else None,
                "title": _title(item),
                "source_type": item.get("source_type"),
            }
            for n, item in enumerate(self.sources, 1)
        ]

    def to_variables(self) -> dict[str, Any]:
        """Variables for a user's own ``ChatPromptTemplate``.

        ``system`` (system prompt + header), ``sources`` (the numbered block),
        ``history`` (messages, for a ``MessagesPlaceholder``), ``question`` (text) and
        ``report``.
        """
        question = self.question.text if self.question is not None else ""
        return {
            "system": self.head,
            "sources": self.sources_text,
            "history": list(self.history),
            "question": question,
            "report": self.report,
        }

    def _repr_html_(self) -> str | None:
        return _render_html(self)


# --------------------------------------------------------------------------- assembler


class Question(NamedTuple):
    """A question as the message sent and its plain text."""

    message: BaseMessage
    text: str


def parse_question(value: Any, input_key: str = "question") -> Question:
    """The question as a message and as text, from a str, a message or a dict."""
    if isinstance(value, dict):
        if input_key not in value:
            msg = f"the input dict has no {input_key!r} key (keys: {sorted(value)})"
            raise ValidationError(msg)
        value = value[input_key]
    if isinstance(value, BaseMessage):
        return Question(value, value.text)
    if isinstance(value, str):
        return Question(HumanMessage(content=value), value)
    msg = f"question must be a str, a message or a dict, got {type(value).__name__}"
    raise ValidationError(msg)


class ContextPromptAssembler(Runnable[PromptInput, ChatPromptValue]):
    """A Runnable that builds a token-budgeted prompt from a session.

    Input: a question (``str``), a ``HumanMessage``, or a dict with the question under
    ``input_key`` (and optionally ``"session_id"``). The session id comes from the input
    dict, else ``config["configurable"]["session_id"]``, else ``session_id``. Output: a
    :class:`ChatPromptValue` of system message (system prompt + header + numbered
    sources), history (newest whole turns that fit) and the question. Use
    :meth:`assemble` for the messages together with an :class:`AssemblyReport`, and
    :meth:`as_variables` to feed your own ``ChatPromptTemplate``.

    Args:
        manager: Where sessions live.
        max_tokens: The model's context size.
        reserve_tokens: Tokens kept free for the reply; the prompt gets
            ``max_tokens - reserve_tokens``.
        session_id: Default session id.
        max_sources: Most sources to include (``0`` for none, ``None`` for no limit).
        source_token_cap: Tokens each source's text is cut to.
        sources_share: At most this share of the budget left after system prompt and
            question goes to sources, so history keeps room.
        source_types: Only these fetched-context types (default: all).
        include_header: Add the mode / current URL / local time header.
        input_key: The question's key in dict input.
        tokenizer: Splits the question and the sources into terms for ranking (any
            ``str -> list[str]``); default :func:`ctx_memory.ranking.tokenize`
            (folded words, bigrams for Chinese, Japanese, Korean and Thai).

    Example:
        .. code-block:: python

            from ctx_memory import ContextManager, ContextPromptAssembler, TokenCounter

            manager = ContextManager()
            manager.set_system_prompt("s1", "You are terse.")
            manager.update_metadata("s1", current_url="https://airline.example/paris")
            manager.add_fetched_context(
                "s1", "web_search", "Book 6-8 weeks ahead for the lowest fares.",
                url="https://travel.example/guide", extracted_data={"title": "Guide"},
            )
            manager.add_user_message("s1", "Hi")
            manager.add_assistant_message("s1", "Hello! Where to?")

            assembler = ContextPromptAssembler(manager, max_tokens=2000, reserve_tokens=500)
            prompt = assembler.invoke(
                "When should I book?", config={"configurable": {"session_id": "s1"}}
            )
            assert [m.type for m in prompt.messages] == ["system", "human", "ai", "human"]
            assert "[1] Guide" in prompt.messages[0].content

            result = assembler.assemble("s1", "When should I book?")
            assert result.report.total_tokens == TokenCounter().count_chat(result.messages)
            assert result.report.total_tokens <= 1500
    """

    def __init__(
        self,
        manager: ContextManager,
        *,
        max_tokens: int = 8000,
        reserve_tokens: int = 1000,
        session_id: str | None = None,
        max_sources: int | None = 8,
        source_token_cap: int = 400,
        sources_share: float = 0.5,
        source_types: Sequence[str] | None = None,
        include_header: bool = True,
        input_key: str = "question",
        name: str | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> None:
        if max_tokens <= 0 or reserve_tokens < 0 or reserve_tokens >= max_tokens:
            msg = (
                "need max_tokens > reserve_tokens >= 0, got "
                f"max_tokens={max_tokens}, reserve_tokens={reserve_tokens}"
            )
            raise ValidationError(msg)
        if not 0.0 <= sources_share <= 1.0:
            msg = f"sources_share must be between 0 and 1, got {sources_share}"
            raise ValidationError(msg)
        self.manager = manager
        self.max_tokens = max_tokens
        self.reserve_tokens = reserve_tokens
        self.session_id = session_id
        self.max_sources = max_sources
        self.source_token_cap = source_token_cap
        self.sources_share = sources_share
        self.source_types = tuple(source_types) if source_types is not None else None
        self.include_header = include_header
        self.input_key = input_key
        self.name = name
        self.tokenizer = tokenizer
        self._term_cache: dict[tuple[Any, ...], tuple[Counter[str], int]] = {}
        self._cut_cache: dict[tuple[Any, ...], str] = {}

    def __repr__(self) -> str:
        return (
            f"ContextPromptAssembler(max_tokens={self.max_tokens}, "
            f"reserve_tokens={self.reserve_tokens}, max_sources={self.max_sources})"
        )

    @property
    def budget(self) -> int:
        """Tokens the prompt may use: ``max_tokens - reserve_tokens``."""
        return self.max_tokens - self.reserve_tokens

    # ------------------------------------------------------------ the flow

    def assemble_flow(
        self,
        session_id: str,
        question: PromptInput,
        *,
        exclude_last: int = 0,
        budget: int | None = None,
        now: datetime | None = None,
    ) -> Generator[Call, Any, AssembledPrompt]:
        """The assembly as a flow of manager reads (see :func:`drive`).

        Args:
            session_id: The session.
            question: The question (as for :meth:`invoke`).
            exclude_last: Leave out this many newest stored messages (e.g. the question
                itself when it was recorded before assembling).
            budget: Override ``max_tokens - reserve_tokens``.
            now: The current time (for the header's local time); default: now.
        """
        q = parse_question(question, self.input_key)
        return (
            yield from self.build_flow(
                session_id,
                [q.message],
                query=q.text,
                exclude_last=exclude_last,
                budget=budget,
                now=now,
            )
        )

    def build_flow(
        self,
        session_id: str,
        tail: Sequence[BaseMessage],
        *,
        query: str,
        exclude_last: int = 0,
        skip_ids: frozenset[str] = frozenset(),
        system_prefix: str = "",
        budget: int | None = None,
        now: datetime | None = None,
    ) -> Generator[Call, Any, AssembledPrompt]:
        """The general assembly flow: system message, sources, history, then ``tail``.

        ``tail`` (the question, or an agent's current run) is never dropped and sources
        are ranked against ``query``. Stored messages whose ``id`` is in ``skip_ids``
        are passed over (the caller sends them in ``tail``). ``system_prefix`` (an
        agent's own system prompt) goes before the session's system prompt.

        Raises:
            BudgetExceededError: The system prompt, header and ``tail`` alone exceed the
                budget.
        """
        counter = self.manager.token_counter
        budget = self.budget if budget is None else budget
        header = yield Call("get_header", (session_id,))
        meta: Mapping[str, Any] = header["metadata"] if header else {}
        system_prompt = header["system_prompt"] if header else None
        session_head = head_text(
            system_prompt,
            format_header(meta, now=now or datetime.now(UTC)) if self.include_header else "",
        )
        head = "\n\n".join(part for part in (system_prefix, session_head) if part)
        tail_tokens = sum(counter.count_lc_message(m) for m in tail)
        head_tokens = counter.count_message("system", head) if head else 0
        fixed = REPLY_PRIMING + head_tokens + tail_tokens
        if fixed > budget:
            msg = (
                f"the system prompt and header ({head_tokens} tokens) and the question "
                f"({tail_tokens} tokens) need {fixed} tokens with the reply priming, "
                f"over the budget of {budget} (max_tokens={self.max_tokens} - "
                f"reserve_tokens={self.reserve_tokens}); shorten them or raise max_tokens"
            )
            raise BudgetExceededError(msg)

        # Sources: most relevant first, within their share of what is left.
        items: list[Mapping[str, Any]] = []
        if self.max_sources != 0 and header is not None:
            fetched = yield Call("get_fetched_context", (session_id,))
            for source_type, entries in fetched.items():
                if self.source_types is None or source_type in self.source_types:
                    items.extend(entries)
        ranked = [
            item
            for _, item in rank_sources(
                query, items, cache=self._bounded_terms(), tokenizer=self.tokenizer
            )
        ]
        allowance = head_tokens + int((budget - fixed) * self.sources_share)
        plan = plan_sources(
            head,
            ranked,
            counter=counter,
            allowance=allowance,
            per_source_tokens=self.source_token_cap,
            max_sources=self.max_sources,
            cache=self._bounded_cuts(),
        )

        # History: newest whole turns in what remains, read newest first in chunks.
        history_budget = budget - REPLY_PRIMING - plan.system_tokens - tail_tokens
        stored = int(meta.get("message_count", 0))
        end = max(stored - max(exclude_last, 0), 0)
        same_encoding = meta.get("token_encoding") in (None, counter.encoding_name)
        window = yield from history_window_flow(
            session_id, meta, history_budget, counter=counter, end=end, skip_ids=skip_ids
        )
        chosen = window.chosen
        history = records_to_messages(chosen)

        messages: list[BaseMessage] = []
        if plan.text:
            messages.append(SystemMessage(content=plan.text))
        messages.extend(history)
        messages.extend(tail)
        left_out_tokens = int(meta.get("token_count", 0)) - window.tokens - window.skipped_tokens
        if exclude_last and stored > end:
            # The excluded newest messages are not "left out": they are the question.
            excluded = yield Call("get_message_range", (session_id, end, stored - 1))
            left_out_tokens -= sum(_cached_cost(r) for r in excluded)
        report = AssemblyReport(
            session_id=session_id,
            budget=budget,
            max_tokens=self.max_tokens,
            reserve_tokens=self.reserve_tokens,
            total_tokens=REPLY_PRIMING + plan.system_tokens + window.tokens + tail_tokens,
            system_tokens=head_tokens,
            sources_tokens=plan.system_tokens - head_tokens,
            history_tokens=window.tokens,
            question_tokens=tail_tokens,
            priming_tokens=REPLY_PRIMING,
            sources_included=len(plan.chosen),
            sources_truncated=plan.truncated,
            sources_dropped=plan.dropped,
            source_urls=tuple(str(item.get("url") or _title(item)) for item, _ in plan.chosen),
            history_messages=len(chosen),
            history_left_out_messages=max(end - len(chosen) - window.skipped, 0),
            history_left_out_tokens=max(left_out_tokens, 0) if same_encoding else 0,
            history_repaired_messages=len(window.dropped),
            encoding=counter.encoding_name,
        )
        return AssembledPrompt(
            messages=messages,
            report=report,
            sources=tuple(item for item, _ in plan.chosen),
            system=plan.text,
            history=history,
            question=tail[-1] if tail else None,
            head=head,
            sources_text=format_sources(plan.chosen),
        )

    def _bounded_terms(self) -> dict[tuple[Any, ...], tuple[Counter[str], int]]:
        if len(self._term_cache) > 4096:
            self._term_cache.clear()
        return self._term_cache

    def _bounded_cuts(self) -> dict[tuple[Any, ...], str]:
        if len(self._cut_cache) > 4096:
            self._cut_cache.clear()
        return self._cut_cache

    # ------------------------------------------------------------ plain calls

    def assemble(
        self,
        session_id: str,
        question: PromptInput,
        *,
        exclude_last: int = 0,
    ) -> AssembledPrompt:
        """Assemble a prompt for ``question``: messages, report and sources.

        Raises:
            BudgetExceededError: The system prompt, header and question alone exceed
                the budget.
        """
        return drive(
            self.manager, self.assemble_flow(session_id, question, exclude_last=exclude_last)
        )

    async def aassemble(
        self,
        session_id: str,
        question: PromptInput,
        *,
        exclude_last: int = 0,
    ) -> AssembledPrompt:
        """Async :meth:`assemble` (the store's native async reads)."""
        return await adrive(
            self.manager, self.assemble_flow(session_id, question, exclude_last=exclude_last)
        )

    # ------------------------------------------------------------ Runnable

    def _session(self, input_: Any, config: RunnableConfig | None) -> str:
        return session_id_from(
            config, self.session_id, payload=input_, owner="ContextPromptAssembler"
        )

    def _run(
        self, input_: PromptInput, run_manager: CallbackManagerForChainRun, config: RunnableConfig
    ) -> ChatPromptValue:
        return self.assemble(self._session(input_, config), input_).to_prompt_value()

    async def _arun(
        self,
        input_: PromptInput,
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> ChatPromptValue:
        result = await self.aassemble(self._session(input_, config), input_)
        return result.to_prompt_value()

    @override
    def invoke(
        self, input: PromptInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> ChatPromptValue:
        return self._call_with_config(self._run, input, config, run_type="prompt", **kwargs)

    @override
    async def ainvoke(
        self, input: PromptInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> ChatPromptValue:
        return await self._acall_with_config(self._arun, input, config, run_type="prompt", **kwargs)

    @property
    @override
    def config_specs(self) -> list[ConfigurableFieldSpec]:
        return [SESSION_ID_SPEC]

    def as_variables(self) -> Runnable[PromptInput, dict[str, Any]]:
        """A Runnable giving template variables instead of messages.

        Its output dict has ``system``, ``sources``, ``history`` (messages), ``question``
        and ``report`` (see :meth:`AssembledPrompt.to_variables`), so a user's own
        ``ChatPromptTemplate`` with a ``MessagesPlaceholder("history")`` and a
        ``{sources}`` variable can follow it with ``|``. Text the template adds around
        the variables is not in the budget: keep ``reserve_tokens`` large enough for it.
        """
        return _AssemblerVariables(self)


class _AssemblerVariables(Runnable[PromptInput, dict[str, Any]]):
    """:meth:`ContextPromptAssembler.as_variables` as its own traced Runnable."""

    def __init__(self, assembler: ContextPromptAssembler) -> None:
        self.assembler = assembler
        self.name = "ContextPromptVariables"

    @property
    @override
    def config_specs(self) -> list[ConfigurableFieldSpec]:
        return [SESSION_ID_SPEC]

    def _run(
        self, input_: PromptInput, run_manager: CallbackManagerForChainRun, config: RunnableConfig
    ) -> dict[str, Any]:
        a = self.assembler
        return a.assemble(a._session(input_, config), input_).to_variables()

    async def _arun(
        self,
        input_: PromptInput,
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> dict[str, Any]:
        a = self.assembler
        return (await a.aassemble(a._session(input_, config), input_)).to_variables()

    @override
    def invoke(
        self, input: PromptInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        return self._call_with_config(self._run, input, config, run_type="prompt", **kwargs)

    @override
    async def ainvoke(
        self, input: PromptInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        return await self._acall_with_config(self._arun, input, config, run_type="prompt", **kwargs)
