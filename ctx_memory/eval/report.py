"""``eval.md``: the result of :func:`~ctx_memory.eval.runner.run_eval` as Markdown tables.

Pure: a dict in, a string out. A figure the run could not produce (a layout this
ctx_memory does not have, a pair count of zero) is shown as "not available", never as 0.
"""

from __future__ import annotations

from typing import Any

from ctx_memory.eval.contenders import STABLE_RECALL

__all__ = ["NOT_AVAILABLE", "to_markdown"]

NOT_AVAILABLE = "not available"
DEFAULT = STABLE_RECALL


def _pct(value: float | None, digits: int = 1) -> str:
    return NOT_AVAILABLE if value is None else f"{value * 100:.{digits}f} %"


def _num(value: float | None, digits: int = 0) -> str:
    return NOT_AVAILABLE if value is None else f"{value:,.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _names(result: dict[str, Any]) -> list[str]:
    names = list(result["locomo"]["results"])
    if not result["available"]["layouts"] and DEFAULT not in names:
        names.insert(1, DEFAULT)
    return names


def _coverage(result: dict[str, Any]) -> list[str]:
    locomo = result["locomo"]
    budgets = [str(b) for b in result["settings"]["budgets"]]
    lines = [
        "## LoCoMo: gold turns in the prompt",
        "",
        f"{locomo['conversations']} conversations, {locomo['turns']:,} turns, "
        f"{locomo['questions']} of {locomo['questions_in_dataset']} questions, each asked "
        "after the whole conversation. Share of the turns holding the answer that are in "
        "the prompt, at each request budget:",
        "",
    ]
    rows = []
    for name in _names(result):
        per_budget = locomo["results"].get(name, {})
        rows.append(
            [name]
            + [_pct((per_budget.get(b) or {}).get("all", {}).get("gold_coverage")) for b in budgets]
        )
    lines += _table(["contender", *[f"{int(b):,} tokens" for b in budgets]], rows)
    lines += [
        "Per category (LoCoMo category: name), gold coverage / recall@5 / recall@10 / "
        "mean request tokens:",
        "",
    ]
    rows = []
    for name in _names(result):
        for budget in budgets:
            cats = locomo["results"].get(name, {}).get(budget)
            if cats is None:
                rows.append([name, budget, "all", NOT_AVAILABLE, "", "", "", ""])
                continue
            for category, row in cats.items():
                label = (
                    category
                    if category == "all"
                    else f"{category}: {locomo['categories'].get(category, '?')}"
                )
                rows.append(
                    [
                        name,
                        f"{int(budget):,}",
                        label,
                        str(row["questions"]),
                        _pct(row["gold_coverage"]),
                        _pct(row["recall@5"]),
                        _pct(row["recall@10"]),
                        _num(row["tokens_mean"]),
                    ]
                )
    header = [
        "contender",
        "budget",
        "category",
        "questions",
        "gold coverage",
        "recall@5",
        "recall@10",
        "tokens",
    ]
    lines += _table(header, rows)
    return lines


def _cache(result: dict[str, Any], part: str, title: str) -> list[str]:
    cache = result["cache"][part]
    lines = [
        f"## Cache stability: {title}",
        "",
        "Over consecutive requests longer than 2,000 tokens: mean share of request n+1 "
        "that is a common prefix with request n, and share of requests whose common "
        "prefix is at least 1,024 tokens.",
        "",
    ]
    rows = []
    names = list(cache)
    if not result["available"]["layouts"] and DEFAULT not in names:
        names.insert(1, DEFAULT)
    for name in names:
        per_budget = cache.get(name)
        if per_budget is None:
            rows.append([name, "", NOT_AVAILABLE, "", "", "", ""])
            continue
        for budget, row in per_budget.items():
            rows.append(
                [
                    name,
                    f"{int(budget):,}",
                    str(row["pairs"]),
                    _pct(row["mean_reuse"]),
                    _pct(row["share_cacheable"]),
                    _num(row["mean_prefix_tokens"]),
                    _num(row["mean_stable_prefix_tokens"]),
                ]
            )
    header = [
        "contender",
        "budget",
        "pairs",
        "mean prefix reuse",
        ">= 1,024 reusable",
        "mean prefix tokens",
        "reported stable prefix",
    ]
    return lines + _table(header, rows)


def _compaction(result: dict[str, Any]) -> list[str]:
    part = result.get("compaction")
    if part is None:
        return []
    lines = [
        "## Compaction: tool-heavy traces with planted facts",
        "",
        f"{part['sessions']} sessions of {part['tasks_per_session']} tasks "
        f"({part['messages']:,} messages), a fact planted in every tool output; "
        f"{part['model_calls_counted']:,} model calls once the history exceeds the "
        f"{part['budget']:,}-token budget. Prompt tokens as a share of the full history's; "
        "planted facts in the prompt, or restorable by the tool-call id the prompt names "
        "(only with a restore tool). Budget violations and orphans: the integrity table.",
        "",
    ]
    rows = [
        [
            name,
            _pct(row["prompt_share_mean"]),
            _pct(row["prompt_share_last"]),
            _pct(row["facts_in_prompt"]),
            _pct(row["facts_in_prompt_or_restorable"]),
            _integrity_cell(result, name),
        ]
        for name, row in part["results"].items()
    ]
    header = [
        "contender",
        "prompt / history (mean)",
        "at the last call",
        "facts in prompt",
        "in prompt or restorable",
        "over budget / orphans",
    ]
    return lines + _table(header, rows) + _compaction_requests(part) + _compaction_stress(part)


def _compaction_stress(part: dict[str, Any]) -> list[str]:
    stress = part.get("stress")
    if not stress or not stress.get("traces"):
        return []
    failed = stress["summarizer_raised"] + stress["summarizer_empty"]
    workers = stress.get("workers", 1)
    lines = [
        f"Integrity over {stress['traces']:,} small generated sessions "
        f"({stress['messages']:,} messages, {stress['prompts']:,} requests, "
        f"{_num(stress['wall_time_s'], 1)} s in {workers} process"
        f"{'es' if workers > 1 else ''}): one or two writers sharing a session "
        f"({stress['interleaved']:,} messages written while another writer's tool call "
        f"waited), {stress['parallel_calls']:,} AI messages with parallel tool calls, "
        f"{stress['pending_at_prompt']:,} requests built while a call was pending, random "
        f"policies, layouts and budgets, a second compactor now and then; the summariser "
        f"failed {failed:,} of {stress['summarizer_calls']:,} times "
        f"({stress['summarizer_raised']:,} raised, {stress['summarizer_empty']:,} returned "
        f"nothing); {stress['compactions_live']:,} compactions live at the end.",
        "",
    ]
    checks = [
        ("stored messages lost or altered", "messages_lost_or_altered"),
        ("orphan tool results in a request", "orphan_results"),
        ("unanswered tool calls in a request", "unanswered_calls"),
        ("requests over budget (recounted)", "budget_violations"),
        ("reported tokens != recount", "reported_mismatches"),
        ("summariser failures not reported", "failures_unreported"),
        ("compactions disagreeing with the history", "bad_compactions"),
        ("requests refused (tail alone over budget)", "tail_over_budget"),
    ]
    rows = [[label, f"{stress[key]:,}"] for label, key in checks]
    return lines + _table(["check (all should be 0)", "found"], rows)


def _compaction_requests(part: dict[str, Any]) -> list[str]:
    requests = part.get("compaction_requests")
    if not requests:
        return []
    lines = [
        f"`{requests['contender']}`: the default policy with a chat summariser given the live "
        f"request's messages. Its compaction requests: {requests['requests']:,}, of which "
        f"{requests['with_live_request']:,} follow a live request (the first of a session "
        "comes before any); their serialised tokens shared as a prefix with that live "
        f"request: {_pct(requests['prefix_share_mean'])} mean, "
        f"{_pct(requests['prefix_share_min'])} lowest (target >= 90 %).",
        "",
    ]
    row = requests.get("prompts")
    if row:
        lines += _table(
            ["variant", "prompt / history (mean)", "facts in prompt or restorable"],
            [
                [
                    requests["contender"],
                    _pct(row["prompt_share_mean"]),
                    _pct(row["facts_in_prompt_or_restorable"]),
                ]
            ],
        )
    return lines


def _integrity_cell(result: dict[str, Any], name: str) -> str:
    row = result["integrity"].get(name)
    if row is None:
        return NOT_AVAILABLE
    orphans = row["orphan_results"] + row["unanswered_calls"]
    return f"{row['budget_violations']} / {orphans}"


def _latency(result: dict[str, Any]) -> list[str]:
    latency = result["latency"]
    lines = [
        "## Latency",
        "",
        f"Assembly at a 4,000-token budget over a {latency['messages']:,}-message session "
        "(warm: one assembler reused; cold: a new assembler after a write). Writes: "
        f"{_num(latency['write_us_per_message_p50'], 1)} µs per message (p50), "
        f"{_num(latency['write_us_per_message_mean'], 1)} µs mean, one `add_messages` "
        "call per message on the in-memory store; keeping the recall index up to date, once "
        f"per turn before its assembly, takes {_num(latency.get('index_us_per_turn_p50'), 1)} "
        f"µs a turn (p50), {_num(latency.get('index_us_per_message_mean'), 1)} µs a message "
        f"on average: in all, {_num(latency.get('write_with_index_ratio'), 2)} times the "
        "writes alone.",
        "",
    ]
    rows = [
        [
            name,
            _num(row["warm_ms_p50"], 3),
            _num(row["warm_ms_p95"], 3),
            _num(row["cold_ms_p50"], 3),
            _num(row["cold_ms_p95"], 3),
        ]
        for name, row in latency["layouts"].items()
    ]
    if not result["available"]["layouts"]:
        rows.append([DEFAULT, *[NOT_AVAILABLE] * 4])
    header = ["layout", "warm p50 ms", "warm p95 ms", "cold p50 ms", "cold p95 ms"]
    return lines + _table(header, rows)


def _integrity(result: dict[str, Any]) -> list[str]:
    lines = [
        "## Integrity of every request",
        "",
        "Each request recounted from its serialised form with tiktoken and checked for "
        "tool results without their call and tool calls without their result.",
        "",
    ]
    rows = [
        [
            name,
            f"{row['prompts']:,}",
            str(row["budget_violations"]),
            str(row["max_over"]),
            str(row["orphan_results"]),
            str(row["unanswered_calls"]),
            str(row["reported_mismatches"]),
        ]
        for name, row in result["integrity"].items()
    ]
    header = [
        "contender",
        "requests",
        "over budget",
        "most over",
        "orphan results",
        "unanswered calls",
        "report != recount",
    ]
    return lines + _table(header, rows)


def _targets(result: dict[str, Any]) -> list[str]:
    lines = ["## Issue 12's targets", "", f"Measured on `{DEFAULT}`.", ""]
    rows = []
    for target in result["targets"]:
        value = target["value"]
        shown = (
            NOT_AVAILABLE
            if value is None
            else _pct(value)
            if target["unit"] == "share"
            else _num(value, {"ms": 3, "ratio": 2}.get(target["unit"], 0))
        )
        met = {True: "met", False: "NOT met", None: NOT_AVAILABLE}[target["met"]]
        rows.append([target["name"], shown, target["goal"], met])
    return lines + _table(["target", "measured", "goal", ""], rows)


def to_markdown(result: dict[str, Any]) -> str:
    """The eval's tables, in the order of ``docs/eval.md``."""
    settings = result["settings"]
    versions = ", ".join(f"{k} {v}" for k, v in result["versions"].items() if v)
    lines = [
        "# ctx-memory eval",
        "",
        f"Seed {result['seed']}; {'quick subset; ' if settings['quick'] else ''}"
        f"wall time {result['wall_time_s']:.0f} s; encoding {result['encoding']}; {versions}.",
        "",
    ]
    if not result["available"]["layouts"]:
        lines += [
            "This ctx_memory's assembler has no `layout` / `recall_share` parameters: the "
            "recall and cache-stable layout rows are not available; only the classic "
            "(recency) layout ran.",
            "",
        ]
    lines += _targets(result)
    lines += _coverage(result)
    lines += _cache(
        result,
        "locomo",
        "LoCoMo replays (a request at each of the last user turns of every conversation)",
    )
    traces = result["traces"]
    lines += _cache(
        result,
        "traces",
        f"agent traces ({traces['sessions']} sessions, {traces['model_calls']:,} model calls, "
        f"{traces['messages']:,} messages)",
    )
    lines += _compaction(result)
    lines += _latency(result)
    lines += _integrity(result)
    return "\n".join(lines)
