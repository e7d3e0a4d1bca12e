"""Compaction entries as data: validated, built, merged at a shared boundary, written.

The I/O twins :func:`add_compaction`, :func:`get_compactions` and
:func:`remove_compaction` (and their async forms) and the pure steps they share; the
entry format and the ladder are documented in :mod:`ctx_memory.compaction`, which
re-exports the public names.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from ctx_memory.assembly.compacted import COMPACTIONS_KEY, compactions_of, summary_record
from ctx_memory.errors import ValidationError
from ctx_memory.records import KINDS, Kind, bad_field, check_compaction_fields
from ctx_memory.schema import now_iso

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ctx_memory.manager import ContextManager
    from ctx_memory.tokens import TokenCounter

__all__ = [
    "KINDS",
    "Kind",
    "RolledAwayError",
    "aadd_compaction",
    "aget_compactions",
    "add_compaction",
    "aremove_compaction",
    "awrite_entry",
    "bad_field",
    "get_compactions",
    "new_entry",
    "remove_compaction",
    "tool_ids_of",
    "write_entry",
]


def tool_ids_of(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The call ids of the tool results among ``records``, in order, once each."""
    out: dict[str, None] = {}
    for record in records:
        call_id = record.get("tool_call_id")
        if record.get("role") == "tool" and call_id:
            out[str(call_id)] = None
    return list(out)


def new_entry(
    records: Sequence[Mapping[str, Any]],
    first_index: int,
    last_index: int,
    summary: str,
    *,
    kind: str,
    producer: Mapping[str, str] | None,
    compaction_id: str | None,
    first_id: str | None,
    last_id: str | None,
    counter: TokenCounter,
    tool_call_ids: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The entry once the covered records are read; raises if they are not what was said."""
    if len(records) != last_index - first_index + 1:
        msg = (
            f"compaction last_index: the session holds {first_index + len(records)} messages, "
            f"the range {first_index}-{last_index} is past its end"
        )
        raise ValidationError(msg)
    for name, given, record in (
        ("first_id", first_id, records[0]),
        ("last_id", last_id, records[-1]),
    ):
        if given is not None and record.get("id") != given:
            msg = f"compaction {name}: message {given!r} is not at that position"
            raise ValidationError(msg)
    covered_ids = tool_ids_of(records)
    if tool_call_ids is not None:
        unknown = [i for i in tool_call_ids if i not in set(covered_ids)]
        if unknown:
            msg = (
                f"compaction tool_call_ids: {unknown[0]!r} is no tool result in messages "
                f"{first_index}-{last_index}"
            )
            raise ValidationError(msg)
        covered_ids = list(dict.fromkeys(tool_call_ids))
    entry: dict[str, Any] = {
        "id": compaction_id or f"c-{uuid.uuid4().hex[:16]}",
        "kind": kind,
        "first_id": str(records[0].get("id")),
        "last_id": str(records[-1].get("id")),
        "first_index": first_index,
        "last_index": last_index,
        "summary": summary,
        "tool_call_ids": covered_ids,
        "producer": {"name": "", "model": "", "prompt_hash": "", **(producer or {})},
        "tokens_covered": sum(int(r.get("token_count") or 0) for r in records),
        "created_at": now_iso(),
    }
    entry["summary_tokens"] = (
        summary_record(entry, counter)["token_count"] if kind == "summary" else 0
    )
    return entry


def _tombstones(replaces: object) -> dict[str, None]:
    """``{id: None}`` for the compaction ids in ``replaces`` (checked: a sequence of str)."""
    if isinstance(replaces, str) or not isinstance(replaces, (list, tuple)):
        raise bad_field("replaces", f"must be a list of compaction ids, got {replaces!r}")
    for compaction_id in replaces:
        if not isinstance(compaction_id, str) or not compaction_id:
            raise bad_field("replaces", f"must hold non-empty str ids, got {compaction_id!r}")
    return dict.fromkeys(replaces)


def _check_remove(compaction_id: object) -> str:
    if not isinstance(compaction_id, str) or not compaction_id:
        raise bad_field("id", f"must be a non-empty str, got {compaction_id!r}")
    return compaction_id


def _same_end(entry: Mapping[str, Any], live: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The other live summaries ending at ``entry``'s newest message (same position and id)."""
    if entry.get("kind") != "summary":
        return []
    return [
        dict(other)
        for other in live
        if other.get("kind") == "summary"
        and other.get("id") != entry["id"]
        and int(other["last_index"]) == int(entry["last_index"])
        and other.get("last_id") == entry["last_id"]
    ]


def _wider(entry: Mapping[str, Any], same: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Of the summaries at the same boundary, the one reaching furthest before ``entry``."""
    earlier = [o for o in same if int(o["first_index"]) < int(entry["first_index"])]
    return dict(min(earlier, key=lambda o: int(o["first_index"]))) if earlier else None


def _unite(
    entry: Mapping[str, Any],
    wider: Mapping[str, Any],
    extra: Sequence[Mapping[str, Any]],
    counter: TokenCounter,
) -> dict[str, Any]:
    """``entry`` covering the union with ``wider`` (same end, reaching back further).

    ``extra`` are the stored records from ``wider``'s start to just before ``entry``'s.
    The text is ``wider``'s, then ``entry``'s (the part only ``wider`` covers keeps its
    summary); the tool-call ids are those of the whole union.
    """
    united = dict(entry)
    united["first_index"] = int(wider["first_index"])
    united["first_id"] = str(wider["first_id"])
    united["summary"] = f"{wider['summary']}\n{entry['summary']}"
    united["tokens_covered"] = int(entry["tokens_covered"]) + sum(
        int(r.get("token_count") or 0) for r in extra
    )
    united["tool_call_ids"] = list(
        dict.fromkeys([*tool_ids_of(extra), *(entry.get("tool_call_ids") or [])])
    )
    united["summary_tokens"] = summary_record(united, counter)["token_count"]
    return united


def _settled(
    entry: dict[str, Any],
    same: Sequence[Mapping[str, Any]],
    extra: Sequence[Mapping[str, Any]] | None,
    counter: TokenCounter,
    tombstones: Mapping[str, None] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The entry to write and the ``{id: entry or None}`` update (the replaced ones removed)."""
    wider = _wider(entry, same)
    if wider is not None and extra is not None:
        entry = _unite(entry, wider, extra, counter)
    removed = {str(o["id"]): None for o in same}
    return entry, {**(tombstones or {}), **removed, entry["id"]: entry}


class RolledAwayError(Exception):
    """A summary a new one takes in was removed while it was made (nothing is written).

    An edit of a message it covered made it stale (and so the new summary's text), or
    another compactor took it in first.
    """


def _check_rolled(tombstones: Mapping[str, None] | None, live: Sequence[Mapping[str, Any]]) -> None:
    ids = {str(e["id"]) for e in live}
    gone = [cid for cid in tombstones or () if cid not in ids]
    if gone:
        msg = f"summaries {gone} were removed while the summary taking them in was made"
        raise RolledAwayError(msg)


# ------------------------------------------------------------------ the data: I/O twins


REPLACED_KEPT = 32
"""How many ids of the compactions an entry took in it keeps (its ``replaces``)."""


def _record_replaced(entry: dict[str, Any], tombstones: Mapping[str, None]) -> None:
    """Keep in ``entry`` the ids of the compactions it takes in (``replaces``).

    Where a LangChain summary chain went: a run that began from a summary whose
    compaction a re-summary took in follows it to the one standing for it now, while a
    compaction the user removed stays removed (see ``summarised_from``).
    """
    if tombstones:
        entry["replaces"] = list(tombstones)[-REPLACED_KEPT:]


def add_compaction(
    manager: ContextManager,
    session_id: str,
    first_index: int,
    last_index: int,
    summary: str,
    *,
    kind: Kind = "summary",
    producer: Mapping[str, str] | None = None,
    compaction_id: str | None = None,
    first_id: str | None = None,
    last_id: str | None = None,
    tool_call_ids: Sequence[str] | None = None,
    replaces: Sequence[str] = (),
) -> dict[str, Any]:
    """Store a compaction of messages ``first_index``..``last_index`` (inclusive).

    The covered messages are read to check ``first_id`` / ``last_id`` (when given),
    count ``tokens_covered`` from their cached counts and list the call ids of the tool
    results among them (``tool_call_ids``; when given, each must be one of those); nothing
    is written if any check fails. Safe beside concurrent compactors (one atomic deep
    merge).

    A summary ending at the same message as a live summary (a LangChain
    ``SummarizationMiddleware`` summary and a policy's, say) replaces it, so one message
    is sent: the new entry covers the union of both ranges (when the other reaches
    further back, its text comes first and the extra messages are read for their counts
    and tool-call ids) and the other is removed in the same write. So are the compactions
    named in ``replaces``: those the new one stands for (a re-summary whose text takes in
    an earlier summary, say), so stored state stays bounded.

    Returns:
        The entry written.

    Raises:
        ValidationError: A bad argument, a range past the history's end or ids that
            are not at those positions (the message names the field).

    Example:
        .. code-block:: python

            from ctx_memory import ContextManager
            from ctx_memory.compaction import add_compaction, get_compactions

            manager = ContextManager()
            for i in range(3):
                manager.add_user_message("s1", f"question {i}")
                manager.add_assistant_message("s1", f"answer {i}")
            entry = add_compaction(manager, "s1", 0, 3, "User asked 0 and 1; answered.")
            assert get_compactions(manager, "s1") == [entry]
            assert len(manager.get_history("s1")) == 6  # messages untouched
    """
    check_compaction_fields(
        first_index, last_index, summary, kind, producer, compaction_id, tool_call_ids
    )
    tombstones = _tombstones(replaces)
    records = manager.get_message_range(session_id, first_index, last_index)
    entry = new_entry(
        records, first_index, last_index, summary, kind=kind, producer=producer,
        compaction_id=compaction_id, first_id=first_id, last_id=last_id,
        counter=manager.token_counter, tool_call_ids=tool_call_ids,
    )  # fmt: skip
    _record_replaced(entry, tombstones)
    return write_entry(manager, session_id, entry, tombstones)


def _inside(entry: Mapping[str, Any], live: Sequence[Mapping[str, Any]]) -> dict[str, None]:
    """Tombstones for the other live summaries within ``entry``'s range: never used again.

    Another compactor's summary written while this one's summariser ran (two processes,
    two chats in background mode) lands inside the range this one covers; left live, each
    such race would keep a dead entry in ``shared`` for good.
    """
    if entry.get("kind") != "summary":
        return {}
    first, last = int(entry["first_index"]), int(entry["last_index"])
    return {
        str(other["id"]): None
        for other in live
        if other.get("kind") == "summary"
        and other.get("id") != entry["id"]
        and first <= int(other["first_index"])
        and int(other["last_index"]) <= last
    }


def write_entry(
    manager: ContextManager,
    session_id: str,
    entry: dict[str, Any],
    tombstones: Mapping[str, None] | None = None,
    *,
    inside: bool = False,
    rolling: bool = False,
) -> dict[str, Any]:
    """Write ``entry``, merged with the summaries at its boundary, in one atomic update.

    ``inside``: also remove the live summaries within its range (:func:`_inside`).
    ``rolling``: ``entry`` takes in the summaries ``tombstones`` names; raises
    :class:`RolledAwayError` if one is no longer live.
    """
    live = get_compactions(manager, session_id)
    if rolling:
        _check_rolled(tombstones, live)
    same = _same_end(entry, live)
    wider = _wider(entry, same)
    extra = None
    if wider is not None:
        extra = manager.get_message_range(
            session_id, int(wider["first_index"]), int(entry["first_index"]) - 1
        )
    entry, update = _settled(entry, same, extra, manager.token_counter, tombstones)
    if inside:
        update = {**_inside(entry, live), **update}
    manager.update_partial_context(session_id, {COMPACTIONS_KEY: update}, reserved=True)
    return entry


async def awrite_entry(
    manager: ContextManager,
    session_id: str,
    entry: dict[str, Any],
    tombstones: Mapping[str, None] | None = None,
    *,
    inside: bool = False,
    rolling: bool = False,
) -> dict[str, Any]:
    """Async :func:`write_entry`."""
    live = await aget_compactions(manager, session_id)
    if rolling:
        _check_rolled(tombstones, live)
    same = _same_end(entry, live)
    wider = _wider(entry, same)
    extra = None
    if wider is not None:
        extra = await manager.aget_message_range(
            session_id, int(wider["first_index"]), int(entry["first_index"]) - 1
        )
    entry, update = _settled(entry, same, extra, manager.token_counter, tombstones)
    if inside:
        update = {**_inside(entry, live), **update}
    await manager.aupdate_partial_context(session_id, {COMPACTIONS_KEY: update}, reserved=True)
    return entry


async def aadd_compaction(
    manager: ContextManager,
    session_id: str,
    first_index: int,
    last_index: int,
    summary: str,
    *,
    kind: Kind = "summary",
    producer: Mapping[str, str] | None = None,
    compaction_id: str | None = None,
    first_id: str | None = None,
    last_id: str | None = None,
    tool_call_ids: Sequence[str] | None = None,
    replaces: Sequence[str] = (),
) -> dict[str, Any]:
    """Async :func:`add_compaction`."""
    check_compaction_fields(
        first_index, last_index, summary, kind, producer, compaction_id, tool_call_ids
    )
    tombstones = _tombstones(replaces)
    records = await manager.aget_message_range(session_id, first_index, last_index)
    entry = new_entry(
        records, first_index, last_index, summary, kind=kind, producer=producer,
        compaction_id=compaction_id, first_id=first_id, last_id=last_id,
        counter=manager.token_counter, tool_call_ids=tool_call_ids,
    )  # fmt: skip
    _record_replaced(entry, tombstones)
    return await awrite_entry(manager, session_id, entry, tombstones)


def get_compactions(manager: ContextManager, session_id: str) -> list[dict[str, Any]]:
    """The session's live compactions, oldest range first (``[]`` for none).

    Example:
        .. code-block:: python

            from ctx_memory import ContextManager
            from ctx_memory.compaction import get_compactions

            assert get_compactions(ContextManager(), "nobody") == []
    """
    header = manager.get_header(session_id)
    return compactions_of(header["shared"] if header else None)


async def aget_compactions(manager: ContextManager, session_id: str) -> list[dict[str, Any]]:
    """Async :func:`get_compactions`."""
    header = await manager.aget_header(session_id)
    return compactions_of(header["shared"] if header else None)


def remove_compaction(manager: ContextManager, session_id: str, compaction_id: str) -> bool:
    """Remove a compaction (a tombstone); the session then assembles as before.

    Returns:
        Whether it was live.

    Example:
        .. code-block:: python

            from ctx_memory import ContextManager
            from ctx_memory.compaction import add_compaction, get_compactions, remove_compaction

            manager = ContextManager()
            manager.add_user_message("s1", "hi")
            entry = add_compaction(manager, "s1", 0, 0, "greeting")
            assert remove_compaction(manager, "s1", entry["id"])
            assert get_compactions(manager, "s1") == []
    """
    cid = _check_remove(compaction_id)
    live = any(e["id"] == cid for e in get_compactions(manager, session_id))
    if live:
        manager.update_partial_context(session_id, {COMPACTIONS_KEY: {cid: None}}, reserved=True)
    return live


async def aremove_compaction(manager: ContextManager, session_id: str, compaction_id: str) -> bool:
    """Async :func:`remove_compaction`."""
    cid = _check_remove(compaction_id)
    live = any(e["id"] == cid for e in await aget_compactions(manager, session_id))
    if live:
        await manager.aupdate_partial_context(
            session_id, {COMPACTIONS_KEY: {cid: None}}, reserved=True
        )
    return live
