"""Recall: a lexical (BM25) index over a session's whole history, kept up to date cheaply.

Three layers, from pure to I/O:

- :class:`RecallIndex` is pure: records are added in history order (``O(new text)``
  each: their terms go into an inverted index), :meth:`RecallIndex.search` scores only
  the postings of the query's terms (Okapi BM25, the IDF and parameters of
  :func:`ctx_memory.ranking.bm25_scores`, terms from :func:`recall_terms`: folded case
  and accents, English stop words dropped, a light English stemmer) and
  :meth:`RecallIndex.turn` gives the whole turn around a position. The assembler's
  recall and the tool search in context (:data:`CONTEXT_WEIGHT`): a message's score
  gains a fifth of its neighbours', so a passage about the question outranks a stray
  mention. It also keeps each message's role, id and cached ``token_count``, so
  choosing what to recall needs no read.
- :class:`Recall` keeps one index per session of one manager's store in a bounded,
  in-process LRU cache and brings it up to date before each use by reading only the
  messages written since (``get_message_range(session, n_indexed, message_count - 1)``),
  or by taking them from reads already made (``known=``: the stable layout's window).
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

Saved segments: the index is also kept **in the store, beside the session**, so a
process that has not indexed a long session yet (a restarted server, another worker)
does not rebuild it from the history. Once :data:`SAVE_EVERY` (256) messages are indexed
and not saved, the update that indexed them saves them as one segment
(:class:`~ctx_memory.stores.ops.SaveRecallSegments`: their terms, ids, roles and token
counts, JSON; the terms kept since the last save, joined, so ``O(new text)``).
A cold index of a session of at least that many messages starts from the saved
segments (:func:`load_segments`, one read), checks the last of them against the stored
history (its message id) and indexes from the history only what follows; any mismatch,
gap or unknown format, and it is rebuilt from the history and saved again whole. The
store drops a session's segments with every write that removes or changes its messages
and with the session, and a segment's messages are read back before it is saved (an
index that missed another process's edit is rebuilt, not saved), so they never describe
another history. Segments are derived
data: not exported, dropped at will (``ctx-memory reindex`` rebuilds and saves them),
and written only for the default terms. A recall with embeddings saves its vectors in
the same segments (:func:`segment_vectors`: float32 unit vectors, the
:func:`text_key` of each text, the :func:`embeddings_id` of the model), once every
message of the segment is embedded, and loads them back (the messages after the last
saved segment are embedded); vectors of another model are not loaded (the session is
embedded again and saved whole). With a store whose ``keeps_recall_segments`` is false,
each process rebuilds (about 0.2 s for 10,000 messages; ``benchmarks/bench_recall.py``).

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

import logging
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ctx_memory._recall_embed import RecallEmbedding
from ctx_memory._recall_index import (
    CONTEXT_WEIGHT,
    RRF_DEPTH,
    RRF_K,
    RecallHit,
    RecallIndex,
    VectorKey,
    indexed_text,
    recall_terms,
    record_text,
    text_key,
    unit_vector,
)
from ctx_memory._recall_saved import (
    MAX_SEGMENTS,
    SAVE_EVERY,
    SEGMENT_FORMAT,
    TERMS_VERSION,
    embeddings_id,
    encode_segment,
    load_segments,
    segment_vectors,
)
from ctx_memory._recall_search import (
    MAX_SEARCH_HITS,
    HistoryHit,
    asearch_history,
    search_history,
)
from ctx_memory._recall_turns import format_turns, gap_text, tool_ranges
from ctx_memory.errors import StoreError, ValidationError
from ctx_memory.events import EventType
from ctx_memory.records import held_range
from ctx_memory.stores.ops import GetRecallSegments, SaveRecallSegments

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from langchain_core.embeddings import Embeddings
    from langchain_core.tools import BaseTool

    from ctx_memory.events import Event
    from ctx_memory.manager import ContextManager
    from ctx_memory.ranking import Tokenizer

__all__ = [
    "CONTEXT_WEIGHT",
    "EMBED_BATCH_SIZE",
    "INVALIDATING_EVENTS",
    "MAX_SEARCH_HITS",
    "MAX_SEGMENTS",
    "RRF_DEPTH",
    "RRF_K",
    "HistoryHit",
    "Recall",
    "RecallHit",
    "RecallIndex",
    "RecallUpdate",
    "SAVE_EVERY",
    "SEGMENT_FORMAT",
    "TERMS_VERSION",
    "asearch_history",
    "embeddings_id",
    "encode_segment",
    "format_turns",
    "gap_text",
    "load_segments",
    "make_recall_tool",
    "record_text",
    "recall_for",
    "recall_terms",
    "search_history",
    "segment_vectors",
    "text_key",
    "tool_ranges",
    "unit_vector",
]

INVALIDATING_EVENTS = (
    EventType.HISTORY_EDITED,
    EventType.SESSION_CLEARED,
    EventType.SESSION_DELETED,
    EventType.SESSION_EXPIRED,
    EventType.SESSION_EVICTED,
    EventType.CONTEXT_UPDATED,
)
"""Events after which a session's index is dropped (rebuilt on next use);
``context_updated`` only for an import (``imported`` in its data: the whole history
replaced)."""

EDIT_CHECK = 4
"""Messages before those an update adds that are compared with the assembly's reads of them
(:meth:`RecallIndex.edited`): a regenerated or edited recent message that kept every count,
written by a process whose events do not arrive here (the last turn or two; each costs
about 0.6 µs an assembly)."""

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
        overlap: Messages read before ``start`` (0 or 1): the last one the index holds,
            read again to check its id (an index loaded from saved segments, or kept from
            an earlier update: another process may have deleted the session and written
            one with as many tokens since; the assembler's window read holds it).
        loaded: The index was loaded from saved segments.
    """

    session_id: str
    index: RecallIndex
    start: int
    stop: int
    token_count: int
    overlap: int = 0
    loaded: bool = False

    @property
    def first(self) -> int:
        """First position to read: ``start - overlap``."""
        return self.start - self.overlap

    @property
    def reads(self) -> bool:
        """Whether messages are to be read."""
        return self.stop >= self.first


class Recall(RecallEmbedding):
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
            embeddings object for the life of the process: vectors belong to it. The
            vectors are saved with the index's segments and loaded by any recall whose
            embeddings have the same :func:`embeddings_id`.
        embed_batch_size: Most texts per ``embed_documents`` call.
        save_every: Save the index in the store once this many messages are indexed
            and not saved (see "Saved segments" in the module docs); ``0``: never read
            or save segments.

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
        save_every: int = SAVE_EVERY,
    ) -> None:
        if embed_batch_size < 1:
            msg = f"embed_batch_size must be at least 1, got {embed_batch_size}"
            raise ValidationError(msg)
        if save_every < 0:
            msg = f"save_every must be 0 (never) or more, got {save_every}"
            raise ValidationError(msg)
        self.save_every = save_every
        self.max_sessions = max_sessions
        self.tokenizer = tokenizer
        self.embeddings = embeddings
        self.embed_batch_size = embed_batch_size
        self._vectors_model = None if embeddings is None else embeddings_id(embeddings)
        self._indexes: OrderedDict[str, RecallIndex] = OrderedDict()
        self._carried: OrderedDict[str, dict[VectorKey, tuple[float, ...]]] = OrderedDict()
        self._lock = threading.Lock()
        self._subscriptions: list[Callable[[], None]] = []
        self.rebuilds = 0
        self.loads = 0

    def watch(self, manager: ContextManager) -> None:
        """Drop a session's index whenever ``manager`` reports its history edited or gone."""
        for event_type in INVALIDATING_EVENTS:  # heard even with EVENT_EMISSION=false
            self._subscriptions.append(manager.events.on(event_type, self._on_event, always=True))

    def unwatch(self) -> None:
        """Stop listening to the managers :meth:`watch` registered on."""
        while self._subscriptions:
            self._subscriptions.pop()()

    def _on_event(self, event: Event) -> None:
        if event.type == EventType.CONTEXT_UPDATED and not event.data.get("imported"):
            return  # metadata, shared state, a system prompt: the history is as it was
        keep = event.type in (EventType.HISTORY_EDITED, EventType.CONTEXT_UPDATED)
        self.forget(event.session_id, keep_vectors=keep)

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
        overlap = 1 if len(index) else 0  # its last message, read again (by id)
        return RecallUpdate(session_id, index, len(index), stored - 1, token_count, overlap)

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
        if update.overlap:  # is the last message it holds still there?
            if not records or not _same_message(index, update.start - 1, records[0]):
                return None
            records = records[update.overlap :]
        with self._lock:
            # Another caller may have extended the index meanwhile, with fewer messages
            # than this one read (its update planned from the same length): add the rest.
            have = len(index)
            if update.start <= have < update.start + len(records):
                added = records[have - update.start :]
                index.extend(added)
                if self.embeddings is not None:
                    self._queue(update.session_id, index, have, added)
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
        elif update.loaded:
            self.loads += 1
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
            text = indexed_text(record)
            if not text.strip():
                continue
            message_id = record.get("id")
            key = (str(message_id), text_key(text)) if message_id is not None else None
            vector = carried.get(key) if key is not None else None
            if vector is not None and len(vector) == (index.dimensions or len(vector)):
                index.set_vector(position, vector, key=key)
            else:
                index.unembedded[position] = (text, key)

    # ------------------------------------------------------------ saved segments

    def _saves(self, manager: ContextManager) -> bool:
        """Whether indexes of ``manager``'s sessions are read from and saved in its store."""
        return (
            self.save_every > 0 and self.tokenizer is None and manager.store.keeps_recall_segments
        )

    def _loads(self, update: RecallUpdate, saves: bool) -> bool:
        """Whether to read saved segments: a cold index of a session long enough to have them."""
        return saves and update.start == 0 and update.stop + 1 >= self.save_every

    def _resume(self, update: RecallUpdate, texts: Sequence[str]) -> RecallUpdate:
        """``update`` to extend the index the saved ``texts`` hold (unchanged if none)."""
        index, clean = load_segments(texts, update.stop + 1, vectors=self._vectors_model)
        if not len(index):
            return update
        if clean:  # else it is saved again whole, in one segment
            index.saved = len(index)
            index.recent = []
        return RecallUpdate(
            update.session_id, index, len(index), update.stop, update.token_count, 1, True
        )

    @staticmethod
    def _track(update: RecallUpdate, saves: bool) -> None:
        """Keep the terms of a fresh index's messages until they are saved (cheap to save)."""
        if saves and update.start == 0 and update.index.recent is None:
            update.index.recent = []

    def _claim(self, index: RecallIndex, saves: bool) -> tuple[int, int, str] | None:
        """The segment to save, if enough is unsaved: ``(start, stop, text)``.

        Claimed under the lock (another caller does not save it too) and marked saved;
        :meth:`_unclaim` undoes that if the save fails.
        """
        if not saves or len(index) - index.saved < self.save_every:  # checked again below
            return None
        with self._lock:
            start, stop = index.saved, len(index)
            if stop - start < self.save_every:
                return None
            if any(p >= start for p in index.unembedded):
                return None  # saved once embedded (the next update retries the embedding)
            segment = index.segment(start, stop)
            if self._vectors_model is not None:
                segment["vectors"] = segment_vectors(index, start, stop, self._vectors_model)
            index.saved, index.recent = stop, []
        return start, stop, encode_segment(segment)

    def _unclaim(self, index: RecallIndex, claim: tuple[int, int, str], error: Exception) -> None:
        start, stop, _ = claim
        with self._lock:
            if index.saved == stop:
                index.saved, index.recent = start, None  # the next save takes it again
        logger.warning(
            "recall: the index of positions %d..%d was not saved (%s: %s); it is saved "
            "with the next update",
            start,
            stop - 1,
            type(error).__name__,
            error,
        )

    def _save(
        self, manager: ContextManager, session_id: str, index: RecallIndex, saves: bool
    ) -> None:
        claim = self._claim(index, saves)
        if claim is None:
            return
        start, stop, text = claim
        try:
            read = manager.get_message_range(session_id, start, stop - 1)
            if index.edited([(start, read)], start, stop):
                self._stale(session_id)
                return
            # from position 0: instead of whatever is saved (a stale or broken chain)
            manager.execute(SaveRecallSegments(session_id, (text,), replace=start == 0))
        except StoreError as e:
            self._unclaim(index, claim, e)

    async def _asave(
        self, manager: ContextManager, session_id: str, index: RecallIndex, saves: bool
    ) -> None:
        claim = self._claim(index, saves)
        if claim is None:
            return
        start, stop, text = claim
        try:
            read = await manager.aget_message_range(session_id, start, stop - 1)
            if index.edited([(start, read)], start, stop):
                self._stale(session_id)
                return
            # from position 0: instead of whatever is saved (a stale or broken chain)
            await manager.aexecute(SaveRecallSegments(session_id, (text,), replace=start == 0))
        except StoreError as e:
            self._unclaim(index, claim, e)

    def _stale(self, session_id: str) -> None:
        """An index about to be saved no longer matches the history: dropped, not saved.

        Another process edited a message it holds and kept every count, which no check of
        an update sees: saved, it would outlive this process (a restart would load it).
        """
        logger.info(
            "recall: the index of session %r was edited elsewhere; rebuilding it", session_id
        )
        self.forget(session_id, keep_vectors=True)

    @staticmethod
    def _unread(session_id: str, error: Exception) -> list[str]:
        logger.warning(
            "recall: the saved index of session %r was not read (%s: %s); rebuilding it",
            session_id,
            type(error).__name__,
            error,
        )
        return []

    def _segments(self, manager: ContextManager, session_id: str) -> list[str]:
        try:
            return manager.execute(GetRecallSegments(session_id))
        except StoreError as e:
            return self._unread(session_id, e)

    async def _asegments(self, manager: ContextManager, session_id: str) -> list[str]:
        try:
            return await manager.aexecute(GetRecallSegments(session_id))
        except StoreError as e:
            return self._unread(session_id, e)

    def _replan(self, session_id: str, header: Mapping[str, Any] | None) -> RecallUpdate:
        """A fresh index to build from the whole history (for :meth:`reindex`)."""
        self.forget(session_id, keep_vectors=True)
        update = self.plan(session_id, header, rebuild=True)
        update.index.recent = []  # the segment is then its messages' terms, joined
        return update

    def _whole(self, index: RecallIndex, saves: bool) -> tuple[str, ...]:
        """The segments to save for a rebuilt (and embedded) index: one, or none."""
        claim = self._claim(index, saves)  # the whole index: nothing of it is saved yet
        return () if claim is None else (claim[2],)

    def reindex(self, manager: ContextManager, session_id: str) -> int:
        """Rebuild the session's index from its history and save it, whole, in the store.

        What ``ctx-memory reindex`` runs: the saved segments (stale, broken, or missing
        after an import) are replaced by one segment of the whole history. A session
        shorter than ``save_every`` messages, or a recall or store that does not save
        segments, gets none (any saved ones are dropped). Returns the messages saved.

        Raises:
            StoreError: The history kept changing while it was read (three times).
        """
        saves = self._saves(manager)
        for _ in range(3):
            update = self._replan(session_id, manager.get_header(session_id))
            records = manager.get_message_range(session_id, 0, update.stop) if update.reads else []
            index = self.apply(update, records)
            if index is not None:
                self.embed_pending(index, session_id)
                saved = self._whole(index, saves)
                if manager.store.keeps_recall_segments:
                    manager.execute(SaveRecallSegments(session_id, saved, replace=True))
                return len(index) if saved else 0
        msg = f"the history of session {session_id!r} kept changing while it was indexed"
        raise StoreError(msg)

    async def areindex(self, manager: ContextManager, session_id: str) -> int:
        """Async :meth:`reindex`."""
        saves = self._saves(manager)
        for _ in range(3):
            update = self._replan(session_id, await manager.aget_header(session_id))
            records = (
                await manager.aget_message_range(session_id, 0, update.stop) if update.reads else []
            )
            index = self.apply(update, records)
            if index is not None:
                await self.aembed_pending(index, session_id)
                saved = self._whole(index, saves)
                if manager.store.keeps_recall_segments:
                    await manager.aexecute(SaveRecallSegments(session_id, saved, replace=True))
                return len(index) if saved else 0
        msg = f"the history of session {session_id!r} kept changing while it was indexed"
        raise StoreError(msg)

    # ------------------------------------------------------------ reads

    def index(
        self,
        manager: ContextManager,
        session_id: str,
        header: Mapping[str, Any] | None,
        *,
        notes: list[str] | None = None,
        known: Sequence[tuple[int, Sequence[Mapping[str, Any]]]] = (),
    ) -> RecallIndex:
        """The session's index, brought up to date (reads only what is new).

        A cold index of a long session starts from its saved segments, if any; enough
        newly indexed messages are saved as a segment (see "Saved segments" in the
        module docs). With embeddings, the messages added are embedded too
        (:meth:`embed_pending`; a failure is appended to ``notes``). ``known`` holds
        ``(position, records)`` reads made since ``header`` was read (the stable layout's
        window): when they hold every message to add, none is read again.
        """
        saves = self._saves(manager)
        update = self.plan(session_id, header)
        if self._loads(update, saves):
            update = self._resume(update, self._segments(manager, session_id))
        self._track(update, saves)
        for rebuild in (True, False):
            records = held_range(known, update.first, update.stop)
            if records is None:
                records = manager.get_message_range(session_id, update.first, update.stop)
            index = self.apply(update, records)
            if index is not None and index.edited(known, update.start - EDIT_CHECK, update.start):
                self.forget(session_id, keep_vectors=True)
                index = None
            if index is not None or not rebuild:
                break
            update = self.plan(session_id, header, rebuild=True)
            self._track(update, saves)
        index = update.index if index is None else index
        self.embed_pending(index, session_id, notes=notes)
        self._save(manager, session_id, index, saves)
        return index

    async def aindex(
        self,
        manager: ContextManager,
        session_id: str,
        header: Mapping[str, Any] | None,
        *,
        notes: list[str] | None = None,
        known: Sequence[tuple[int, Sequence[Mapping[str, Any]]]] = (),
    ) -> RecallIndex:
        """Async :meth:`index` (``aembed_documents`` for the vectors)."""
        saves = self._saves(manager)
        update = self.plan(session_id, header)
        if self._loads(update, saves):
            update = self._resume(update, await self._asegments(manager, session_id))
        self._track(update, saves)
        for rebuild in (True, False):
            records = held_range(known, update.first, update.stop)
            if records is None:
                records = await manager.aget_message_range(session_id, update.first, update.stop)
            index = self.apply(update, records)
            if index is not None and index.edited(known, update.start - EDIT_CHECK, update.start):
                self.forget(session_id, keep_vectors=True)
                index = None
            if index is not None or not rebuild:
                break
            update = self.plan(session_id, header, rebuild=True)
            self._track(update, saves)
        index = update.index if index is None else index
        await self.aembed_pending(index, session_id, notes=notes)
        await self._asave(manager, session_id, index, saves)
        return index


def _same_message(index: RecallIndex, position: int, record: Mapping[str, Any]) -> bool:
    """Whether ``record`` is the message ``index`` holds at ``position`` (by id)."""
    found = record.get("id")
    expected = index.ids[position]
    if expected is None:  # no id (an old record): its role and tokens, at least
        return found is None and (
            str(record.get("role")) == index.roles[position]
            and int(record.get("token_count") or 0) == index.tokens[position]
        )
    return found is not None and str(found) == expected


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


# ------------------------------------------------------------------ the tool


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
      in the history (:func:`format_turns`), found by BM25 in context as the
      assembler's recall (:data:`CONTEXT_WEIGHT`);
    - ``Fetched sources matching the query (most relevant first):`` (with ``sources``,
      the default) up to ``source_k`` fetched items (``add_fetched_context``; of
      ``source_types`` only, when given) sharing a term with the query, ranked by BM25
      (:func:`~ctx_memory.ranking.rank_sources`, with the index's terms), each as
      ``[source_type] title - url`` and the passage around the query's terms, cut to
      ``source_token_cap`` tokens (``…`` where text is left out).

    The two are not ranked together (their scores are not comparable). Both fit in
    ``max_tokens``: the sources section (counted exactly) takes at most half of it,
    the turns (their cached token counts) the rest, and what the turns leave goes back
    to the sources. When turns match but none fits ``max_tokens``, the answer says so
    (and asks for something more specific) rather than that nothing matched. The
    session id is ``session_id``, else the agent's
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
