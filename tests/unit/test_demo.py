from __future__ import annotations

import json
import subprocess
import sys

from ctx_memory.demo import run_demo


def test_demo_runs_seed_001_flow(manager):
    lines: list[str] = []
    document = run_demo(manager, echo=lines.append)
    assert document["metadata"]["mode"] == "research"
    assert len(document["fetched_context"]["web_search"]) == 2
    assert len(document["fetched_context"]["js_scraping"]) == 1
    roles = [m["role"] for m in document["conversation_history"]]
    assert roles[:2] == ["user", "assistant"]
    assert document["conversation_history"][1]["metadata"]["model"]
    printed = "\n".join(lines)
    assert "Session document:" in printed
    assert "Memory stats:" in printed


def test_demo_console_script_runs_in_a_fresh_process(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ctx_memory.cli", "demo"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    stats = json.loads(
        result.stdout[result.stdout.rindex("Memory stats:") + len("Memory stats:") :]
    )
    assert stats["exists"] is True
    assert stats["message_count"] >= 4
