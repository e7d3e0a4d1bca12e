r"""The ``ctx-memory`` command line.

Every command works on the store that settings select (``STORE``, ``SQLITE_PATH``,
``REDIS_URL`` from ``settings.toml`` / ``CTX_MEMORY_*``); the global options ``--store``,
``--sqlite-path`` and ``--redis-url`` override them for one invocation.

Exit codes: ``0`` success, ``1`` a session or file was not found, input was invalid or
the store failed, ``2`` wrong usage (unknown option, missing argument, bad setting).
Errors are one line on stderr, never a traceback, and never show a password.

Stored data is printed literally: ids, metadata, sources and keys are never read as rich
markup, and control characters in them are shown escaped (``\n``, ``\x1b``), so a
session cannot break or forge the terminal output.

File formats: ``export ID`` writes one pretty-printed JSON document; ``export --all`` (or
several ids) writes JSON Lines, one compact document per line. ``import`` reads a single
document, JSON Lines, a JSON array of documents, or documents simply concatenated.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from ctx_memory.analytics._command import analytics_command
from ctx_memory.config import Settings, load_settings
from ctx_memory.display import SessionView
from ctx_memory.errors import (
    ConfigurationError,
    CtxMemoryError,
    DocumentImportError,
    StoreUnavailableError,
    ValidationError,
)
from ctx_memory.manager import ContextManager
from ctx_memory.migrate import migrate_command
from ctx_memory.schema import exported, parse_document, validate_session_id
from ctx_memory.server.cli import serve

if TYPE_CHECKING:
    from collections.abc import Iterator

    from rich.console import Console
    from rich.progress import Progress
    from rich.text import Text

__all__ = ["InputFileError", "ParsedDocument", "app", "main", "printable", "read_documents"]

_MEMORY_NOTE = (
    "The in-memory store (the default) lives only as long as one command, so on it the "
    "commands below see an empty store; use --store sqlite or --store redis (or "
    "CTX_MEMORY_STORE) for sessions that persist between commands."
)

app = typer.Typer(
    name="ctx-memory",
    help=(
        "Inspect and manage ctx_memory sessions on the configured store.\n\n"
        + _MEMORY_NOTE
        + "\n\nExit codes: 0 ok, 1 not found / invalid input / store error, 2 usage error."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
sessions_app = typer.Typer(help="List sessions.", no_args_is_help=True, rich_markup_mode="markdown")
app.add_typer(sessions_app, name="sessions")
app.command("serve")(serve)  # ctx_memory/server/cli.py: imports the server extra when run
app.command("analytics")(analytics_command)
app.command("migrate")(migrate_command)


class _StoreName(str, Enum):
    """The backends ``--store`` accepts."""

    memory = "memory"
    sqlite = "sqlite"
    redis = "redis"


@dataclass(frozen=True)
class _Options:
    """Global options: setting overrides for :class:`ContextManager`."""

    store: _StoreName | None = None
    sqlite_path: Path | None = None
    redis_url: str | None = field(default=None, repr=False)  # may hold a password
    max_sessions: int | None = None

    def settings(self) -> Settings:
        """Settings from files and environment with these options applied."""
        return load_settings(**self.overrides())

    def overrides(self) -> dict[str, Any]:
        store = self.store
        if store is None:
            if self.sqlite_path is not None and self.redis_url is None:
                store = _StoreName.sqlite
            elif self.redis_url is not None and self.sqlite_path is None:
                store = _StoreName.redis
        values: dict[str, Any] = {}
        if store is not None:
            values["store"] = store.value
            values["use_redis_caching"] = store is _StoreName.redis
        if self.sqlite_path is not None:
            values["sqlite_path"] = str(self.sqlite_path)
        if self.redis_url is not None:
            values["redis_url"] = self.redis_url
        if self.max_sessions is not None:  # 0: no limit
            values["max_sessions"] = self.max_sessions
        return values


# --------------------------------------------------------------------------- helpers


# C0 and C1 control characters, DEL, bidi overrides and line/paragraph separators: what
# moves the cursor, recolours the terminal or reorders what is shown.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_CONTROL_NO_NEWLINE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    if char in _ESCAPES:
        return _ESCAPES[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(value: object, *, multiline: bool = False) -> str:
    r"""``value`` as text safe for a terminal: control characters shown escaped.

    A newline becomes the two characters ``\n``, ESC becomes ``\x1b``, and so on; with
    ``multiline`` (message bodies, the system prompt) newlines and tabs are kept.

    Example:
        .. code-block:: python

            from ctx_memory.cli import printable

            assert printable("a\r\nb\x1b[31m") == "a\\r\\nb\\x1b[31m"
            assert printable("line 1\nline 2", multiline=True) == "line 1\nline 2"
    """
    text = value if isinstance(value, str) else str(value)
    return (_CONTROL_NO_NEWLINE if multiline else _CONTROL).sub(_escape_char, text)


def _text(value: object, style: str = "", *, multiline: bool = False) -> Text:
    """A rich ``Text`` showing ``value`` literally (never parsed as markup)."""
    from rich.text import Text  # noqa: PLC0415

    return Text(printable(value, multiline=multiline), style=style)


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {printable(message)}", err=True)
    raise typer.Exit(code)


def _note(message: str) -> None:
    typer.echo(message, err=True)


@contextmanager
def _open(ctx: typer.Context) -> Iterator[ContextManager]:
    """The manager the global options select; package errors become exit codes.

    A :class:`ContextManager` passed as the context object (``app(obj=manager)``, or
    ``CliRunner().invoke(app, args, obj=manager)``) is used as is and left open.
    """
    root = ctx.find_root().obj
    if isinstance(root, ContextManager):
        try:
            yield root
        except CtxMemoryError as e:
            _fail_with(e)
        return
    options: _Options = root if isinstance(root, _Options) else _Options()
    try:
        # Settings first: ContextManager's own ``store=`` keyword takes a store object.
        manager = ContextManager(options.settings())
    except ValidationError as e:  # a setting the store refuses: a usage error, like a bad one
        _fail(str(e), code=2)
    except CtxMemoryError as e:
        _fail_with(e)
    try:
        with manager:
            yield manager
    except CtxMemoryError as e:
        _fail_with(e)


def _fail_with(error: CtxMemoryError) -> NoReturn:
    """Exit for a package error: ``2`` for a bad setting, else ``1`` (one line, no traceback)."""
    _fail(str(error), code=2 if isinstance(error, ConfigurationError) else 1)


def _stdout_console() -> Console:
    from rich.console import Console  # noqa: PLC0415 - rich is only needed for pretty output

    return Console(file=sys.stdout, highlight=False, soft_wrap=False)


def _progress(description: str) -> Progress:
    """A progress bar on stderr, shown only when stderr is a terminal."""
    from rich.console import Console  # noqa: PLC0415
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    interactive = sys.stderr.isatty()  # not rich's is_terminal: FORCE_COLOR would fake one
    return Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not interactive,
    )


def _dump_line(document: dict[str, Any]) -> str:
    return json.dumps(exported(document), ensure_ascii=False, separators=(",", ":")) + "\n"


# --------------------------------------------------------------------------- reading files


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


# --------------------------------------------------------------------------- commands


@app.callback()
def _root(
    ctx: typer.Context,
    store: Annotated[
        _StoreName | None,
        typer.Option(
            "--store",
            help="Backend to use, overriding STORE. Default: from settings (memory).",
            case_sensitive=False,
        ),
    ] = None,
    sqlite_path: Annotated[
        Path | None,
        typer.Option(
            "--sqlite-path",
            help="SQLite database file, overriding SQLITE_PATH (implies --store sqlite).",
            dir_okay=False,
        ),
    ] = None,
    redis_url: Annotated[
        str | None,
        typer.Option(
            "--redis-url",
            help="A redis:// or rediss:// URL, overriding REDIS_URL "
            "(implies --store redis). Prefer CTX_MEMORY_REDIS_URL for passwords.",
        ),
    ] = None,
    max_sessions: Annotated[
        int | None,
        typer.Option(
            "--max-sessions",
            min=0,
            help="Session limit before LRU eviction, overriding MAX_SESSIONS (0: no limit).",
        ),
    ] = None,
) -> None:
    """Inspect and manage ctx_memory sessions on the configured store."""
    if store is None and sqlite_path is not None and redis_url is not None:
        msg = "give --store when passing both --sqlite-path and --redis-url"
        raise typer.BadParameter(msg, param_hint="--store")
    if isinstance(ctx.obj, ContextManager):  # embedded use: an existing manager
        return
    ctx.obj = _Options(
        store=store, sqlite_path=sqlite_path, redis_url=redis_url, max_sessions=max_sessions
    )


@app.command()
def demo(
    ctx: typer.Context,
    session_id: Annotated[str, typer.Option(help="Session id the demo writes.")] = "demo-session",
) -> None:
    """Run seed 001's flow (metadata, messages, search results, page text) and print it."""
    from ctx_memory.demo import run_demo  # noqa: PLC0415

    with _open(ctx) as manager:
        run_demo(
            manager,
            session_id=session_id,
            echo=lambda text: typer.echo(printable(text, multiline=True)),
        )


@sessions_app.command("list")
def sessions_list(
    ctx: typer.Context,
    *,
    long: Annotated[
        bool, typer.Option("--long", "-l", help="A table with mode, messages, tokens, last update.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="A JSON array of session ids.")] = False,
    prefix: Annotated[
        str, typer.Option("--prefix", help="Only the sessions whose id starts with this.")
    ] = "",
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=1, help="At most this many (a page; O(page) on SQLite/Redis)."),
    ] = None,
    after: Annotated[
        str | None,
        typer.Option("--after", help="Start after this id: the last id of the previous page."),
    ] = None,
) -> None:
    """List session ids, one per line (sorted); page with --limit and --after."""
    with _open(ctx) as manager:
        ids = manager.list_sessions(prefix, limit=limit, cursor=after)
        if limit is not None and len(ids) == limit:
            _note(f"more may follow: --after {printable(shlex.quote(ids[-1]))}")
        if as_json:
            typer.echo(json.dumps(ids, ensure_ascii=False))
            return
        if not long:
            for session_id in ids:
                typer.echo(printable(session_id))
            return
        from rich.table import Table  # noqa: PLC0415

        table = Table("session", "mode", "messages", "sources", "tokens", "last update")
        for session_id in ids:
            try:
                stats = manager.get_memory_stats(session_id)
            except ValidationError as e:  # stored before its id became invalid: show, go on
                table.add_row(_text(session_id), _text(f"(unreadable: {e})"))
                continue
            if not stats.get("exists"):
                continue
            table.add_row(
                _text(session_id),
                _text(stats.get("mode") or ""),
                _text(stats["message_count"]),
                _text(stats["fetched_item_count"]),
                _text(stats["total_tokens"]),
                _text(stats.get("last_updated") or ""),
            )
        _stdout_console().print(table)
        _note(f"{len(ids)} session(s) on {manager.store.name}")


def _print_session(console: Console, document: dict[str, Any], *, full: bool) -> None:
    """Pretty-print a session; every stored value goes through :func:`_text` (literal)."""
    from rich.panel import Panel  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    def clip(value: object, limit: int = 300) -> str:
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        return text if full or len(text) <= limit else text[:limit] + f"… ({len(text)} chars)"

    meta = document.get("metadata") or {}
    info = Table.grid(padding=(0, 2))
    info.add_column()
    info.add_column()
    for key, value in meta.items():
        info.add_row(_text(key, "bold"), _text(clip(value, 120)))
    title = _text(f"session {meta.get('session_id', '?')}")
    console.print(Panel(info, title=title, expand=False))
    if document.get("system_prompt"):
        console.print(_text("System prompt", "bold magenta"))
        console.print(_text(clip(document["system_prompt"]), multiline=True))
    fetched = document.get("fetched_context") or {}
    items = [(t, i) for t, entries in fetched.items() for i in entries]
    if items:
        sources = Table(title="Sources", title_justify="left")
        for name in ("#", "type", "title", "url", "tokens"):
            sources.add_column(name, overflow="fold")
        for n, (source_type, item) in enumerate(items, 1):
            data = item.get("extracted_data") or {}
            sources.add_row(
                _text(n),
                _text(source_type),
                _text(clip(data.get("title") or "", 80)),
                _text(item.get("url") or ""),
                _text(item.get("token_count", "")),
            )
        console.print(sources)
    shown = document.get("conversation_history") or []  # already cut to --last
    total = max(len(shown), _count(meta.get("message_count")))
    console.print(_text(f"Conversation ({total} messages, showing {len(shown)})", "bold"))
    colors = {"user": "blue", "assistant": "green", "system": "magenta", "tool": "yellow"}
    for record in shown:
        role = str(record.get("role", "?"))
        head = _text(f"{role:>9} ", f"bold {colors.get(role, 'white')}")
        stamp = f"{record.get('timestamp', '')}  {record.get('token_count', 0)} tokens"
        head.append_text(_text(stamp, "dim"))
        model = (record.get("metadata") or {}).get("model")
        if model:
            head.append_text(_text(f"  {model}", "dim"))
        console.print(head)
        console.print(_text(clip(record.get("content")), multiline=True))
    shared = document.get("shared") or {}
    if shared:  # JSON escapes control characters in keys and values itself
        console.print(_text("Shared state", "bold"))
        shared_json = clip(json.dumps(shared, ensure_ascii=False, indent=2), 2000)
        console.print(_text(shared_json, multiline=True))


def _count(value: object) -> int:
    """A stored count, or 0 when the stored value is not a plain number."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@app.command()
def show(
    ctx: typer.Context,
    session_id: Annotated[str, typer.Argument(help="The session to show.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the JSON document instead.")
    ] = False,
    last: Annotated[
        int | None, typer.Option("--last", "-n", min=0, help="Show only the last N messages.")
    ] = None,
    full: Annotated[bool, typer.Option("--full", help="Do not shorten long content.")] = False,
) -> None:
    """Show one session: metadata, system prompt, sources and conversation."""
    with _open(ctx) as manager:
        if as_json:
            document = manager.get_context(session_id)
        else:  # only the newest --last messages are read
            document = SessionView(manager, session_id, max_messages=last).document()
        if not document:
            _fail(f"session {session_id!r} does not exist (never created, deleted or expired)")
        if as_json:
            typer.echo(json.dumps(document, ensure_ascii=False, indent=2))
            return
        _print_session(_stdout_console(), document, full=full)


@contextmanager
def _output(path: Path | None) -> Iterator[Any]:
    """Write to ``path`` atomically (temp file + rename), or to stdout."""
    if path is None or str(path) == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    directory = path.resolve().parent
    if not directory.is_dir():
        _fail(f"{path}: directory {directory} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            yield handle
        Path(tmp).replace(path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@app.command("export")
def export_(
    ctx: typer.Context,
    session_ids: Annotated[
        list[str] | None, typer.Argument(help="Session(s) to export.", show_default=False)
    ] = None,
    all_sessions: Annotated[bool, typer.Option("--all", help="Export every session.")] = False,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="File to write (default: stdout).", dir_okay=False),
    ] = None,
) -> None:
    """Export sessions as JSON.

    One id: a pretty-printed JSON document. Several ids or --all: JSON Lines, one
    document per line. `ctx-memory import` reads both. A file is written whole or not
    at all.
    """
    ids = list(session_ids or [])
    if bool(ids) == all_sessions:
        msg = "give session ids or --all (not both)"
        raise typer.BadParameter(msg, param_hint="SESSION_IDS / --all")
    with _open(ctx) as manager:
        if not all_sessions and len(ids) == 1:
            document = manager.get_context(ids[0])
            if not document:
                _fail(f"session {ids[0]!r} does not exist (never created, deleted or expired)")
            with _output(output) as out:
                out.write(json.dumps(exported(document), ensure_ascii=False, indent=2) + "\n")
            if output is not None:
                _note(f"exported 1 session to {output}")
            return
        if all_sessions:
            ids = manager.list_sessions()
        else:
            missing = [i for i in ids if not manager.session_exists(i)]
            if missing:
                _fail(f"session(s) do not exist: {', '.join(map(repr, missing))}")
        written = skipped = 0
        with _output(output) as out, _progress("exporting") as progress:
            task = progress.add_task("export", total=len(ids))
            for session_id in ids:
                document = manager.get_context(session_id)
                if document:
                    out.write(_dump_line(document))
                    written += 1
                else:  # expired or deleted since it was listed
                    skipped += 1
                progress.advance(task)
        where = f" to {output}" if output is not None else ""
        gone = f" ({skipped} expired or deleted meanwhile)" if skipped else ""
        _note(f"exported {written} session(s){where}{gone}")


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
        problem = _document_problem(doc.data, session_id)
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


def _document_problem(data: dict[str, Any], session_id: str | None) -> tuple[str] | str:
    """``(target id,)`` for a document the store will take, else ``"field X: why"``."""
    try:
        parsed = parse_document(data)
        target = session_id if session_id is not None else parsed.metadata.session_id
        try:
            validate_session_id(target)
        except CtxMemoryError as e:
            raise DocumentImportError("metadata.session_id", str(e)) from None
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


@app.command("import")
def import_(
    ctx: typer.Context,
    file: Annotated[
        str, typer.Argument(help="JSON document, JSON array or JSON Lines file; '-' reads stdin.")
    ],
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite/--no-overwrite", help="Replace sessions that already exist."),
    ] = True,
    session_id: Annotated[
        str | None,
        typer.Option("--session-id", help="Store a single-document file under this id instead."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate only; write nothing.")
    ] = False,
) -> None:
    """Import sessions exported by `ctx-memory export` (or `export_session`).

    Every document is validated before any is written: if one is malformed, the
    command names the document and the field, imports nothing and exits with 1.
    Token counts are recomputed with this store's encoding.
    """
    text = _read_input(file)
    try:
        documents = read_documents(text)
    except InputFileError as e:
        _fail(f"{file}: {e}; nothing was imported")
    if session_id is not None and len(documents) != 1:
        msg = f"--session-id needs a single-document file ({file} holds {len(documents)})"
        raise typer.BadParameter(msg, param_hint="--session-id")
    with _open(ctx) as manager:
        targets, errors = _validate_all(
            manager, documents, session_id=session_id, overwrite=overwrite
        )
        if errors:
            for message in errors[:20]:
                typer.echo(f"error: {file}: {message}", err=True)
            if len(errors) > 20:
                typer.echo(f"error: … and {len(errors) - 20} more", err=True)
            _fail(
                f"{file}: {len(errors)} of {len(documents)} document(s) invalid; "
                "nothing was imported"
            )
        full = _check_capacity(manager, targets)
        if full is not None:
            _fail(f"{file}: {full}; nothing was imported")
        if dry_run:
            _note(f"{file}: {len(documents)} valid document(s); nothing written (--dry-run)")
            return
        failure = _write_all(manager, documents, targets, overwrite=overwrite)
        if failure is not None:
            _fail(f"{file}: {failure}")
        _note(f"imported {len(targets)} session(s) from {file} into {manager.store.name}")


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
    touched: list[str] = []
    failure: str | None = None
    with _progress("importing") as progress:
        task = progress.add_task("import", total=len(documents))
        for doc, target in zip(documents, targets, strict=True):
            touched.append(target)
            try:
                manager.import_session(doc.data, session_id=target, overwrite=overwrite)
            except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - undo, whatever failed
                detail = str(e) if isinstance(e, CtxMemoryError) else f"{type(e).__name__}: {e}"
                failure = f"{doc.where}: {detail}"
                break
            progress.advance(task)
    if failure is None:
        return None
    left = _undo(manager, touched, before)
    if not left:
        return f"{failure}; nothing was imported (the {len(touched) - 1} written were undone)"
    shown = ", ".join(map(repr, left[:10])) + (" …" if len(left) > 10 else "")
    return f"{failure}; could not undo {len(left)} session(s): {shown}"


def _undo(
    manager: ContextManager, touched: list[str], before: dict[str, dict[str, Any]]
) -> list[str]:
    """Put ``touched`` sessions back as in ``before`` (absent: delete); those that failed.

    Each step is idempotent (a delete, or a whole document written again), so a step that
    meets a dropped connection (the failure being undone may have been the server closing
    it) is tried again, a few times, whatever the store's own retry setting.
    """
    left = []
    for target in reversed(touched):
        for attempt in range(_UNDO_ATTEMPTS):
            try:
                if target in before:
                    manager.import_session(before[target], session_id=target, overwrite=True)
                else:
                    manager.delete_context(target)
                break
            except StoreUnavailableError:
                if attempt + 1 < _UNDO_ATTEMPTS:
                    time.sleep(0.05 * 4**attempt)
                    continue
                left.append(target)
            except Exception:  # noqa: BLE001 - report what is left, keep undoing the rest
                left.append(target)
                break
    return left


_UNDO_ATTEMPTS = 4


@app.command()
def delete(
    ctx: typer.Context,
    session_ids: Annotated[list[str], typer.Argument(help="Session(s) to delete.")],
) -> None:
    """Delete sessions; exits with 1 if any did not exist."""
    with _open(ctx) as manager:
        missing = [i for i in session_ids if not manager.delete_context(i)]
        deleted = len(session_ids) - len(missing)
        _note(f"deleted {deleted} session(s)")
        if missing:
            _fail(f"session(s) did not exist: {', '.join(map(repr, missing))}")


@app.command()
def stats(
    ctx: typer.Context,
    session_id: Annotated[
        str | None,
        typer.Argument(help="A session; without it, store-wide statistics.", show_default=False),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Token and size statistics for one session, or for the whole store."""
    with _open(ctx) as manager:
        result = manager.get_memory_stats(session_id)
        if session_id is not None and not result.get("exists"):
            _fail(f"session {session_id!r} does not exist (never created, deleted or expired)")
        if as_json:
            typer.echo(json.dumps(result, ensure_ascii=False, indent=2))
            return
        from rich.table import Table  # noqa: PLC0415

        table = Table(show_header=False, box=None, padding=(0, 2))
        table.add_column()
        table.add_column()
        for key, value in result.items():
            shown = (
                json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else value
            )
            table.add_row(_text(key, "bold"), _text(shown))
        _stdout_console().print(table)


@app.command()
def gc(ctx: typer.Context) -> None:
    """Remove expired sessions now."""
    with _open(ctx) as manager:
        removed = manager.gc()
        typer.echo(f"removed {removed} expired session(s) from {manager.store.name}")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
