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

import json
from typing import TYPE_CHECKING, Any

from ctx_memory._recall_index import RecallIndex

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "MAX_SEGMENTS",
    "SAVE_EVERY",
    "SEGMENT_FORMAT",
    "TERMS_VERSION",
    "encode_segment",
    "load_segments",
]

SEGMENT_FORMAT = 1
"""Version of a segment's layout (its ``"v"``); another version is not read."""

TERMS_VERSION = "recall_terms/1"
"""Which :func:`~ctx_memory.recall.recall_terms` made a segment's terms (its ``"terms"``).
Changed whenever the terms change (stop words, stemmer): older segments are then not read
and the index is rebuilt from the history, and saved again."""

SAVE_EVERY = 256
"""Messages indexed and not yet saved before :class:`~ctx_memory.recall.Recall` saves them
as one segment: a session shorter than this is never saved (it is rebuilt in
milliseconds), and writes pay for saving once per this many messages."""

MAX_SEGMENTS = 16
"""A saved index in more segments than this is saved again as one."""

_LOAD_ERRORS = (KeyError, TypeError, ValueError, IndexError, AttributeError)


def encode_segment(segment: Mapping[str, Any]) -> str:
    """A :meth:`RecallIndex.segment <ctx_memory.recall.RecallIndex.segment>` as saved text."""
    saved = {"v": SEGMENT_FORMAT, "terms": TERMS_VERSION, **segment}
    return json.dumps(saved, ensure_ascii=False, separators=(",", ":"))


def load_segments(texts: Sequence[str], limit: int) -> tuple[RecallIndex, bool]:
    """An index of the saved ``texts``, and whether they were a clean chain.

    Segments are added while each starts where the index ends and none reaches past
    ``limit`` (the session's ``message_count``). A segment another process saved twice
    is skipped; the first that does not fit, is of another format or terms version, or
    is malformed ends the load. ``clean`` is false when anything was skipped or left,
    or when there are more than :data:`MAX_SEGMENTS`: the caller then saves the whole
    index again in one segment.

    Example:
        .. code-block:: python

            from ctx_memory.recall import RecallIndex, encode_segment, load_segments

            index = RecallIndex()
            index.extend([{"role": "user", "content": "The wifi password is tulip42"}])
            loaded, clean = load_segments([encode_segment(index.segment(0, 1))], limit=1)
            assert clean and loaded.search("wifi password")[0][0] == 0
            assert load_segments(["not json"], limit=1)[0].lengths == []
    """
    index = RecallIndex()
    clean = len(texts) <= MAX_SEGMENTS
    for text in texts:
        try:
            segment: dict[str, Any] = json.loads(text)
            usable = segment["v"] == SEGMENT_FORMAT and segment["terms"] == TERMS_VERSION
            if usable and segment["stop"] <= len(index):
                clean = False  # saved twice (two processes at once): already in
                continue
            if not usable or segment["start"] != len(index) or segment["stop"] > limit:
                return index, False
            index.add_segment(segment)
        except _LOAD_ERRORS:
            return RecallIndex(), False  # possibly half added: start over
    return index, clean
