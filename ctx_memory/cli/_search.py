"""``ctx-memory search`` and ``ctx-memory prompt``: look into a session as the model would.

``search`` finds the stored messages that best match some words, however old
(:func:`ctx_memory.recall.search_history`); ``prompt`` shows the prompt the assembler would
send for a question, with its report (what was recalled and why, what was left out),
without calling a model or writing anything.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from ctx_memory.recall import MAX_SEARCH_HITS, record_text, search_history

if TYPE_CHECKING:
    from collections.abc import Mapping

    from langchain_core.messages import BaseMessage

    from ctx_memory.assembly.report import AssemblyReport

__all__ = ["prompt_command", "search_command"]

EXCERPT = 300
"""Characters of a message's text shown without ``--full``."""


def _text(record: Mapping[str, Any], full: bool) -> str:
    text = record_text(record)
    return text if full or len(text) <= EXCERPT else text[:EXCERPT] + " …"


def search_command(
    ctx: typer.Context,
    session_id: Annotated[str, typer.Argument(help="The session to search.")],
    query: Annotated[str, typer.Argument(help="Words to look for.")],
    *,
    limit: Annotated[
        int,
        typer.Option("--limit", "-k", min=1, max=MAX_SEARCH_HITS, help="Most messages to show."),
    ] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print the hits as JSON.")] = False,
    full: Annotated[bool, typer.Option("--full", help="Do not shorten long content.")] = False,
) -> None:
    """Find the stored messages that best match QUERY, best first, however old.

    The search recall uses (BM25 over folded, stemmed words): each hit shows its position
    in the history, its role, its score and the query's words it contains.
    """
    from ctx_memory.cli import _open  # noqa: PLC0415 - ctx_memory.cli imports this module
    from ctx_memory.cli._output import _fail, printable  # noqa: PLC0415

    with _open(ctx) as manager:
        if not manager.session_exists(session_id):
            _fail(f"session {session_id!r} does not exist (never created, deleted or expired)")
        hits = search_history(manager, session_id, query, k=limit)
    if as_json:
        payload = {"session_id": session_id, "query": query, "hits": [h.as_dict() for h in hits]}
        typer.echo(json.dumps(payload, ensure_ascii=False, indent=2))
        return
    if not hits:
        typer.echo("no message matches")
        return
    for hit in hits:
        role = printable(str(hit.message.get("role")))
        terms = ", ".join(printable(term) for term in hit.terms)
        typer.echo(f"[{hit.position} {role}] score {hit.score:.2f} · {terms}")
        typer.echo("  " + printable(_text(hit.message, full), multiline=True))


def _message_text(message: BaseMessage) -> str:
    lines = [str(message.text)]
    for call in getattr(message, "tool_calls", None) or ():
        args = json.dumps(call.get("args") or {}, ensure_ascii=False)
        lines.append(f"[calls {call.get('name')}({args}), id {call.get('id')}]")
    return "\n".join(line for line in lines if line)


def _summary(report: AssemblyReport) -> list[str]:
    lines = [
        f"{report.total_tokens:,} of {report.budget:,} tokens ({report.layout} layout): "
        f"system {report.system_tokens:,}, sources {report.sources_tokens:,}, "
        f"history {report.history_tokens:,}, question {report.question_tokens:,}, "
        f"priming {report.priming_tokens}",
        f"history: {report.history_messages} messages in the prompt, "
        f"{report.history_left_out_messages} left out ({report.history_left_out_tokens:,} tokens)",
    ]
    if report.stable_prefix_tokens:
        lines.append(f"stable prefix: {report.stable_prefix_tokens:,} tokens")
    for entry in report.recalled:
        terms = ", ".join(str(t) for t in entry.get("terms") or ())
        lines.append(f"recalled: message {entry.get('index')} ({terms})")
    lines.extend(
        f"compaction: messages {c.get('first_index')}-{c.get('last_index')} summarised "
        f"({c.get('tokens_covered'):,} -> {c.get('summary_tokens'):,} tokens)"
        for c in report.compactions
    )
    lines.extend(f"note: {note}" for note in report.compaction_notes)
    return lines


def prompt_command(
    ctx: typer.Context,
    session_id: Annotated[str, typer.Argument(help="The session to assemble from.")],
    question: Annotated[str, typer.Argument(help="The question the prompt is for.")],
    *,
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", min=1, help="The model's context size.")
    ] = 8000,
    reserve_tokens: Annotated[
        int, typer.Option("--reserve-tokens", min=0, help="Tokens kept free for the reply.")
    ] = 1000,
    layout: Annotated[
        Literal["classic", "stable"],
        typer.Option("--layout", help="classic, or stable (cache-friendly prefix)."),
    ] = "classic",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print messages, sources and report as JSON.")
    ] = False,
) -> None:
    """Show the prompt the assembler would send for QUESTION, and its report.

    Nothing is written and no model is called: the session's system prompt, sources,
    recalled turns and history window within the budget, then the question.
    """
    from ctx_memory.cli import _open  # noqa: PLC0415 - ctx_memory.cli imports this module
    from ctx_memory.cli._output import _fail, printable  # noqa: PLC0415
    from ctx_memory.prompt import ContextPromptAssembler  # noqa: PLC0415

    if reserve_tokens >= max_tokens:
        msg = f"must be below --max-tokens ({max_tokens})"
        raise typer.BadParameter(msg, param_hint="--reserve-tokens")
    with _open(ctx) as manager:
        if not manager.session_exists(session_id):
            _fail(f"session {session_id!r} does not exist (never created, deleted or expired)")
        assembler = ContextPromptAssembler(
            manager, max_tokens=max_tokens, reserve_tokens=reserve_tokens, layout=layout
        )
        prompt = assembler.assemble(session_id, question)
    if as_json:
        shown = {"session_id": session_id, "question": question, **prompt.as_dict()}
        typer.echo(json.dumps(shown, ensure_ascii=False, indent=2))  # as GET .../prompt
        return
    for message, sent in zip(prompt.messages, prompt.as_dict()["messages"], strict=True):
        typer.echo(f"── {printable(str(sent['role']))} ──")
        typer.echo(printable(_message_text(message), multiline=True))
    typer.echo("──")
    for line in _summary(prompt.report):
        typer.echo(printable(line))
