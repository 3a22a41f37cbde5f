"""Checks a client's SessionConfig and audio bytes: the protobuf side of a ``SessionSpec``."""

from __future__ import annotations

import numpy as np

from avatarflow.contracts import style as styles
from avatarflow.contracts.codec import controls_from_pb
from avatarflow.contracts.controls import Controls
from avatarflow.contracts.errors import InvalidInput
from avatarflow.contracts.limits import MAX_CHUNK_S, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from avatarflow.contracts.output import resolve_output
from avatarflow.contracts.v1 import api_pb2
from avatarflow.session.portraits import check_avatar_id
from avatarflow.session.spec import SessionSpec

MIN_RATE, MAX_RATE = MIN_SAMPLE_RATE, MAX_SAMPLE_RATE
ENCODINGS = {api_pb2.FRAME_ENCODING_UNSPECIFIED: api_pb2.FRAME_ENCODING_JPEG,
             api_pb2.FRAME_ENCODING_JPEG: api_pb2.FRAME_ENCODING_JPEG,
             api_pb2.FRAME_ENCODING_RAW_RGB: api_pb2.FRAME_ENCODING_RAW_RGB}


def parse_config(c: api_pb2.SessionConfig) -> SessionSpec:
    """Raises InvalidInput / OutOfRange with a message naming the bad field."""
    if not MIN_RATE <= c.sample_rate <= MAX_RATE:
        raise InvalidInput(f"unsupported sample rate {c.sample_rate} Hz: send PCM16 mono at "
                           f"{MIN_RATE}..{MAX_RATE} Hz")
    if c.encoding not in ENCODINGS:
        raise InvalidInput(f"unsupported frame encoding {c.encoding}: use FRAME_ENCODING_JPEG "
                           "or FRAME_ENCODING_RAW_RGB")
    o = c.output
    mode, width, height, fps = resolve_output(o.mode, o.width, o.height, o.fps)
    controls = controls_from_pb(c.controls) if c.HasField("controls") else Controls()
    style = styles.from_pb(c.style) if c.HasField("style") else None
    which = c.WhichOneof("portrait")
    if which is None or (which == "avatar_id" and not c.avatar_id) or (
            which == "image" and not c.image):
        raise InvalidInput("the session config needs a portrait: an avatar_id from "
                           "RegisterAvatar or an inline image")
    if which == "avatar_id":
        check_avatar_id(c.avatar_id)
    return SessionSpec(sample_rate=c.sample_rate, mode=mode, width=width, height=height,
                       fps=fps, encoding=ENCODINGS[c.encoding], controls=controls,
                       avatar_id=c.avatar_id if which == "avatar_id" else "",
                       image=c.image if which == "image" else b"", style=style)


def pcm_from_bytes(data: bytes, rate: int) -> np.ndarray:
    """Little-endian PCM16 bytes -> int16 samples."""
    if len(data) % 2:
        raise InvalidInput(f"audio is PCM16: {len(data)} bytes is not a whole number of samples")
    if len(data) // 2 > MAX_CHUNK_S * rate:
        raise InvalidInput(f"an audio message holds {len(data) // 2 / rate:.1f} s; send at most "
                           f"{MAX_CHUNK_S:g} s per message (20 ms is typical)")
    return np.frombuffer(data, "<i2").astype(np.int16)
