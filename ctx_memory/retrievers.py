"""Retrievers over a session's fetched context, and one that records what another finds.

:class:`FetchedContextRetriever` ranks the sources a session has gathered (search results,
scraped pages, ...) against a query with BM25 (:func:`ctx_memory.ranking.rank_sources`, the
same ranking the prompt assembler uses), most recent first among equals, in any language
(case and accents folded, Chinese, Japanese, Korean and Thai cut into character bigrams;
or your own tokenizer).
:class:`SourceRecordingRetriever` wraps any retriever (a web-search retriever, a vector
store) and files what it returns into the session's ``fetched_context``, deduplicated, so
the assembler and the HTML view can show it later.

Both take the session id from ``config["configurable"]["session_id"]`` when invoked, else
from their ``session_id`` field. The retrieval itself lives in
``_get_relevant_documents`` / ``_aget_relevant_documents``; ``invoke`` / ``ainvoke`` only
forward the configured session id to them (``BaseRetriever`` does not pass the config on).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables.config import ensure_config, run_in_executor
from pydantic import ConfigDict, Field
from typing_extensions import override

from ctx_memory.errors import NotSerializableError, ValidationError
from ctx_memory.manager import ContextManager  # noqa: TC001 - pydantic field type, needed at runtime
from ctx_memory.prompt import session_id_from
from ctx_memory.ranking import Tokenizer, rank_sources
from ctx_memory.schema import check_json_native

if TYPE_CHECKING:
    from collections.abc import Mapping

    from langchain_core.callbacks import (
        AsyncCallbackManagerForRetrieverRun,
        CallbackManagerForRetrieverRun,
    )
    from langchain_core.runnables import RunnableConfig

__all__ = ["FetchedContextRetriever", "SourceRecordingRetriever", "item_to_document"]

_DATA_KEYS = ("title", "site_name", "published_date")


def item_to_document(item: Mapping[str, Any], *, score: float | None = None) -> Document:
    """A stored fetched item as a Document (``page_content`` is the item's content).

    The metadata holds ``source_type``, ``url``, ``timestamp``, ``title``, ``site_name``,
    ``published_date``, the rest of ``extracted_data``, ``token_count`` and the BM25
    ``score`` when given. The item's own ``source_type``, ``url``, ``timestamp`` and
    ``token_count`` win over keys of the same name in ``extracted_data``.
    """
    data = dict(item.get("extracted_data") or {})
    metadata: dict[str, Any] = dict.fromkeys(("source_type", "url", "timestamp"))
    for key in _DATA_KEYS:
        metadata[key] = data.pop(key, None)
    metadata.update(data)
    metadata["source_type"] = item.get("source_type")
    metadata["url"] = item.get("url")
    metadata["timestamp"] = item.get("timestamp")
    metadata["token_count"] = item.get("token_count")
    if score is not None:
        metadata["score"] = score
    return Document(page_content=str(item.get("content") or ""), metadata=metadata)


def _count(k: object) -> int:
    """A ``k`` given at invoke time: a non-negative int (a negative one slices from the end)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        msg = f"k must be a non-negative int, got {k!r}"
        raise ValidationError(msg)
    return k


def _forward_session(config: RunnableConfig | None, kwargs: dict[str, Any]) -> None:
    configurable = ensure_config(config).get("configurable") or {}
    if configurable.get("session_id") and "session_id" not in kwargs:
        kwargs["session_id"] = configurable["session_id"]


class _SessionRetriever(BaseRetriever):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    manager: ContextManager = Field(exclude=True)
    """Where the session lives."""
    session_id: str | None = None
    """Default session id (``config["configurable"]["session_id"]`` wins)."""

    def _session(self, session_id: str | None) -> str:
        return session_id_from(None, session_id or self.session_id, owner=type(self).__name__)

    @override
    def invoke(
        self, input: str, config: RunnableConfig | None = None, **kwargs: Any
    ) -> list[Document]:
        _forward_session(config, kwargs)
        return super().invoke(input, config, **kwargs)

    @override
    async def ainvoke(
        self, input: str, config: RunnableConfig | None = None, **kwargs: Any
    ) -> list[Document]:
        _forward_session(config, kwargs)
        return await super().ainvoke(input, config, **kwargs)


class FetchedContextRetriever(_SessionRetriever):
    """Ranks a session's fetched context against the query (BM25, recency tie-break).

    Args:
        manager: Where the session lives.
        session_id: Default session id; ``config["configurable"]["session_id"]`` wins.
        k: How many documents to return (also accepted as ``invoke(..., k=)``).
        source_types: Only these source types (default: all).
        min_score: Return only documents that share a term with the query and score at
            least this; so with ``min_score=0`` a query matching nothing returns ``[]``.
            Default ``None``: keep all, so up to ``k`` documents always come back, those
            sharing no term with the query last, newest first.
        tokenizer: Splits the query and the sources into terms (any
            ``str -> list[str]``); default :func:`ctx_memory.ranking.tokenize`.

    Example:
        .. code-block:: python

            from ctx_memory import ContextManager, FetchedContextRetriever

            manager = ContextManager()
            manager.add_fetched_context(
                "s1", "web_search", "Paris flights from $420.", url="https://a.example",
                extracted_data={"title": "Paris fares"},
            )
            manager.add_fetched_context("s1", "web_search", "Rome hotels.", url="https://b.example")
            retriever = FetchedContextRetriever(manager=manager, session_id="s1", k=1)
            [doc] = retriever.invoke("cheap flights to Paris")
            assert doc.metadata["url"] == "https://a.example"
            assert doc.metadata["title"] == "Paris fares"

            # Chinese, Japanese, Korean and accented text match too:
            manager.add_fetched_context("s1", "web_search", "東京の天気は晴れ。")
            [doc] = retriever.invoke("東京")
            assert doc.page_content == "東京の天気は晴れ。"
            # With min_score set, a query that matches nothing returns nothing:
            strict = FetchedContextRetriever(manager=manager, session_id="s1", min_score=0)
            assert strict.invoke("Lisbon trams") == []
    """

    k: int = Field(default=4, ge=0)
    source_types: list[str] | None = None
    min_score: float | None = None
    tokenizer: Tokenizer | None = Field(default=None, exclude=True)

    def _rank(
        self, query: str, fetched: Mapping[str, list[dict[str, Any]]], k: int | None
    ) -> list[Document]:
        items = [
            item
            for source_type, entries in fetched.items()
            if self.source_types is None or source_type in self.source_types
            for item in entries
        ]
        ranked = rank_sources(query, items, tokenizer=self.tokenizer)
        if self.min_score is not None:
            ranked = [(s, i) for s, i in ranked if s > 0.0 and s >= self.min_score]
        limit = self.k if k is None else _count(k)
        return [item_to_document(item, score=score) for score, item in ranked[:limit]]

    @override
    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        session_id: str | None = None,
        k: int | None = None,
    ) -> list[Document]:
        fetched = self.manager.get_fetched_context(self._session(session_id))
        return self._rank(query, fetched, k)

    @override
    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        session_id: str | None = None,
        k: int | None = None,
    ) -> list[Document]:
        fetched = await self.manager.aget_fetched_context(self._session(session_id))
        return self._rank(query, fetched, k)


def _sync_only(retriever: BaseRetriever) -> bool:
    """Whether ``retriever`` has no async path of its own (LangChain's fallback would run).

    Its own ``_aget_relevant_documents`` or its own ``ainvoke`` is an async path.
    """
    kind = type(retriever)
    return (
        kind._aget_relevant_documents is BaseRetriever._aget_relevant_documents
        and kind.ainvoke is BaseRetriever.ainvoke
    )


class SourceRecordingRetriever(_SessionRetriever):
    """Wraps a retriever and records what it returns in the session's fetched context.

    The documents are returned unchanged (cut to ``k`` if set); each becomes a fetched
    item under its ``metadata["source_type"]`` or ``source_type``, with ``url`` from
    ``metadata["url"]`` / ``"source"`` / ``"link"`` and ``title``, ``site_name``,
    ``published_date`` and any other JSON-native metadata in ``extracted_data``. Items
    already stored (same type, URL and content) are not stored twice.

    Args:
        retriever: The retriever to wrap.
        manager: Where the session lives.
        session_id: Default session id; ``config["configurable"]["session_id"]`` wins.
        source_type: The source type for documents that do not name one.
        k: Return (and record) at most this many documents; also ``invoke(..., k=)``,
            which is passed on to the wrapped retriever too.

    Example:
        .. code-block:: python

            from langchain_core.documents import Document
            from langchain_core.retrievers import BaseRetriever

            from ctx_memory import ContextManager, SourceRecordingRetriever


            class Search(BaseRetriever):
                def _get_relevant_documents(self, query, *, run_manager):
                    return [Document("Fares drop in spring.", metadata={
                        "url": "https://fares.example", "title": "Fares"})]


            manager = ContextManager()
            recording = SourceRecordingRetriever(retriever=Search(), manager=manager)
            docs = recording.invoke("fares", config={"configurable": {"session_id": "s1"}})
            recording.invoke("fares", config={"configurable": {"session_id": "s1"}})
            [item] = manager.get_fetched_context("s1")["web_search"]
            assert item["extracted_data"]["title"] == "Fares"
            assert docs[0].page_content == item["content"]
    """

    retriever: BaseRetriever
    source_type: str = "web_search"
    k: int | None = Field(default=None, ge=0)

    def _items(self, documents: list[Document]) -> list[dict[str, Any]]:
        items = []
        for doc in documents:
            meta = dict(doc.metadata)
            url = meta.pop("url", None) or meta.pop("source", None) or meta.pop("link", None)
            source_type = meta.pop("source_type", None) or self.source_type
            data: dict[str, Any] = {}
            for key, value in meta.items():
                try:
                    check_json_native(value, key)
                except NotSerializableError:
                    continue  # e.g. an embedding array: not part of the stored record
                data[key] = value
            items.append(
                {
                    "source_type": str(source_type),
                    "content": doc.page_content,
                    "url": str(url) if url is not None else None,
                    "extracted_data": data,
                }
            )
        return items

    def _limit(self, documents: list[Document], k: int | None) -> list[Document]:
        limit = self.k if k is None else _count(k)
        return documents if limit is None else documents[:limit]

    @override
    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        session_id: str | None = None,
        k: int | None = None,
    ) -> list[Document]:
        session = self._session(session_id)
        extra = {} if k is None else {"k": k}
        found = self.retriever.invoke(query, {"callbacks": run_manager.get_child()}, **extra)
        documents = self._limit(found, k)
        self.manager.add_fetched_items(session, self._items(documents), dedupe=True)
        return documents

    @override
    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        session_id: str | None = None,
        k: int | None = None,
    ) -> list[Document]:
        session = self._session(session_id)
        extra = {} if k is None else {"k": k}
        config: RunnableConfig = {"callbacks": run_manager.get_child()}
        if extra and _sync_only(self.retriever):
            # LangChain's async fallback passes no keyword on to a sync-only retriever:
            # run its invoke (which does) in a thread, as that fallback would.
            found = await run_in_executor(None, self.retriever.invoke, query, config, **extra)
        else:
            found = await self.retriever.ainvoke(query, config, **extra)
        documents = self._limit(found, k)
        await self.manager.aadd_fetched_items(session, self._items(documents), dedupe=True)
        return documents
