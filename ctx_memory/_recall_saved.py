"""The recall index as the store keeps it: segments of JSON text (pure: no I/O).

A session's saved index is a list of segments, each the index of a run of positions
(:meth:`RecallIndex.segment <ctx_memory.recall.RecallIndex.segment>`), oldest first,
kept by the store beside the session (:class:`~ctx_memory.stores.ops.SaveRecallSegments`).
:func:`load_segments` rebuilds an index from them without reading or tokenizing a
message; :class:`~ctx_memory.recall.Recall` then checks it against the stored history
and indexes only what follows. Everything here is re-exported by :mod:`ctx_memory.recall`,
which documents when segments are written and read.
"""

from __future__ import annotations

import base64
import json
import math
import sys
from array import array
from typing import TYPE_CHECKING, Any

from ctx_memory._recall_index import RecallIndex

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "MAX_SEGMENTS",
    "SAVE_EVERY",
    "SEGMENT_FORMAT",
    "TERMS_VERSION",
    "embeddings_id",
    "encode_segment",
    "load_segments",
    "segment_vectors",
]

SEGMENT_FORMAT = 1
"""Version of a segment's layout (its ``"v"``); another version is not read."""

TERMS_VERSION = "recall_terms/2"
"""Which :func:`~ctx_memory.recall.recall_terms` made a segment's terms (its ``"terms"``).
Changed whenever the terms change (stop words, stemmer, what of a record is indexed):
older segments are then not read and the index is rebuilt from the history, and saved
again. Version 2: the results of ctx_memory's own tools and the calls to them are not
indexed (:data:`~ctx_memory._recall_index.ECHO_TOOLS`)."""

SAVE_EVERY = 256
"""Messages indexed and not yet saved before :class:`~ctx_memory.recall.Recall` saves them
as one segment: a session shorter than this is never saved (it is rebuilt in
milliseconds), and writes pay for saving once per this many messages."""

MAX_SEGMENTS = 16
"""A saved index in more segments than this is saved again as one."""

_LOAD_ERRORS = (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError)


_MODEL_FIELDS = ("model", "model_name", "model_id", "deployment", "dimensions", "size")


def embeddings_id(embeddings: object) -> str:
    """Which model made a segment's vectors: the class and its model fields.

    ``"langchain_openai.embeddings.base.OpenAIEmbeddings model='text-embedding-3-small'"``.
    Vectors saved under another id are not loaded (the messages are embedded again).
    """
    kind = type(embeddings)
    parts = [f"{kind.__module__}.{kind.__qualname__}"]
    for name in _MODEL_FIELDS:
        value = getattr(embeddings, name, None)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            parts.append(f"{name}={value!r}")
    return " ".join(parts)


def segment_vectors(index: RecallIndex, start: int, stop: int, model: str) -> dict[str, Any]:
    """The ``"vectors"`` entry of a segment of positions ``start`` to ``stop - 1``.

    ``data`` holds their unit vectors as little-endian float32, base64; ``have`` a ``1``
    per position with a vector (a blank message has none); ``digests`` the
    :func:`~ctx_memory.recall.text_key` of the text each was computed from (``None`` if
    unknown); ``model`` the :func:`embeddings_id`.
    """
    keys = {p: key for key, p in index.vector_keys.items() if start <= p < stop}
    flat = array("f")
    have: list[str] = []
    digests: list[int | None] = []
    for position in range(start, stop):
        vector = index.vectors[position]
        key = keys.get(position)
        have.append("0" if vector is None else "1")
        digests.append(None if vector is None or key is None else key[1])
        if vector is not None:
            flat.extend(vector)
    if sys.byteorder == "big":
        flat.byteswap()
    return {
        "model": model,
        "dims": index.dimensions,
        "have": "".join(have),
        "digests": digests,
        "data": base64.b64encode(flat.tobytes()).decode("ascii"),
    }


def _saved_vectors(
    segment: Mapping[str, Any], model: str, dimensions: int | None
) -> list[tuple[int, tuple[float, ...], int | None]] | None:
    """The segment's saved vectors for ``model``, checked, without touching an index.

    ``(offset, unit vector, text digest)`` per message that has one; ``None`` if it has
    none usable (another model, another length than ``dimensions``, malformed).
    """
    saved = segment.get("vectors")
    if not isinstance(saved, dict) or saved.get("model") != model:
        return None
    have, digests, dims = saved["have"], saved["digests"], saved["dims"]
    flat = array("f")
    try:  # nothing is added yet: a malformed entry only ends the load here
        flat.frombytes(base64.b64decode(saved["data"], validate=True))
    except (TypeError, ValueError):
        return None
    if sys.byteorder == "big":
        flat.byteswap()
    count = have.count("1")
    shaped = len(have) == segment["stop"] - segment["start"] == len(digests)
    if count:
        shaped = shaped and isinstance(dims, int) and dims > 0 and len(flat) == count * dims
        shaped = shaped and dimensions in (None, dims)
    if not shaped:
        return None
    out: list[tuple[int, tuple[float, ...], int | None]] = []
    offset = 0
    for i, flag in enumerate(have):
        if flag == "0":
            continue
        unit = tuple(flat[offset : offset + dims])
        offset += dims
        if flag != "1" or not math.isfinite(sum(unit)):
            return None
        digest = digests[i]
        out.append((i, unit, digest if isinstance(digest, int) else None))
    return out


def encode_segment(segment: Mapping[str, Any]) -> str:
    """A :meth:`RecallIndex.segment <ctx_memory.recall.RecallIndex.segment>` as saved text."""
    saved = {"v": SEGMENT_FORMAT, "terms": TERMS_VERSION, **segment}
    return json.dumps(saved, ensure_ascii=False, separators=(",", ":"))


def load_segments(
    texts: Sequence[str], limit: int, *, vectors: str | None = None
) -> tuple[RecallIndex, bool]:
    """An index of the saved ``texts``, and whether they were a clean chain.

    The segments added form the chain from position 0 that reaches furthest, each
    starting where the one before stops, none past ``limit`` (the session's
    ``message_count``): segments saved twice, or by two workers each from where its own
    last save stopped (interleaved), are passed over, as are those of another format or
    terms version and malformed ones. With ``vectors`` (an :func:`embeddings_id`), each
    segment's saved vectors are loaded too, and the first segment without vectors of that
    model ends the load (its messages are then read and embedded). ``clean`` is false
    when anything was skipped or left, or when there are more than :data:`MAX_SEGMENTS`:
    the caller then saves the whole index again in one segment.

    Example:
        .. code-block:: python

            from ctx_memory.recall import RecallIndex, encode_segment, load_segments

            index = RecallIndex()
            index.extend([{"role": "user", "content": "The wifi password is tulip42"}])
            loaded, clean = load_segments([encode_segment(index.segment(0, 1))], limit=1)
            assert clean and loaded.search("wifi password")[0][0] == 0
            assert load_segments(["not json"], limit=1)[0].lengths == []
    """
    usable: dict[int, list[dict[str, Any]]] = {}  # start -> the segments starting there
    clean = len(texts) <= MAX_SEGMENTS
    for text in texts:
        try:
            segment: dict[str, Any] = json.loads(text)
            fits = segment["v"] == SEGMENT_FORMAT and segment["terms"] == TERMS_VERSION
            fits = fits and 0 <= int(segment["start"]) < int(segment["stop"]) <= limit
        except _LOAD_ERRORS:
            fits = False
        if fits:
            usable.setdefault(int(segment["start"]), []).append(segment)
        else:
            clean = False
    index = RecallIndex()
    used = 0
    for segment in _longest_chain(usable):
        try:
            units = None if vectors is None else _saved_vectors(segment, vectors, index.dimensions)
            if vectors is not None and units is None:
                return index, False  # no vectors of this model: read and embed from here
            index.add_segment(segment)
            start = segment["start"]
            for offset, unit, digest in units or ():
                message_id = index.ids[start + offset]
                key = None if message_id is None or digest is None else (message_id, digest)
                index._put(start + offset, unit, key)  # saved from checked unit vectors
        except _LOAD_ERRORS:
            return RecallIndex(), False  # possibly half added: start over
        used += 1
    return index, clean and used == sum(len(found) for found in usable.values())


def _longest_chain(segments: Mapping[int, Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The segments from position 0 on, each starting where the one before stops.

    The chain reaching furthest: two workers that each saved the session's segments from
    where their own last save stopped interleave them, and either chain may be whole.
    """
    reach: dict[int, int] = {}  # start -> the furthest position a chain from it reaches
    first: dict[int, dict[str, Any]] = {}  # start -> the segment that chain begins with
    for start in sorted(segments, reverse=True):  # a segment stops after it starts
        for segment in segments[start]:
            stop = int(segment["stop"])
            end = reach.get(stop, stop)
            if end > reach.get(start, start):
                reach[start], first[start] = end, segment
    chain, at = [], 0
    while at in first:
        chain.append(first[at])
        at = int(first[at]["stop"])
    return chain
