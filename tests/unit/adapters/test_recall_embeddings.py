"""Hybrid recall: BM25 fused with a LangChain ``Embeddings`` model's cosine similarity."""

from __future__ import annotations

import logging
import random
import re

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from ctx_memory import ContextManager, ContextPromptAssembler, InMemoryStore
from ctx_memory.errors import ValidationError
from ctx_memory.recall import (
    RRF_DEPTH,
    RRF_K,
    Recall,
    RecallIndex,
    make_recall_tool,
    recall_for,
)

WORDS = [
    *("weather", "trip", "hotel", "booking", "museum", "dinner", "train", "ticket"),
    *("coffee", "weekend", "budget", "plan", "river", "market", "garden", "lunch"),
    *("bakery", "cinema", "bicycle", "harbour"),
]
FACT = "My sister's wedding venue is the Orangery at Kew Gardens"
# Shares no term with FACT nor with the chatter: only its meaning leads to FACT.
SEMANTIC_QUESTION = "Tell me about the marriage ceremony"
LEXICAL_QUESTION = "Where is my sister's wedding venue?"

# A tiny "model": each known word points along one concept axis; a text with no known
# word points along the last axis (orthogonal to every concept).
CONCEPTS = {
    "wedding": 0,
    "marriage": 0,
    "ceremony": 0,
    "bride": 0,
    "dog": 1,
    "puppy": 1,
    "pet": 1,
    "flight": 2,
    "plane": 2,
}
DIMENSIONS = 4


def concept_vector(text: str) -> list[float]:
    vector = [0.0] * DIMENSIONS
    for word in re.findall(r"[a-z]+", text.lower()):
        if word in CONCEPTS:
            vector[CONCEPTS[word]] += 1.0
    if not any(vector):
        vector[-1] = 1.0
    return vector


class ConceptEmbeddings(Embeddings):
    """Known words to fixed vectors; records every call (sync and async)."""

    def __init__(self) -> None:
        self.document_calls: list[list[str]] = []
        self.query_calls: list[str] = []
        self.async_document_calls: list[list[str]] = []
        self.async_query_calls: list[str] = []

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.document_calls.append(list(texts))
        return [concept_vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        self.query_calls.append(text)
        return concept_vector(text)

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        self.async_document_calls.append(list(texts))
        return [concept_vector(t) for t in texts]

    async def aembed_query(self, text: str) -> list[float]:
        self.async_query_calls.append(text)
        return concept_vector(text)

    @property
    def embedded(self) -> list[str]:
        return [t for call in self.document_calls + self.async_document_calls for t in call]


class BrokenEmbeddings(ConceptEmbeddings):
    """Fails on documents and/or queries (a provider outage)."""

    def __init__(self, *, documents: bool = True, query: bool = True) -> None:
        super().__init__()
        self.fail_documents = documents
        self.fail_query = query

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if self.fail_documents:
            msg = "embeddings service unavailable"
            raise ConnectionError(msg)
        return super().embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        if self.fail_query:
            msg = "embeddings service unavailable"
            raise ConnectionError(msg)
        return super().embed_query(text)

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        if self.fail_documents:
            msg = "embeddings service unavailable"
            raise ConnectionError(msg)
        return await super().aembed_documents(texts)

    async def aembed_query(self, text: str) -> list[float]:
        if self.fail_query:
            msg = "embeddings service unavailable"
            raise ConnectionError(msg)
        return await super().aembed_query(text)


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


def fact_position(manager: ContextManager, session: str) -> int:
    return next(i for i, r in enumerate(manager.get_history(session)) if r["content"] == FACT)


def text_of(messages: list[BaseMessage]) -> str:
    return "\n".join(m.text for m in messages)


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


def concept_index(texts: list[str]) -> RecallIndex:
    index = RecallIndex()
    for text in texts:
        position = index.add({"role": "user", "content": text, "token_count": 5})
        index.set_vector(position, concept_vector(text))
    return index


def test_hybrid_search_fuses_the_two_rankings_as_documented():
    texts = [
        "the wedding venue is booked",  # 0: BM25 (venue) and vector (wedding)
        "bride and ceremony flowers",  # 1: vector only (no shared term)
        "the venue has parking",  # 2: BM25 only
        "a puppy at the park",  # 3: neither (orthogonal concept, no shared term)
        "venue venue venue list",  # 4: BM25 only, the strongest BM25
    ]
    index = concept_index(texts)
    query = "marriage venue"
    query_vector = concept_vector(query)
    hits = index.hybrid_search(query, query_vector, k=10)

    bm25_ranks = {p: r for r, (p, _, _) in enumerate(index.search(query, k=10), 1)}
    similarity = index.similarities(query_vector)
    nearest = sorted(
        (p for p, s in similarity.items() if s > 0), key=lambda p: (-similarity[p], -p)
    )
    vector_ranks = {p: r for r, p in enumerate(nearest, 1)}
    expected = {
        p: (1 / (RRF_K + bm25_ranks[p]) if p in bm25_ranks else 0.0)
        + (1 / (RRF_K + vector_ranks[p]) if p in vector_ranks else 0.0)
        for p in set(bm25_ranks) | set(vector_ranks)
    }
    assert {h.position for h in hits} == set(expected) == {0, 1, 2, 4}
    for hit in hits:
        assert hit.score == pytest.approx(expected[hit.position])
        assert hit.bm25_rank == bm25_ranks.get(hit.position)
        assert hit.vector_rank == vector_ranks.get(hit.position)
        assert hit.similarity == pytest.approx(similarity[hit.position])
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # Found by both lists: first. The vector-only hit has no terms and no BM25 score.
    assert hits[0].position == 0
    assert hits[0].terms == ("venu",)
    semantic = next(h for h in hits if h.position == 1)
    assert semantic.terms == ()
    assert semantic.bm25 == 0.0
    assert semantic.bm25_rank is None
    assert semantic.similarity == pytest.approx(1.0)  # bride + ceremony: the same axis
    # The puppy shares nothing: orthogonal, so not in the vector ranking either.
    assert similarity[3] == pytest.approx(0.0)
    # ``before`` limits both rankings.
    assert {h.position for h in index.hybrid_search(query, query_vector, before=2)} == {0, 1}


def test_each_ranking_contributes_at_most_its_depth():
    texts = [f"wedding note {i}" for i in range(RRF_DEPTH + 20)]
    index = concept_index(texts)
    hits = index.hybrid_search("marriage", concept_vector("marriage"), k=5)
    assert len(hits) == 5
    # All have similarity 1: ties go to the newer, ranks 1..5 from the newest.
    assert [h.position for h in hits] == list(range(len(texts) - 1, len(texts) - 6, -1))
    assert [h.vector_rank for h in hits] == [1, 2, 3, 4, 5]
    assert hits[0].score == pytest.approx(1 / (RRF_K + 1))
    # The oldest also shares a term, but is beyond the vector ranking's depth: BM25 only.
    index = concept_index(["wedding venue", *texts])
    first, second = index.hybrid_search("marriage venue", concept_vector("marriage"), k=2)
    assert (first.position, first.vector_rank, first.bm25_rank) == (len(texts), 1, None)
    assert (second.position, second.vector_rank, second.bm25_rank) == (0, None, 1)
    assert first.score == second.score == pytest.approx(1 / (RRF_K + 1))  # the newer first
    deeper = index.hybrid_search("marriage venue", concept_vector("marriage"), k=500)
    assert len(deeper) == len(texts) + 1  # k above RRF_DEPTH deepens both rankings
    assert deeper[0].position == 0
    assert deeper[0].vector_rank == len(texts) + 1


def test_vectors_are_unit_and_checked():
    index = concept_index(["wedding"])
    assert index.vectors[0] == (1.0, 0.0, 0.0, 0.0)
    assert index.dimensions == DIMENSIONS
    with pytest.raises(ValueError, match="dimensions"):
        index.query_vector([1.0, 0.0])
    with pytest.raises(ValueError, match="zero"):
        index.query_vector([0.0] * DIMENSIONS)


# ------------------------------------------------------------------ the assembler


@pytest.mark.parametrize("layout", ["classic", "stable"])
def test_a_turn_sharing_no_word_with_the_question_is_recalled_by_meaning(manager, layout):
    long_session(manager, "s1", 600, fact_at=40)
    position = fact_position(manager, "s1")
    lexical = ContextPromptAssembler(manager, max_tokens=1500, reserve_tokens=300, layout=layout)
    plain = lexical.assemble("s1", SEMANTIC_QUESTION)
    assert FACT not in text_of(plain.messages)  # BM25 cannot find it: no shared term
    assert all(FACT not in text_of([m]) for m in plain.history)

    embeddings = ConceptEmbeddings()
    hybrid = ContextPromptAssembler(
        manager, max_tokens=1500, reserve_tokens=300, layout=layout, embeddings=embeddings
    )
    result = hybrid.assemble("s1", SEMANTIC_QUESTION)
    counter = manager.token_counter
    assert counter.count_chat(result.messages) == result.report.total_tokens <= 1200
    assert FACT in text_of(result.messages)
    [hit] = [e for e in result.report.recalled if e["index"] == position]
    assert hit["terms"] == []
    assert hit["bm25"] == 0.0
    assert hit["similarity"] == pytest.approx(1.0)
    assert hit["reason"].startswith("vector 1.00 (fused 0.0164); whole turn")
    assert hit["score"] == pytest.approx(1 / (RRF_K + 1), abs=1e-4)
    assert hit["message_id"] == manager.get_history("s1")[position]["id"]
    assert result.report.as_dict()["recalled"] == result.report.recalled
    assert "compaction_notes" not in result.report.as_dict()


def test_reasons_name_both_rankings_when_both_found_it(manager):
    long_session(manager, "s1", 600, fact_at=40)
    assembler = ContextPromptAssembler(
        manager, max_tokens=1500, reserve_tokens=300, embeddings=ConceptEmbeddings()
    )
    result = assembler.assemble("s1", LEXICAL_QUESTION)
    [top] = [e for e in result.report.recalled if e["index"] == fact_position(manager, "s1")]
    assert max(result.report.recalled, key=lambda e: e["score"]) is top
    assert {"sister", "wed", "venu"} <= set(top["terms"])
    assert re.match(
        r"BM25 \d+\.\d\d on .* \+ vector 1\.00 \(fused 0\.0328\); whole turn", top["reason"]
    )
    assert top["score"] == pytest.approx(2 / (RRF_K + 1), abs=1e-4)
    # Its neighbours are in the lexical ranking too (BM25 in context), with no terms.
    beside = [e for e in result.report.recalled if not e["terms"] and e["bm25"] > 0]
    assert beside
    for entry in beside:
        assert entry["reason"].startswith(f"BM25 {entry['bm25']:.2f} from the messages beside it")


def test_vectors_are_computed_once_per_message(manager):
    long_session(manager, "s1", 300, fact_at=10)
    embeddings = ConceptEmbeddings()
    assembler = ContextPromptAssembler(
        manager, max_tokens=1200, reserve_tokens=200, embeddings=embeddings
    )
    questions = [SEMANTIC_QUESTION, LEXICAL_QUESTION, "the dog?", "a plane"]
    for round_ in range(4):
        assembler.assemble("s1", questions[round_])
        manager.add_messages(
            "s1", [HumanMessage(f"my puppy is {round_} years old"), AIMessage("Lovely.")]
        )
    assembler.assemble("s1", "pet")
    stored = manager.get_history("s1")
    assert len(embeddings.embedded) == len(stored)  # every message once, none again
    assert sorted(embeddings.embedded) == sorted(r["content"] for r in stored)
    # The first assembly embedded the whole history in batches, then only what was new.
    sizes = [len(call) for call in embeddings.document_calls]
    assert max(sizes) <= 256
    assert sizes[-4:] == [2, 2, 2, 2]
    assert embeddings.query_calls == [*questions, "pet"]  # once per assembly
    # The recall tool given the same embeddings shares the vectors.
    tool = make_recall_tool(manager, "s1", embeddings=embeddings, sources=False)
    answer = tool.invoke({"query": SEMANTIC_QUESTION})
    assert FACT in answer
    assert len(embeddings.embedded) == len(stored)
    assert recall_for(manager, embeddings) is assembler.recall


def test_an_edit_embeds_only_the_message_it_changed(manager):
    long_session(manager, "s1", 200, fact_at=10)
    embeddings = ConceptEmbeddings()
    assembler = ContextPromptAssembler(
        manager, max_tokens=1200, reserve_tokens=200, embeddings=embeddings
    )
    assembler.assemble("s1", SEMANTIC_QUESTION)
    before = len(embeddings.embedded)
    history = manager.get_history("s1")
    manager.replace_message("s1", history[100]["id"], HumanMessage("the bride wore blue"))
    manager.delete_message("s1", history[50]["id"])
    result = assembler.assemble("s1", SEMANTIC_QUESTION)
    assert embeddings.embedded[before:] == ["the bride wore blue"]  # the rest carried over
    assert assembler.recall.rebuilds == 2
    assert "the bride wore blue" in text_of(result.messages)
    assert FACT in text_of(result.messages)


async def test_async_assembly_uses_the_async_calls_and_equals_sync(manager):
    long_session(manager, "s1", 600, fact_at=40)
    embeddings = ConceptEmbeddings()
    assembler = ContextPromptAssembler(
        manager, max_tokens=1500, reserve_tokens=300, embeddings=embeddings
    )
    result = await assembler.aassemble("s1", SEMANTIC_QUESTION)
    # The sync one loads the vectors the async one saved in the store (same model).
    sync_embeddings = ConceptEmbeddings()
    sync = ContextPromptAssembler(
        manager, max_tokens=1500, reserve_tokens=300, embeddings=sync_embeddings
    ).assemble("s1", SEMANTIC_QUESTION)
    assert sync_embeddings.embedded == []
    assert embeddings.document_calls == []
    assert embeddings.query_calls == []
    assert embeddings.async_query_calls == [SEMANTIC_QUESTION]
    assert len(embeddings.embedded) == len(manager.get_history("s1"))
    assert [m.content for m in result.messages] == [m.content for m in sync.messages]
    assert result.report.recalled == sync.report.recalled
    assert FACT in text_of(result.messages)
    manager.add_messages("s1", [HumanMessage("a new dog"), AIMessage("Woof.")])
    await assembler.aassemble("s1", "puppy")
    assert embeddings.async_document_calls[-1] == ["a new dog", "Woof."]
    # The async tool too.
    tool = make_recall_tool(manager, "s1", embeddings=embeddings, sources=False)
    assert FACT in await tool.ainvoke({"query": SEMANTIC_QUESTION})
    assert embeddings.async_query_calls[-1] == SEMANTIC_QUESTION


@pytest.mark.parametrize(("documents", "query"), [(True, True), (True, False), (False, True)])
def test_failing_embeddings_fall_back_to_lexical_with_a_warning(manager, caplog, documents, query):
    long_session(manager, "s1", 600, fact_at=40)
    lexical = ContextPromptAssembler(manager, max_tokens=1500, reserve_tokens=300)
    expected = lexical.assemble("s1", LEXICAL_QUESTION)
    broken = BrokenEmbeddings(documents=documents, query=query)
    assembler = ContextPromptAssembler(
        manager, max_tokens=1500, reserve_tokens=300, embeddings=broken
    )
    with caplog.at_level(logging.WARNING, logger="ctx_memory.recall"):
        result = assembler.assemble("s1", LEXICAL_QUESTION)
    assert [m.content for m in result.messages] == [m.content for m in expected.messages]
    assert result.report.recalled == expected.report.recalled  # BM25 reasons, no vector
    assert FACT in text_of(result.messages)
    assert any("embeddings" in r.getMessage() for r in caplog.records)
    notes = result.report.compaction_notes
    assert notes
    assert all(n.startswith("embeddings:") for n in notes)
    assert "ConnectionError: embeddings service unavailable" in notes[0]
    if documents:
        # Back up: what was not embedded is embedded at the next update, once.
        broken.fail_documents = broken.fail_query = False
        recovered = assembler.assemble("s1", SEMANTIC_QUESTION)
        assert FACT in text_of(recovered.messages)
        assert len(broken.embedded) == len(manager.get_history("s1"))
        assert recovered.report.compaction_notes == []


async def test_failing_async_embeddings_fall_back_to_lexical(manager, caplog):
    long_session(manager, "s1", 600, fact_at=40)
    expected = ContextPromptAssembler(manager, max_tokens=1500, reserve_tokens=300).assemble(
        "s1", LEXICAL_QUESTION
    )
    assembler = ContextPromptAssembler(
        manager, max_tokens=1500, reserve_tokens=300, embeddings=BrokenEmbeddings()
    )
    with caplog.at_level(logging.WARNING, logger="ctx_memory.recall"):
        result = await assembler.aassemble("s1", LEXICAL_QUESTION)
    assert [m.content for m in result.messages] == [m.content for m in expected.messages]
    assert result.report.compaction_notes
    assert any("not embedded" in r.getMessage() for r in caplog.records)


def test_an_embeddings_returning_the_wrong_shape_is_a_failure_too(manager, caplog):
    class Short(ConceptEmbeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return super().embed_documents(texts)[:-1]

    long_session(manager, "s1", 300, fact_at=10)
    assembler = ContextPromptAssembler(
        manager, max_tokens=1200, reserve_tokens=200, embeddings=Short()
    )
    with caplog.at_level(logging.WARNING, logger="ctx_memory.recall"):
        result = assembler.assemble("s1", LEXICAL_QUESTION)
    assert "ValueError" in result.report.compaction_notes[0]
    assert FACT in text_of(result.messages)


def test_a_zero_vector_leaves_only_its_message_without_one(manager):
    """A bag-of-words model gives a text of unknown words the zero vector: that message is
    found by BM25 alone and not sent again; the rest of its batch keeps its vectors."""
    sent: list[str] = []

    class BagOfWords(ConceptEmbeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            sent.extend(texts)
            vectors = super().embed_documents(texts)
            return [[0.0] * len(v) if t == "ok" else v for t, v in zip(texts, vectors, strict=True)]

    for i in range(50):
        manager.add_user_message("s1", f"Question {i} about the trip")
        manager.add_assistant_message("s1", f"Answer {i}")
    manager.add_user_message("s1", "ok")
    embeddings = BagOfWords()
    tool = make_recall_tool(manager, "s1", embeddings=embeddings)
    for _ in range(3):
        tool.invoke({"query": "trip"})
    index = recall_for(manager, embeddings).index(manager, "s1", manager.get_header("s1"))
    assert index.vector_count == 100
    assert len(sent) == 101  # each once


def tool_session(manager: ContextManager, rng: random.Random, turns: int) -> None:
    messages: list[BaseMessage] = []
    for i in range(turns):
        words = [*WORDS, "wedding", "dog", "plane"]
        messages.append(
            HumanMessage(" ".join(rng.choice(words) for _ in range(rng.randint(1, 15))))
        )
        for j in range(rng.choice([0, 0, 1, 2])):
            call = f"call-{i}-{j}"
            messages.append(
                AIMessage(
                    "",
                    tool_calls=[{"name": "search", "args": {"q": rng.choice(WORDS)}, "id": call}],
                )
            )
            messages.append(
                ToolMessage(
                    " ".join(rng.choice(words) for _ in range(rng.randint(1, 40))),
                    tool_call_id=call,
                )
            )
        if rng.random() < 0.05:
            messages.append(ToolMessage("orphan result", tool_call_id=f"gone-{i}"))
        messages.append(AIMessage(" ".join(rng.choice(words) for _ in range(rng.randint(1, 30)))))
    manager.add_messages("s", messages)


@pytest.mark.parametrize("seed", range(8))
def test_the_budget_is_never_exceeded_with_hybrid_recall(seed):
    rng = random.Random(seed)
    embeddings = DeterministicFakeEmbedding(size=16)
    with ContextManager(store=InMemoryStore()) as manager:
        tool_session(manager, rng, rng.randint(30, 250))
        counter = manager.token_counter
        recalled = vector_only = 0
        for layout in ("classic", "stable"):
            for budget in (200, 700, 1500):
                assembler = ContextPromptAssembler(
                    manager,
                    max_tokens=budget + 100,
                    reserve_tokens=100,
                    layout=layout,
                    recall_share=rng.choice([0.2, 0.5, 0.8]),
                    embeddings=embeddings,
                )
                question = " ".join(rng.choice([*WORDS, "bride", "puppy"]) for _ in range(4))
                result = assembler.assemble("s", question)
                report = result.report
                assert counter.count_chat(result.messages) == report.total_tokens <= budget
                assert_no_orphans(result.messages)
                assert report.compaction_notes == []
                recalled += len(report.recalled)
                vector_only += sum(1 for e in report.recalled if not e["terms"])
        assert recalled > 0
        assert vector_only > 0  # random vectors: some hits share no term with the question


def test_without_embeddings_nothing_changes(manager):
    long_session(manager, "s1", 600, fact_at=40)
    default = ContextPromptAssembler(manager, max_tokens=1500, reserve_tokens=300)
    assert default.embeddings is None
    assert default.recall is recall_for(manager)
    assert default.recall.embeddings is None
    before = default.assemble("s1", LEXICAL_QUESTION)
    # A hybrid assembler on the same manager has its own index cache...
    hybrid = ContextPromptAssembler(
        manager, max_tokens=1500, reserve_tokens=300, embeddings=ConceptEmbeddings()
    )
    hybrid.assemble("s1", LEXICAL_QUESTION)
    assert hybrid.recall is not default.recall
    # ...so the lexical one's prompts and reports stay exactly as they were.
    after = default.assemble("s1", LEXICAL_QUESTION)
    assert [(type(m), m.content, m.id) for m in after.messages] == [
        (type(m), m.content, m.id) for m in before.messages
    ]
    assert after.report == before.report
    for entry in after.report.recalled:
        assert set(entry) == {"message_id", "index", "score", "terms", "reason"}
    assert all(
        v is None for v in default.recall.index(manager, "s1", manager.get_header("s1")).vectors
    )


def test_options_are_checked_and_passed_through(manager):
    embeddings = ConceptEmbeddings()
    with pytest.raises(ValidationError, match="Embeddings"):
        ContextPromptAssembler(manager, embeddings="text-embedding-3-small")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="other embeddings"):
        ContextPromptAssembler(manager, recall=Recall(), embeddings=embeddings)
    own = Recall(embeddings=embeddings)
    assert ContextPromptAssembler(manager, recall=own).embeddings is embeddings
    assert ContextPromptAssembler(manager, recall=own, embeddings=embeddings).recall is own
    with pytest.raises(ValueError, match="embed_batch_size"):
        Recall(embeddings=embeddings, embed_batch_size=0)

    from langchain_core.language_models import GenericFakeChatModel

    from ctx_memory.chat import ContextualChat

    chat = ContextualChat(
        manager, GenericFakeChatModel(messages=iter([])), max_tokens=2000, embeddings=embeddings
    )
    assert chat.assembler.embeddings is embeddings


def test_recall_batches_and_shares_per_embeddings_object(manager):
    embeddings = ConceptEmbeddings()
    recall = Recall(embeddings=embeddings, embed_batch_size=7)
    recall.watch(manager)
    long_session(manager, "s1", 10, fact_at=2)  # 22 messages
    index = recall.index(manager, "s1", manager.get_header("s1"))
    assert [len(c) for c in embeddings.document_calls] == [7, 7, 7, 1]
    assert index.vector_count == 22
    assert recall.embed_query("  ", index) is None  # a blank question: nothing to embed
    assert embeddings.query_calls == []
    assert recall_for(manager, embeddings) is recall_for(manager, embeddings)
    assert recall_for(manager, embeddings) is not recall_for(manager, ConceptEmbeddings())
    assert recall_for(manager) is not recall_for(manager, embeddings)


def test_context_middleware_recalls_by_meaning_inside_an_agent(manager):
    from typing import TypedDict

    from adapter_fakes import fake_model
    from langchain.agents import create_agent

    from ctx_memory.middleware import ContextMiddleware

    class SessionContext(TypedDict):
        session_id: str

    long_session(manager, "s1", 600, fact_at=40)
    model = fake_model("The Orangery at Kew Gardens.")
    middleware = ContextMiddleware(
        manager, max_tokens=1500, reserve_tokens=300, embeddings=ConceptEmbeddings()
    )
    assert middleware.assembler.embeddings is not None
    agent = create_agent(model, middleware=[middleware], context_schema=SessionContext)
    agent.invoke({"messages": [("user", SEMANTIC_QUESTION)]}, context={"session_id": "s1"})
    [sent] = model.seen
    assert FACT in text_of(sent)  # recalled by meaning: no shared term with the question
