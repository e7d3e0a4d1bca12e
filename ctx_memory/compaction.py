"""Compactions: summaries of old history kept as data, never in place of the messages.

A compaction is an entry of the session's ``shared`` state under the reserved key
:data:`COMPACTIONS_KEY` (``"ctx_memory.compactions"``), a dict ``{compaction_id: entry}``.
It is therefore exported, imported and versioned with the document. Entries are written
with :meth:`~ctx_memory.manager.ContextManager.update_partial_context` (a deep merge,
atomic on every store), so concurrent compactors never lose each other's entries;
removing one merges ``{id: None}``, a tombstone that readers skip. Stored messages are
never deleted or changed: assembly uses a compaction *instead of* the messages it covers
(:mod:`ctx_memory.assembly.compacted`), and once it is removed the session assembles as
before.

An entry::

    {"id": "c-…", "kind": "summary" | "tool_outputs_cleared",
     "first_id": "…", "last_id": "…",          # covered stored message ids (inclusive)
     "first_index": 120, "last_index": 380,    # their positions when it was made
     "summary": "…",
     "tool_call_ids": ["call_1", …],           # the covered tool results' call ids
     "producer": {"name": "ExtractiveSummarizer", "model": "", "prompt_hash": "…"},
     "tokens_covered": 51234,                  # the covered records' cached counts
     "summary_tokens": 812,                    # the summary message, exactly counted
     "created_at": "2025-…"}

The summary message a prompt gets (:func:`summary_text`) ends with a line naming the
covered tool-call ids its text does not name, so every covered tool output stays
restorable by id whatever the summariser kept. Entries written before ``tool_call_ids``
existed load as they are (their message has no such line).

The ladder, cheapest first (:class:`CompactionPolicy`): (a) old tool outputs are
replaced *in the prompt* by a placeholder naming the tool-call id, which the
``restore_tool_result`` tool (:func:`make_restore_tool`) brings back; (b) a covered
range is summarised by any Runnable (:class:`ExtractiveSummarizer`, the offline default,
or :func:`chat_summarizer`) and stored as a compaction (:func:`compact`); (c) recall
(:mod:`ctx_memory.recall`) brings back what a summary lost. A summariser that raises or
returns nothing changes nothing; :class:`CompactionOutcome` says why.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ctx_memory._compaction_entries import (
    RolledAwayError,
    aadd_compaction,
    add_compaction,
    aget_compactions,
    aremove_compaction,
    awrite_entry,
    bad_field,
    get_compactions,
    new_entry,
    remove_compaction,
    tool_ids_of,
    write_entry,
)
from ctx_memory._compaction_summarize import (
    DEFAULT_PREFIX_INSTRUCTION,
    DEFAULT_SUMMARY_PROMPT,
    PREFIX_KEY,
    ExtractiveSummarizer,
    chat_summarizer,
    producer_of,
)
from ctx_memory.assembly.compacted import (
    COMPACTIONS_KEY,
    compactions_of,
    effective_summaries,
    summary_record,
    summary_text,
)
from ctx_memory.assembly.messages import records_to_messages
from ctx_memory.errors import ValidationError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from langchain_core.messages import BaseMessage
    from langchain_core.runnables import Runnable, RunnableConfig
    from langchain_core.tools import BaseTool

    from ctx_memory.manager import ContextManager
    from ctx_memory.tokens import TokenCounter

__all__ = [
    "COMPACTIONS_KEY",
    "DEFAULT_PREFIX_INSTRUCTION",
    "DEFAULT_SUMMARY_PROMPT",
    "EDITED",
    "CompactionOutcome",
    "CompactionPolicy",
    "ExtractiveSummarizer",
    "aadd_compaction",
    "acompact",
    "aget_compactions",
    "add_compaction",
    "aremove_compaction",
    "chat_summarizer",
    "compact",
    "compactions_of",
    "get_compactions",
    "make_restore_tool",
    "remove_compaction",
    "summary_text",
]

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------ the ladder


@dataclass(frozen=True)
class CompactionPolicy:
    """When and how to compact; pass it as ``compaction=`` to the assembler, chat or middleware.

    Every trigger is on the session's exact cached ``metadata.token_count``.

    The defaults are for agents, where old tool outputs are most of the history: once
    the session holds 4,000 tokens, every tool output of a finished turn is sent as a
    placeholder naming its call id (an agent's current run, sent as the prompt's tail,
    and the turn in progress keep theirs; ``restore_tool_result`` brings any back), and
    once the uncompacted history holds 8,000 tokens, all but the newest 32 messages are
    folded into one rolling summary whose message names every covered tool-call id. On
    ``ctx-memory eval``'s tool-heavy traces the assembler with this policy sends 13.2 %
    of the full history's tokens on average with every planted fact in the prompt or
    restorable by id; most of that is turns recall brings back with their tool outputs
    whole (5.5 % with ``recall_share=0``). The earlier defaults (the newest 16 messages'
    tool outputs whole, summaries stacked) sent 20 % and left two thirds of the facts
    neither in the prompt nor named, the older summaries falling out of the window.
    Clearing at the turn boundary also changes the prompt only where the previous
    request's tail was, so the prefix before it stays cacheable; a rolling summary
    changes the first history message once per summary.

    Attributes:
        clear_tool_outputs_at: Rung (a): once the session holds more tokens than this,
            tool outputs of at least ``tool_output_min_tokens`` are sent as a
            placeholder naming the tool-call id, except the newest
            ``keep_tool_outputs`` messages' (that boundary rounded down to a multiple of
            ``block``, so it moves in steps) and those of the turn in progress (the
            prompt's question, or an agent's current run, when it has its own user
            message: then every stored turn is finished, from a run's first step on;
            else the stored messages after the newest user message). ``None``: never.
            Prompt only; nothing is written.
        keep_tool_outputs: Newest messages whose tool outputs are always sent whole;
            ``0`` (the default): none but the turn in progress, at every turn (no
            rounding to ``block``).
        tool_output_min_tokens: Smaller tool outputs are always sent whole.
        summarize_at: Rung (b): once the uncompacted history holds more tokens than
            this, the oldest uncompacted messages up to the newest ``keep_recent``
            (rounded down to a multiple of ``block`` and to a turn start where no tool
            call waits for its result) are summarised into a stored compaction before
            assembling. ``None``: never.
        keep_recent: Newest messages never summarised.
        block: Positions per step of both boundaries.
        min_messages: Fewest messages one summary covers.
        rolling: Each new summary takes in the summaries it follows (their text, as
            the summariser's first messages, and their tool-call ids), so one summary
            message stands for everything compacted and its size stays bounded; the
            summaries it replaces are removed in the same write. ``False``: summaries
            stack, one message each.
        summarizer: Any Runnable from the covered messages to the summary text (or a
            message); default :class:`ExtractiveSummarizer`.

    Example:
        .. code-block:: python

            from ctx_memory.compaction import CompactionPolicy

            policy = CompactionPolicy(summarize_at=4000, keep_recent=32)
            assert policy.clear_before({"message_count": 100, "token_count": 9000}) == 100
            policy = CompactionPolicy(keep_tool_outputs=16)
            assert policy.clear_before({"message_count": 100, "token_count": 9000}) == 80
    """

    clear_tool_outputs_at: int | None = 4000
    keep_tool_outputs: int = 0
    tool_output_min_tokens: int = 100
    summarize_at: int | None = 8000
    keep_recent: int = 32
    block: int = 16
    min_messages: int = 8
    rolling: bool = True
    summarizer: Runnable[Any, Any] = field(default_factory=ExtractiveSummarizer)

    def __post_init__(self) -> None:
        for name in ("keep_tool_outputs", "tool_output_min_tokens", "keep_recent", "min_messages"):
            if getattr(self, name) < 0:
                raise bad_field(name, "must be >= 0")
        if self.block < 1:
            raise bad_field("block", "must be >= 1")

    def _floor(self, position: int) -> int:
        return max(position, 0) // self.block * self.block

    def clear_before(self, metadata: Mapping[str, Any]) -> int:
        """Tool outputs at positions before this are cleared from the prompt (0: none).

        The turn in progress keeps its tool outputs whatever this says
        (:class:`~ctx_memory.assembly.compacted.CompactedView`).
        """
        if self.clear_tool_outputs_at is None:
            return 0
        if int(metadata.get("token_count", 0)) <= self.clear_tool_outputs_at:
            return 0
        count = int(metadata.get("message_count", 0))
        if self.keep_tool_outputs == 0:
            return count
        return self._floor(count - self.keep_tool_outputs)

    def summary_range(
        self,
        metadata: Mapping[str, Any],
        compactions: Sequence[Mapping[str, Any]],
        window: int | None = None,
    ) -> tuple[int, int] | None:
        """The positions ``(start, boundary)`` to read for the next summary, or None.

        ``start`` follows the newest summary; ``boundary`` (read too: the summary ends
        before the turn start at or below it) is ``keep_recent`` back, on a block. The
        trigger counts the history less what the summaries a prompt uses save.

        ``window``: the tokens the live request's history window had (the assembler
        passes it when its summariser reads the live request). The trigger then also
        fires once that count no longer fits the window, while what the summary leaves
        (``keep_recent`` messages of the session's mean size) fits three quarters of
        it: the messages to summarise are then the live request's, not a range it no
        longer showed, and a summary frees at least a quarter of the window.
        """
        if self.summarize_at is None:
            return None
        used = effective_summaries(compactions)
        saved = sum(int(c["tokens_covered"]) - int(c["summary_tokens"]) for c in used)
        count = int(metadata.get("message_count", 0))
        tokens = int(metadata.get("token_count", 0))
        shown = tokens - saved
        if shown <= self.summarize_at and not (
            window is not None
            and shown > window
            and 4 * self.keep_recent * tokens <= 3 * count * window
        ):
            return None
        summaries = [c for c in compactions if c.get("kind") == "summary"]
        start = max((int(c["last_index"]) + 1 for c in summaries), default=0)
        boundary = self._floor(count - self.keep_recent)
        if boundary - start < max(self.min_messages, 1):
            return None
        return start, boundary

    def rolled_in(
        self, compactions: Sequence[Mapping[str, Any]], start: int
    ) -> list[dict[str, Any]]:
        """The summaries a summary from ``start`` takes in (oldest first; ``[]`` unless rolling).

        The summaries a prompt uses that follow each other without a gap up to
        ``start - 1``.
        """
        if not self.rolling:
            return []
        chain: list[dict[str, Any]] = []
        expected = start - 1
        for entry in reversed(effective_summaries(compactions)):
            if int(entry["last_index"]) != expected:
                break
            chain.append(entry)
            expected = int(entry["first_index"]) - 1
        return chain[::-1]


@dataclass(frozen=True)
class CompactionOutcome:
    """What one :func:`compact` did.

    Attributes:
        entry: The compaction written, or None.
        reason: Why nothing was written (``"not needed"``, ``"no turn boundary"``,
            ``"summarizer failed: …"``, ``"summarizer returned nothing"``, ``"summarizer
            returned N tokens for M covered: not shorter"``, ``"summary not
            stored: …"`` when the session refused it: too large for its shared state, or
            text no store keeps, :data:`EDITED` when an edit changed what it covers while
            it was made); ``""`` if written.
    """

    entry: dict[str, Any] | None = None
    reason: str = ""

    @property
    def failed(self) -> bool:
        """Whether the summariser failed or the session refused its summary (reported)."""
        return self.reason.startswith(("summarizer", "summary not stored"))


ABANDONED_AFTER = 16
"""User messages after which a tool call still without its result counts as abandoned (a
tool that raised, a cancelled run): it no longer keeps the summary from cutting after it."""


def _covered(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The records up to the last safe turn start after the first: whole, closed turns.

    A cut is at a user message before which every tool call has its result (so no
    result is left after the summary without its call, and a pending call is never
    summarised); with interleaved writers that is not every user message. A call
    :data:`ABANDONED_AFTER` user messages old with no result is not waited for: else one
    abandoned call would stop every later summary of the session.
    """
    best = 0
    open_calls: dict[str, int] = {}  # call id -> user messages seen since it was made
    for i, record in enumerate(records):
        if record.get("role") == "user":
            for call_id, age in list(open_calls.items()):
                if age + 1 >= ABANDONED_AFTER:
                    del open_calls[call_id]
                else:
                    open_calls[call_id] = age + 1
            if i and not open_calls:
                best = i
        for call in record.get("tool_calls") or ():
            if call.get("id"):
                open_calls[str(call["id"])] = 0
        if record.get("role") == "tool" and record.get("tool_call_id"):
            open_calls.pop(str(record["tool_call_id"]), None)
    return list(records[:best])


def _summary_of(result: Any) -> str:
    text = result if isinstance(result, str) else getattr(result, "text", None)
    if callable(text) and not isinstance(text, str):  # langchain-core < 1.0: .text() method
        text = text()
    return text.strip() if isinstance(text, str) else ""


def _unstored(error: ValidationError) -> str:
    """The reason for a summary the session refused (too large for it, or not storable)."""
    return f"summary not stored: {type(error).__name__}: {error}"


EDITED = "history edited while summarizing"
"""The reason when an edit (or another compactor) changed what a summary covered while it
was made: nothing is stored, the next compaction summarises the range again."""


def _edited(session_id: str) -> CompactionOutcome:
    logger.info("compaction of session %r not stored: %s", session_id, EDITED)
    return CompactionOutcome(reason=EDITED)


def _failed(session_id: str, reason: str) -> CompactionOutcome:
    logger.warning("compaction of session %r skipped: %s", session_id, reason)
    return CompactionOutcome(reason=reason)


@dataclass(frozen=True)
class _Job:
    """One summary to make: where to read, and what it takes in (pure, from the header)."""

    start: int
    boundary: int
    chain: list[dict[str, Any]]

    @property
    def read_from(self) -> int:
        """The first position to read: the chain's newest covered message, to check it."""
        return self.start - 1 if self.chain else self.start


def _job(
    policy: CompactionPolicy, header: Mapping[str, Any] | None, window: int | None
) -> _Job | None:
    if header is None:
        return None
    compactions = compactions_of(header["shared"])
    span = policy.summary_range(header["metadata"], compactions, window)
    if span is None:
        return None
    return _Job(span[0], span[1], policy.rolled_in(compactions, span[0]))


@dataclass(frozen=True)
class _Step:
    """The summariser's input once the range is read."""

    chain: list[dict[str, Any]]
    covered: list[Mapping[str, Any]]
    messages: list[BaseMessage]


def _step(job: _Job, records: Sequence[Mapping[str, Any]], counter: TokenCounter) -> _Step | None:
    """The covered records and the summariser's messages; None without a safe turn start."""
    chain = job.chain
    if chain:
        checked, records = records[:1], records[1:]
        if not checked or checked[0].get("id") != chain[-1].get("last_id"):
            chain = []  # history edited since: that summary is not used; do not fold it in
    covered = _covered(records)
    if not covered:
        return None
    messages = records_to_messages([summary_record(e, counter) for e in chain])
    return _Step(chain, covered, [*messages, *records_to_messages(covered)])


def _needs_ids(chain: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Summaries written before ``tool_call_ids`` existed: their range is read for them."""
    return [e for e in chain if not isinstance(e.get("tool_call_ids"), list)]


def _rolled_entry(
    step: _Step,
    job: _Job,
    summary: str,
    *,
    producer: Mapping[str, str],
    older_ids: Mapping[str, list[str]],
    counter: TokenCounter,
) -> tuple[dict[str, Any], dict[str, None]]:
    """The entry for ``step`` (taking in its chain) and the tombstones of that chain."""
    covered = step.covered
    entry = new_entry(
        covered, job.start, job.start + len(covered) - 1, summary, kind="summary",
        producer=producer, compaction_id=None, first_id=str(covered[0].get("id")),
        last_id=str(covered[-1].get("id")), counter=counter,
    )  # fmt: skip
    if not step.chain:
        return entry, {}
    ids: dict[str, None] = {}
    for older in step.chain:
        listed = older.get("tool_call_ids")
        ids.update(dict.fromkeys(listed if isinstance(listed, list) else older_ids[older["id"]]))
    ids.update(dict.fromkeys(entry["tool_call_ids"]))
    entry["tool_call_ids"] = list(ids)
    entry["first_index"] = int(step.chain[0]["first_index"])
    entry["first_id"] = str(step.chain[0]["first_id"])
    entry["tokens_covered"] += sum(int(e.get("tokens_covered") or 0) for e in step.chain)
    entry["summary_tokens"] = summary_record(entry, counter)["token_count"]
    return entry, {str(e["id"]): None for e in step.chain}


_Asked = tuple[int, str, str, str]
_REFUSED: OrderedDict[_Asked, str] = OrderedDict()
_REFUSED_LOCK = threading.Lock()
REFUSED_KEPT = 1024
"""Summaries refused as no shorter than what they cover, remembered per summariser
object, session and range (its first and last message ids; the newest this many): the
same range is not sent to the summariser again at every request (a chat model's cost)
but once it grows."""


def _ends(step: _Step) -> tuple[str, str]:
    """The ids of the first and last message a summary would cover (its range, by id)."""
    return str(step.covered[0].get("id")), str(step.covered[-1].get("id"))


def _refused_before(key: _Asked) -> CompactionOutcome | None:
    """The outcome of a range whose summary was refused as not shorter, if it was."""
    with _REFUSED_LOCK:
        reason = _REFUSED.get(key)
    if reason is None:
        return None
    return CompactionOutcome(reason=reason)  # as reported then: not asked again


def _remember_refusal(key: _Asked, outcome: CompactionOutcome) -> None:
    if outcome.reason.endswith(": not shorter"):
        with _REFUSED_LOCK:
            _REFUSED[key] = outcome.reason
            while len(_REFUSED) > REFUSED_KEPT:
                _REFUSED.popitem(last=False)


def _saves_nothing(entry: Mapping[str, Any]) -> str:
    """Why a summary no shorter than what it covers is refused (``""``: it is shorter).

    Sent instead of the messages, it would take more of the window than they did, and one
    that no window can hold leaves the whole range out of the prompt.
    """
    summary, covered = int(entry["summary_tokens"]), int(entry["tokens_covered"])
    if summary < covered:
        return ""
    return f"summarizer returned {summary} tokens for {covered} covered: not shorter"


def _config(prefix_messages: Sequence[BaseMessage] | None) -> RunnableConfig | None:
    """The summariser's config: the live request's messages, for a chat summariser."""
    if not prefix_messages:
        return None
    return {"configurable": {PREFIX_KEY: list(prefix_messages)}}


def _store(
    manager: ContextManager,
    session_id: str,
    job: _Job,
    step: _Step,
    *,
    entry: dict[str, Any],
    tombstones: dict[str, None],
) -> CompactionOutcome:
    """Write the summary unless what it covers was edited meanwhile; check again after.

    Checked before the write, an edit made while the summariser ran is never seen by
    another process's prompt (once written, any process uses the summary); checked after
    it, an edit that landed in between (and found no summary yet to remove) removes it.
    """
    last = job.start + len(step.covered) - 1
    if manager.get_message_range(session_id, job.start, last) != step.covered:
        return _edited(session_id)
    try:
        written = write_entry(manager, session_id, entry, tombstones, inside=True, rolling=True)
    except ValidationError as e:  # the summary cannot be stored: as if the summariser failed
        return _failed(session_id, _unstored(e))
    except RolledAwayError:
        return _edited(session_id)
    # An edit that landed since the check found this summary not yet there to remove: the
    # covered messages are read again now that it is (a later edit removes it).
    if manager.get_message_range(session_id, job.start, last) != step.covered:
        remove_compaction(manager, session_id, str(written["id"]))
        return _edited(session_id)
    return CompactionOutcome(entry=written)


async def _astore(
    manager: ContextManager,
    session_id: str,
    job: _Job,
    step: _Step,
    *,
    entry: dict[str, Any],
    tombstones: dict[str, None],
) -> CompactionOutcome:
    """Async :func:`_store`."""
    last = job.start + len(step.covered) - 1
    if await manager.aget_message_range(session_id, job.start, last) != step.covered:
        return _edited(session_id)
    try:
        written = await awrite_entry(
            manager, session_id, entry, tombstones, inside=True, rolling=True
        )
    except ValidationError as e:  # the summary cannot be stored: as if the summariser failed
        return _failed(session_id, _unstored(e))
    except RolledAwayError:
        return _edited(session_id)
    # An edit that landed since the check found this summary not yet there to remove: the
    # covered messages are read again now that it is (a later edit removes it).
    if await manager.aget_message_range(session_id, job.start, last) != step.covered:
        await aremove_compaction(manager, session_id, str(written["id"]))
        return _edited(session_id)
    return CompactionOutcome(entry=written)


def _made_entry(
    session_id: str,
    result: Any,
    step: _Step,
    job: _Job,
    *,
    policy: CompactionPolicy,
    older_ids: dict[str, list[str]],
    counter: TokenCounter,
) -> tuple[dict[str, Any], dict[str, None]] | CompactionOutcome:
    """The entry (and tombstones) a summariser's ``result`` makes, or why none is stored."""
    summary = _summary_of(result)
    if not summary:
        return _failed(session_id, "summarizer returned nothing")
    try:
        entry, tombstones = _rolled_entry(
            step, job, summary, producer=producer_of(policy.summarizer), older_ids=older_ids,
            counter=counter,
        )  # fmt: skip
    except ValidationError as e:  # a text tiktoken cannot count (UntokenizableTextError)
        return _failed(session_id, _unstored(e))
    if unsaved := _saves_nothing(entry):
        return _failed(session_id, unsaved)
    return entry, tombstones


def compact(
    manager: ContextManager,
    session_id: str,
    policy: CompactionPolicy,
    *,
    prefix_messages: Sequence[BaseMessage] | None = None,
    window_tokens: int | None = None,
) -> CompactionOutcome:
    """Run rung (b) once: summarise the next range if the policy says so, and store it.

    Reads the header, and only when the trigger fires the range to cover (and, rolling,
    the newest covered message of the summary it takes in, to check it). The range ends
    at the last turn start where no tool call waits for its result. A summariser that
    raises or returns nothing changes nothing: the outcome says why and a warning is
    logged.

    ``prefix_messages``: the messages of the live request just sent (as assembled,
    system message first). A :func:`chat_summarizer` then sends them again followed by
    one instruction naming the covered messages by position, so the summarisation
    request shares the live request's prefix and the provider's prompt cache serves it
    (``ctx-memory eval`` measures the share); other summarisers ignore it.
    ``window_tokens``: the live request's history window, for the window trigger
    (:meth:`CompactionPolicy.summary_range`); the assembler passes both.

    Example:
        .. code-block:: python

            from ctx_memory import ContextManager
            from ctx_memory.compaction import CompactionPolicy, compact

            manager = ContextManager()
            for i in range(40):
                manager.add_user_message("s1", f"Flight number {i} is AF{100 + i}.")
                manager.add_assistant_message("s1", "Noted.")
            policy = CompactionPolicy(summarize_at=100, keep_recent=16, block=8)
            outcome = compact(manager, "s1", policy)
            assert outcome.entry is not None and outcome.entry["first_index"] == 0
            assert "AF100" in outcome.entry["summary"]
    """
    counter = manager.token_counter
    job = _job(policy, manager.get_header(session_id), window_tokens)
    if job is None:
        return CompactionOutcome(reason="not needed")
    records = manager.get_message_range(session_id, job.read_from, job.boundary)
    step = _step(job, records, counter)
    if step is None:
        return CompactionOutcome(reason="no turn boundary")
    older_ids = {
        str(e["id"]): tool_ids_of(
            manager.get_message_range(session_id, int(e["first_index"]), int(e["last_index"]))
        )
        for e in _needs_ids(step.chain)
    }
    asked = (id(policy.summarizer), session_id, *_ends(step))
    if refused := _refused_before(asked):
        return refused
    try:
        result = policy.summarizer.invoke(step.messages, config=_config(prefix_messages))
    except Exception as e:  # noqa: BLE001 - any summariser failure is reported, not raised
        return _failed(session_id, f"summarizer failed: {type(e).__name__}: {e}")
    made = _made_entry(
        session_id, result, step, job, policy=policy, older_ids=older_ids, counter=counter
    )
    if isinstance(made, CompactionOutcome):
        _remember_refusal(asked, made)
        return made
    entry, tombstones = made
    return _store(manager, session_id, job, step, entry=entry, tombstones=tombstones)


async def acompact(
    manager: ContextManager,
    session_id: str,
    policy: CompactionPolicy,
    *,
    prefix_messages: Sequence[BaseMessage] | None = None,
    window_tokens: int | None = None,
) -> CompactionOutcome:
    """Async :func:`compact`."""
    counter = manager.token_counter
    job = _job(policy, await manager.aget_header(session_id), window_tokens)
    if job is None:
        return CompactionOutcome(reason="not needed")
    records = await manager.aget_message_range(session_id, job.read_from, job.boundary)
    step = _step(job, records, counter)
    if step is None:
        return CompactionOutcome(reason="no turn boundary")
    older_ids = {
        str(e["id"]): tool_ids_of(
            await manager.aget_message_range(
                session_id, int(e["first_index"]), int(e["last_index"])
            )
        )
        for e in _needs_ids(step.chain)
    }
    asked = (id(policy.summarizer), session_id, *_ends(step))
    if refused := _refused_before(asked):
        return refused
    try:
        result = await policy.summarizer.ainvoke(step.messages, config=_config(prefix_messages))
    except Exception as e:  # noqa: BLE001 - any summariser failure is reported, not raised
        return _failed(session_id, f"summarizer failed: {type(e).__name__}: {e}")
    made = _made_entry(
        session_id, result, step, job, policy=policy, older_ids=older_ids, counter=counter
    )
    if isinstance(made, CompactionOutcome):
        _remember_refusal(asked, made)
        return made
    entry, tombstones = made
    return await _astore(manager, session_id, job, step, entry=entry, tombstones=tombstones)


def make_restore_tool(
    manager: ContextManager, session_id: str | None = None, *, name: str = "restore_tool_result"
) -> BaseTool:
    """A LangChain tool that brings back a tool output cleared from the prompt, by call id.

    The session is found as the ``recall`` tool finds it (the agent's context, the
    config's ``session_id`` or ``thread_id``, else ``session_id``). It answers the
    stored output exactly as the tool returned it (a str, or the list of content
    blocks). Needs the ``agents`` extra.

    Example:
        .. code-block:: python

            from langchain_core.messages import AIMessage, ToolMessage
            from ctx_memory import ContextManager
            from ctx_memory.compaction import make_restore_tool

            manager = ContextManager()
            manager.add_user_message("s1", "weather?")
            manager.add_messages("s1", [
                AIMessage("", tool_calls=[{"name": "weather", "args": {}, "id": "call-1"}]),
                ToolMessage("Sunny, 21 C", tool_call_id="call-1", name="weather"),
            ])
            tool = make_restore_tool(manager, "s1")
            assert tool.invoke({"tool_call_id": "call-1"}) == "Sunny, 21 C"
    """
    from ctx_memory._compaction_tool import build_restore_tool  # noqa: PLC0415 - optional extra

    return build_restore_tool(manager, session_id, name=name)
