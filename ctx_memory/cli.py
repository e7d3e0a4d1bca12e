"""The ``ctx-memory`` command line."""

from __future__ import annotations

import typer

from ctx_memory.manager import ContextManager

__all__ = ["app", "main"]

app = typer.Typer(
    name="ctx-memory",
    help="Inspect and manage ctx_memory sessions on the configured store.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Inspect and manage ctx_memory sessions on the configured store."""


@app.command()
def demo(
    session_id: str = typer.Option("demo-session", help="Session id the demo writes."),
) -> None:
    """Run seed 001's flow (metadata, messages, search results, page text) and print it."""
    from ctx_memory.demo import run_demo  # noqa: PLC0415

    with ContextManager() as manager:
        run_demo(manager, session_id=session_id, echo=typer.echo)


def main() -> None:
    """Console-script entry point."""
    app()
