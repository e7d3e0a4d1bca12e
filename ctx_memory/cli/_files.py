"""Reading session files for ``ctx-memory import``, and writing them all or nothing."""

from __future__ import annotations

import json
import signal
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctx_memory.cli._output import _count, _fail, _note, _progress  # noqa: F401
from ctx_memory.errors import (
    CtxMemoryError,
    DocumentImportError,
    StoreUnavailableError,
    ValidationError,
)
from ctx_memory.records import encode_document
from ctx_memory.schema import parse_document, validate_session_id

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ctx_memory.manager import ContextManager
    from ctx_memory.tokens import TokenCounter


@dataclass(frozen=True)
class ParsedDocument:
    r"""One document read from an import file.

    Attributes:
        index: 1-based position in the file.
        line: Line where the document starts.
        data: The decoded JSON value (not yet validated as a session document).

    Example:
        .. code-block:: python

            from ctx_memory.cli import read_documents

            [first, second] = read_documents('{"a": 1}\n\n{"b": 2}\n')
            assert (second.index, second.line, second.data) == (2, 3, {"b": 2})
            assert second.where == "document 2 (line 3)"
    """

    index: int
    line: int
    data: Any

    @property
    def where(self) -> str:
        """``document 3 (line 12)`` — how error messages locate it."""
        return f"document {self.index} (line {self.line})"


class InputFileError(ValueError):
    """An import file is not JSON, JSON Lines or a JSON array (the message says where)."""


def read_documents(text: str) -> list[ParsedDocument]:
    """Split an import file into documents (pure; no validation of their shape).

    Accepts one JSON document, a JSON array of documents, JSON Lines, or several
    documents concatenated (e.g. ``cat a.json b.json``).

    Raises:
        InputFileError: The text is not valid JSON at some point (names the document,
            line and column), nests too deeply to decode, or holds no document.
    """
    decoder = json.JSONDecoder()
    values: list[tuple[int, Any]] = []
    pos = counted = 0
    line = 1
    length = len(text)
    while True:
        while pos < length and text[pos] in " \t\r\n\ufeff":
            pos += 1
        if pos >= length:
            break
        line += text.count("\n", counted, pos)
        counted = pos
        where = f"document {len(values) + 1} (line {line})"
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            msg = f"{where}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"
            raise InputFileError(msg) from None
        except RecursionError:
            msg = f"{where}: nested too deeply to decode"
            raise InputFileError(msg) from None
        except ValueError as e:  # e.g. an integer literal of more than 4300 digits
            msg = f"{where}: not decodable: {e}"
            raise InputFileError(msg) from None
        values.append((line, value))
    if not values:
        msg = "no documents found (the file is empty)"
        raise InputFileError(msg)
    if len(values) == 1 and isinstance(values[0][1], list):
        line, items = values[0]
        if not items:
            msg = "no documents found (an empty JSON array)"
            raise InputFileError(msg)
        return [ParsedDocument(i, line, item) for i, item in enumerate(items, 1)]
    return [ParsedDocument(i, line, value) for i, (line, value) in enumerate(values, 1)]


def _read_input(path: str) -> str:
    try:
        if path == "-":
            raw = getattr(sys.stdin, "buffer", None)  # bytes: decode errors are ours to report
            return raw.read().decode("utf-8") if raw is not None else sys.stdin.read()
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        _fail(f"{path}: no such file")
    except (OSError, UnicodeDecodeError) as e:
        _fail(f"{path}: cannot read: {e}; nothing was imported")


def _validate_all(
    manager: ContextManager,
    documents: list[ParsedDocument],
    *,
    session_id: str | None,
    overwrite: bool,
) -> tuple[list[str], list[str]]:
    """Check every document; return (target ids, error messages). Writes nothing.

    Checks what :meth:`ContextManager.import_session` and every store would refuse: the
    shape (a JSON object, not text holding one), every field, the value limits (valid
    Unicode, integer range, nesting), the session id, duplicates and ``--no-overwrite``.
    """
    targets: list[str] = []
    errors: list[str] = []
    first_seen: dict[str, ParsedDocument] = {}
    for doc in documents:
        if not isinstance(doc.data, dict):  # text is never re-parsed: no double decoding
            errors.append(_not_an_object(doc))
            continue
        problem = _document_problem(doc.data, session_id, manager.token_counter)
        if isinstance(problem, str):
            errors.append(f"{doc.where}, {problem}")
            continue
        target = problem[0]
        if target in first_seen:
            errors.append(
                f"{doc.where}, field metadata.session_id: session {target!r} also in "
                f"{first_seen[target].where}"
            )
            continue
        first_seen[target] = doc
        targets.append(target)
    if not errors and not overwrite:
        errors.extend(
            f"{first_seen[t].where}, field metadata.session_id: session {t!r} already exists "
            "(drop --no-overwrite to replace it)"
            for t in targets
            if manager.session_exists(t)
        )
    return targets, errors


def _json_kind(value: object) -> str:
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "an array"
    return "null" if value is None else type(value).__name__


def _not_an_object(doc: ParsedDocument) -> str:
    message = (
        f"document {doc.index} is {_json_kind(doc.data)}, expected a session object "
        f"(line {doc.line})"
    )
    if isinstance(doc.data, str) and doc.data.lstrip().startswith("{"):
        message += "; it holds JSON text: was the document encoded twice?"
    return message


def _document_problem(
    data: dict[str, Any], session_id: str | None, counter: TokenCounter
) -> tuple[str] | str:
    """``(target id,)`` for a document the store will take, else ``"field X: why"``.

    The document is checked as the import will encode it (message ids, the size of
    ``shared``), so that a file fails before its first document is written.
    """
    try:
        parsed = parse_document(data)
        target = session_id if session_id is not None else parsed.metadata.session_id
        try:
            validate_session_id(target)
        except CtxMemoryError as e:
            raise DocumentImportError("metadata.session_id", str(e)) from None
        encode_document(parsed, target, counter)
    except DocumentImportError as e:
        where = f"field {e.field}" if e.field else "the whole document"
        return f"{where}: {e}"
    except ValidationError as e:  # any other refusal, with the path when it has one
        path = getattr(e, "path", "") or getattr(e, "field", "")
        return f"{f'field {path}' if path else 'the whole document'}: {e}"
    return (target,)


def _check_capacity(manager: ContextManager, targets: list[str]) -> str | None:
    """Why importing ``targets`` would make the store evict sessions, if it would."""
    limit = getattr(manager.store, "max_sessions", manager.settings.max_sessions)
    if not isinstance(limit, int):
        return None
    after = len(set(manager.list_sessions()) | set(targets))
    if after <= limit:
        return None
    return (
        f"the store would hold {after} sessions but MAX_SESSIONS is {limit}, so the least "
        "recently used would be evicted; raise the limit with --max-sessions N (0: no "
        "limit) or CTX_MEMORY_MAX_SESSIONS"
    )


def _write_all(
    manager: ContextManager,
    documents: list[ParsedDocument],
    targets: list[str],
    *,
    overwrite: bool,
) -> str | None:
    """Import validated documents, all or nothing; the error message if it failed.

    A write can still fail after validation (the store goes down, a check this module
    does not know of): then every session written so far is put back as it was (deleted,
    or restored from the copy read before writing) and the message says so.
    """
    before: dict[str, dict[str, Any]] = {}
    if overwrite:
        for target in targets:
            existing = manager.get_context(target)
            if existing:
                before[target] = existing
    saved = _save_before(before)  # raises: nothing written yet
    touched: list[str] = []
    written = 0
    failure: str | None = None
    with _progress("importing") as progress, _stop_requests() as stop:
        task = progress.add_task("import", total=len(documents))
        for doc, target in zip(documents, targets, strict=True):
            if stop.requested:
                written, failure = len(touched), f"{doc.where}: {_INTERRUPTED}"
                break
            try:
                manager.import_session(doc.data, session_id=target, overwrite=overwrite)
            except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - undo, whatever failed
                written = len(touched)
                if isinstance(e, (StoreUnavailableError, KeyboardInterrupt)):
                    touched.append(target)  # it may have landed: undone too
                detail = str(e) if isinstance(e, CtxMemoryError) else f"{type(e).__name__}: {e}"
                if isinstance(e, KeyboardInterrupt):
                    detail = _INTERRUPTED
                failure = f"{doc.where}: {detail}"
                break
            touched.append(target)
            progress.advance(task)
        if failure is None:
            _forget(saved)
            return None
        left, stopped = _undo(manager, touched, before)
    if not left:
        _forget(saved)
        return f"{failure}; nothing was imported (the {written} written were undone)"
    shown = ", ".join(map(repr, left[:10])) + (" …" if len(left) > 10 else "")
    message = f"{failure}; could not undo {len(left)} session(s): {shown}"
    if stopped:  # (the first named may have been undone as the second signal landed)
        message = f"{failure}; the undo was stopped: {len(left)} may hold the import: {shown}"
    if saved is not None and any(target in before for target in left):
        message += (
            f"; what they held before the import is in {saved} (`ctx-memory import "
            f"--overwrite {saved}` puts it back)"
        )
    return message


def _save_before(before: dict[str, dict[str, Any]]) -> Path | None:
    """Write the sessions an import will replace to a file of their own, first.

    An undo that fails (the disk filled up, the server went away) would otherwise lose
    them with this process: the file (JSON Lines, owner-only) is kept until the import
    succeeded or was undone. If it cannot be written, nothing is imported.
    """
    if not before:
        return None
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below, kept on failure
        "w", encoding="utf-8", prefix="ctx-memory-before-import-", suffix=".jsonl", delete=False
    )
    path = Path(handle.name)
    try:
        with handle:
            for document in before.values():
                handle.write(json.dumps(document, ensure_ascii=False) + "\n")
    except OSError as e:
        path.unlink(missing_ok=True)
        _fail(f"could not save the sessions the import replaces ({e}); nothing was imported")
    except BaseException:  # interrupted before anything is written: no partial copy stays
        path.unlink(missing_ok=True)
        raise
    return path


def _forget(saved: Path | None) -> None:
    if saved is not None:
        saved.unlink(missing_ok=True)


def _undo(
    manager: ContextManager, touched: list[str], before: dict[str, dict[str, Any]]
) -> tuple[list[str], bool]:
    """Put ``touched`` sessions back as in ``before`` (absent: delete).

    Returns those not put back, and whether a second Ctrl-C or SIGTERM stopped it (the
    first of those may then have been put back just as it landed).

    Each step is idempotent (a delete, or a whole document written again), so a step that
    meets a dropped connection (the failure being undone may have been the server closing
    it) is tried again, a few times, whatever the store's own retry setting.
    """
    left: list[str] = []
    pending = list(reversed(touched))
    while pending:
        target = pending.pop(0)
        try:
            undone = _undo_one(manager, target, before)
        except KeyboardInterrupt:  # a second Ctrl-C or SIGTERM: the rest stays as it is
            return [*left, target, *pending], True
        if not undone:
            left.append(target)
    return left, False


def _undo_one(manager: ContextManager, target: str, before: dict[str, dict[str, Any]]) -> bool:
    """Undo one session (tried again after a dropped connection); whether it was."""
    for attempt in range(_UNDO_ATTEMPTS):
        try:
            if target in before:
                manager.import_session(before[target], session_id=target, overwrite=True)
            else:
                manager.delete_context(target)
        except StoreUnavailableError:
            if attempt + 1 < _UNDO_ATTEMPTS:
                time.sleep(0.05 * 4**attempt)
        except Exception:  # noqa: BLE001 - report what is left, keep undoing the rest
            return False
        else:
            return True
    return False


_UNDO_ATTEMPTS = 4


_INTERRUPTED = "interrupted (Ctrl-C or SIGTERM)"


class _StopRequest:
    requested = False


@contextmanager
def _stop_requests() -> Iterator[_StopRequest]:
    """Ctrl-C and SIGTERM (``timeout``, ``docker stop``, systemd) stop an import, which is undone.

    The first signal only asks: the import stops between two documents, and undoes them,
    rather than at whatever instruction the signal arrives (inside a store's transaction,
    or between a write and the note that it was made, so that it would be left in place).
    A second signal interrupts at once, even an undo in progress (what it has not undone
    yet is then named).
    """
    request = _StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def stop(_signum: int, _frame: object) -> None:
        if request.requested:
            raise KeyboardInterrupt
        request.requested = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
