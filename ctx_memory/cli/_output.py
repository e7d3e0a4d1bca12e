"""What the command line prints: stored values escaped, progress bars, errors."""

from __future__ import annotations

import contextlib
import contextvars
import errno
import io
import json
import logging
import os
import re
import signal
import stat
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from typer.core import TyperGroup
from typing_extensions import override

from ctx_memory.assembly.compacted import COMPACTIONS_KEY, compactions_of, producer_label
from ctx_memory.schema import exported

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from rich.console import Console
    from rich.progress import Progress
    from rich.text import Text


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
    shared = dict(document.get("shared") or {})
    compactions = compactions_of(shared)
    shared.pop(COMPACTIONS_KEY, None)  # listed as compactions
    if compactions:
        _print_compactions(console, compactions, clip)
    if shared:  # JSON escapes control characters in keys and values itself
        console.print(_text("Shared state", "bold"))
        shared_json = clip(json.dumps(shared, ensure_ascii=False, indent=2), 2000)
        console.print(_text(shared_json, multiline=True))


def _print_compactions(
    console: Console, compactions: list[dict[str, Any]], clip: Callable[[object], str]
) -> None:
    """The compactions table, then each summary (stored text printed literally)."""
    from rich.table import Table  # noqa: PLC0415

    table = Table(title="Compactions", title_justify="left")
    for name in ("messages", "kind", "tokens", "summary tokens", "producer", "created"):
        table.add_column(name, overflow="fold")
    for entry in compactions:
        table.add_row(
            _text(f"{entry.get('first_index')}-{entry.get('last_index')}"),
            _text(entry.get("kind", "")),
            _text(entry.get("tokens_covered", "")),
            _text(entry.get("summary_tokens", "")),
            _text(producer_label(entry.get("producer"))),
            _text(entry.get("created_at", "")),
        )
    console.print(table)
    for entry in compactions:
        console.print(
            _text(
                f"Summary of messages {entry.get('first_index')}-{entry.get('last_index')}",
                "bold",
            )
        )
        console.print(_text(clip(entry.get("summary", "")), multiline=True))


def _count(value: object) -> int:
    """A stored count, or 0 when the stored value is not a plain number."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@contextmanager
def _output(path: Path | None) -> Iterator[Any]:
    """Write to ``path`` atomically (temp file + rename), or to stdout.

    A symbolic link is written through (its target replaced atomically, the link kept);
    what is not a regular file (a device such as ``/dev/null``, a pipe, ``/dev/stdout``)
    is written to as it is, never replaced. A write that fails (a full disk, a read-only
    directory) is one error line; a file being replaced is left as it was.
    """
    try:
        with _written_to(path) as handle:
            yield handle
    except OSError as e:
        where = "stdout" if path is None or str(path) == "-" else str(path)
        _fail(f"{where}: cannot write: {e.strerror or e}")


@contextmanager
def _written_to(path: Path | None) -> Iterator[Any]:
    if path is None or str(path) == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    if path.exists() and not path.resolve().is_file():
        with path.open("w", encoding="utf-8") as handle:
            yield handle
        return
    path = path.resolve()  # through a link: its target is what gets replaced
    directory = path.parent
    if not directory.is_dir():
        _fail(f"{path}: directory {directory} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        if path.exists():  # a file replaced keeps its permissions (a new one: owner only)
            os.chmod(fd, stat.S_IMODE(path.stat().st_mode))
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            yield handle
        Path(tmp).replace(path)
    finally:
        Path(tmp).unlink(missing_ok=True)


INTERRUPTED_EXIT = 130
"""The exit status after a Ctrl-C (or SIGTERM): 128 + SIGINT, as Typer exits."""


def _interrupt(_signum: int, _frame: object) -> None:
    """SIGTERM (``timeout``, ``docker stop``) stops a command as Ctrl-C does."""
    raise KeyboardInterrupt


class _ClosedStdout(io.TextIOBase):
    """``sys.stdout`` when the shell closed it (``>&-``): a write fails as a write would."""

    def write(self, _text: str) -> int:
        raise OSError(errno.EBADF, "stdout is closed")


def run_writing_stdout(run: Callable[[], object]) -> None:
    """``run()``, with output that cannot be written said in one line (exit 1).

    A full disk or a closed stdout made every command that prints end in a traceback; only
    ``export`` said it in one line. What is buffered is flushed before the exit, so a write
    that fails then is said too.
    """
    if sys.stdout is None:
        sys.stdout = _ClosedStdout()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # cleanups run, as for Ctrl-C
    try:
        try:
            run()
        finally:
            sys.stdout.flush()
    except SystemExit as e:
        if e.code == INTERRUPTED_EXIT:  # Typer's exit for a KeyboardInterrupt: say so
            typer.echo("error: interrupted (Ctrl-C or SIGTERM)", err=True)
        raise
    except OSError as e:
        with contextlib.suppress(OSError, ValueError):  # nothing more can reach stdout
            sys.stdout = _ClosedStdout()
        typer.echo(f"error: stdout: cannot write: {e.strerror or e}", err=True)
        raise SystemExit(1) from None


def quiet_pool_logs() -> None:
    """Keep psycopg_pool's per-attempt warnings off stderr when logging is not configured.

    The pool logs each failed connection attempt; with no handler anywhere, Python prints
    them (its "last resort" handler), a dozen lines before the command's one-line error.
    A ``NullHandler`` stops only that: configured handlers still receive the records.
    """
    logger = logging.getLogger("psycopg.pool")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())


_SECRETISH = re.compile(r"@|://|pass|secret|token|pwd|api[_-]?key", re.IGNORECASE)
_OPTION_NAME = re.compile(r"--?[A-Za-z][A-Za-z0-9-]*")
_ARGS: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("ctx_memory_cli_args")


def _masked(argument: str) -> str:
    from ctx_memory.config import redact_url  # noqa: PLC0415 - only when a usage error shows

    shown = redact_url(argument)
    return shown if shown != argument else "***"


def redact_arguments(text: str, arguments: Sequence[str]) -> str:
    """``text`` with each argument that may hold a secret masked where it quotes it.

    An argument with ``@``, ``://`` or a word such as ``pass`` or ``token`` in it is shown
    through :func:`~ctx_memory.config.redact_url`, or as ``***`` when that finds nothing
    to mask; the others are left as they are. Plain substring replacement: no pattern to
    backtrack on, however long the text.
    """
    for argument in sorted(set(arguments), key=len, reverse=True):
        if _OPTION_NAME.fullmatch(argument):  # --max-tokens, --pass: named, never a secret
            continue
        if argument and _SECRETISH.search(argument) and argument in text:
            text = text.replace(argument, _masked(argument))
    return text


def _redacted_usage_error(error: Exception) -> None:
    """Mask what a usage error (exit code 2, from click or typer's own copy) quotes."""
    message = getattr(error, "message", None)
    if getattr(error, "exit_code", None) == 2 and isinstance(message, str):
        vars(error)["message"] = redact_arguments(message, _ARGS.get(()))


class RedactingGroup(TyperGroup):
    """Typer's command group, whose usage errors quote no password.

    Click quotes what it could not use ("No such command 'redis://:pw@host'", "Got
    unexpected extra argument (...)"): a URL typed without its option would be printed
    whole. The command line's arguments are noted as it is parsed, and those that may
    hold a secret are masked wherever an error quotes them.
    """

    @override
    def make_context(self, info_name: Any, args: Any, parent: Any = None, **extra: Any) -> Any:
        if parent is None:
            _ARGS.set(tuple(str(a) for a in args))
        try:
            return super().make_context(info_name, args, parent, **extra)
        except Exception as e:
            _redacted_usage_error(e)
            raise

    @override
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as e:  # a subcommand's own parsing, or an unknown name
            _redacted_usage_error(e)
            raise
