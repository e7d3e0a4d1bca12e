"""Image sizes read from file headers, and what an image costs a chat model in tokens.

Pure functions, no image library: the width and height of a PNG, JPEG, GIF or WebP image
are read from its first bytes (a JPEG's from its SOF segment, found by skipping from
segment to segment), and a base64 string is decoded only where those bytes are, never
whole. A 150 KB photo costs a few dozen bytes of decoding.

The token cost follows OpenAI's documented formula for its tile-based vision models
(GPT-4o, GPT-4.1, o-series; see "Calculating costs" in OpenAI's images-and-vision
guide)::

    detail "low"    85 tokens, whatever the size
    detail "high"   scale down to fit within 2048 x 2048 (aspect kept), then scale down
                    so the shortest side is at most 768 px; count the 512 px tiles
                    covering the result: 85 + 170 * tiles
    detail "auto"   the model picks; counted as "high" (the larger of the two)

Images are never scaled up (a 512 x 512 image is one tile, 255 tokens), scaled sides are
rounded down to whole pixels, and both steps keep the aspect ratio. Models that bill by
32 px patches (gpt-4.1-mini and later "mini" models) count differently; the tile formula
is the budget convention here whichever model is used.
"""

from __future__ import annotations

import binascii
import re
import struct
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "BASE_IMAGE_TOKENS",
    "IMAGE_TILE_TOKENS",
    "LOW_DETAIL_TOKENS",
    "DataURL",
    "image_size",
    "image_size_from_base64",
    "image_size_from_bytes",
    "image_tokens",
    "parse_data_url",
]

LOW_DETAIL_TOKENS = 85
BASE_IMAGE_TOKENS = 85
IMAGE_TILE_TOKENS = 170
_FIT_SIDE = 2048
_SHORT_SIDE = 768
_TILE = 512
_JPEG_MAX_SEGMENTS = 1024
# SOFn markers carrying the frame size; C4 (DHT), C8 (JPG) and CC (DAC) are not frames.
_JPEG_SOF = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)
# Markers without a length field: TEM and RST0-RST7 (SOI is consumed before the loop).
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


def image_tokens(width: int, height: int, detail: str | None = "high") -> int:
    """Tokens an image of ``width`` x ``height`` pixels costs (module docstring).

    ``detail`` is ``"low"``, ``"high"`` or ``"auto"``; anything but ``"low"`` counts
    as ``"high"``.

    Example:
        .. code-block:: python

            from ctx_memory.images import image_tokens

            assert image_tokens(1024, 1024) == 765  # 768 x 768: 4 tiles
            assert image_tokens(2048, 4096) == 1105  # 1024 x 2048, then 768 x 1536: 6 tiles
            assert image_tokens(4096, 8192, "low") == 85
    """
    if detail == "low":
        return LOW_DETAIL_TOKENS
    width, height = max(int(width), 1), max(int(height), 1)
    longest = max(width, height)
    if longest > _FIT_SIDE:
        width, height = max(width * _FIT_SIDE // longest, 1), max(height * _FIT_SIDE // longest, 1)
    shortest = min(width, height)
    if shortest > _SHORT_SIDE:
        width, height = width * _SHORT_SIDE // shortest, height * _SHORT_SIDE // shortest
    tiles = -(-width // _TILE) * -(-height // _TILE)
    return BASE_IMAGE_TOKENS + IMAGE_TILE_TOKENS * tiles


# --------------------------------------------------------------------------- headers


def image_size(read: Callable[[int, int], bytes]) -> tuple[int, int] | None:
    """``(width, height)`` of a PNG, JPEG, GIF or WebP image, else ``None``.

    ``read(offset, n)`` returns up to ``n`` bytes of the file from ``offset`` (fewer
    at its end); only the header bytes are asked for.
    """
    head = read(0, 30)
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR" and len(head) >= 24:
        return _positive(*struct.unpack(">II", head[16:24]))
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        return _positive(*struct.unpack("<HH", head[6:10]))
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP" and len(head) >= 30:
        return _webp_size(head)
    if head[:3] == b"\xff\xd8\xff":
        return _jpeg_size(read)
    return None


def _positive(width: int, height: int) -> tuple[int, int] | None:
    return (width, height) if width > 0 and height > 0 else None


def _webp_size(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":  # lossy: key frame start code
        width, height = struct.unpack("<HH", head[26:30])
        return _positive(width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L" and head[20] == 0x2F:  # lossless: 14-bit sizes minus one
        (bits,) = struct.unpack("<I", head[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: 24-bit canvas sizes minus one
        width = int.from_bytes(head[24:27], "little") + 1
        height = int.from_bytes(head[27:30], "little") + 1
        return width, height
    return None


def _jpeg_size(read: Callable[[int, int], bytes]) -> tuple[int, int] | None:
    pos = 2  # after SOI
    for _ in range(_JPEG_MAX_SEGMENTS):
        head = read(pos, 4)
        if len(head) < 2 or head[0] != 0xFF:
            return None
        marker = head[1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if marker in (0xD9, 0xDA) or len(head) < 4:  # EOI or scan data before a frame
            return None
        length = (head[2] << 8) | head[3]
        if marker in _JPEG_SOF:
            frame = read(pos + 4, 5)  # precision, height, width
            if len(frame) < 5:
                return None
            _, height, width = struct.unpack(">BHH", frame)
            return _positive(width, height)
        if length < 2:
            return None
        pos += 2 + length
    return None


# --------------------------------------------------------------------------- base64

_WHITESPACE = re.compile(r"\s+")


def _base64_reader(data: str) -> Callable[[int, int], bytes]:
    """Random access to the bytes a base64 string encodes, decoding only what is asked."""
    if _WHITESPACE.search(data, 0, 4096):  # MIME-style line breaks: offsets need them gone
        data = _WHITESPACE.sub("", data)
    if "-" in data[:4096] or "_" in data[:4096]:  # the URL-safe alphabet
        data = data.translate(str.maketrans("-_", "+/"))

    def read(offset: int, n: int) -> bytes:
        first = offset // 3 * 4
        last = -(-(offset + n) // 3) * 4
        chunk = data[first:last]
        if not chunk:
            return b""
        chunk += "=" * (-len(chunk) % 4)
        try:
            decoded = binascii.a2b_base64(chunk)
        except binascii.Error:
            return b""
        start = offset - first // 4 * 3
        return decoded[start : start + n]

    return read


def image_size_from_base64(data: str) -> tuple[int, int] | None:
    """``(width, height)`` of the image a base64 string holds (see :func:`image_size`)."""
    return image_size(_base64_reader(data))


def image_size_from_bytes(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` of the image in ``data`` (see :func:`image_size`)."""
    return image_size(lambda offset, n: data[offset : offset + n])


class DataURL(NamedTuple):
    """A parsed ``data:`` URL: its MIME type, whether it is base64, and the payload."""

    mime_type: str
    base64: bool
    payload: str


def parse_data_url(url: str) -> DataURL | None:
    """``data:[<mime>][;params][;base64],<payload>`` parsed, or ``None`` for other URLs.

    The payload is returned as it is (still encoded); the MIME type is lower-cased.
    """
    if url[:5].lower() != "data:":
        return None
    comma = url.find(",", 5, 1029)
    if comma < 0:
        return None
    params = url[5:comma].split(";")
    is_base64 = params[-1].strip().lower() == "base64"
    return DataURL(params[0].strip().lower(), is_base64, url[comma + 1 :])
