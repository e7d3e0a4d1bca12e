from __future__ import annotations

from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_tests.integration_tests import RetrieversIntegrationTests

from ctx_memory import (
    ContextManager,
    FetchedContextRetriever,
    InMemoryStore,
    SourceRecordingRetriever,
    ValidationError,
)

ITEMS = [
    {
        "source_type": "web_search",
        "content": f"Paris travel tip number {i}: flights and hotels.",
        "url": f"https://tips.example/{i}",
        "timestamp": f"2026-11-{10 + i:02d}T00:00:00+00:00",
        "extracted_data": {"title": f"Tip {i}", "site_name": "Tips", "published_date": "2026"},
    }
    for i in range(5)
]
SHARED = ContextManager(store=InMemoryStore())
SHARED.add_fetched_items("standard", ITEMS)


class FakeSearch(BaseRetriever):
    """A stand-in for a web-search retriever: k results, each with a URL and a title."""

    k: int = 4

    def _get_relevant_documents(self, query: str, *, run_manager: Any, k: int | None = None):
        return [
            Document(
                f"Result {i} for {query}",
                metadata={"source": f"https://search.example/{i}", "title": f"R{i}"},
            )
            for i in range(k or self.k)
        ]


class TestFetchedContextRetrieverStandard(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[FetchedContextRetriever]:
        return FetchedContextRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"manager": SHARED, "session_id": "standard"}

    @property
    def retriever_query_example(self) -> str:
        return "paris flights"


class TestSourceRecordingRetrieverStandard(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[SourceRecordingRetriever]:
        return SourceRecordingRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"retriever": FakeSearch(), "manager": SHARED, "session_id": "recorded"}

    @property
    def retriever_query_example(self) -> str:
        return "paris flights"


def test_ranking_metadata_and_filters(manager):
    manager.add_fetched_items("s1", ITEMS)
    manager.add_fetched_context("s1", "js_scraping", "Rome page", url="https://rome.example")
    retriever = FetchedContextRetriever(manager=manager, session_id="s1", k=2)
    docs = retriever.invoke("rome")
    assert docs[0].metadata["url"] == "https://rome.example"
    assert docs[0].metadata["score"] > 0
    # Among equals, the newest first.
    assert docs[1].metadata["url"] == "https://tips.example/4"
    only_web = FetchedContextRetriever(
        manager=manager, session_id="s1", source_types=["web_search"]
    )
    doc = only_web.invoke("rome")[0]
    assert doc.metadata["source_type"] == "web_search"
    assert doc.metadata["title"] == "Tip 4"
    assert doc.metadata["site_name"] == "Tips"
    assert doc.metadata["published_date"] == "2026"
    assert doc.metadata["timestamp"].startswith("2026-11-14")
    strict = FetchedContextRetriever(manager=manager, session_id="s1", min_score=0.01, k=10)
    assert len(strict.invoke("rome")) == 1


def test_session_from_config_wins(manager):
    manager.add_fetched_context("a", "web", "alpha")
    manager.add_fetched_context("b", "web", "beta")
    retriever = FetchedContextRetriever(manager=manager, session_id="a")
    assert retriever.invoke("x")[0].page_content == "alpha"
    docs = retriever.invoke("x", config={"configurable": {"session_id": "b"}})
    assert docs[0].page_content == "beta"
    with pytest.raises(ValidationError, match="session id"):
        FetchedContextRetriever(manager=manager).invoke("x")


def test_in_a_chain_with_configurable_session(manager):
    from langchain_core.runnables import RunnableLambda

    manager.add_fetched_context("b", "web", "beta")
    chain = RunnableLambda(lambda q: q) | FetchedContextRetriever(manager=manager)
    assert chain.invoke("x", config={"configurable": {"session_id": "b"}})[0].page_content == "beta"


async def test_async_native(manager):
    manager.add_fetched_items("s1", ITEMS)
    retriever = FetchedContextRetriever(manager=manager, k=3)
    docs = await retriever.ainvoke("tip", config={"configurable": {"session_id": "s1"}})
    assert len(docs) == 3


def test_recording_dedupes_and_returns_unchanged(manager):
    search = FakeSearch(k=2)
    recording = SourceRecordingRetriever(retriever=search, manager=manager, session_id="s1")
    first = recording.invoke("paris")
    again = recording.invoke("paris")
    assert first == again == search.invoke("paris")
    items = manager.get_fetched_context("s1")["web_search"]
    assert len(items) == 2
    assert items[0]["url"] == "https://search.example/0"
    assert items[0]["extracted_data"] == {"title": "R0"}
    # What was recorded is now retrievable and assemblable.
    found = FetchedContextRetriever(manager=manager, session_id="s1").invoke("result 1")
    assert found[0].metadata["url"] == "https://search.example/1"


def test_recording_keeps_source_type_and_skips_non_json_metadata(manager):
    class Odd(BaseRetriever):
        def _get_relevant_documents(self, query, *, run_manager):
            return [
                Document(
                    "x",
                    metadata={"source_type": "js_scraping", "url": "u", "vector": object()},
                )
            ]

    SourceRecordingRetriever(retriever=Odd(), manager=manager, session_id="s1").invoke("q")
    [item] = manager.get_fetched_context("s1")["js_scraping"]
    assert item["extracted_data"] == {}


async def test_recording_async(manager):
    recording = SourceRecordingRetriever(retriever=FakeSearch(), manager=manager, k=1)
    docs = await recording.ainvoke("q", config={"configurable": {"session_id": "s1"}})
    assert len(docs) == 1
    assert len((await manager.aget_fetched_context("s1"))["web_search"]) == 1


async def test_recording_async_passes_k_to_a_sync_only_retriever(manager):
    """``ainvoke(..., k=)`` gives what ``invoke(..., k=)`` gives: LangChain's async fallback
    for a retriever with only ``_get_relevant_documents`` takes no keyword arguments."""
    config = {"configurable": {"session_id": "s1"}}
    recording = SourceRecordingRetriever(retriever=FakeSearch(), manager=manager)
    sync = recording.invoke("q", config=config, k=1)
    assert [d.page_content for d in await recording.ainvoke("q", config=config, k=1)] == [
        d.page_content for d in sync
    ]
    assert len(sync) == 1


async def test_recording_async_keeps_a_retrievers_own_ainvoke_with_k(manager):
    """A retriever whose async path is its own ``ainvoke`` keeps it when ``k`` is given."""

    class AsyncOnly(FakeSearch):
        def _get_relevant_documents(self, query: str, *, run_manager: Any, k: int | None = None):
            raise NotImplementedError("use ainvoke")

        async def ainvoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
            return FakeSearch().invoke(input, config, **kwargs)

    recording = SourceRecordingRetriever(retriever=AsyncOnly(), manager=manager)
    config = {"configurable": {"session_id": "s1"}}
    assert len(await recording.ainvoke("q", config=config, k=2)) == 2
    assert len(await recording.ainvoke("q", config=config)) == 4


# --------------------------------------------------------------------------- every language

WORLD = [
    ("web_search", "東京は日本の首都です。東京タワーが有名です。", "https://tokyo.example"),
    ("web_search", "京都には多くの寺があります。", "https://kyoto.example"),
    ("web_search", "日本語の勉強はひらがなとカタカナから。", "https://school.example"),
    ("web_search", "서울은 한국의 수도입니다.", "https://seoul.example"),
    ("web_search", "Café de Flore, Saint-Germain-des-Prés.", "https://paris.example"),
    ("web_search", "One Ångström is 0.1 nanometres.", "https://physics.example"),
    ("web_search", "Rome hotels are cheapest in February.", "https://rome.example"),
]


@pytest.fixture
def world(manager):
    for source_type, content, url in WORLD:
        manager.add_fetched_context("s1", source_type, content, url=url)
    return manager


@pytest.mark.parametrize(
    ("query", "url"),
    [
        ("東京", "https://tokyo.example"),
        ("日本語", "https://school.example"),
        ("カタカナ", "https://school.example"),
        ("서울", "https://seoul.example"),
        ("cafe", "https://paris.example"),
        ("CAFÉ DE FLORE", "https://paris.example"),
        ("angstrom", "https://physics.example"),
    ],
)
def test_queries_in_any_language_find_their_source(world, query, url):
    retriever = FetchedContextRetriever(manager=world, session_id="s1", k=1)
    [doc] = retriever.invoke(query)
    assert doc.metadata["url"] == url
    assert doc.metadata["score"] > 0


def test_min_score_returns_nothing_for_a_query_that_matches_nothing(world):
    strict = FetchedContextRetriever(manager=world, session_id="s1", k=4, min_score=0)
    assert strict.invoke("Lisbon trams") == []
    assert strict.invoke("リスボン") == []
    [doc] = strict.invoke("東京")
    assert doc.metadata["url"] == "https://tokyo.example"
    # Without min_score the documented behaviour stands: k documents, newest first.
    loose = FetchedContextRetriever(manager=world, session_id="s1", k=4)
    docs = loose.invoke("Lisbon trams")
    assert [d.metadata["url"] for d in docs] == [url for _, _, url in WORLD[::-1][:4]]
    assert all(d.metadata["score"] == 0 for d in docs)


async def test_min_score_async(world):
    strict = FetchedContextRetriever(manager=world, session_id="s1", min_score=0.0)
    assert await strict.ainvoke("Lisbon trams") == []
    assert len(await strict.ainvoke("cafe")) == 1


def test_custom_tokenizer_in_the_retriever(world):
    seen: list[str] = []

    def reversed_words(text: str) -> list[str]:
        seen.append(text)
        return [word[::-1].lower() for word in text.split()]

    retriever = FetchedContextRetriever(
        manager=world, session_id="s1", k=1, tokenizer=reversed_words, min_score=0
    )
    [doc] = retriever.invoke("Rome")
    assert doc.metadata["url"] == "https://rome.example"
    assert "Rome" in seen
    assert retriever.invoke("東京") == []  # whitespace words: "東京は日本の首都です。..." is one
    assert "tokenizer" not in retriever.model_dump()
