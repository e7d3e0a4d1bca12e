"""Prompt assembly over a long session vs. the usual ways of fitting history into a budget.

Run: ``uv sync --group bench && uv run python benchmarks/bench_assembly.py``
(``--messages``, ``--sources``, ``--budget``, ``--llama-messages``, ``--repeat`` to vary).

On the same data, in one run:

* **ctx_memory**: ``ContextPromptAssembler.assemble`` on the in-memory store: system
  prompt + header, the 100 sources ranked with BM25 and cut to 400 tokens each, then as
  much of the 10,000-message history as fits, newest whole turns first, and the
  question; the result is LangChain messages plus a report. Also timed without sources
  (history only), which is what the other contenders do.
* **trim_messages**: langchain-core's ``trim_messages(strategy="last")`` over the same
  10,000 LangChain messages with a tiktoken counter (``TokenCounter.count_chat``, the
  same counting convention).
* **LlamaIndex**: ``ChatMemoryBuffer.get()`` with an 8,000-token limit over 2,000 of the
  messages (it re-counts the kept history for every message it drops, so its cost grows
  quadratically with the length of the history; 10,000 would take minutes).
* **physical limit**: summing precomputed per-message token counts from the newest
  message back until the budget is full, and nothing else.

Each figure is the median of ``--repeat`` runs after one warm-up run (the first
ctx_memory run, cold caches included, is printed too).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
import warnings
from typing import TYPE_CHECKING, Any

os.environ.setdefault("TIKTOKEN_CACHE_DIR", "/work/shared/tiktoken-cache")

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, trim_messages

from ctx_memory import ContextManager, ContextPromptAssembler, InMemoryStore, TokenCounter

if TYPE_CHECKING:
    from collections.abc import Callable

VOCABULARY = (
    "flight fare paris rome booking hotel cheap early economy flexible refund date airport "
    "luggage visa museum train ticket weather budget itinerary restaurant the a of to and in "
    "is for on with that this it be are from at as by your we you can will"
)
WORDS = VOCABULARY.split()


def sentence(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high))).capitalize() + "."


def make_history(n: int, rng: random.Random) -> list[BaseMessage]:
    return [
        HumanMessage(sentence(rng, 8, 40)) if i % 2 == 0 else AIMessage(sentence(rng, 20, 90))
        for i in range(n)
    ]


def make_sources(n: int, rng: random.Random) -> list[dict[str, Any]]:
    return [
        {
            "source_type": "web_search" if i % 3 else "js_scraping",
            "content": " ".join(sentence(rng, 10, 30) for _ in range(rng.randint(10, 40))),
            "url": f"https://site{i}.example/page",
            "extracted_data": {"title": sentence(rng, 3, 8), "site_name": f"Site {i}"},
        }
        for i in range(n)
    ]


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    """(first run, median of the next ``repeat`` runs) in milliseconds, and the last result."""
    start = time.perf_counter()
    result = fn()
    first = (time.perf_counter() - start) * 1000
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        runs.append((time.perf_counter() - start) * 1000)
    return first, statistics.median(runs), result


def llama_buffer(history: list[BaseMessage], budget: int) -> Callable[[], Any] | None:
    try:
        from llama_index.core.llms import ChatMessage
        from llama_index.core.memory import ChatMemoryBuffer
    except ImportError:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        messages = [
            ChatMessage(role="user" if m.type == "human" else "assistant", content=m.content)
            for m in history
        ]
        buffer = ChatMemoryBuffer.from_defaults(token_limit=budget, chat_history=messages)
    return buffer.get


def measure_llama(
    history: list[BaseMessage], question: str, args: argparse.Namespace
) -> tuple[list[tuple[str, float, int | None]], str]:
    """LlamaIndex's ChatMemoryBuffer.get() and ctx_memory on the newest ``--llama-messages``."""
    rows: list[tuple[str, float, int | None]] = []
    llama_note = "skipped"
    small = history[-args.llama_messages :]
    if not args.skip_llama and (get := llama_buffer(small, args.budget)) is not None:
        small_manager = ContextManager(store=InMemoryStore())
        small_manager.add_messages("bench", small)
        ours_small = ContextPromptAssembler(
            small_manager, max_tokens=args.budget, reserve_tokens=0, include_header=False
        )
        _, ours_small_ms, _ = timed(lambda: ours_small.assemble("bench", question), args.repeat)
        _, llama, kept = timed(get, 1)
        rows += [
            (f"ctx_memory, {len(small):,} messages", ours_small_ms, None),
            (f"LlamaIndex ChatMemoryBuffer.get(), {len(small):,}", llama, len(kept)),
        ]
        llama_note = f"{llama / ours_small_ms:,.0f}x slower than ctx_memory at {len(small):,}"
    elif not args.skip_llama:
        llama_note = "llama-index-core not installed (uv sync --group bench)"

    return rows, llama_note


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--sources", type=int, default=100)
    parser.add_argument("--budget", type=int, default=8_000)
    parser.add_argument("--llama-messages", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--skip-llama", action="store_true")
    args = parser.parse_args()

    rng = random.Random(42)
    history = make_history(args.messages, rng)
    sources = make_sources(args.sources, rng)
    question = "When should I book a cheap flexible flight to Paris?"

    manager = ContextManager(store=InMemoryStore())
    manager.set_system_prompt("bench", "You are a concise travel assistant. Cite sources as [n].")
    manager.update_metadata("bench", mode="research", current_url="https://airline.example/paris")
    for start in range(0, len(history), 1000):
        manager.add_messages("bench", history[start : start + 1000])
    manager.add_fetched_items("bench", sources)
    counter = manager.token_counter
    stored = manager.get_memory_stats("bench")
    print(
        f"Session: {stored['message_count']:,} messages ({stored['token_count']:,} tokens), "
        f"{stored['fetched_item_count']} sources ({sum(stored['fetched_tokens'].values()):,} "
        f"tokens); budget {args.budget:,} tokens; encoding {counter.encoding_name}; "
        f"median of {args.repeat} runs."
    )

    full = ContextPromptAssembler(manager, max_tokens=args.budget, reserve_tokens=0)
    history_only = ContextPromptAssembler(
        manager, max_tokens=args.budget, reserve_tokens=0, max_sources=0, include_header=False
    )
    cold, ours_full, result = timed(lambda: full.assemble("bench", question), args.repeat)
    _, ours_hist, result_hist = timed(lambda: history_only.assemble("bench", question), args.repeat)
    for r in (result, result_hist):
        assert r.report.total_tokens == TokenCounter().count_chat(r.messages) <= args.budget

    trim_counter = TokenCounter(encoding=counter.encoding_name)
    _, trim, trimmed = timed(
        lambda: trim_messages(
            history,
            max_tokens=args.budget,
            strategy="last",
            token_counter=trim_counter.count_chat,
            start_on="human",
        ),
        max(3, args.repeat // 5),
    )

    counts = [r["token_count"] for r in manager.get_history("bench")]

    def physical() -> int:
        total = 0
        for count in reversed(counts):
            if total + count > args.budget:
                break
            total += count
        return total

    _, phys, _ = timed(physical, args.repeat * 10)

    rows = [
        ("ctx_memory, history + 100 sources", ours_full, len(result.messages)),
        ("ctx_memory, history only", ours_hist, len(result_hist.messages)),
        ("trim_messages + tiktoken", trim, len(trimmed)),
        ("physical limit (sum cached counts)", phys, None),
    ]
    llama_rows, llama_note = measure_llama(history, question, args)
    rows += llama_rows
    print(f"\n{'':38}{'median ms':>12}{'messages out':>14}")
    for name, ms, n in rows:
        print(f"{name:38}{ms:12.3f}{'' if n is None else n:>14}")
    print(f"\nctx_memory first (cold) run with sources: {cold:.3f} ms")
    print("\nRatios:")
    print(f"  trim_messages+tiktoken / ctx_memory (history only): {trim / ours_hist:,.0f}x")
    print(f"  trim_messages+tiktoken / ctx_memory (with sources): {trim / ours_full:,.0f}x")
    print(f"  ctx_memory (history only) / physical limit:        {ours_hist / phys:,.0f}x")
    print(f"  ctx_memory (with sources) / physical limit:        {ours_full / phys:,.0f}x")
    print(f"  LlamaIndex ChatMemoryBuffer.get(): {llama_note}")
    print("\nTargets (history only, as the other contenders):")
    print(f"  >= 100x faster than trim_messages+tiktoken: {_met(trim / ours_hist >= 100)}")
    print(f"  within 100x of the physical limit:          {_met(ours_hist / phys <= 100)}")
    print(f"  about 1 ms, output messages included:       {_met(ours_hist <= 1.0)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
