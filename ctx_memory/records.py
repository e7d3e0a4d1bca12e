"""Building, validating and encoding what the manager stores: pure, no store, no I/O.

Everything here runs before a write, so bad input raises a specific error naming what and
where, and nothing has been written. The manager calls these functions to *plan* an
operation; a store only ever receives the encoded result.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.messages import BaseMessage

from ctx_memory.errors import DocumentImportError, InvalidMessageError, ValidationError
from ctx_memory.schema import (
    ContextMode,
    SessionDocument,
    check_content_blocks,
    check_json_native,
    check_key,
    check_message_id,
    check_text,
    check_time_zone,
    dumps,
    dumps_validated,
    fingerprint,
    message_to_record,
    now_iso,
    validate_record,
    validate_role,
)
from ctx_memory.stores.base import EncodedItem, EncodedMessage, Header, check_shared_size

if TYPE_CHECKING:
    from ctx_memory.tokens import TokenCounter

__all__ = [
    "COMPACTIONS_KEY",
    "KINDS",
    "RESERVED_METADATA",
    "RESTORABLE_PREFIX",
    "api_message",
    "assistant_record",
    "bad_field",
    "build_record",
    "check_compaction_entry",
    "check_compaction_fields",
    "encode_document",
    "encode_item",
    "encode_items",
    "encode_record",
    "Kind",
    "iso_timestamp",
    "metadata_fields",
    "new_message_id",
    "records_from",
    "session_stats",
    "summary_record",
    "summary_text",
    "well_formed_compaction",
]

RESERVED_METADATA = frozenset(
    {
        "session_id",
        "created_at",
        "timestamp",
        "message_count",
        "token_count",
        "token_encoding",
        "system_prompt_tokens",
    }
)
"""Metadata keys ctx_memory maintains itself; callers cannot set them."""


def iso_timestamp(value: str | datetime | None, now: str | None = None) -> str:
    """``value`` as an ISO-8601 string (naive means UTC); for ``None``, ``now`` or the time now.

    ``now`` is the write's own time (the session's ``metadata.timestamp``), so a message
    written now gets the same stamp, read once from the clock.
    """
    if value is None:
        return now if now is not None else now_iso()
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.isoformat()
    if isinstance(value, str):
        if not value.isascii():  # no store keeps a lone surrogate: refused before any write
            check_text(value, "timestamp")
        return value
    msg = f"timestamp must be an ISO-8601 str or a datetime, got {type(value).__name__}"
    raise ValidationError(msg)


def _check_content(content: object, where: str) -> None:
    if isinstance(content, str):
        if not content.isascii():  # ASCII text (a flag CPython keeps) holds no lone surrogate
            check_text(content, where)
        return
    if isinstance(content, list):
        check_content_blocks(content, where)
        check_json_native(content, where)
        return
    msg = f"{where} must be a str or a list of content blocks, got {type(content).__name__}"
    raise ValidationError(msg)


def build_record(
    role: object,
    content: object,
    *,
    metadata: Mapping[str, Any] | None,
    timestamp: str | datetime | None,
    name: str | None = None,
    now: str | None = None,
    where: str = "content",
) -> dict[str, Any]:
    """A validated message record (its ``id`` and ``token_count`` come at encoding).

    ``now`` is the write's time, the record's ``timestamp`` when none is given; ``where``
    names the content in an error message.
    """
    checked_role = validate_role(role)
    _check_content(content, where)
    record: dict[str, Any] = {
        "role": checked_role,
        "content": content,
        "timestamp": iso_timestamp(timestamp, now),
        "metadata": dict(metadata) if metadata else {},
        "token_count": 0,
    }
    if name is not None:
        check_text(name, "name")
        record["name"] = name
    if record["metadata"]:
        check_json_native(record["metadata"], "metadata")
    return record


def assistant_record(
    content: object,
    *,
    model: str | None,
    response_time_ms: float | None,
    sources_used: Sequence[Any] | None,
    tools_used: Sequence[str] | None,
    metadata: Mapping[str, Any] | None,
    timestamp: str | datetime | None,
    now: str | None = None,
) -> dict[str, Any]:
    """The assistant's reply, with what produced it in its metadata (seed 001)."""
    if response_time_ms is not None and (
        isinstance(response_time_ms, bool)
        or not isinstance(response_time_ms, (int, float))
        or not 0 <= response_time_ms < math.inf
    ):
        msg = f"response_time_ms must be a number of milliseconds >= 0, got {response_time_ms!r}"
        raise ValidationError(msg)
    given = {
        "model": model,
        "response_time_ms": response_time_ms,
        "sources_used": list(sources_used) if sources_used is not None else None,
        "tools_used": list(tools_used) if tools_used is not None else None,
    }
    meta = {**(metadata or {}), **{k: v for k, v in given.items() if v is not None}}
    return build_record("assistant", content, metadata=meta, timestamp=timestamp, now=now)


def records_from(
    messages: Sequence[BaseMessage | Mapping[str, Any]],
    metadata: Mapping[str, Any] | None,
    now: str | None = None,
) -> list[dict[str, Any]]:
    """Records for LangChain messages or message dicts, validated, in order.

    ``now`` (default: the time now) is the timestamp of every record that gives none.
    """
    if now is None:
        now = now_iso()
    records = []
    for index, message in enumerate(messages):
        if isinstance(message, BaseMessage):
            record = message_to_record(message, timestamp=now, metadata=metadata)
        elif isinstance(message, Mapping):
            where = f"messages[{index}]"
            own_metadata = message.get("metadata") or {}
            if not isinstance(own_metadata, Mapping):
                msg = f"{where}.metadata must be a dict, got {type(own_metadata).__name__}"
                raise InvalidMessageError(f"{where}.metadata", msg)
            extra = {
                k: v
                for k, v in message.items()
                if k not in ("role", "content", "metadata", "timestamp", "name", "token_count")
            }
            record = build_record(
                message.get("role"),
                message.get("content"),
                metadata={**(metadata or {}), **own_metadata},
                timestamp=message.get("timestamp"),
                name=message.get("name"),
                now=now,
                where=f"{where}.content",
            )
            record.update(extra)
            validate_record(record, where)
        else:
            kind = type(message).__name__
            msg = f"messages[{index}] must be a BaseMessage or a dict, got {kind}"
            raise ValidationError(msg)
        records.append(record)
    return records


# The first hex digit of a UUID's fourth group holds the RFC 4122 variant bits (10xx):
# the random digit's two low bits are kept.
_VARIANT_DIGIT = {f"{n:x}": f"{8 | (n & 3):x}" for n in range(16)}


_ID_BATCH = 256
"""Ids' random bits read per ``os.urandom`` call (the system call is most of an id's cost)."""

_random_hex: list[str] = []  # 32 hex digits each, each taken once (list.pop is atomic)


def _random_hex32() -> str:
    """32 random hex digits (128 bits) from ``os.urandom``, read :data:`_ID_BATCH` at a time."""
    try:
        return _random_hex.pop()
    except IndexError:
        block = os.urandom(16 * _ID_BATCH).hex()
        _random_hex.extend(block[i : i + 32] for i in range(32, len(block), 32))
        return block[:32]


if hasattr(os, "register_at_fork"):  # a forked child draws its own bits, not its parent's
    os.register_at_fork(after_in_child=_random_hex.clear)


def new_message_id() -> str:
    """A random (version 4) UUID as text, like ``str(uuid.uuid4())`` at a third of the cost.

    122 random bits from ``os.urandom`` (read in batches); the version digit (``4``) and
    the variant bits are set in the text.
    """
    h = _random_hex32()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT_DIGIT[h[16]]}{h[17:20]}-{h[20:]}"


def encode_record(
    record: dict[str, Any], counter: TokenCounter, where: str = "message", index: int | None = None
) -> EncodedMessage:
    """Give ``record`` its id (a new uuid4 if it has none) and exact token count; encode it.

    ``record`` is validated (what :func:`build_record`, :func:`records_from` or a parsed
    document give). ``where`` (with ``index``: ``where[index]``) names the record in an
    error message.
    """
    message_id = record.get("id")
    if message_id is None:
        message_id = record["id"] = new_message_id()
    elif not isinstance(message_id, str) or not message_id:
        if index is not None:
            where = f"{where}[{index}]"
        msg = f"{where}.id must be a non-empty str or None, got {message_id!r}"
        raise InvalidMessageError(f"{where}.id", msg)
    elif len(message_id) > 36 or not message_id.isascii() or "\x00" in message_id:
        # A uuid (36 ASCII characters) needs no more checking: the hot path stays short.
        check_message_id(
            message_id, f"{where}[{index}].id" if index is not None else f"{where}.id", new=True
        )
    tokens = record["token_count"] = counter.count_record(record)
    return EncodedMessage(dumps_validated(record), tokens, message_id)


def encode_item(
    counter: TokenCounter,
    source_type: str,
    content: str,
    *,
    url: str | None,
    extracted_data: Mapping[str, Any] | None,
    timestamp: str | datetime | None,
) -> tuple[EncodedItem, dict[str, Any]]:
    """A validated fetched item, encoded, and the item as stored."""
    if not isinstance(source_type, str) or not source_type.strip():
        msg = f"source_type must be a non-empty str, got {source_type!r}"
        raise ValidationError(msg)
    check_key(source_type, "source_type")
    check_text(content, "content")
    check_text(url, "url", optional=True)
    extracted = dict(extracted_data or {})
    check_json_native(extracted, "extracted_data")
    tokens = counter.count(content)
    item: dict[str, Any] = {
        "source_type": source_type,
        "content": content,
        "url": url,
        "timestamp": iso_timestamp(timestamp),
        "extracted_data": extracted,
        "token_count": tokens,
    }
    encoded = EncodedItem(source_type, dumps(item), tokens, fingerprint(source_type, url, content))
    return encoded, item


def encode_items(
    counter: TokenCounter, items: Sequence[Mapping[str, Any]]
) -> list[tuple[EncodedItem, dict[str, Any]]]:
    """:func:`encode_item` for each of several item dicts shaped like stored items."""
    out = []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            msg = f"items[{index}] must be a mapping, got {type(item).__name__}"
            raise ValidationError(msg)
        out.append(
            encode_item(
                counter,
                item.get("source_type", ""),
                item.get("content"),  # type: ignore[arg-type]
                url=item.get("url"),
                extracted_data=item.get("extracted_data"),
                timestamp=item.get("timestamp"),
            )
        )
    return out


_TEXT_METADATA = frozenset({"current_url", "user_timezone", "user_time"})


def metadata_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata fields a caller may set, checked (mode by name, datetimes as ISO text)."""
    out: dict[str, Any] = {}
    for key, given in fields.items():
        if key in RESERVED_METADATA:
            msg = f"metadata.{key} is maintained by ctx_memory and cannot be set"
            raise ValidationError(msg)
        value = given
        if key == "mode" and given is not None:
            try:
                value = ContextMode(given).value
            except ValueError:
                modes = ", ".join(m.value for m in ContextMode)
                msg = f"unknown mode {given!r}: expected one of {modes}"
                raise ValidationError(msg) from None
        elif key == "user_time" and isinstance(given, datetime):
            value = given.isoformat()
        elif key == "user_timezone":
            check_time_zone(given, "metadata.user_timezone")
        elif key in _TEXT_METADATA:  # typed as the session document types them, or its
            check_text(given, f"metadata.{key}", optional=True)  # export would not import
        out[key] = value
    check_json_native(out, "metadata")
    return out


COMPACTIONS_KEY = "ctx_memory.compactions"
"""The reserved ``shared`` key holding a session's compactions."""

KINDS = ("summary", "tool_outputs_cleared")
Kind = Literal["summary", "tool_outputs_cleared"]
_MAX_COMPACTION_ID = 128


def bad_field(field_name: str, problem: str) -> ValidationError:
    """The error for a compaction field: ``compaction <field>: <problem>``."""
    return ValidationError(f"compaction {field_name}: {problem}")


def check_compaction_fields(  # noqa: PLR0917 - the public signature's fields, in its order
    first_index: object,
    last_index: object,
    summary: object,
    kind: object,
    producer: object,
    compaction_id: object,
    tool_call_ids: object = None,
) -> None:
    """The fields of a compaction as ``add_compaction`` takes them; raises naming the field."""
    for name, value in (("first_index", first_index), ("last_index", last_index)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise bad_field(name, f"must be an int >= 0, got {value!r}")
    assert isinstance(first_index, int)
    assert isinstance(last_index, int)
    if last_index < first_index:
        raise bad_field("last_index", f"{last_index} is before first_index {first_index}")
    if kind not in KINDS:
        raise bad_field("kind", f"must be one of {KINDS}, got {kind!r}")
    if not isinstance(summary, str):
        raise bad_field("summary", f"must be a str, got {type(summary).__name__}")
    if kind == "summary" and not summary.strip():
        raise bad_field("summary", "is empty (a summary compaction needs text)")
    if producer is not None:
        if not isinstance(producer, dict) or not set(producer) <= {"name", "model", "prompt_hash"}:
            raise bad_field(
                "producer", f"must be a dict of name, model, prompt_hash; got {producer!r}"
            )
        for key, value in producer.items():
            if not isinstance(value, str):
                raise bad_field(f"producer.{key}", f"must be a str, got {value!r}")
    if compaction_id is not None and (
        not isinstance(compaction_id, str)
        or not compaction_id
        or len(compaction_id) > _MAX_COMPACTION_ID
    ):
        raise bad_field("id", f"must be a non-empty str of at most {_MAX_COMPACTION_ID} chars")
    if tool_call_ids is not None and (
        not isinstance(tool_call_ids, (list, tuple))
        or not all(isinstance(i, str) and i for i in tool_call_ids)
    ):
        raise bad_field("tool_call_ids", f"must be a list of non-empty str, got {tool_call_ids!r}")


def check_compaction_entry(key: object, entry: object) -> None:
    """A stored compaction entry (``shared[COMPACTIONS_KEY][key]``) as this release writes it.

    ``None`` is a tombstone. Raises :class:`ValidationError` naming the field.
    """
    if entry is None:
        return
    if not isinstance(entry, dict):
        raise bad_field("entry", f"must be a dict or None, got {type(entry).__name__}")
    check_compaction_fields(
        entry.get("first_index"),
        entry.get("last_index"),
        entry.get("summary"),
        entry.get("kind"),
        entry.get("producer"),
        entry.get("id"),
        entry.get("tool_call_ids"),
    )
    if entry["id"] != key:
        raise bad_field("id", f"{entry['id']!r} is not its key {key!r}")
    for name in ("first_id", "last_id", "created_at"):
        if entry.get(name) is not None and not isinstance(entry[name], str):
            raise bad_field(name, f"must be a str, got {entry[name]!r}")
    for name in ("tokens_covered", "summary_tokens"):
        value = entry.get(name)
        if value is not None and (type(value) is not int or value < 0):
            raise bad_field(name, f"must be an int >= 0, got {value!r}")


def well_formed_compaction(key: object, entry: object) -> bool:
    """Whether a stored entry can be used: import refuses others, older data may hold them."""
    try:
        check_compaction_entry(key, entry)
    except ValidationError:
        return False
    return True


def _check_compactions(shared: Mapping[str, Any]) -> None:
    """An imported document's compaction entries, each well formed (before anything is written)."""
    entries = shared.get(COMPACTIONS_KEY)
    if entries is None:
        return
    where = f"shared.{COMPACTIONS_KEY}"
    if not isinstance(entries, dict):
        msg = f"invalid session document at {where}: must be a dict of compactions by id"
        raise DocumentImportError(where, msg)
    for key, entry in entries.items():
        try:
            check_compaction_entry(key, entry)
        except ValidationError as e:
            at = f"{where}.{key}"
            raise DocumentImportError(at, f"invalid session document at {at}: {e}") from None


RESTORABLE_PREFIX = "Tool results restorable with restore_tool_result:"
"""Opens the summary message's last line: the covered tool-call ids its text does not name."""


_WORD = re.compile(r"[A-Za-z0-9_\-]+")


def _listed_ids(entry: Mapping[str, Any]) -> list[str]:
    """The covered tool-call ids the summary's text does not name (in their order)."""
    ids = entry.get("tool_call_ids") or []
    if not ids:
        return []
    named = set(_WORD.findall(str(entry.get("summary", ""))))
    out: list[str] = []
    for call_id in ids:
        if isinstance(call_id, str) and call_id and call_id not in named and call_id not in out:
            out.append(call_id)
    return out


def summary_text(entry: Mapping[str, Any]) -> str:
    """The text of the message that stands for a summary compaction in a prompt.

    ``[Summary of messages a-b]``, the summary, and (when the summary covers tool
    results whose call ids its text does not name) a last line naming them, so each
    covered tool output stays restorable by id whatever the summariser wrote. An entry
    without ``tool_call_ids`` (written before they were recorded) has no such line.

    Example:
        .. code-block:: python

            from ctx_memory.records import summary_text

            entry = {"first_index": 0, "last_index": 5, "summary": "tool f [c1]: ok",
                     "tool_call_ids": ["c1", "c2"]}
            assert summary_text(entry).splitlines() == [
                "[Summary of messages 0-5]",
                "tool f [c1]: ok",
                "Tool results restorable with restore_tool_result: c2",
            ]
    """
    first, last = entry["first_index"], entry["last_index"]
    text = f"[Summary of messages {first}-{last}]\n{entry['summary']}"
    listed = _listed_ids(entry)
    if listed:
        text += f"\n{RESTORABLE_PREFIX} {', '.join(listed)}"
    return text


def summary_record(entry: Mapping[str, Any], counter: TokenCounter) -> dict[str, Any]:
    """The prompt message (as a stored-record dict) for a summary, counted exactly."""
    record: dict[str, Any] = {
        "role": "user",
        "content": summary_text(entry),
        "id": f"{COMPACTIONS_KEY}:{entry['id']}",
    }
    record["token_count"] = counter.count_record(record)
    return record


def _recounted_compactions(
    shared: dict[str, Any], messages: Sequence[EncodedMessage], counter: TokenCounter
) -> dict[str, Any]:
    """``shared`` with each compaction's counts made exact for ``messages`` and ``counter``.

    An imported document's ``tokens_covered`` and ``summary_tokens`` were counted with
    the exporting manager's encoding; its messages are recounted with this one's, so the
    entries are too (an entry whose range no longer matches the messages is left as is).
    """
    entries = shared.get(COMPACTIONS_KEY)
    if not isinstance(entries, dict) or not entries:
        return shared
    totals = [0]
    for message in messages:
        totals.append(totals[-1] + message.tokens)
    ids = [message.id for message in messages]
    recounted: dict[str, Any] = {}
    for key, entry in entries.items():
        recounted[key] = entry
        if not isinstance(entry, dict):
            continue  # a tombstone
        first, last = entry.get("first_index"), entry.get("last_index")
        if (
            type(first) is int
            and type(last) is int
            and 0 <= first <= last < len(ids)
            and entry.get("first_id") == ids[first]
            and entry.get("last_id") == ids[last]
        ):
            exact = recounted[key] = {**entry, "tokens_covered": totals[last + 1] - totals[first]}
            if exact.get("kind") == "summary" and isinstance(exact.get("summary"), str):
                exact["summary_tokens"] = summary_record(exact, counter)["token_count"]
    return {**shared, COMPACTIONS_KEY: recounted}


_IDLESS = uuid.UUID("5b8f2f57-1c8e-4d35-9a4e-2f0c7f3c6a11")
"""Namespace of the ids given to messages an early release stored without one."""


def _id_for(session_id: str, position: int, record: Mapping[str, Any]) -> str:
    """An id for a message stored without one (by an early release).

    A UUID5 of its session, position and content, so that importing or migrating it again
    (a resumed ``migrate``, another target) gives it the same id.
    """
    text = json.dumps(record, sort_keys=True, ensure_ascii=False, default=str)
    return str(uuid.uuid5(_IDLESS, f"{session_id}\n{position}\n{text}"))


def _free_id(wanted: str, seen: Mapping[str, object], document: SessionDocument) -> str:
    """``wanted``, or with a random suffix when a message of ``document`` holds it."""
    taken = set(seen) | {str(r.id) for r in document.conversation_history if r.id is not None}
    while wanted in taken:
        wanted = f"{wanted}~{secrets.token_hex(6)}"
    return wanted


def encode_document(
    document: SessionDocument, target: str, counter: TokenCounter
) -> tuple[Header, list[EncodedMessage], list[EncodedItem]]:
    """An imported document as a store writes it; counts recomputed with ``counter``.

    Raises:
        DocumentImportError: ``shared`` is too large, or a message id is invalid or
            repeated by another message (the same message twice is stored once).
    """
    messages: list[EncodedMessage] = []
    seen: dict[str, tuple[int, EncodedMessage]] = {}
    # An export of a release before format_version (and before ids were deduplicated: a
    # retried batch) may hold one id on two messages: the later one is renamed, as the
    # SQLite migration renames it, rather than the document refused.
    legacy = "format_version" not in document.model_fields_set
    for index, record in enumerate(document.conversation_history):
        plain = record.model_dump(exclude_none=True)
        plain.setdefault("metadata", {})
        if plain.get("id") is None:  # stored by an early release: the same id every time
            plain["id"] = _id_for(target, index, plain)
        try:
            encoded = encode_record(plain, counter, f"conversation_history.{index}")
        except InvalidMessageError as e:  # the id: import errors name their field
            msg = f"invalid session document at {e.path}: {e}"
            raise DocumentImportError(e.path, msg) from None
        if encoded.id in seen and legacy and seen[encoded.id][1].json != encoded.json:
            plain["id"] = _free_id(f"{encoded.id}~{index}", seen, document)
            encoded = encode_record(plain, counter, f"conversation_history.{index}")
        if encoded.id in seen:
            first, earlier = seen[encoded.id]
            if earlier.json == encoded.json:  # the same message twice: stored once, as appends do
                continue
            where = f"conversation_history.{index}.id"  # else one of the two would be lost
            msg = (
                f"invalid session document at {where}: {encoded.id!r} is also the id of "
                f"conversation_history.{first}, another message (an id is unique in a session)"
            )
            raise DocumentImportError(where, msg)
        seen[encoded.id] = (index, encoded)
        messages.append(encoded)
    items: list[EncodedItem] = []
    for source_type, entries in document.fetched_context.items():
        for entry in entries:
            plain = entry.model_dump()
            plain["token_count"] = counter.count(entry.content)
            items.append(
                EncodedItem(
                    source_type,
                    dumps(plain),
                    plain["token_count"],
                    fingerprint(source_type, entry.url, entry.content),
                )
            )
    metadata = document.metadata.model_dump(mode="json")
    metadata.update(
        session_id=target,
        message_count=len(messages),
        token_count=sum(m.tokens for m in messages),
        token_encoding=counter.encoding_name,
        system_prompt_tokens=counter.count(document.system_prompt) if document.system_prompt else 0,
    )
    _check_compactions(document.shared)
    try:
        check_shared_size(dumps(document.shared))
    except ValidationError as e:
        msg = f"invalid session document at shared: {e}"
        raise DocumentImportError("shared", msg) from None
    header: Header = {
        "system_prompt": document.system_prompt,
        "metadata": metadata,
        "shared": _recounted_compactions(document.shared, messages, counter),
    }
    return header, messages, items


def session_stats(
    session_id: str,
    header: Header | None,
    fetched: Mapping[str, Sequence[Mapping[str, Any]]],
    store_name: str,
) -> dict[str, Any]:
    """One session's statistics from its cached counts (``get_memory_stats(session_id)``)."""
    if header is None:
        return {"session_id": session_id, "exists": False}
    meta = header["metadata"]
    fetched_items = {t: len(items) for t, items in fetched.items()}
    fetched_tokens = {
        t: sum(int(i.get("token_count", 0)) for i in items) for t, items in fetched.items()
    }
    system_tokens = int(meta.get("system_prompt_tokens", 0))
    history_tokens = int(meta["token_count"])
    return {
        "session_id": session_id,
        "exists": True,
        "mode": meta.get("mode"),
        "created_at": meta.get("created_at"),
        "last_updated": meta.get("timestamp"),
        "message_count": int(meta["message_count"]),
        "token_count": history_tokens,
        "token_encoding": meta.get("token_encoding"),
        "system_prompt_tokens": system_tokens,
        "fetched_items": fetched_items,
        "fetched_tokens": fetched_tokens,
        "fetched_item_count": sum(fetched_items.values()),
        "total_tokens": system_tokens + history_tokens + sum(fetched_tokens.values()),
        "shared_keys": sorted(header["shared"]),
        "store": store_name,
    }


def api_message(record: Mapping[str, Any]) -> dict[str, Any]:
    """A stored record as an OpenAI-style chat message (function-format tool calls)."""
    message: dict[str, Any] = {"role": record["role"], "content": record["content"]}
    if record.get("name"):
        message["name"] = record["name"]
    if record.get("tool_calls"):
        message["tool_calls"] = [
            {
                "id": call.get("id"),
                "type": "function",
                "function": {
                    "name": call.get("name"),
                    "arguments": json.dumps(call.get("args", {})),
                },
            }
            for call in record["tool_calls"]
        ]
    if record.get("tool_call_id"):
        message["tool_call_id"] = record["tool_call_id"]
    return message


def held_range(
    reads: Sequence[tuple[int, Sequence[Mapping[str, Any]]]], first: int, stop: int
) -> Sequence[Mapping[str, Any]] | None:
    """The records at positions ``first`` to ``stop`` if ``reads`` hold them all, else ``None``.

    ``reads`` are ``(position of the first, records)`` as read, in any order; reads that
    touch or overlap are joined. ``[]`` when ``stop < first``.
    """
    if stop < first:
        return []
    for start, records in reads:  # the common case: one read holds them all
        if start <= first and stop < start + len(records):
            return records[first - start : stop - start + 1]
    held: dict[int, Mapping[str, Any]] = {}
    for start, records in reads:
        for position in range(max(first, start), min(stop, start + len(records) - 1) + 1):
            held[position] = records[position - start]
    if len(held) != stop - first + 1:
        return None
    return [held[p] for p in range(first, stop + 1)]
