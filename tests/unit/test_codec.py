"""Every message survives the wire unchanged; malformed tensors are rejected with a reason."""

from __future__ import annotations

import numpy as np
import pytest

from avatarflow import codec, motion, tensor
from avatarflow import messages as m
from avatarflow.controls import Controls
from avatarflow.errors import InvalidInput, OutOfRange


def _motion(sid: str = "s") -> m.MotionFrame:
    rng = np.random.default_rng(0)
    return m.MotionFrame(
        session_id=sid, index=7, pts=7 / 30, traceparent="00-abc-def-01", deadline=12.5,
        rotation=rng.normal(size=3).astype(np.float32),
        translation=rng.normal(size=3).astype(np.float32), scale=1.02,
        expression=rng.random(len(motion.EXPRESSIONS)).astype(np.float32),
        head_template=motion.HEAD_TEMPLATE.copy(),
        head_offset=np.zeros((motion.K, 3), np.float32),
        body=motion.BODY_CANONICAL.copy(), hands=np.zeros((2, 21, 3), np.float32))


def _all_messages() -> list[m.Message]:
    img = np.random.default_rng(1).integers(0, 255, (8, 6, 3), dtype=np.uint8)
    return [
        m.SessionStart(session_id="s", image=b"\x89PNG", sample_rate=44100, mode="head",
                       width=512, height=512, fps=25.0,
                       controls=Controls(expression_intensity=1.5, pose_amplitude=0.5,
                                         emotion="happy", seed=42)),
        m.ControlUpdate(session_id="s", controls=Controls(emotion="sad")),
        m.Interrupt(session_id="s", index=3),
        m.EndOfAudio(session_id="s", index=9),
        m.AudioChunk(session_id="s", index=2, pts=0.04, sample_rate=16000,
                     pcm=np.arange(-5, 5, dtype=np.int16)),
        m.AudioFeatures(session_id="s", index=1, pts=1 / 30, layout="mel40+energy_db",
                        features=np.linspace(0, 1, 41, dtype=np.float32)),
        _motion(),
        m.RenderedFrame(session_id="s", index=7, image=img, motion=_motion()),
        m.FinalFrame(session_id="s", index=7, image=img),
        m.SessionError(session_id="s", stage="renderer", category="invalid_argument",
                       message="no face"),
    ]


def _equal(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, m.Message):
        return type(a) is type(b) and all(
            _equal(getattr(a, f), getattr(b, f)) for f in a.__dataclass_fields__)
    if isinstance(a, float):
        return abs(a - b) < 1e-6
    return a == b


@pytest.mark.parametrize("msg", _all_messages(), ids=lambda x: type(x).__name__)
def test_every_message_round_trips(msg: m.Message) -> None:
    assert _equal(msg, codec.decode(codec.encode(msg)))


def test_tensor_keeps_dtype_and_shape() -> None:
    for dtype in ("float16", "float32", "int16", "uint8", "int64"):
        a = np.arange(24).astype(dtype).reshape(2, 3, 4)
        b = tensor.decode(tensor.encode(a))
        assert b.dtype == a.dtype and b.shape == a.shape and np.array_equal(a, b)


def test_tensor_with_wrong_byte_count_is_rejected() -> None:
    t = tensor.encode(np.zeros((4, 3), np.float32))
    t.data = t.data[:-4]
    with pytest.raises(InvalidInput, match="needs 48 bytes, got 44"):
        tensor.decode(t)


def test_tensor_with_unknown_dtype_is_rejected() -> None:
    t = tensor.encode(np.zeros(3, np.float32))
    t.dtype = "object"
    with pytest.raises(InvalidInput, match="dtype 'object'"):
        tensor.decode(t)


def test_garbage_bytes_are_a_clear_error() -> None:
    with pytest.raises(InvalidInput, match="malformed envelope|carries no message"):
        codec.decode(b"\xff\xff\xff\xff")


def test_controls_out_of_range_say_which() -> None:
    with pytest.raises(OutOfRange, match="pose_amplitude must be within 0..2"):
        Controls(pose_amplitude=3.0)
    with pytest.raises(OutOfRange, match="emotion must be one of"):
        Controls(emotion="bored")
