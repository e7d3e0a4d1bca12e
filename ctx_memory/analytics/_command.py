"""``ctx-memory analytics``: the report on the command line (registered in ``ctx_memory.cli``)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path  # noqa: TC003 - typer reads the annotation at runtime
from typing import Annotated

import typer

from ctx_memory.analytics._aggregate import as_utc
from ctx_memory.analytics._scan import analyze

__all__ = ["analytics_command", "parse_instant"]


def parse_instant(value: str, option: str) -> datetime:
    """``--since`` / ``--until``: an ISO date or date-time, as UTC (without a zone it is UTC).

    Raises:
        typer.BadParameter: Not an ISO-8601 date or date-time, or one without a UTC
            equivalent (``0001-01-01T00:00+05:00`` is in year 0 in UTC).
    """
    try:
        instant = datetime.fromisoformat(value.strip())
    except ValueError:
        msg = f"{value!r} is not an ISO date or date-time (e.g. 2026-03-01 or 2026-03-01T12:00Z)"
        raise typer.BadParameter(msg, param_hint=option) from None
    try:
        return as_utc(instant)
    except ValueError:
        msg = f"{value!r} falls outside the years 1 to 9999 once converted to UTC"
        raise typer.BadParameter(msg, param_hint=option) from None


def analytics_command(
    ctx: typer.Context,
    *,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Only sessions that started at or after this ISO date/time (UTC if no zone).",
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until",
            help="Only sessions that started before this ISO date/time (exclusive).",
        ),
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option("--mode", help="Only sessions with this metadata mode (e.g. research)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON instead of tables.")
    ] = False,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html",
            help="Also write the report as an HTML page with charts to this file.",
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Figures across sessions: activity per day, tokens, models and latency, sources, tools.

    Reads every session once (a progress bar on stderr when it is a terminal). Sessions
    are selected by when they started: --since inclusive, --until exclusive.
    """
    # ctx_memory.cli imports this module to register the command: import it back late.
    from ctx_memory.cli import _open  # noqa: PLC0415
    from ctx_memory.cli._output import _fail, _note, printable  # noqa: PLC0415

    start = parse_instant(since, "--since") if since is not None else None
    end = parse_instant(until, "--until") if until is not None else None
    with _open(ctx) as manager:
        report = analyze(manager, since=start, until=end, mode=mode, progress=True)
    if html is not None:
        page = (
            '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            "<title>ctx_memory analytics</title></head><body>"
            f"{report.to_html()}</body></html>\n"
        )
        try:
            html.write_text(page, encoding="utf-8")
        except OSError as e:
            _fail(f"cannot write {html}: {e.strerror or e}")
        _note(f"wrote {html}")
    if as_json:
        typer.echo(json.dumps(report.as_dict(), ensure_ascii=False, indent=2))
    else:
        typer.echo(printable(report.to_markdown(), multiline=True), nl=False)
