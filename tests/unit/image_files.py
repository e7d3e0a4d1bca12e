"""Real image files of known sizes, built byte by byte (no image library needed).

PNG and GIF files are complete and decodable; JPEG and WebP files carry real headers
(JFIF/EXIF segments, a quantisation table, a SOF frame header, the RIFF/VP8 chunk
headers) in front of placeholder data, which is all a size reader looks at.
"""

from __future__ import annotations

import base64
import random
import struct
import zlib


def png(width: int, height: int, *, noise: bool = False) -> bytes:
    """An RGB PNG; with ``noise`` its pixels are random, so it does not compress."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rng = random.Random(width * 100_003 + height)
    row = width * 3
    if noise:
        raw = b"".join(b"\x00" + rng.randbytes(row) for _ in range(height))
    else:
        raw = (b"\x00" + b"\x80" * row) * height
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def gif(width: int, height: int) -> bytes:
    """A GIF89a canvas of ``width`` x ``height`` holding one black 1 x 1 frame."""
    header = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0)
    palette = b"\x00\x00\x00\xff\xff\xff"
    image = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0)
    data = b"\x02\x02\x44\x01\x00"  # LZW code size 2: clear, pixel 0, end of information
    return header + palette + image + data + b"\x3b"


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def jpeg(
    width: int,
    height: int,
    *,
    sof: int = 0xC0,
    exif_bytes: int = 0,
    fill: bool = False,
) -> bytes:
    """A JPEG: SOI, APP0 (JFIF), an optional APP1 (EXIF) of ``exif_bytes``, DQT, DHT,
    SOFn (``0xC0`` baseline, ``0xC2`` progressive) with the size, SOS, data, EOI.

    ``fill`` puts 0xFF fill bytes before the frame header, as encoders may.
    """
    parts = [b"\xff\xd8", _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")]
    if exif_bytes:
        parts.append(_segment(0xE1, b"Exif\x00\x00" + b"\x00" * (exif_bytes - 6)))
    parts.append(_segment(0xDB, b"\x00" + bytes(range(1, 65))))
    parts.append(_segment(0xC4, b"\x00" + b"\x01" + b"\x00" * 15 + b"\x00"))
    if fill:
        parts.append(b"\xff\xff")
    components = b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    parts.append(_segment(sof, struct.pack(">BHHB", 8, height, width, 3) + components))
    parts.append(_segment(0xDA, b"\x03\x01\x00\x02\x11\x03\x11\x00\x3f\x00"))
    parts.append(b"\x12\x34\xff\x00\x56" * 20 + b"\xff\xd9")
    return b"".join(parts)


def _riff(chunks: bytes) -> bytes:
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WEBP" + chunks


def _chunk(kind: bytes, data: bytes) -> bytes:
    return kind + struct.pack("<I", len(data)) + data + (b"\x00" if len(data) % 2 else b"")


def webp_lossy(width: int, height: int) -> bytes:
    """A WebP with a ``VP8 `` chunk: key-frame tag, start code, 14-bit sizes."""
    tag = b"\x50\x02\x00"  # bit 0 clear: a key frame
    frame = tag + b"\x9d\x01\x2a" + struct.pack("<HH", width, height) + b"\x00" * 12
    return _riff(_chunk(b"VP8 ", frame))


def webp_lossless(width: int, height: int) -> bytes:
    """A WebP with a ``VP8L`` chunk: signature 0x2F, then 14-bit sizes minus one."""
    bits = (width - 1) | ((height - 1) << 14)
    return _riff(_chunk(b"VP8L", b"\x2f" + struct.pack("<I", bits) + b"\x00" * 8))


def webp_extended(width: int, height: int) -> bytes:
    """A WebP with a ``VP8X`` header (24-bit canvas sizes minus one) before its frame."""
    header = b"\x10\x00\x00\x00" + (width - 1).to_bytes(3, "little")
    header += (height - 1).to_bytes(3, "little")
    return _riff(_chunk(b"VP8X", header) + webp_lossless(width, height)[12:])


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def data_url(data: bytes, mime_type: str = "image/png") -> str:
    return f"data:{mime_type};base64,{b64(data)}"
