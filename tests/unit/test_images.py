"""Untrusted portrait bytes: clear errors for what is not a usable image."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from avatarflow.contracts.errors import InvalidInput
from avatarflow.contracts.images import decode_image


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def test_rgba_and_grey_become_rgb() -> None:
    rgba = np.zeros((80, 90, 4), np.uint8)
    assert decode_image(_png(rgba)).shape == (80, 90, 3)
    assert decode_image(_png(np.zeros((70, 64), np.uint8))).shape == (70, 64, 3)


def test_text_is_not_an_image() -> None:
    with pytest.raises(InvalidInput, match="not a readable image"):
        decode_image(b"hello, this is a text file\n")


def test_empty_is_rejected() -> None:
    with pytest.raises(InvalidInput, match="empty"):
        decode_image(b"")


def test_over_4096_px_is_rejected_before_decoding() -> None:
    data = _png(np.zeros((16, 5000), np.uint8))
    with pytest.raises(InvalidInput, match="5000x16 px; at most 4096"):
        decode_image(data)


def test_decompression_bomb_is_rejected() -> None:
    # A 4096 x 4096 bilevel PNG compresses to a few KiB and is accepted; the same file claiming
    # 20000 x 20000 pixels (4e8) is refused from its header, before anything is inflated.
    big = Image.new("1", (4096, 4096))
    buf = io.BytesIO()
    big.save(buf, format="PNG")
    assert len(buf.getvalue()) < 100_000
    decode_image(buf.getvalue())  # at the limit: accepted
    header = bytearray(buf.getvalue())
    header[16:24] = (20000).to_bytes(4, "big") + (20000).to_bytes(4, "big")  # IHDR w, h
    header[29:33] = zlib.crc32(bytes(header[12:29])).to_bytes(4, "big")
    with pytest.raises(InvalidInput, match="20000x20000 px; at most 4096"):
        decode_image(bytes(header))


def test_tiny_image_is_rejected() -> None:
    with pytest.raises(InvalidInput, match="at least 64 px"):
        decode_image(_png(np.zeros((20, 20, 3), np.uint8)))
