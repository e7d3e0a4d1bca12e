"""``ctx-memory reindex``: rebuild the saved recall index of sessions from their history.

The recall index is kept in the process and saved in the store beside each long session
(:mod:`ctx_memory.recall`, "Saved segments"), and rebuilt on its own when missing or
stale. This command rebuilds it ahead of time: after an import or a ``migrate`` (segments
are not copied), or to replace saved segments of an older ``recall_terms`` version, so the
first request of each worker does not pay for it.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ctx_memory.recall import Recall

__all__ = ["reindex_command"]


def reindex_command(
    ctx: typer.Context,
    session_ids: Annotated[
        list[str] | None, typer.Argument(help="Sessions to reindex (or give --all).")
    ] = None,
    *,
    every: Annotated[bool, typer.Option("--all", help="Reindex every session.")] = False,
) -> None:
    """Rebuild the saved recall index of SESSION_IDS (or --all) from their history.

    Each session's index is built from its stored messages and saved in the store in one
    segment, instead of whatever was saved; sessions shorter than 256 messages are not
    saved (they are indexed in milliseconds). Stored messages are only read.
    """
    from ctx_memory.cli import _open  # noqa: PLC0415 - ctx_memory.cli imports this module
    from ctx_memory.cli._output import _fail, printable  # noqa: PLC0415

    if bool(session_ids) == every:
        _fail("name the sessions to reindex, or pass --all (not both)", code=2)
    with _open(ctx) as manager:
        if not manager.store.keeps_recall_segments:
            _fail(
                f"the {manager.store.name!r} store does not keep a saved recall index "
                "(keeps_recall_segments is false): each process builds it from the history"
            )
        ids = manager.list_sessions() if every else list(dict.fromkeys(session_ids or ()))
        recall = Recall(max_sessions=1)  # nothing kept beyond the session at hand
        saved = short = 0
        for session_id in ids:
            if not manager.session_exists(session_id):
                _fail(f"session {session_id!r} does not exist (never created, deleted or expired)")
            count = recall.reindex(manager, session_id)
            recall.forget(session_id)
            if count:
                saved += 1
                typer.echo(f"{printable(session_id)}: {count:,} messages indexed and saved")
            else:
                short += 1
                typer.echo(f"{printable(session_id)}: shorter than {recall.save_every}, not saved")
    typer.echo(f"{saved} saved, {short} not saved (short)")
