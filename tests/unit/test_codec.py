"""Every message survives the wire unchanged (pictures within JPEG tolerance, or exactly when
asked); malformed tensors and pictures are rejected with a reason."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from avatarflow.contracts import codec, motion, tensor
from avatarflow.contracts import messages as m
from avatarflow.contracts.controls import Controls
from avatarflow.contracts.errors import InvalidInput, OutOfRange
from avatarflow.contracts.picture import Picture
from avatarflow.contracts.v1 import pipeline_pb2 as pb

JPEG_TOLERANCE = 2.0  # mean grey levels off, on a smooth image


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


def _liveportrait() -> m.LivePortraitMotion:
    rng = np.random.default_rng(2)
    return m.LivePortraitMotion(exp=rng.normal(0, 0.02, (21, 3)).astype(np.float32),
                                scale=1.25, t=rng.normal(size=3).astype(np.float32),
                                pitch=-3.5, yaw=12.25, roll=0.75)


def _image(h: int = 24, w: int = 16) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.dstack([x * 255 // w, y * 255 // h, (x + y) * 4]).astype(np.uint8)


def _all_messages() -> list[m.Message]:
    img = Picture(_image())
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
        dataclasses.replace(_motion(), liveportrait=_liveportrait()),
        m.RenderedFrame(session_id="s", index=7, image=img, motion=_motion()),
        m.RenderedFrame(session_id="s", index=7, image=img,
                        motion=dataclasses.replace(_motion(), liveportrait=_liveportrait())),
        m.FinalFrame(session_id="s", index=7, image=img),
        m.FinalFrame(session_id="s", index=8, image=img, refined=False),
        m.SessionError(session_id="s", stage="renderer", category="invalid_argument",
                       message="no face"),
    ]


def _equal(a: object, b: object, tolerance: float = 0.0) -> bool:
    if isinstance(a, Picture):
        return (isinstance(b, Picture) and a.shape == b.shape
                and float(np.abs(a.rgb().astype(np.int16) - b.rgb()).mean()) <= tolerance)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if dataclasses.is_dataclass(a):
        return type(a) is type(b) and all(
            _equal(getattr(a, f), getattr(b, f), tolerance) for f in a.__dataclass_fields__)
    if isinstance(a, float):
        return abs(a - b) < 1e-6
    return a == b


@pytest.mark.parametrize("msg", _all_messages(), ids=lambda x: type(x).__name__)
def test_every_message_round_trips(msg: m.Message) -> None:
    assert _equal(msg, codec.decode(codec.encode(msg)), JPEG_TOLERANCE)
    assert _equal(msg, codec.decode(codec.encode(msg, raw_pictures=True)))


def test_picture_is_encoded_once_and_passed_on_as_jpeg() -> None:
    rendered = m.RenderedFrame(session_id="s", image=Picture(_image()), motion=_motion())
    received = codec.decode(codec.encode(rendered))
    assert received.image.has_jpeg and received.image.jpeg() == rendered.image.jpeg()
    # The refiner passes a late frame on as it came: the same JPEG bytes, never decoded.
    final = m.FinalFrame(session_id="s", image=received.image, refined=False)
    env = pb.Envelope.FromString(codec.encode(final))
    assert env.final_frame.image.jpeg == rendered.image.jpeg()
    assert (env.final_frame.image.width, env.final_frame.image.height) == (16, 24)
    assert repr(received.image) == "Picture(16x24, jpeg)"


def test_raw_pictures_are_exact() -> None:
    img = np.random.default_rng(1).integers(0, 255, (8, 6, 3), dtype=np.uint8)
    data = codec.encode(m.FinalFrame(session_id="s", image=Picture(img)), raw_pictures=True)
    assert pb.Envelope.FromString(data).final_frame.image.WhichOneof("pixels") == "rgb"
    assert np.array_equal(codec.decode(data).image.rgb(), img)


def _final_with(picture: pb.Picture) -> bytes:
    return pb.Envelope(final_frame=pb.FinalFrame(image=picture)).SerializeToString()


@pytest.mark.parametrize("picture, words", [
    (pb.Picture(width=4, height=4), "no pixels"),
    (pb.Picture(jpeg=b"\xff\xd8", width=0, height=4), "bad size 0x4"),
    (pb.Picture(rgb=tensor.encode(np.zeros((4, 4, 3), np.uint8)), width=5, height=4),
     "4x4 pixels in a 5x4 picture"),
    (pb.Picture(rgb=tensor.encode(np.zeros((4, 4), np.uint8)), width=4, height=4),
     "H x W x 3 uint8"),
])
def test_malformed_pictures_are_rejected(picture: pb.Picture, words: str) -> None:
    with pytest.raises(InvalidInput, match=words):
        codec.decode(_final_with(picture))


def test_undecodable_jpeg_says_so_when_read() -> None:
    frame = codec.decode(_final_with(pb.Picture(jpeg=b"not a jpeg", width=4, height=4)))
    with pytest.raises(InvalidInput, match="expected a 4x4 JPEG, got undecodable bytes"):
        frame.image.rgb()


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


def test_motion_without_liveportrait_block_stays_without() -> None:
    assert codec.decode(codec.encode(_motion())).liveportrait is None


def _motion_bytes_with(block: pb.LivePortraitMotion) -> bytes:
    env = pb.Envelope()
    codec.to_proto(_motion(), env.motion_frame)
    env.motion_frame.liveportrait.CopyFrom(block)
    return env.SerializeToString()


def _block(**changes: object) -> pb.LivePortraitMotion:
    fields: dict[str, object] = dict(exp=tensor.encode(np.zeros((21, 3), np.float32)),
                                     scale=1.0, t=tensor.encode(np.zeros(3, np.float32)))
    fields.update(changes)
    return pb.LivePortraitMotion(**fields)


@pytest.mark.parametrize("block, words", [
    (_block(exp=tensor.encode(np.zeros((20, 3), np.float32))),
     r"motion.liveportrait.exp: shape \(20, 3\), expected \(21, 3\)"),
    (_block(exp=pb.LivePortraitMotion().exp), "motion.liveportrait.exp: tensor dtype ''"),
    (_block(t=tensor.encode(np.array([0.0, np.nan, 0.0], np.float32))),
     "motion.liveportrait.t: not finite"),
    (_block(yaw=float("inf")), "motion.liveportrait.yaw: inf is not a finite number"),
])
def test_bad_liveportrait_block_is_rejected_naming_the_field(
        block: pb.LivePortraitMotion, words: str) -> None:
    with pytest.raises(InvalidInput, match=words):
        codec.decode(_motion_bytes_with(block))


def test_bad_liveportrait_block_is_refused_before_the_wire() -> None:
    bad = dataclasses.replace(_liveportrait(), exp=np.zeros(63, np.float32))
    with pytest.raises(InvalidInput, match="liveportrait.exp: shape \\(63,\\)"):
        codec.encode(dataclasses.replace(_motion(), liveportrait=bad))
