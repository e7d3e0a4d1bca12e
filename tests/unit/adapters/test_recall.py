"""Recall: the BM25 index, its per-session cache, and older turns inside the exact budget."""

from __future__ import annotations

import heapq
import random
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

import ctx_memory._recall_index as recall_index
from ctx_memory import ContextManager, ContextPromptAssembler, InMemoryStore, TokenCounter
from ctx_memory.assembly.recalled import GAP_ID_PREFIX
from ctx_memory.ranking import bm25_scores
from ctx_memory.recall import Recall, RecallIndex, recall_for, recall_terms
from ctx_memory.stores.ops import GetMessages, GetMessageSpans

COUNTER = TokenCounter()  # an independent counter: the budget is recounted with it
WORDS = [
    "weather",
    "trip",
    "hotel",
    "booking",
    "museum",
    "dinner",
    "train",
    "ticket",
    "coffee",
    "weekend",
    "budget",
    "plan",
    "river",
    "market",
    "garden",
    "lunch",
    "bakery",
    "cinema",
    "bicycle",
    "harbour",
]
FACT = "My sister's wedding venue is the Orangery at Kew Gardens"
QUESTION = "Where is my sister's wedding venue?"


def chatter(rng: random.Random, i: int) -> list[BaseMessage]:
    user = " ".join(rng.choice(WORDS) for _ in range(10)) + f" (note {i})"
    return [HumanMessage(user), AIMessage(" ".join(rng.choice(WORDS) for _ in range(16)))]


def long_session(manager: ContextManager, session: str, turns: int, *, fact_at: int) -> None:
    rng = random.Random(7)
    messages: list[BaseMessage] = []
    for i in range(turns):
        if i == fact_at:
            messages += [HumanMessage(FACT), AIMessage("Noted: the Orangery at Kew.")]
        messages += chatter(rng, i)
    manager.add_messages(session, messages)


def positions_of(manager: ContextManager, session: str) -> dict[str, int]:
    return {r["id"]: i for i, r in enumerate(manager.get_history(session))}


def spy_ranges(manager: ContextManager) -> list[tuple[int, int]]:
    """Record every ``get_message_range`` of ``manager`` from now on: ``(start, end)``."""
    reads: list[tuple[int, int]] = []
    original = manager.get_message_range

    def spy(session_id, start, end):
        reads.append((start, end))
        return original(session_id, start, end)

    manager.get_message_range = spy  # type: ignore[method-assign]
    return reads


def assert_no_orphans(messages: list[BaseMessage]) -> None:
    open_calls: set[str] = set()
    for i, message in enumerate(messages):
        if isinstance(message, AIMessage) and message.tool_calls:
            ids = {c["id"] for c in message.tool_calls}
            answered = {
                m.tool_call_id
                for m in messages[i + 1 : i + 1 + len(ids)]
                if isinstance(m, ToolMessage)
            }
            assert ids == answered, "an AI tool call without its results"
            open_calls |= ids
        if isinstance(message, ToolMessage):
            assert message.tool_call_id in open_calls, "an orphan tool message"


# ------------------------------------------------------------------ the index


def test_index_scores_equal_bm25_over_the_same_documents():
    rng = random.Random(3)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 30))) for _ in range(200)]
    index = RecallIndex()
    index.extend({"role": "user", "content": t, "token_count": 1} for t in texts)
    query = "hotel booking near the harbour market"
    from collections import Counter

    docs = [Counter(recall_terms(t)) for t in texts]
    expected = bm25_scores(recall_terms(query), docs, [sum(d.values()) for d in docs])
    found = index.search(query, k=500)
    assert len(found) == sum(1 for s in expected if s > 0)
    for position, score, terms in found:
        assert score == pytest.approx(expected[position])
        assert set(terms) == set(recall_terms(query)) & set(docs[position])
    scores = [s for _, s, _ in found]
    assert scores == sorted(scores, reverse=True)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=string.printable + "éüÅß東京서울", max_size=120))
def test_recall_terms_are_the_ranking_words_without_stop_words_stemmed(text):
    """The fast ASCII path and the memo give what the definition gives, on any text."""
    from ctx_memory._recall_index import _RECALL_STOPWORDS, _strip_suffix
    from ctx_memory.ranking import tokenize

    expected = [_strip_suffix(w) for w in tokenize(text) if w not in _RECALL_STOPWORDS]
    assert recall_terms(text) == expected
    assert recall_terms(text) == expected  # again, from the memo


def test_index_search_before_turns_and_ties():
    index = RecallIndex()
    index.extend(
        [
            {"role": "assistant", "content": "Welcome!", "token_count": 4},
            {"role": "user", "content": "paris trip", "token_count": 5},
            {
                "role": "assistant",
                "content": "",
                "token_count": 9,
                "tool_calls": [{"name": "search", "args": {"q": "paris"}, "id": "c1"}],
            },
            {"role": "tool", "content": "Paris: sunny", "tool_call_id": "c1", "token_count": 6},
            {"role": "user", "content": "paris trip", "token_count": 5},
        ]
    )
    # Equal scores: the newer first. Tool names and arguments are searchable too.
    assert [p for p, _, _ in index.search("paris trip", k=2)] == [4, 1]
    assert next(p for p, _, _ in index.search("paris trip", before=4)) == 1
    assert 2 in [p for p, _, _ in index.search("search")]
    assert index.turn(0) == (0, 1)
    assert index.turn(3) == (1, 4)
    assert index.turn(4) == (4, 5)
    assert index.cost(1, 4) == 20
    assert index.search("nothing matches this", k=3) == []


def test_search_in_context_adds_a_share_of_the_neighbours_scores():
    texts = [
        "kayak rental on the lake",  # 0: a stray mention
        "we talked about the weather",  # 1
        "the harbour tour starts at nine",  # 2
        "booked two seats for it",  # 3: no term of the query, between two matches
        "the harbour tour has a kayak stop",  # 4
        "kayak again",  # 5: the newest, past `before` below
    ]
    index = RecallIndex()
    index.extend({"role": "user", "content": t, "token_count": 5} for t in texts)
    query = "harbour tour kayak"
    plain = {p: s for p, s, _ in index.search(query, k=10)}
    assert 3 not in plain  # BM25 alone: only messages with a term
    assert 1 not in plain
    weight = 0.25
    found = index.search(query, k=10, context=weight)
    scores = {p: s for p, s, _ in found}
    for position, score in scores.items():
        beside = plain.get(position - 1, 0.0) + plain.get(position + 1, 0.0)
        assert score == pytest.approx(plain.get(position, 0.0) + weight * beside)
    assert {p: t for p, _, t in found}[3] == ()  # found by its neighbours alone
    assert scores[3] > scores[1] > 0.0
    assert [s for _, s, _ in found] == sorted(scores.values(), reverse=True)
    assert set(scores) == set(range(6))  # every match and every neighbour of one
    # `before` bounds the neighbours too; context 0 is plain BM25.
    assert max(p for p, _, _ in index.search(query, k=10, before=5, context=weight)) == 4
    assert index.search(query, k=10, context=0.0) == index.search(query, k=10)
    assert index.search("nothing matches this", k=3, context=weight) == []


def test_adjacent_recalled_turns_are_read_at_once_and_split_back():
    from ctx_memory.assembly.recalled import RecallChoice, RecalledTurn

    bounds = [(0, 2), (2, 4), (6, 8), (8, 9), (12, 14)]
    choice = RecallChoice(tuple(RecalledTurn(a, b, 1.0, (), 1) for a, b in bounds), 100, {})
    assert choice.reads == [(0, 1), (2, 3), (6, 7), (8, 8), (12, 13)]
    assert choice.spans == [(0, 3), (6, 8), (12, 13)]
    history = [{"id": f"m{i}"} for i in range(14)]
    read = [history[a : b + 1] for a, b in choice.spans]
    assert choice.split(read) == [history[a : b + 1] for a, b in choice.reads]
    # A history shortened after the choice: each turn gets what the read holds of it.
    short = [history[0:3], history[6:8], []]
    ids = [[r["id"] for r in records] for records in choice.split(short)]
    assert ids == [["m0", "m1"], ["m2"], ["m6", "m7"], [], []]


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.integers(0, 500), st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.25]), max_size=80),
    st.integers(min_value=1, max_value=90),
    st.booleans(),
)
def test_the_n_best_scores_are_heapq_s_whichever_way_they_are_found(scores, n, sort):
    """``_largest`` sorts up to ``_SORT_LIMIT`` scores, else runs ``heapq``: same result.

    Ties (few distinct scores here) are broken the newer first either way.
    """
    expected = heapq.nlargest(n, zip(scores.values(), scores.keys(), strict=True))
    limit = recall_index._SORT_LIMIT
    try:
        recall_index._SORT_LIMIT = limit if sort else 0
        assert recall_index._largest(scores, n) == expected
    finally:
        recall_index._SORT_LIMIT = limit


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(st.sampled_from(WORDS[:12]), max_size=8), min_size=1, max_size=40),
    st.lists(st.sampled_from(WORDS[:12]), min_size=1, max_size=4),
    st.integers(min_value=1, max_value=12),
    st.floats(min_value=0.05, max_value=1.0),
    st.integers(min_value=0, max_value=45),
)
def test_search_in_context_is_the_brute_force_ranking(docs, query, k, weight, before):
    """On histories smaller than the re-scored pool, the answer is exactly the best ``k``
    of every message's BM25 plus ``weight`` times its neighbours', newer first on ties."""
    index = RecallIndex()
    index.extend({"role": "user", "content": " ".join(d), "token_count": 1} for d in docs)
    text = " ".join(query)
    limit = min(before, len(docs))
    plain = {p: s for p, s, _ in index.search(text, k=1000, before=before)}
    scored = {
        p: plain.get(p, 0.0) + weight * (plain.get(p - 1, 0.0) + plain.get(p + 1, 0.0))
        for p in range(limit)
        if p in plain or p - 1 in plain or p + 1 in plain
    }
    expected = sorted(scored.items(), key=lambda item: (item[1], item[0]), reverse=True)[:k]
    found = index.search(text, k=k, before=before, context=weight)
    assert [(p, s) for p, s, _ in found] == expected
    for position, _, terms in found:
        assert bool(terms) == (position in plain)


def test_cache_reads_only_new_messages_and_drops_edited_sessions(manager):
    recall = Recall()
    recall.watch(manager)
    long_session(manager, "s1", 50, fact_at=3)
    reads = spy_ranges(manager)
    index = recall.index(manager, "s1", manager.get_header("s1"))
    assert len(index) == 102
    assert reads == [(0, 101)]
    reads.clear()
    manager.add_user_message("s1", "one more")
    index = recall.index(manager, "s1", manager.get_header("s1"))
    assert len(index) == 103
    assert reads == [(101, 102)]  # and the last message it held, read again by id
    reads.clear()
    assert recall.index(manager, "s1", manager.get_header("s1")) is index
    assert reads == [(102, 102)]  # that check alone: nothing new
    reads.clear()
    # An edit through this manager drops the index: it is rebuilt from the store.
    first = manager.get_history("s1")[6]["id"]
    manager.delete_message("s1", first)
    index = recall.index(manager, "s1", manager.get_header("s1"))
    assert len(index) == 102
    assert reads == [(0, 101)]


def test_an_edit_no_event_reported_is_caught_by_the_token_count():
    store = InMemoryStore(max_sessions=10)
    with ContextManager(store=store) as ours, ContextManager(store=store) as theirs:
        recall = Recall()
        recall.watch(ours)
        ours.add_user_message("s1", "the code is 1234")
        ours.add_assistant_message("s1", "ok")
        assert recall.index(ours, "s1", ours.get_header("s1")).search("code")
        # Another process (here: another manager) replaces a message: no event reaches us.
        # (Caught because the token count changed; a replacement of exactly the same
        # token count is not: see the module docstring of ctx_memory.recall.)
        first = theirs.get_history("s1")[0]["id"]
        replacement = "the password is now hunter2, the old one is gone for good"
        theirs.replace_message("s1", first, HumanMessage(replacement))
        theirs.add_user_message("s1", "thanks")
        index = recall.index(ours, "s1", ours.get_header("s1"))
        assert index.search("password")
        assert not index.search("code")
        assert recall.rebuilds == 2


def test_recall_for_is_one_per_manager(manager):
    assert recall_for(manager) is recall_for(manager)
    with ContextManager(store=InMemoryStore()) as other:
        assert recall_for(other) is not recall_for(manager)


# ------------------------------------------------------------------ the assembler


@pytest.mark.parametrize("layout", ["classic", "stable"])
def test_a_fact_5000_messages_back_is_recalled_inside_2000_tokens(manager, layout):
    long_session(manager, "s1", 2600, fact_at=100)  # the fact is ~5,000 messages back
    manager.set_system_prompt("s1", "You are a helpful assistant.")
    stored = manager.get_memory_stats("s1")["message_count"]
    fact_position = positions_of(manager, "s1")[
        next(r["id"] for r in manager.get_history("s1") if r["content"] == FACT)
    ]
    assert stored - fact_position >= 5000
    assembler = ContextPromptAssembler(manager, max_tokens=2500, reserve_tokens=500, layout=layout)
    result = assembler.assemble("s1", QUESTION)
    assert COUNTER.count_chat(result.messages) == result.report.total_tokens <= 2000
    text = "\n".join(m.text for m in result.messages)
    assert FACT in text
    assert "Noted: the Orangery at Kew." in text
    recalled = result.report.recalled
    [fact] = [entry for entry in recalled if entry["index"] == fact_position]
    assert set(fact["terms"]) >= {"sister", "wed", "venu"}  # stems
    assert fact["message_id"] == manager.get_history("s1")[fact_position]["id"]
    assert fact["reason"].startswith("BM25 ")
    assert " on " in fact["reason"]
    assert max(recalled, key=lambda entry: entry["score"]) is fact
    # The turn before the fact's was recalled for being beside it; its reason says so.
    assert any(not entry["terms"] for entry in recalled)
    for entry in recalled:
        assert ("from the messages beside it" in entry["reason"]) == (not entry["terms"])
    assert result.report.as_dict()["recalled"] == recalled
    assert "earlier messages not shown" in text


def test_recalled_turns_come_in_order_with_a_marker_for_every_gap(manager):
    long_session(manager, "s1", 600, fact_at=40)
    manager.add_messages("s1", [HumanMessage("My sister's dog is called Pixel"), AIMessage("Cute")])
    long_session(manager, "s1", 300, fact_at=-1)
    positions = positions_of(manager, "s1")
    assembler = ContextPromptAssembler(manager, max_tokens=1800, reserve_tokens=300)
    result = assembler.assemble("s1", "What about my sister? the venue, the dog")
    history = result.history
    assert result.report.recalled
    where = [positions[m.id] for m in history if m.id in positions]
    assert where == sorted(where)  # chronological
    previous = -1
    for message in history:
        if message.id and message.id.startswith(GAP_ID_PREFIX):
            assert isinstance(message, HumanMessage)
            assert "earlier messages not shown" in message.text
            continue
        position = positions[message.id]
        if position != previous + 1:  # a gap: the message before must be a marker
            before = history[history.index(message) - 1]
            assert before.id.startswith(GAP_ID_PREFIX), (previous, position)
            shown = int(before.text.split()[1])
            assert shown == position - previous - 1
        previous = position
    assert result.report.total_tokens == COUNTER.count_chat(result.messages) <= 1500


def tool_session(manager: ContextManager, rng: random.Random, turns: int) -> None:
    messages: list[BaseMessage] = []
    for i in range(turns):
        messages.append(
            HumanMessage(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 15))))
        )
        for j in range(rng.choice([0, 0, 1, 2])):
            call = f"call-{i}-{j}"
            messages.append(
                AIMessage(
                    "",
                    tool_calls=[{"name": "search", "args": {"q": rng.choice(WORDS)}, "id": call}],
                )
            )
            if rng.random() < 0.1:
                messages.append(HumanMessage("interjection " + rng.choice(WORDS)))
            messages.append(
                ToolMessage(
                    " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 40))),
                    tool_call_id=call,
                )
            )
        if rng.random() < 0.05:
            messages.append(ToolMessage("orphan result", tool_call_id=f"gone-{i}"))
        messages.append(AIMessage(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 30)))))
    manager.add_messages("s", messages)


@pytest.mark.parametrize("seed", range(12))
def test_budget_recounted_and_no_orphan_tool_messages_with_tool_traffic(seed):
    rng = random.Random(seed)
    with ContextManager(store=InMemoryStore()) as manager:
        tool_session(manager, rng, rng.randint(20, 300))
        if rng.random() < 0.5:
            manager.add_fetched_context(
                "s", "web", "Harbour market opens at 9.", url="https://m.example"
            )
        manager.update_metadata("s", user_timezone="Europe/Paris", current_url="https://x.example")
        recalled = 0
        for layout in ("classic", "stable"):
            for budget in (200, 700, 1500):
                assembler = ContextPromptAssembler(
                    manager,
                    max_tokens=budget + 100,
                    reserve_tokens=100,
                    layout=layout,
                    recall_share=rng.choice([0.2, 0.5, 0.8]),
                    cache_hints=["anthropic"],
                )
                question = " ".join(rng.choice(WORDS) for _ in range(6))
                result = assembler.assemble("s", question)
                assert COUNTER.count_chat(result.messages) == result.report.total_tokens
                assert result.report.total_tokens <= budget
                assert_no_orphans(result.messages)
                report = result.report
                parts = (
                    report.system_tokens
                    + report.sources_tokens
                    + report.history_tokens
                    + report.question_tokens
                    + report.priming_tokens
                )
                assert parts == report.total_tokens
                recalled += len(report.recalled)
        assert recalled > 0  # the checks above did cover recalled turns


async def test_async_assembly_equals_sync(manager):
    long_session(manager, "s1", 800, fact_at=20)
    assembler = ContextPromptAssembler(manager, max_tokens=1500, reserve_tokens=200)
    sync = assembler.assemble("s1", QUESTION)
    fresh = ContextPromptAssembler(manager, max_tokens=1500, reserve_tokens=200, recall=Recall())
    asynchronous = await fresh.aassemble("s1", QUESTION)
    assert [m.content for m in asynchronous.messages] == [m.content for m in sync.messages]
    assert asynchronous.report.recalled == sync.report.recalled


def test_recall_share_zero_is_the_recency_window(manager):
    long_session(manager, "s1", 400, fact_at=10)
    plain = ContextPromptAssembler(manager, max_tokens=1000, reserve_tokens=0, recall_share=0.0)
    result = plain.assemble("s1", QUESTION)
    assert result.report.recalled == []
    assert result.report.recall_tokens == 0
    assert FACT not in "\n".join(m.text for m in result.messages)
    assert result.history[-1].text == manager.get_history("s1")[-1]["content"]


def test_a_history_that_fits_is_sent_whole_without_recall(seeded):
    result = ContextPromptAssembler(seeded).assemble("s1", "Paris hello")
    assert result.report.recalled == []
    assert result.report.history_messages == 4


@pytest.mark.parametrize("layout", ["classic", "stable"])
def test_warm_assembly_reads_only_what_it_sends_and_recalled_turns_at_once(manager, layout):
    long_session(manager, "s1", 2000, fact_at=30)
    assembler = ContextPromptAssembler(manager, max_tokens=2000, reserve_tokens=0, layout=layout)
    assembler.assemble("s1", QUESTION)  # builds the index (reads the whole history once)
    manager.add_messages("s1", [HumanMessage("new"), AIMessage("news")])
    calls: list[tuple[str, int]] = []
    store = manager.store
    original = store.handle

    def spy(op):
        result = original(op)
        if isinstance(op, GetMessages):
            calls.append(("range", len(result)))
        elif isinstance(op, GetMessageSpans):
            calls.append(("spans", sum(len(part) for part in result)))
        return result

    store.handle = spy  # type: ignore[method-assign]
    result = assembler.assemble("s1", "the museum ticket, the harbour and the bakery")
    recalled = result.report.recalled
    assert len({e["index"] for e in recalled}) > 10  # many turns, far apart
    kinds = [kind for kind, _ in calls]
    assert kinds.count("spans") == 1  # every recalled turn in one call
    assert sum(n for _, n in calls) < 3 * result.report.history_messages + 10
    # One read of the newest messages: the stable layout's window, which the index then
    # takes the two new messages from; the classic layout's window range (and a quarter
    # more) read before recall chooses, which the index and then the window take theirs from.
    assert kinds.count("range") == 1
    calls.clear()
    index = recall_for(manager).index(manager, "s1", manager.get_header("s1"))
    # Without a window's read, the last message it holds is read again (checked by id).
    assert (len(index), calls) == (manager.get_memory_stats("s1")["message_count"], [("range", 1)])
    assert index.ids[-2:] == [r["id"] for r in manager.get_history("s1", last_k=2)]


def test_stable_recall_fills_what_the_window_leaves(manager):
    # Every user message matches the question, so recall is limited by its budget alone.
    rng = random.Random(3)
    messages: list[BaseMessage] = []
    for i in range(600):
        words = " ".join(rng.choice(WORDS) for _ in range(6))
        messages += [HumanMessage(f"The orchard ledger {i}: {words}"), AIMessage("Noted.")]
    manager.add_messages("s1", messages)
    assembler = ContextPromptAssembler(manager, max_tokens=2000, reserve_tokens=0, layout="stable")
    result = assembler.assemble("s1", "What did the orchard ledger say?")
    report = result.report
    assert COUNTER.count_chat(result.messages) == report.total_tokens <= 2000
    turn = COUNTER.count_message("user", messages[0].text) + COUNTER.count_message("ai", "Noted.")
    # Less than two turns' worth of the budget is left unused (260 tokens were, when each
    # turn was priced at a fixed upper bound).
    assert report.remaining_tokens < 2 * turn, (report.remaining_tokens, turn)
    assert len(report.recalled) > 20


def test_fit_recalled_drops_the_weakest_turns_covering_the_excess_at_once():
    from ctx_memory.assembly.recalled import RecalledTurn, fit_recalled

    turns = [
        (RecalledTurn(i * 2, i * 2 + 2, score, ((i * 2, score, ("x",)),), 10), [{"role": "user"}])
        for i, score in enumerate([5.0, 1.0, 3.0, 2.0, 4.0])
    ]
    measured: list[int] = []

    def measure(kept):
        measured.append(len(kept))
        return 10 * len(kept)

    kept, tokens, dropped = fit_recalled(turns, budget=25, measure=measure)
    assert [t.score for t, _ in kept] == [5.0, 4.0]  # the three weakest, in history order
    assert [t.start for t, _ in kept] == [0, 8]
    assert (tokens, dropped) == (20, 0)
    assert measured == [5, 2]  # one recount for the whole batch


def test_index_takes_new_messages_from_reads_that_hold_them_all(manager):
    manager.add_messages("s1", [HumanMessage(f"q{i}") for i in range(10)])
    recall = Recall()
    recall.index(manager, "s1", manager.get_header("s1"))
    manager.add_messages("s1", [HumanMessage(f"q{i}") for i in range(10, 16)])
    history = manager.get_history("s1")
    read = spy_ranges(manager)
    header = manager.get_header("s1")
    # Reads with a hole (13 missing): the index reads what it needs itself.
    holey = [(8, history[8:13]), (14, history[14:16])]
    assert len(recall.index(manager, "s1", header, known=holey)) == 16
    assert read == [(9, 15)]  # from the last message it held (checked by id)
    manager.add_messages("s1", [HumanMessage(f"q{i}") for i in range(16, 20)])
    history = manager.get_history("s1")
    read.clear()
    # Touching reads, newest first as a window reads them, and the messages after it.
    known = [(17, history[17:19]), (12, history[12:17]), (19, history[19:20])]  # 15 to 19
    index = recall.index(manager, "s1", manager.get_header("s1"), known=known)
    assert (len(index), read) == (20, [])
    assert index.ids[16:] == [r["id"] for r in history[16:]]
    assert index.search("q18")[0][0] == 18


def test_held_range_joins_reads_and_says_when_they_fall_short():
    from ctx_memory.records import held_range

    rows = [{"i": i} for i in range(10)]
    reads = [(6, rows[6:10]), (2, rows[2:6])]  # newest first, touching
    assert held_range(reads, 3, 8) == rows[3:9]
    assert held_range(reads, 0, 3) is None  # 0 and 1 were not read
    assert held_range(reads, 9, 10) is None  # 10 is past what was read
    assert held_range(reads, 5, 4) == []
    assert held_range([], 0, 0) is None


@pytest.mark.parametrize("share", [0.5, 0.05])
def test_classic_assembly_reads_the_newest_messages_once(manager, share):
    """The classic layout reads its window's range (and a quarter more) before recall
    chooses; when recall leaves the window more room than that holds, the window reads the
    rest itself, and the prompt is the one reading everything separately gives."""
    long_session(manager, "s1", 1500, fact_at=20)
    assembler = ContextPromptAssembler(
        manager, max_tokens=3000, reserve_tokens=0, layout="classic", recall_share=share
    )
    assembler.assemble("s1", QUESTION)
    manager.add_messages("s1", [HumanMessage("the museum ticket"), AIMessage("booked")])
    reads = spy_ranges(manager)
    result = assembler.assemble("s1", QUESTION)
    stored = manager.get_memory_stats("s1")["message_count"]
    assert reads[0][1] == stored - 1  # the newest messages, read first
    assert len(reads) <= 2
    assert FACT in "\n".join(m.text for m in result.messages)
    fresh = ContextPromptAssembler(
        manager, max_tokens=3000, reserve_tokens=0, layout="classic", recall_share=share,
        recall=Recall(),
    )  # fmt: skip
    again = fresh.assemble("s1", QUESTION)  # a cold index: reads everything itself
    assert [m.content for m in again.messages] == [m.content for m in result.messages]


def test_a_session_made_again_elsewhere_with_as_many_tokens_is_indexed_again():
    """Another process deletes the session and writes one with the same message count and
    token total (no event reaches this one): the last message the index holds has another
    id, so the index is rebuilt, for the tool as for the assembler."""
    store = InMemoryStore()
    with ContextManager(store=store) as ours, ContextManager(store=store) as theirs:
        recall = Recall()
        ours.add_user_message("s1", "The gate word is 4471")
        assert recall.index(ours, "s1", ours.get_header("s1")).search("4471")
        theirs.delete_context("s1")  # another manager's event: this recall hears none
        theirs.add_user_message("s1", "The gate word is 8812")
        assert ours.get_header("s1")["metadata"]["token_count"] == 11
        index = recall.index(ours, "s1", ours.get_header("s1"))
        assert [p for p, _, _ in index.search("8812")] == [0]
        assert index.search("4471") == []
