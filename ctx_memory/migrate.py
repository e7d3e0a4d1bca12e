"""Copy sessions between any two stores: ``ctx-memory migrate --from URL --to URL``.

:func:`open_store` builds a store from a URL (``memory://``, ``sqlite:///path`` or a file
path, ``redis://`` and its TLS, socket and Sentinel forms, ``postgresql://``), opened with no
TTL and no session limit, so nothing expires or is evicted while it is copied.

:func:`migrate` copies each session whole (one atomic write per session on the target, token
counts recomputed exactly in the session's own encoding) and then checks every copied
session's message, token and fetched-item counts on the target against the source.

It is resumable: a session the target already holds exactly as it would be written (every
message, count, fetched item, the prompt, metadata and ``shared``) is skipped, so running
the command again after an interruption continues where it stopped. A session the target
holds with *any* difference is a conflict: left alone (and reported) unless ``overwrite`` is
given, so a migration never silently replaces newer data. A session no store would accept
as it is (an import would refuse it too) is reported as failed, naming the field, and the
others are copied.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import unquote, urlsplit, urlunsplit

import typer

from ctx_memory.config import redact_url
from ctx_memory.errors import ConfigurationError, CtxMemoryError, DocumentImportError
from ctx_memory.records import encode_document
from ctx_memory.schema import parse_document
from ctx_memory.stores.ops import (
    DeleteSession,
    GetDocument,
    GetFetched,
    GetHeader,
    ListPage,
    ReplaceDocument,
)
from ctx_memory.tokens import APPROXIMATE, TokenCounter

if TYPE_CHECKING:
    from collections.abc import Callable

    from ctx_memory.stores.base import BaseStore, Header

__all__ = ["MigrationReport", "migrate", "migrate_command", "open_store"]

_REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel")
# "host=… password=…" (quoted or not), not a path
_LIBPQ_KEYWORD = re.compile(
    r"^[\s'\"]*[A-Za-z_]+\s*=|(?:^|\s)(?:password|passfile|sslpassword)\s*=", re.IGNORECASE
)
# "redis:/…", "postgresql:…": a URL missing its "//", not a file name
_SCHEME_TYPO = re.compile(
    r"\s*(?:memory|sqlite|rediss?|unix|rediss?\+sentinel|postgres(?:ql)?):", re.IGNORECASE
)
_POSTGRES_SCHEMES = ("postgresql", "postgres")


def _take(url: str, *names: str) -> tuple[str, dict[str, str]]:
    """``url`` without the query parameters ``names``, and their values.

    A value is %-decoded only: a ``+`` stays a ``+`` (a key prefix may hold one; form
    decoding would read it as a space and open another, empty prefix). The other
    parameters are left as written, for the driver.
    """
    parts = urlsplit(url)
    taken: dict[str, str] = {}
    rest: list[str] = []
    for piece in parts.query.split("&") if parts.query else ():
        key, _, value = piece.partition("=")
        if unquote(key) in names:
            taken[unquote(key)] = unquote(value)
        else:
            rest.append(piece)
    return urlunsplit(parts._replace(query="&".join(rest))), taken


def open_store(url: str, *, existing: bool = False) -> BaseStore:
    """The store a URL names, with no TTL and no session limit (nothing expires meanwhile).

    * ``memory://``: a new in-memory store (empty);
    * ``sqlite:///absolute/path.sqlite3``, ``sqlite://relative/path`` or a plain file path;
    * ``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://``: a Redis store; the
      query parameters ``key_prefix`` (default ``ctx_memory``) and ``cluster=true`` select
      the data and the client;
    * ``postgresql://``: a PostgreSQL store; ``schema`` (default ``ctx_memory``) selects it.

    With ``existing`` (a source), a SQLite file must already exist: a typo is not an
    empty store.

    Raises:
        ConfigurationError: An unknown scheme (the message lists the known ones; the URL is
            shown with its password masked), no SQLite path, a missing source file, or a
            libpq ``key=value`` string (never shown: it may hold a password).
    """
    try:
        scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    except ValueError as e:  # an unbalanced [ of an IPv6 host, say
        raise ConfigurationError("URL", f"{redact_url(url)!r} is not a valid URL: {e}") from None
    if not scheme and _LIBPQ_KEYWORD.search(url):
        msg = "a libpq key=value string is not a URL; use postgresql://… (the value is not shown)"
        raise ConfigurationError("URL", msg)
    if not scheme and _SCHEME_TYPO.match(url):
        msg = f"{redact_url(url)!r} is not a URL nor a file name: write the scheme with '://'"
        raise ConfigurationError("URL", msg)
    if scheme == "memory":
        from ctx_memory.stores.memory import InMemoryStore  # noqa: PLC0415

        return InMemoryStore()
    if scheme in ("", "sqlite"):
        from ctx_memory.stores.sqlite import SqliteStore  # noqa: PLC0415

        path = url if not scheme else url.split("://", 1)[1]
        if not path.strip():
            raise ConfigurationError("URL", f"{url!r} names no SQLite file")
        if existing and not Path(path).is_file():
            raise ConfigurationError("URL", f"no SQLite file at {path!r}")
        return SqliteStore(path)
    if scheme in _REDIS_SCHEMES:
        from ctx_memory.stores.redis import RedisStore  # noqa: PLC0415

        plain, options = _take(url, "key_prefix", "cluster")
        return RedisStore(
            plain,
            key_prefix=options.get("key_prefix", "ctx_memory"),
            cluster=options.get("cluster", "").lower() in ("1", "true", "yes"),
        )
    if scheme in _POSTGRES_SCHEMES:
        from ctx_memory.stores.postgres import PostgresStore  # noqa: PLC0415

        plain, options = _take(url, "schema")
        return PostgresStore(plain, schema=options.get("schema", "ctx_memory"))
    known = (
        "memory://, sqlite:///path, redis://, rediss://, unix://, redis+sentinel://, postgresql://"
    )
    msg = f"cannot open {redact_url(url)!r}: unknown scheme {scheme!r} (known: {known})"
    raise ConfigurationError("URL", msg)


@dataclass
class MigrationReport:
    """What :func:`migrate` did.

    Attributes:
        sessions: Sessions the source held (with the prefix).
        copied: Sessions written to the target.
        skipped: Sessions the target already held exactly as they would be written (an
            earlier run).
        conflicts: Sessions the target held with any difference, left alone.
        failed: ``(session id, reason)`` of the sessions that could not be written as they
            are (a value every store refuses, such as a malformed compaction entry).
        vanished: Sessions that expired or were deleted on the source while copying.
        messages: Messages in the copied and skipped sessions.
        tokens: Their tokens (``metadata.token_count`` summed).
        fetched_items: Their fetched items.
        mismatches: Sessions whose counts on the target differ from what was written.
        recounted: Sessions whose stored counts differ from the recount written (counted by
            a release with other rules, or holding a message id twice): their messages are
            copied all the same, with exact counts.
    """

    sessions: int = 0
    copied: int = 0
    skipped: int = 0
    conflicts: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)
    messages: int = 0
    tokens: int = 0
    fetched_items: int = 0
    mismatches: list[str] = field(default_factory=list)
    recounted: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every session is on the target with the source's counts."""
        return not self.conflicts and not self.mismatches and not self.failed

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return {
            "sessions": self.sessions,
            "copied": self.copied,
            "skipped": self.skipped,
            "conflicts": self.conflicts,
            "failed": [{"session_id": sid, "error": error} for sid, error in self.failed],
            "vanished": self.vanished,
            "messages": self.messages,
            "tokens": self.tokens,
            "fetched_items": self.fetched_items,
            "mismatches": self.mismatches,
            "recounted": self.recounted,
            "ok": self.ok,
        }


def _counts(header: Header | None, items: int) -> tuple[int, ...]:
    """What a session holds: messages, tokens, fetched items (``()``: no session)."""
    if header is None:
        return ()
    meta = header["metadata"]
    return int(meta["message_count"]), int(meta["token_count"]), items


def _held(
    target: BaseStore, session_id: str, counters: dict[str, TokenCounter]
) -> ReplaceDocument | str | None:
    """The write that would give ``target``'s copy of the session as it is (``None``: none).

    A copy that cannot be read back as a document is the error's text: it differs from
    any write.
    """
    document = target.execute(GetDocument(session_id))
    if document is None:
        return None
    try:
        return _encoded(session_id, document, counters)
    except DocumentImportError as e:
        return str(e)


def _on(target: BaseStore, session_id: str) -> tuple[int, ...]:
    """The counts of ``session_id`` on ``target``."""
    fetched = target.execute(GetFetched(session_id))
    return _counts(target.execute(GetHeader(session_id)), sum(map(len, fetched.values())))


def _copy(target: BaseStore, write: ReplaceDocument, *, anew: bool) -> None:
    """Write a session; ``anew``: deleted first, so that it is indexed.

    For one the target holds but does not list: a Redis Cluster write cut off (a kill)
    between the session and its index entry, which a write of a session that exists does
    not add.
    """
    if anew:
        target.execute(DeleteSession(write.session_id))
    target.execute(write)


def _session_ids(store: BaseStore, prefix: str, page: int) -> list[str]:
    ids: list[str] = []
    cursor: str | None = None
    while True:
        batch = store.execute(ListPage(page, prefix, cursor))
        ids += batch
        if len(batch) < page:
            return ids
        cursor = batch[-1]


def migrate(
    source: BaseStore,
    target: BaseStore,
    *,
    prefix: str = "",
    overwrite: bool = False,
    page_size: int = 500,
    on_session: Callable[[str], None] | None = None,
) -> MigrationReport:
    """Copy every session (starting with ``prefix``) from ``source`` to ``target``.

    Args:
        source: Where the sessions are.
        target: Where they go.
        prefix: Only sessions whose id starts with it.
        overwrite: Replace sessions the target holds with any difference (else: conflicts).
        page_size: Session ids listed per page.
        on_session: Called with each session id once it is handled (a progress bar).

    Returns:
        The report; ``report.ok`` is false if a session could not be copied as it is.
    """
    report = MigrationReport()
    counters: dict[str, TokenCounter] = {}
    ids = _session_ids(source, prefix, page_size)
    listed = set(_session_ids(target, prefix, page_size))
    report.sessions = len(ids)
    for session_id in ids:
        document = source.execute(GetDocument(session_id))
        if document is None:
            report.vanished.append(session_id)
        else:
            try:
                write = _encoded(session_id, document, counters)
            except DocumentImportError as e:
                report.failed.append((session_id, str(e)))
                if on_session is not None:
                    on_session(session_id)
                continue
            stored: Header = {
                "system_prompt": document["system_prompt"],
                "metadata": document["metadata"],
                "shared": document["shared"],
            }
            expected = _counts(write.header, len(write.items))
            if expected != _counts(stored, sum(map(len, document["fetched_context"].values()))):
                report.recounted.append(session_id)
            there = _held(target, session_id, counters)
            if there == write and session_id in listed:
                report.skipped += 1
            elif there is not None and there != write and not overwrite:
                report.conflicts.append(session_id)
            else:
                _copy(target, write, anew=there is not None and session_id not in listed)
                report.copied += 1
                if _on(target, session_id) != expected:
                    report.mismatches.append(session_id)
            if session_id not in report.conflicts:
                report.messages += expected[0]
                report.tokens += expected[1]
                report.fetched_items += expected[2]
        if on_session is not None:
            on_session(session_id)
    return report


def _encoded(
    session_id: str, document: dict[str, Any], counters: dict[str, TokenCounter]
) -> ReplaceDocument:
    """The write of ``document`` as ``session_id``, counted with the session's own encoding.

    Counts are recomputed, as every import does (one message id stored once; today's
    counting rules, which a release before may not have had: the report lists the
    sessions whose stored counts differed as ``recounted``).
    """
    parsed = parse_document(document)
    encoding = parsed.metadata.token_encoding
    counter = counters.get(encoding)
    if counter is None:
        counter = counters[encoding] = (
            TokenCounter(approximate=True)  # a session counted with TOKEN_COUNTER=approximate
            if encoding == APPROXIMATE
            else TokenCounter(encoding=encoding)
        )
    header, messages, items = encode_document(parsed, session_id, counter)
    return ReplaceDocument(session_id, header, messages, items)


# ------------------------------------------------------------------ the command


def migrate_command(
    source: Annotated[
        str, typer.Option("--from", help="The store to copy from (URL or SQLite path).")
    ],
    target: Annotated[str, typer.Option("--to", help="The store to copy to (URL or path).")],
    prefix: Annotated[str, typer.Option(help="Only sessions whose id starts with this.")] = "",
    overwrite: Annotated[
        bool,
        typer.Option(help="Replace sessions the target holds with any difference."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Copy sessions between two stores, resumably, and verify counts and token totals.

    URLs: memory://, sqlite:///path (or a path), redis://…?key_prefix=P, rediss://,
    redis+sentinel://, postgresql://…?schema=S. Run it again after an interruption: the
    sessions already copied are skipped. Exits 1 if a session differs on the target or
    cannot be copied as it is.
    """
    from rich.console import Console  # noqa: PLC0415
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn  # noqa: PLC0415

    from ctx_memory.cli._output import quiet_pool_logs  # noqa: PLC0415 - the CLI imports this

    quiet_pool_logs()
    where = f"{redact_url(source)} -> {redact_url(target)}"
    try:
        with open_store(source, existing=True) as src, open_store(target) as dst:
            console = Console(stderr=True)
            with Progress(
                TextColumn("migrating"),
                BarColumn(),
                MofNCompleteColumn(),
                console=console,
                transient=True,
                disable=not sys.stderr.isatty(),
            ) as progress:
                task = progress.add_task("migrate", total=None)

                def advance(_session_id: str) -> None:
                    progress.advance(task)

                report = migrate(src, dst, prefix=prefix, overwrite=overwrite, on_session=advance)
    except CtxMemoryError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2 if isinstance(e, ConfigurationError) else 1) from None
    if as_json:
        typer.echo(json.dumps(report.as_dict(), ensure_ascii=False))
    else:
        typer.echo(
            f"{where}: {report.sessions} session(s): {report.copied} copied,"
            f" {report.skipped} already there, {len(report.conflicts)} conflict(s),"
            f" {len(report.failed)} failed,"
            f" {len(report.vanished)} gone meanwhile; {report.messages} messages,"
            f" {report.tokens} tokens, {report.fetched_items} fetched items verified"
        )
    for session_id in report.conflicts:
        typer.echo(
            f"conflict: {session_id!r}: the target's copy differs from the source's"
            " (one of them changed since it was copied; --overwrite replaces the target's)",
            err=True,
        )
    for session_id, error in report.failed:
        typer.echo(f"failed: {session_id!r}: {error}", err=True)
    for session_id in report.mismatches:
        typer.echo(
            f"mismatch: {session_id!r} has other counts on the target after copying", err=True
        )
    for session_id in report.recounted:
        typer.echo(
            f"recounted: {session_id!r} was stored with other counts; copied with exact ones",
            err=True,
        )
    if not report.ok:
        raise typer.Exit(1)
