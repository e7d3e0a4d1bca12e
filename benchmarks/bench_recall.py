"""Recall: the cost of the BM25 index over a session's whole history, and what writes pay.

Run: ``uv run python benchmarks/bench_recall.py`` (``--messages``, ``--budget``,
``--writes``, ``--repeat`` to vary).

On one 10,000-message session of the in-memory store, 8-90 words a message, drawn
either from a Zipf-distributed vocabulary of 20,000 made-up words plus English function
words (``--text zipf``, the default: word frequencies like a real conversation's, where a
content word is in a few percent of messages) or from a 70-word vocabulary (``--text
small``: the worst case, every query term in about half of all messages, so a query
scores thousands of postings per term):

* **cold build**: :class:`~ctx_memory.recall.Recall` indexing the whole history from
  the store (what the first assembly of a session in a process pays when nothing is
  saved), and **cold load**: the same from the index saved in the store (the segments
  read and checked, no message tokenized; what a restarted process or another worker
  pays once the index is saved);
* **assembly with recall, warm**: ``ContextPromptAssembler.assemble`` with the default
  ``recall_share=0.5`` (classic layout, then stable), the index up to date: search,
  turn expansion, reading the recalled turns, exact recount; against the same
  assembly with ``recall_share=0`` (the recency window alone);
* **write path**: appending one turn (``add_messages``, two messages) to the session,
  (a) as today, (b) with recall attached to the manager (its event listeners: the
  append itself is what is timed), (c) plus indexing that turn
  (``RecallIndex.extend`` on its stored records: the work keeping the index adds per
  write, wherever it is paid) and (d) plus bringing the index up to date the way the
  next assembly does it (``Recall.index``: it also reads the new records back from the
  store). Target: (c) / (a) <= 1.5.

Each figure is the median of ``--repeat`` runs after a warm-up.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from typing import TYPE_CHECKING

os.environ.setdefault("TIKTOKEN_CACHE_DIR", "/work/shared/tiktoken-cache")

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from ctx_memory import ContextManager, ContextPromptAssembler, InMemoryStore
from ctx_memory.recall import Recall, RecallIndex
from ctx_memory.schema import message_to_record

if TYPE_CHECKING:
    from collections.abc import Callable

VOCABULARY = (
    "flight fare paris rome booking hotel cheap early economy flexible refund date airport "
    "luggage visa museum train ticket weather budget itinerary restaurant the a of to and in "
    "is for on with that this it be are from at as by your we you can will sister wedding "
    "venue garden lunch bakery cinema bicycle harbour market river coffee weekend plan dinner "
    "beach mountain ferry taxi"
)
WORDS = VOCABULARY.split()
QUESTIONS = (
    "Which hotel near the harbour market did we book for the weekend?",
    "What was the cheapest flexible fare to Rome?",
    "Did my visa for the museum trip arrive before the flight?",
)


FUNCTION_WORDS = (
    *("the", "a", "of", "to", "and", "in", "is", "for", "on", "with"),
    *("that", "this", "it", "be", "are", "from", "at", "as", "by"),
)


def zipf_vocabulary(rng: random.Random, size: int = 20_000) -> tuple[list[str], list[float]]:
    """Made-up content words with Zipf(1.1) weights, the query's words among the commonest."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    words: list[str] = []
    while len(words) < size:
        words.append("".join(rng.choice(letters) for _ in range(rng.randint(4, 9))))
    for word in dict.fromkeys(WORDS):  # the questions' words: at ranks 50-5,000
        words.insert(rng.randint(50, 5000), word)
    weights = [1 / (rank + 1) ** 1.1 for rank in range(len(words))]
    return words, weights


class Text:
    """Sentences of 8-90 words: function words and content words (see the docstring)."""

    def __init__(self, kind: str, rng: random.Random) -> None:
        self.rng = rng
        self.kind = kind
        self.words, self.weights = zipf_vocabulary(rng) if kind == "zipf" else (WORDS, [])

    def sentence(self, low: int, high: int) -> str:
        n = self.rng.randint(low, high)
        if self.kind == "zipf":
            content = self.rng.choices(self.words, self.weights, k=n // 2 + 1)
            words = content + [self.rng.choice(FUNCTION_WORDS) for _ in range(n - len(content))]
            self.rng.shuffle(words)
        else:
            words = [self.rng.choice(WORDS) for _ in range(n)]
        return " ".join(words).capitalize() + "."

    def history(self, n: int) -> list[BaseMessage]:
        return [
            HumanMessage(self.sentence(8, 40)) if i % 2 == 0 else AIMessage(self.sentence(20, 90))
            for i in range(n)
        ]


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--budget", type=int, default=8000)
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--text", choices=("zipf", "small"), default="zipf")
    args = parser.parse_args()
    rng = random.Random(42)
    text = Text(args.text, rng)
    history = text.history(args.messages)

    manager = ContextManager(store=InMemoryStore(max_sessions=1000))
    manager.set_system_prompt("s", "You are a travel assistant.")
    manager.add_messages("s", history)
    print(f"session: {args.messages} messages ({args.text} text), budget {args.budget} tokens")

    cold_build(manager)
    results = assemblies(manager, args)
    write_paths(text, args)
    warm = max(results["classic/0.5"], results["stable/0.5"])
    print(f"target: assembly with recall over {args.messages} messages <= 5 ms: {warm:.2f} ms")


def cold_build(manager: ContextManager) -> None:
    """A fresh index cache: the whole history read and indexed, or the saved index loaded."""
    builds, loads = [], []
    for _ in range(5):
        recall = Recall(save_every=0)  # reads no segment, saves none
        start = time.perf_counter()
        index = recall.index(manager, "s", manager.get_header("s"))
        builds.append(time.perf_counter() - start)
    Recall().reindex(manager, "s")  # what the first assembly of a process would save
    for _ in range(5):
        recall = Recall()
        start = time.perf_counter()
        recall.index(manager, "s", manager.get_header("s"))
        loads.append(time.perf_counter() - start)
        assert (recall.loads, recall.rebuilds) == (1, 0)
    build, load = statistics.median(builds), statistics.median(loads)
    print(f"cold build of the index ({len(index)} messages): {build:.3f} s")
    print(f"cold load of the saved index: {load:.3f} s ({build / load:.1f}x faster)")


def assemblies(manager: ContextManager, args: argparse.Namespace) -> dict[str, float]:
    """Warm assembly with and without recall, both layouts: median ms by layout/share."""
    results: dict[str, float] = {}
    for layout in ("classic", "stable"):
        for share in (0.5, 0.0):
            assembler = ContextPromptAssembler(
                manager,
                max_tokens=args.budget + 1000,
                reserve_tokens=1000,
                layout=layout,
                recall_share=share,
                recall=Recall(),
            )
            assembler.assemble("s", QUESTIONS[0])  # builds this assembler's index
            questions = iter(QUESTIONS * (args.repeat + 10))
            ms = median_ms(lambda a=assembler, q=questions: a.assemble("s", next(q)), args.repeat)
            results[f"{layout}/{share}"] = ms
            report = assembler.assemble("s", QUESTIONS[1]).report
            label = f"recall_share={share}" if share else "no recall (recency window)"
            print(
                f"assembly, {layout} layout, {label}: {ms:.2f} ms "
                f"({report.history_messages} history messages, {len(report.recalled)} hits "
                f"recalled, {report.total_tokens} tokens)"
            )

    return results


def write_paths(text: Text, args: argparse.Namespace) -> None:
    """One turn appended per iteration, on a fresh session each time, four ways."""

    def write_path(mode: str) -> float:
        writer = ContextManager(store=InMemoryStore(max_sessions=1000))
        recall = Recall()
        if mode != "today":
            recall.watch(writer)
        turns = [text.history(2) for _ in range(args.writes)]
        writer.add_messages("w", text.history(2))
        recall.index(writer, "w", writer.get_header("w"))
        index = RecallIndex()
        records = [[message_to_record(m, timestamp="t") for m in turn] for turn in turns]
        for turn_records in records:
            for record in turn_records:
                record["token_count"] = 1
        start = time.perf_counter()
        for turn, turn_records in zip(turns, records, strict=True):
            writer.add_messages("w", turn)
            if mode == "indexed":
                index.extend(turn_records)
            elif mode == "updated":
                recall.index(writer, "w", writer.get_header("w"))
        elapsed = time.perf_counter() - start
        if mode == "updated":  # the header read is the assembler's anyway: not the index's
            start = time.perf_counter()
            for _ in turns:
                writer.get_header("w")
            elapsed -= time.perf_counter() - start
        writer.close()
        return elapsed / args.writes * 1e6

    runs: dict[str, list[float]] = {m: [] for m in ("today", "watched", "indexed", "updated")}
    for _ in range(5):
        for mode, values in runs.items():
            values.append(write_path(mode))
    per_write = {mode: statistics.median(values) for mode, values in runs.items()}
    today = per_write["today"]
    print(f"(a) append one turn, today: {today:.1f} us")
    for mode, label in (
        ("watched", "(b) append one turn, recall attached"),
        ("indexed", "(c) append one turn + index it (target <= 1.5x)"),
        ("updated", "(d) append one turn + Recall.index (reads it back)"),
    ):
        print(f"{label}: {per_write[mode]:.1f} us ({per_write[mode] / today:.2f}x)")


if __name__ == "__main__":
    main()
