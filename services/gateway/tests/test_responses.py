"""A frame event becomes the VideoFrame the client decodes: its index, pts, refined flag, the
audio of its span, and the picture as the client asked for it (the refiner's JPEG bytes
untouched, or raw RGB)."""

from __future__ import annotations

import numpy as np
import pytest

from avatarflow.contracts.picture import Picture
from avatarflow.contracts.v1 import api_pb2
from avatarflow.session import Frame
from avatarflow_gateway import responses


def _frame(index: int, refined: bool) -> Frame:
    y, x = np.mgrid[0:24, 0:16]
    rgb = np.dstack([x * 16, y * 10, x + y]).astype(np.uint8)
    return Frame(index=index, pts=index / 30, image=Picture(rgb), audio=b"\x01\x00" * 533,
                 refined=refined)


@pytest.mark.parametrize(("index", "refined"), [(0, False), (41, True)])
def test_a_jpeg_frame_carries_the_refiners_bytes(index: int, refined: bool) -> None:
    f = _frame(index, refined)
    wire = responses.response(f, api_pb2.FRAME_ENCODING_JPEG).SerializeToString()
    got = api_pb2.SessionResponse.FromString(wire)
    assert got.WhichOneof("kind") == "frame"
    assert (got.frame.index, got.frame.pts, got.frame.refined) == (index, index / 30, refined)
    assert got.frame.data == f.image.jpeg() and got.frame.audio == f.audio


def test_a_raw_frame_carries_the_pixels() -> None:
    f = _frame(3, True)
    got = responses.response(f, api_pb2.FRAME_ENCODING_RAW_RGB)
    assert got.frame.data == f.image.rgb().tobytes() and len(got.frame.data) == 24 * 16 * 3
