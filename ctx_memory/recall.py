"""Recall: a lexical (BM25) index over a session's whole history, kept up to date cheaply.

Three layers, from pure to I/O:

- :class:`RecallIndex` is pure: records are added in history order (``O(new text)``
  each: their terms go into an inverted index), :meth:`RecallIndex.search` scores only
  the postings of the query's terms (Okapi BM25, the IDF and parameters of
  :func:`ctx_memory.ranking.bm25_scores`, terms from :func:`recall_terms`: folded case
  and accents, English stop words dropped, a light English stemmer) and
  :meth:`RecallIndex.turn` gives the whole turn around a position. It also keeps each
  message's role, id and cached ``token_count``, so choosing what to recall needs no read.
- :class:`Recall` keeps one index per session of one manager's store in a bounded,
  in-process LRU cache and brings it up to date before each use by reading only the
  messages written since (``get_message_range(session, n_indexed, message_count - 1)``).
  An index is dropped when the history was edited (``history_edited``,
  ``session_cleared``, ``session_deleted``, ``session_expired``, ``session_evicted``
  events), when ``message_count`` went down, or when the indexed ``token_count`` no
  longer adds up to the session's (an edit by another process); it is then rebuilt
  from the store on next use. :func:`recall_for` gives the shared :class:`Recall` of a
  manager; the prompt assembler uses it.
- :func:`make_recall_tool` is a LangChain tool an agent calls to bring back older turns
  matching a query (whole turns, tool calls with their results), with their positions.
- :func:`search_history` (and :func:`asearch_history`) give people the same search:
  the best-matching stored messages with their positions, scores and matched terms
  (``ctx-memory search``, the service's ``/v1/sessions/{id}/search``, the inspector).

What is and is not persisted: **nothing of the index is stored**. The history is (with
its token counts); the index lives in the process and is rebuilt from the history when
missing (about 0.3 s for 10,000 messages; see ``benchmarks/bench_recall.py``). Writes
pay nothing for it: appending a message does not touch the index; the next assembly
indexes what was appended since the last one.

Hybrid recall (optional): a :class:`Recall` made with a LangChain ``Embeddings``
(``Recall(embeddings=...)``, ``recall_for(manager, embeddings)``, or the ``embeddings=``
option of the assembler and the tool) also keeps one vector per message. Vectors are
computed when messages are indexed, with ``embed_documents`` (``aembed_documents`` on the
async path) in batches of at most ``embed_batch_size``, **once per message**: kept in the
index by position, carried over by message id and text when the index is rebuilt after an
edit, never computed again by later assemblies. The question is embedded once per search
(``embed_query`` / ``aembed_query``). :meth:`RecallIndex.hybrid_search` fuses the BM25
ranking and the cosine ranking by reciprocal rank fusion (:data:`RRF_K`,
:data:`RRF_DEPTH`), so a message that shares no term with the question can be recalled
by its meaning. A failing embeddings call never breaks a search: a warning is logged,
messages not embedded are retried at the next update, and a search whose query was not
embedded is the lexical one.
"""

from __future__ import annotations

import json
import logging
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ctx_memory._recall_index import (
    RRF_DEPTH,
    RRF_K,
    RecallHit,
    RecallIndex,
    VectorKey,
    recall_terms,
    record_text,
    unit_vector,
)
from ctx_memory._recall_search import (
    MAX_SEARCH_HITS,
    HistoryHit,
    asearch_history,
    search_history,
)
from ctx_memory.errors import ValidationError
from ctx_memory.events import EventType

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from langchain_core.embeddings import Embeddings
    from langchain_core.tools import BaseTool

    from ctx_memory.events import Event
    from ctx_memory.manager import ContextManager
    from ctx_memory.ranking import Tokenizer

__all__ = [
    "EMBED_BATCH_SIZE",
    "INVALIDATING_EVENTS",
    "MAX_SEARCH_HITS",
    "RRF_DEPTH",
    "RRF_K",
    "HistoryHit",
    "Recall",
    "RecallHit",
    "RecallIndex",
    "RecallUpdate",
    "asearch_history",
    "format_turns",
    "gap_text",
    "make_recall_tool",
    "record_text",
    "recall_for",
    "recall_terms",
    "search_history",
    "tool_ranges",
    "unit_vector",
]

INVALIDATING_EVENTS = (
    EventType.HISTORY_EDITED,
    EventType.SESSION_CLEARED,
    EventType.SESSION_DELETED,
    EventType.SESSION_EXPIRED,
    EventType.SESSION_EVICTED,
)
"""Events after which a session's index is dropped (rebuilt on next use)."""

EMBED_BATCH_SIZE = 256
"""Most texts per ``embed_documents`` call when indexing."""

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecallUpdate:
    """What to read to bring a session's index up to date (see :meth:`Recall.plan`).

    Attributes:
        session_id: The session.
        index: The index to extend (a fresh one when rebuilding).
        start: First position to read.
        stop: Last position to read (inclusive); ``stop < start`` means nothing to read.
        token_count: The session's ``metadata.token_count`` when its header was read.
    """

    session_id: str
    index: RecallIndex
    start: int
    stop: int
    token_count: int

    @property
    def reads(self) -> bool:
        """Whether messages are to be read."""
        return self.stop >= self.start


class Recall:
    """One :class:`RecallIndex` per session, bounded, kept up to date incrementally.

    Pure but for :meth:`index` / :meth:`aindex`, which read only the messages written
    since the index was last brought up to date. Register it on a manager
    (:meth:`watch`, done by :func:`recall_for`) so edits drop the edited session's index.

    Args:
        max_sessions: Sessions kept; the least recently used index is dropped first.
        tokenizer: For the indexes (default :func:`ctx_memory.ranking.tokenize`).
        embeddings: A LangChain ``Embeddings`` for hybrid recall (default: none, BM25
            only). :meth:`index` / :meth:`aindex` then also embed the messages they add
            (``embed_documents`` / ``aembed_documents``, the message's searchable text
            :func:`record_text`, empty ones skipped), once each: vectors stay in the
            index, and survive a rebuild after an edit (matched by message id and text).
            A failing call is logged as a warning and retried for the same messages at
            the next update; meanwhile those messages are found by BM25 alone. Use one
            embeddings object for the life of the process: vectors belong to it.
        embed_batch_size: Most texts per ``embed_documents`` call.

    Example:
        .. code-block:: python

            from ctx_memory import ContextManager
            from ctx_memory.recall import recall_for

            manager = ContextManager()
            manager.add_user_message("s1", "The wifi password is tulip42")
            manager.add_assistant_message("s1", "Got it.")
            recall = recall_for(manager)
            index = recall.index(manager, "s1", manager.get_header("s1"))
            assert index.search("wifi password")[0][0] == 0
            manager.add_user_message("s1", "Thanks")
            assert len(recall.index(manager, "s1", manager.get_header("s1"))) == 3
    """

    def __init__(
        self,
        *,
        max_sessions: int = 128,
        tokenizer: Tokenizer | None = None,
        embeddings: Embeddings | None = None,
        embed_batch_size: int = EMBED_BATCH_SIZE,
    ) -> None:
        if embed_batch_size < 1:
            msg = f"embed_batch_size must be at least 1, got {embed_batch_size}"
            raise ValidationError(msg)
        self.max_sessions = max_sessions
        self.tokenizer = tokenizer
        self.embeddings = embeddings
        self.embed_batch_size = embed_batch_size
        self._indexes: OrderedDict[str, RecallIndex] = OrderedDict()
        self._carried: OrderedDict[str, dict[VectorKey, tuple[float, ...]]] = OrderedDict()
        self._lock = threading.Lock()
        self._subscriptions: list[Callable[[], None]] = []
        self.rebuilds = 0

    def watch(self, manager: ContextManager) -> None:
        """Drop a session's index whenever ``manager`` reports its history edited or gone."""
        for event_type in INVALIDATING_EVENTS:
            self._subscriptions.append(manager.on(event_type, self._on_event))

    def unwatch(self) -> None:
        """Stop listening to the managers :meth:`watch` registered on."""
        while self._subscriptions:
            self._subscriptions.pop()()

    def _on_event(self, event: Event) -> None:
        self.forget(event.session_id, keep_vectors=event.type == EventType.HISTORY_EDITED)

    def forget(self, session_id: str, *, keep_vectors: bool = False) -> None:
        """Drop the session's index (it is rebuilt on next use).

        With ``keep_vectors`` (after an edit), its vectors are kept, by message id and
        text, for the rebuilt index: messages the edit did not touch are not embedded
        again.
        """
        with self._lock:
            index = self._indexes.pop(session_id, None)
            if keep_vectors and index is not None:
                self._carry(session_id, index)
            elif not keep_vectors:
                self._carried.pop(session_id, None)

    def _carry(self, session_id: str, index: RecallIndex) -> None:
        """Keep ``index``'s vectors for a rebuild (under the lock)."""
        if self.embeddings is None or not index.vector_keys:
            return
        kept = self._carried.setdefault(session_id, {})
        vectors = index.vectors
        for key, position in index.vector_keys.items():
            vector = vectors[position]
            if vector is not None:
                kept[key] = vector
        self._carried.move_to_end(session_id)
        while len(self._carried) > self.max_sessions:
            self._carried.popitem(last=False)

    def plan(
        self, session_id: str, header: Mapping[str, Any] | None, *, rebuild: bool = False
    ) -> RecallUpdate:
        """What to read for ``session_id`` given its header (``None``: no session)."""
        meta: Mapping[str, Any] = header["metadata"] if header else {}
        stored = int(meta.get("message_count", 0))
        token_count = int(meta.get("token_count", 0))
        with self._lock:
            index = None if rebuild else self._indexes.get(session_id)
            if index is not None and len(index) > stored:
                self._carry(session_id, index)
        if index is None or len(index) > stored:
            index = RecallIndex(self.tokenizer)
        return RecallUpdate(session_id, index, len(index), stored - 1, token_count)

    def apply(
        self, update: RecallUpdate, records: Sequence[Mapping[str, Any]]
    ) -> RecallIndex | None:
        """Add what was read; ``None`` if the index no longer matches the session.

        A mismatch (the indexed tokens do not add up to the session's ``token_count``)
        means the history changed in a way no event reported here (another process
        edited it): the index is dropped and the caller rebuilds it. With embeddings,
        the records added are queued for embedding (:meth:`index` does it), but for
        those whose vector a rebuilt index carries over.
        """
        index = update.index
        with self._lock:
            if len(index) == update.start:  # not extended meanwhile by another caller
                index.extend(records)
                if self.embeddings is not None:
                    self._queue(update.session_id, index, update.start, records)
            consistent = index.token_sum == update.token_count or len(index) != update.stop + 1
            if not consistent:
                dropped = self._indexes.pop(update.session_id, None)
                if dropped is not None:
                    self._carry(update.session_id, dropped)
                self._carry(update.session_id, index)
                return None
            self._indexes[update.session_id] = index
            self._indexes.move_to_end(update.session_id)
            while len(self._indexes) > self.max_sessions:
                self._indexes.popitem(last=False)
            if update.start == 0:
                self._carried.pop(update.session_id, None)  # used by this rebuild
        if update.start == 0 and update.reads:
            self.rebuilds += 1
        return index

    def _queue(
        self,
        session_id: str,
        index: RecallIndex,
        start: int,
        records: Sequence[Mapping[str, Any]],
    ) -> None:
        """Queue the new records' texts for embedding (under the lock)."""
        carried = self._carried.get(session_id) or {}
        for position, record in enumerate(records, start):
            text = record_text(record)
            if not text.strip():
                continue
            message_id = record.get("id")
            key = (str(message_id), hash(text)) if message_id is not None else None
            vector = carried.get(key) if key is not None else None
            if vector is not None and len(vector) == (index.dimensions or len(vector)):
                index.set_vector(position, vector, key=key)
            else:
                index.unembedded[position] = (text, key)

    # ------------------------------------------------------------ embedding

    def _take(self, index: RecallIndex) -> list[list[tuple[int, str, VectorKey | None]]]:
        """Claim the index's messages to embed, in batches (another caller gets none)."""
        with self._lock:
            work = sorted((p, text, key) for p, (text, key) in index.unembedded.items())
            index.unembedded.clear()
        size = self.embed_batch_size
        return [work[i : i + size] for i in range(0, len(work), size)]

    def _store(
        self,
        index: RecallIndex,
        batch: Sequence[tuple[int, str, VectorKey | None]],
        vectors: Sequence[Sequence[float]],
    ) -> None:
        """Keep a batch's vectors, all or none.

        Raises:
            ValueError: Not one usable vector per text, or of a different length.
        """
        if len(vectors) != len(batch):
            msg = f"embed_documents returned {len(vectors)} vectors for {len(batch)} texts"
            raise ValueError(msg)
        with self._lock:
            units = [index.query_vector(v) for v in vectors]
            if len({len(u) for u in units}) > 1:
                msg = "embed_documents returned vectors of different lengths"
                raise ValueError(msg)
            for (position, _, key), unit in zip(batch, units, strict=True):
                index._put(position, unit, key)  # checked just above

    def _failed(
        self,
        index: RecallIndex,
        batches: Sequence[Sequence[tuple[int, str, VectorKey | None]]],
        session_id: str,
        error: Exception,
        notes: list[str] | None,
    ) -> None:
        """Put back what was not embedded (retried at the next update); warn; note."""
        left = [item for batch in batches for item in batch]
        with self._lock:
            for position, text, key in left:
                index.unembedded[position] = (text, key)
        reason = (
            f"embeddings: {len(left)} messages of session {session_id!r} not embedded "
            f"({type(error).__name__}: {error}); they are found by BM25 alone until a "
            "later update embeds them"
        )
        logger.warning("%s", reason)
        if notes is not None:
            notes.append(reason)

    def embed_pending(
        self, index: RecallIndex, session_id: str = "", *, notes: list[str] | None = None
    ) -> None:
        """Embed the index's messages that have no vector yet (``embed_documents``).

        Done by :meth:`index`. A failing call is logged as a warning (and appended to
        ``notes``); the messages it was for are retried at the next update.
        """
        if self.embeddings is None or not index.unembedded:
            return
        batches = self._take(index)
        for i, batch in enumerate(batches):
            try:
                vectors = self.embeddings.embed_documents([text for _, text, _ in batch])
                self._store(index, batch, vectors)
            except Exception as e:  # noqa: BLE001 - recall must not break the assembly
                self._failed(index, batches[i:], session_id, e, notes)
                return

    async def aembed_pending(
        self, index: RecallIndex, session_id: str = "", *, notes: list[str] | None = None
    ) -> None:
        """Async :meth:`embed_pending` (``aembed_documents``)."""
        if self.embeddings is None or not index.unembedded:
            return
        batches = self._take(index)
        for i, batch in enumerate(batches):
            try:
                vectors = await self.embeddings.aembed_documents([text for _, text, _ in batch])
                self._store(index, batch, vectors)
            except Exception as e:  # noqa: BLE001 - recall must not break the assembly
                self._failed(index, batches[i:], session_id, e, notes)
                return

    def _query_failed(self, error: Exception, notes: list[str] | None) -> None:
        reason = (
            f"embeddings: the query was not embedded ({type(error).__name__}: {error}); "
            "recall was lexical (BM25) for this request"
        )
        logger.warning("%s", reason)
        if notes is not None:
            notes.append(reason)

    def _for_query(self, query: str, index: RecallIndex | None) -> Embeddings | None:
        """The embeddings to embed ``query`` with for ``index``, if there is a point."""
        if index is None or not index.vector_count or not query.strip():
            return None
        return self.embeddings

    def embed_query(
        self, query: str, index: RecallIndex | None, *, notes: list[str] | None = None
    ) -> tuple[float, ...] | None:
        """The query's vector for a hybrid search of ``index`` (``embed_query``), or ``None``.

        ``None`` (a lexical search) without embeddings, when the index holds no vector,
        for a blank query, or when the call fails or gives an unusable vector (logged as
        a warning and appended to ``notes``).
        """
        embeddings = self._for_query(query, index)
        if embeddings is None or index is None:
            return None
        try:
            return index.query_vector(embeddings.embed_query(query))
        except Exception as e:  # noqa: BLE001 - recall must not break the assembly
            self._query_failed(e, notes)
            return None

    async def aembed_query(
        self, query: str, index: RecallIndex | None, *, notes: list[str] | None = None
    ) -> tuple[float, ...] | None:
        """Async :meth:`embed_query` (``aembed_query``)."""
        embeddings = self._for_query(query, index)
        if embeddings is None or index is None:
            return None
        try:
            return index.query_vector(await embeddings.aembed_query(query))
        except Exception as e:  # noqa: BLE001 - recall must not break the assembly
            self._query_failed(e, notes)
            return None

    # ------------------------------------------------------------ reads

    def index(
        self,
        manager: ContextManager,
        session_id: str,
        header: Mapping[str, Any] | None,
        *,
        notes: list[str] | None = None,
    ) -> RecallIndex:
        """The session's index, brought up to date (reads only what is new).

        With embeddings, the messages added are embedded too (:meth:`embed_pending`;
        a failure is appended to ``notes``).
        """
        update = self.plan(session_id, header)
        for rebuild in (True, False):
            records = (
                manager.get_message_range(session_id, update.start, update.stop)
                if update.reads
                else []
            )
            index = self.apply(update, records)
            if index is not None or not rebuild:
                break
            update = self.plan(session_id, header, rebuild=True)
        index = update.index if index is None else index
        self.embed_pending(index, session_id, notes=notes)
        return index

    async def aindex(
        self,
        manager: ContextManager,
        session_id: str,
        header: Mapping[str, Any] | None,
        *,
        notes: list[str] | None = None,
    ) -> RecallIndex:
        """Async :meth:`index` (``aembed_documents`` for the vectors)."""
        update = self.plan(session_id, header)
        for rebuild in (True, False):
            records = (
                await manager.aget_message_range(session_id, update.start, update.stop)
                if update.reads
                else []
            )
            index = self.apply(update, records)
            if index is not None or not rebuild:
                break
            update = self.plan(session_id, header, rebuild=True)
        index = update.index if index is None else index
        await self.aembed_pending(index, session_id, notes=notes)
        return index


_RECALLS: weakref.WeakKeyDictionary[ContextManager, Recall] = weakref.WeakKeyDictionary()
_HYBRID_RECALLS: weakref.WeakKeyDictionary[ContextManager, OrderedDict[int, Recall]] = (
    weakref.WeakKeyDictionary()
)
_RECALLS_LOCK = threading.Lock()
_MAX_EMBEDDINGS_PER_MANAGER = 8


def recall_for(manager: ContextManager, embeddings: Embeddings | None = None) -> Recall:
    """The :class:`Recall` shared by everything assembling from ``manager`` (made once).

    With ``embeddings``, the hybrid one for that embeddings object (made once per
    object, so the assembler and the ``recall`` tool given the same object share its
    vectors). A manager keeps the hybrid recalls of its 8 most recently used embeddings
    objects: make one for the process, not one per request.
    """
    with _RECALLS_LOCK:
        if embeddings is None:
            recall = _RECALLS.get(manager)
            if recall is None:
                recall = _RECALLS[manager] = Recall()
                recall.watch(manager)
            return recall
        hybrid = _HYBRID_RECALLS.get(manager)
        if hybrid is None:
            hybrid = _HYBRID_RECALLS[manager] = OrderedDict()
        found = hybrid.get(id(embeddings))
        if found is not None and found.embeddings is embeddings:
            hybrid.move_to_end(id(embeddings))
            return found
        recall = hybrid[id(embeddings)] = Recall(embeddings=embeddings)
        recall.watch(manager)
        while len(hybrid) > _MAX_EMBEDDINGS_PER_MANAGER:
            _, oldest = hybrid.popitem(last=False)
            oldest.unwatch()
        return recall


# ------------------------------------------------------------------ turns as text


def _line(position: int, record: Mapping[str, Any]) -> str:
    role = str(record.get("role"))
    text = record_text({**record, "tool_calls": None, "name": None})
    if role == "tool":
        label = f"tool result ({record.get('name') or record.get('tool_call_id') or 'tool'})"
        return f"[{position} {label}] {text}"
    calls = record.get("tool_calls") or ()
    if calls:
        called = ", ".join(
            f"{c.get('name')}({json.dumps(c.get('args') or {}, ensure_ascii=False)})" for c in calls
        )
        text = f"{text} [calls {called}]".strip()
    return f"[{position} {role}] {text}"


def format_turns(
    turns: Sequence[tuple[int, Sequence[Mapping[str, Any]]]], *, heading: str = ""
) -> str:
    """Recalled turns as text: ``(start position, records)`` pairs, oldest first.

    Each message is a line labelled with its position and role (``[120 user] …``); a gap
    between turns (or before the first) is shown as ``[… n earlier messages not shown …]``.
    """
    lines = [heading] if heading else []
    previous = 0
    for start, records in turns:
        if start > previous:
            lines.append(gap_text(start - previous))
        lines.extend(_line(start + i, r) for i, r in enumerate(records))
        previous = start + len(records)
    return "\n".join(lines)


def gap_text(count: int) -> str:
    """The visible marker for ``count`` messages not shown."""
    noun = "message" if count == 1 else "messages"
    return f"[… {count} earlier {noun} not shown …]"


# ------------------------------------------------------------------ the tool


def tool_ranges(
    index: RecallIndex,
    query: str,
    k: int,
    budget: int,
    *,
    query_vector: Sequence[float] | None = None,
) -> list[tuple[int, int]]:
    """The whole turns to show for ``query``: best first, within ``budget``, oldest first.

    ``(start, stop)`` pairs, ``stop`` exclusive; at most ``k`` turns whose cached
    tokens add up to at most ``budget``. With ``query_vector`` (and vectors in the
    index), hits are ranked by :meth:`RecallIndex.hybrid_search`, else by BM25.
    """
    chosen: list[tuple[int, int]] = []
    spent = 0
    if query_vector is not None and index.vector_count:
        positions = [hit.position for hit in index.hybrid_search(query, query_vector, k=k * 4)]
    else:
        positions = [position for position, _, _ in index.search(query, k=k * 4)]
    for position in positions:
        start, stop = index.turn(position)
        if (start, stop) in chosen:
            continue
        cost = index.cost(start, stop)
        if spent + cost > budget:
            continue
        chosen.append((start, stop))
        spent += cost
        if len(chosen) >= k:
            break
    return sorted(chosen)


def make_recall_tool(
    manager: ContextManager,
    session_id: str | None = None,
    *,
    k: int = 3,
    max_tokens: int = 2000,
    name: str = "recall",
    sources: bool = True,
    source_k: int = 3,
    source_token_cap: int = 300,
    source_types: Sequence[str] | None = None,
    embeddings: Embeddings | None = None,
) -> BaseTool:
    """A tool that returns older turns of the session, and its fetched sources, matching a query.

    Needs the ``agents`` extra (``langchain``). The tool takes ``query`` (words to look
    for) and answers in up to two labelled sections, or says that nothing matched:

    - ``Earlier turns of this conversation (positions in the history):`` up to ``k``
      whole turns (tool calls with their results), oldest first, with their positions
      in the history (:func:`format_turns`);
    - ``Fetched sources matching the query (most relevant first):`` (with ``sources``,
      the default) up to ``source_k`` fetched items (``add_fetched_context``; of
      ``source_types`` only, when given) sharing a term with the query, ranked by BM25
      (:func:`~ctx_memory.ranking.rank_sources`, with the index's terms), each as
      ``[source_type] title - url`` and the passage around the query's terms, cut to
      ``source_token_cap`` tokens (``…`` where text is left out).

    The two are not ranked together (their scores are not comparable). Both fit in
    ``max_tokens``: the sources section (counted exactly) takes at most half of it,
    the turns (their cached token counts) the rest, and what the turns leave goes back
    to the sources. The session id is ``session_id``, else the agent's
    ``runtime.context["session_id"]`` (or a ``session_id`` attribute), else
    ``config["configurable"]["session_id"]``, else the checkpointer's ``thread_id``:
    as :class:`~ctx_memory.middleware.ContextMiddleware` finds it. Sync and async.

    With ``embeddings`` (a LangChain ``Embeddings``), turns are found by hybrid recall
    (BM25 and cosine similarity fused, :meth:`RecallIndex.hybrid_search`; the index of
    :func:`recall_for` ``(manager, embeddings)``, shared with an assembler given the same
    object); a failing embeddings call makes that search lexical (a warning is logged).

    Example:
        .. code-block:: python

            from ctx_memory import ContextManager
            from ctx_memory.recall import make_recall_tool

            manager = ContextManager()
            manager.add_user_message("s1", "My locker code is 4471")
            manager.add_assistant_message("s1", "Saved.")
            manager.add_fetched_context(
                "s1", "docs", "Lockers are on level 2. Codes reset every Monday.",
                url="https://gym.example/lockers", extracted_data={"title": "Lockers"},
            )
            tool = make_recall_tool(manager, "s1")
            answer = tool.invoke({"query": "locker code"})
            assert "4471" in answer
            assert "[docs] Lockers - https://gym.example/lockers" in answer
    """
    from ctx_memory._recall_tool import build_recall_tool  # noqa: PLC0415 - needs langchain

    return build_recall_tool(
        manager,
        recall_for(manager, embeddings),
        session_id,
        k=k,
        max_tokens=max_tokens,
        name=name,
        sources=sources,
        source_k=source_k,
        source_token_cap=source_token_cap,
        source_types=source_types,
    )
