r"""The ``ctx-memory`` command line.

Every command works on the store that settings select (``STORE``, ``SQLITE_PATH``,
``REDIS_URL``, ``POSTGRES_URL`` from ``settings.toml`` / ``CTX_MEMORY_*``); the global
options ``--store``, ``--sqlite-path``, ``--redis-url`` and ``--postgres-url`` override them
for one invocation (each of the last three implies its store).

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
import shlex
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path  # noqa: TC003 - typer reads the annotations at run time
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from ctx_memory.analytics._command import analytics_command
from ctx_memory.cli._files import (  # noqa: F401 - re-exported
    InputFileError,
    ParsedDocument,
    _check_capacity,
    _document_problem,
    _json_kind,
    _not_an_object,
    _read_input,
    _undo,
    _validate_all,
    _write_all,
    read_documents,
)
from ctx_memory.cli._output import (  # noqa: F401 - _fail, _note, printable: used by other commands
    RedactingGroup,
    _count,
    _dump_line,
    _fail,
    _note,
    _output,
    _print_session,
    _progress,
    _stdout_console,
    _text,
    printable,
    quiet_pool_logs,
    run_writing_stdout,
)
from ctx_memory.cli._reindex import reindex_command
from ctx_memory.cli._search import prompt_command, search_command
from ctx_memory.config import BUILTIN_STORES, Settings, load_settings
from ctx_memory.display import SessionView
from ctx_memory.errors import (
    ConfigurationError,
    CtxMemoryError,
    ValidationError,
)
from ctx_memory.eval._command import eval_command
from ctx_memory.manager import ContextManager
from ctx_memory.migrate import migrate_command
from ctx_memory.schema import exported
from ctx_memory.server.cli import serve

if TYPE_CHECKING:
    from collections.abc import Iterator


__all__ = ["InputFileError", "ParsedDocument", "app", "main", "printable", "read_documents"]

_MEMORY_NOTE = (
    "The in-memory store (the default) lives only as long as one command, so on it the "
    "commands below see an empty store; use --store sqlite or --store redis (or "
    "CTX_MEMORY_STORE) for sessions that persist between commands."
)

app = typer.Typer(
    name="ctx-memory",
    cls=RedactingGroup,
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
sessions_app = typer.Typer(
    help="List sessions.", no_args_is_help=True, rich_markup_mode="markdown", cls=RedactingGroup
)
app.add_typer(sessions_app, name="sessions")
app.command("serve")(serve)  # ctx_memory/server/cli.py: imports the server extra when run
app.command("analytics")(analytics_command)
app.command("migrate")(migrate_command)
app.command("eval")(eval_command)  # ctx_memory/eval: imports the bench group when run
app.command("search")(search_command)
app.command("prompt")(prompt_command)
app.command("reindex")(reindex_command)


@dataclass(frozen=True)
class _Options:
    """Global options: setting overrides for :class:`ContextManager`."""

    store: str | None = None  # a built-in or registered store; settings validate it
    sqlite_path: Path | None = None
    redis_url: str | None = field(default=None, repr=False)  # may hold a password
    postgres_url: str | None = field(default=None, repr=False)  # may hold a password
    max_sessions: int | None = None

    def implied_stores(self) -> list[str]:
        """The stores that ``--sqlite-path``, ``--redis-url`` and ``--postgres-url`` imply."""
        given = (
            ("sqlite", self.sqlite_path),
            ("redis", self.redis_url),
            ("postgres", self.postgres_url),
        )
        return [name for name, value in given if value is not None]

    def settings(self) -> Settings:
        """Settings from files and environment with these options applied."""
        return load_settings(**self.overrides())

    def overrides(self) -> dict[str, Any]:
        store = self.store
        if store is None:
            implied = self.implied_stores()
            store = implied[0] if len(implied) == 1 else None
        values: dict[str, Any] = {}
        if store is not None:
            # Built-in names in any case (--store Redis); a third-party store's entry point
            # name exactly as registered, as STORE takes it in settings.
            store = store.lower() if store.lower() in BUILTIN_STORES else store
            values["store"] = store
            values["use_redis_caching"] = store == "redis"
        if self.sqlite_path is not None:
            values["sqlite_path"] = str(self.sqlite_path)
        if self.redis_url is not None:
            values["redis_url"] = self.redis_url
        if self.postgres_url is not None:
            values["postgres_url"] = self.postgres_url
        if self.max_sessions is not None:  # 0: no limit
            values["max_sessions"] = self.max_sessions
        return values


# --------------------------------------------------------------------------- helpers


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
    quiet_pool_logs()
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


# --------------------------------------------------------------------------- reading files


# --------------------------------------------------------------------------- commands


@app.callback()
def _root(
    ctx: typer.Context,
    *,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            help=(
                "Backend to use, overriding STORE: memory, sqlite, redis, postgres or a store"
                " installed through the ctx_memory.stores entry point. Default: from settings."
            ),
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
    postgres_url: Annotated[
        str | None,
        typer.Option(
            "--postgres-url",
            help="A postgresql:// URL, overriding POSTGRES_URL "
            "(implies --store postgres). Prefer CTX_MEMORY_POSTGRES_URL for passwords.",
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
    options = _Options(
        store=store,
        sqlite_path=sqlite_path,
        redis_url=redis_url,
        postgres_url=postgres_url,
        max_sessions=max_sessions,
    )
    implied = options.implied_stores()
    if store is None and len(implied) > 1:
        flags = {"sqlite": "--sqlite-path", "redis": "--redis-url", "postgres": "--postgres-url"}
        msg = f"give --store when passing {' and '.join(flags[name] for name in implied)}"
        raise typer.BadParameter(msg, param_hint="--store")
    if isinstance(ctx.obj, ContextManager):  # embedded use: an existing manager
        return
    ctx.obj = options


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
    ids = list(dict.fromkeys(session_ids or []))  # an id given twice is exported once
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
    run_writing_stdout(app)


if __name__ == "__main__":
    main()
