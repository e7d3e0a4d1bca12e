from __future__ import annotations

import base64
import inspect
import io
import re
import textwrap

import pytest
from image_files import b64, data_url, gif, jpeg, png, webp_extended, webp_lossless, webp_lossy
from PIL import Image as _PILImage  # Pillow is in the test dependency group: never skipped

from ctx_memory import images
from ctx_memory.images import (
    image_size,
    image_size_from_base64,
    image_size_from_bytes,
    image_tokens,
    parse_data_url,
)

BUILDERS = {
    "png": png,
    "gif": gif,
    "jpeg": jpeg,
    "jpeg-progressive": lambda w, h: jpeg(w, h, sof=0xC2),
    "jpeg-exif-fill": lambda w, h: jpeg(w, h, exif_bytes=60_000, fill=True),
    "webp-lossy": webp_lossy,
    "webp-lossless": webp_lossless,
    "webp-extended": webp_extended,
}
SIZES = [(1, 1), (640, 480), (1024, 1024), (3000, 4000), (16383, 7)]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", BUILDERS)
def test_size_from_the_header(kind, size):
    data = BUILDERS[kind](*size)
    assert image_size_from_bytes(data) == size
    assert image_size_from_base64(b64(data)) == size


@pytest.mark.parametrize("kind", BUILDERS)
def test_the_files_are_what_pillow_reads(kind):

    with _PILImage.open(io.BytesIO(BUILDERS[kind](321, 123))) as image:
        assert image.size == (321, 123)


def test_real_encoder_output_when_pillow_is_there():

    for fmt, options in [
        ("PNG", {}),
        ("GIF", {}),
        ("JPEG", {}),
        ("JPEG", {"progressive": True, "icc_profile": b"\0" * 50_000}),
        ("WEBP", {}),
        ("WEBP", {"lossless": True}),
    ]:
        out = io.BytesIO()
        _PILImage.new("RGB", (1500, 700), (200, 30, 30)).save(out, fmt, **options)
        assert image_size_from_base64(b64(out.getvalue())) == (1500, 700), (fmt, options)
    out = io.BytesIO()
    _PILImage.new("RGBA", (90, 60), (0, 0, 0, 10)).save(out, "WEBP")  # alpha: a VP8X file
    assert out.getvalue()[12:16] == b"VP8X"
    assert image_size_from_bytes(out.getvalue()) == (90, 60)


def test_jpeg_is_read_segment_by_segment_not_whole():
    data = jpeg(800, 600, exif_bytes=65_000)
    text = b64(data)
    asked: list[tuple[int, int]] = []

    def read(offset: int, n: int) -> bytes:
        asked.append((offset, n))
        return data[offset : offset + n]

    assert image_size(read) == (800, 600)
    assert sum(n for _, n in asked) < 64  # a few bytes per segment header
    # From base64: the 65 KB EXIF segment is jumped over, never decoded.
    decoded: list[int] = []
    real = images.binascii.a2b_base64

    def spy(chunk: str) -> bytes:
        decoded.append(len(chunk))
        return real(chunk)

    images.binascii.a2b_base64 = spy  # type: ignore[assignment]
    try:
        assert image_size_from_base64(text) == (800, 600)
    finally:
        images.binascii.a2b_base64 = real
    assert sum(decoded) < 200


def test_base64_with_line_breaks_and_url_safe_alphabet():
    data = png(700, 300)
    wrapped = base64.encodebytes(data).decode()  # MIME lines of 76 characters
    assert "\n" in wrapped
    assert image_size_from_base64(wrapped) == (700, 300)
    assert image_size_from_base64(base64.urlsafe_b64encode(data).decode()) == (700, 300)
    unpadded = b64(gif(5, 7)).rstrip("=")
    assert image_size_from_base64(unpadded) == (5, 7)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not an image at all",
        png(10, 10)[:20],  # cut inside IHDR
        jpeg(10, 10)[:30],  # cut before the frame header
        b"\xff\xd8\xff\xda\x00\x02" + b"\x00" * 40,  # scan data before any frame
        b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x00\x00\x10\x03" + b"\x00" * 9,  # height 0 (DNL)
        b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 20,  # no key-frame start code
        b"BM" + b"\x00" * 40,  # BMP: not a format the providers take
    ],
)
def test_unknown_or_broken_headers_give_none(data):
    assert image_size_from_bytes(data) is None
    assert image_size_from_base64(b64(data)) is None


def test_garbage_base64_gives_none():
    assert image_size_from_base64("!!!! not base64 ****") is None
    assert image_size_from_base64("") is None


@pytest.mark.parametrize(
    ("width", "height", "detail", "expected"),
    [
        # OpenAI's own worked examples ("Calculating costs", images and vision guide).
        (1024, 1024, "high", 765),  # 768 x 768: 4 tiles
        (2048, 4096, "high", 1105),  # 1024 x 2048 then 768 x 1536: 6 tiles
        (4096, 8192, "low", 85),
        # Small images are not scaled up.
        (512, 512, "high", 255),
        (513, 512, "high", 425),
        (100, 100, "high", 255),
        (768, 768, "high", 765),
        # Shortest side down to 768: 1920 x 1080 -> 1365 x 768, 3 x 2 tiles.
        (1920, 1080, "high", 1105),
        # Into 2048 x 2048 first: 4000 x 3000 -> 2048 x 1536 -> 1024 x 768.
        (4000, 3000, "high", 765),
        (3000, 4000, "auto", 765),  # auto counts as high
        (3000, 4000, None, 765),
        (16383, 7, "high", 765),  # 2048 x 1 after fitting: 4 tiles in a row
        (800, 600, "low", 85),
    ],
)
def test_openai_formula(width, height, detail, expected):
    assert image_tokens(width, height, detail) == expected
    assert image_tokens(height, width, detail) == expected  # rotation costs the same


def test_parse_data_url():
    parsed = parse_data_url("data:Image/PNG;base64,AAAA")
    assert parsed == ("image/png", True, "AAAA")
    assert parse_data_url("data:text/plain;charset=utf-8,hello%20world") == (
        "text/plain",
        False,
        "hello%20world",
    )
    assert parse_data_url("data:;base64,QQ==") == ("", True, "QQ==")
    assert parse_data_url("https://example.com/cat.png") is None
    assert parse_data_url("data:no-comma") is None
    assert data_url(b"x").startswith("data:image/png;base64,")


_EXAMPLE = re.compile(r"Example:\s*\n\s*\.\. code-block:: python\s*\n\n((?:[ \t]+.*\n|\s*\n)+)")


def test_function_examples_run():
    examples = [
        textwrap.dedent(m[1])
        for _, fn in inspect.getmembers(images, inspect.isfunction)
        if (m := _EXAMPLE.search((inspect.getdoc(fn) or "") + "\n"))
    ]
    assert examples
    for code in examples:
        exec(compile(code, "<docstring example>", "exec"), {})
