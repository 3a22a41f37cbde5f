"""Messages <-> protobuf envelope bytes. The bus uses this and nothing else for the wire.

Pictures travel as JPEG by default: a ``Picture`` encodes once and keeps the bytes, so a frame
passed on untouched is never re-encoded. ``raw_pictures`` keeps exact RGB instead (debugging,
bit-exact comparisons) at several times the size.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from avatarflow.contracts import messages as m
from avatarflow.contracts import style, tensor
from avatarflow.contracts.controls import Controls
from avatarflow.contracts.errors import InvalidInput
from avatarflow.contracts.picture import Picture
from avatarflow.contracts.v1 import pipeline_pb2 as pb

_ONEOF = {
    m.SessionStart: "session_start", m.ControlUpdate: "control_update",
    m.Interrupt: "interrupt", m.EndOfAudio: "end_of_audio", m.AudioChunk: "audio_chunk",
    m.AudioFeatures: "audio_features", m.MotionFrame: "motion_frame",
    m.RenderedFrame: "rendered_frame", m.FinalFrame: "final_frame",
    m.SessionError: "session_error",
}
_CLASS = {v: k for k, v in _ONEOF.items()}
_TENSORS = {
    m.AudioChunk: ("pcm",), m.AudioFeatures: ("features",),
    m.MotionFrame: ("rotation", "translation", "expression", "head_template", "head_offset",
                    "body", "hands"),
}
_PICTURES = {m.RenderedFrame: ("image",), m.FinalFrame: ("image",)}
_SCALARS = {
    m.SessionStart: ("avatar_id", "image", "sample_rate", "mode", "width", "height", "fps"),
    m.AudioChunk: ("sample_rate",), m.AudioFeatures: ("layout",), m.MotionFrame: ("scale",),
    m.FinalFrame: ("refined",), m.SessionError: ("stage", "category", "message"),
}


def _controls_to_pb(c: Controls) -> pb.Controls:
    return pb.Controls(expression_intensity=c.expression_intensity,
                       pose_amplitude=c.pose_amplitude, emotion=c.emotion, seed=c.seed)


def controls_from_pb(c: pb.Controls) -> Controls:
    """Validated controls (OutOfRange names a bad field) from their protobuf form."""
    return Controls(expression_intensity=round(c.expression_intensity, 6),
                    pose_amplitude=round(c.pose_amplitude, 6), emotion=c.emotion or "neutral",
                    seed=c.seed)


def _picture_to_pb(p: Picture, out: pb.Picture, raw: bool) -> None:
    out.width, out.height = p.width, p.height
    if raw:
        tensor.fill(out.rgb, p.rgb())
    else:
        out.jpeg = p.jpeg()


def _picture_from_pb(p: pb.Picture) -> Picture:
    which = p.WhichOneof("pixels")
    if which == "rgb":
        picture = Picture(tensor.decode(p.rgb))
        if (picture.width, picture.height) != (p.width, p.height):
            raise InvalidInput(f"picture: {picture.width}x{picture.height} pixels in a "
                               f"{p.width}x{p.height} picture")
        return picture
    if which == "jpeg":
        if p.width <= 0 or p.height <= 0:
            raise InvalidInput(f"picture: JPEG with a bad size {p.width}x{p.height}")
        return Picture(jpeg=p.jpeg, width=p.width, height=p.height)
    raise InvalidInput("picture carries no pixels")


_LP_TENSORS = {"exp": (21, 3), "t": (3,)}
_LP_ANGLES = ("pitch", "yaw", "roll")


def check_liveportrait(block: m.LivePortraitMotion) -> m.LivePortraitMotion:
    """The block with float32 arrays, or InvalidInput naming the field that is malformed
    (wrong shape, or not finite). Both directions check it: a bad block never reaches a wire
    or a renderer."""
    arrays: dict[str, Any] = {}
    for name, shape in _LP_TENSORS.items():
        value = np.asarray(getattr(block, name))
        if value.shape != shape:
            raise InvalidInput(f"motion.liveportrait.{name}: shape {value.shape}, "
                               f"expected {shape}")
        if value.dtype.kind not in "fiu" or not np.isfinite(value).all():
            raise InvalidInput(f"motion.liveportrait.{name}: not finite numbers")
        arrays[name] = value.astype(np.float32, copy=False)
    scalars: dict[str, Any] = {}
    for name in ("scale", *_LP_ANGLES):
        value = getattr(block, name)
        if not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise InvalidInput(f"motion.liveportrait.{name}: {value!r} is not a finite number")
        scalars[name] = float(value)
    return m.LivePortraitMotion(**arrays, **scalars)


def _liveportrait_to_pb(block: m.LivePortraitMotion, out: pb.LivePortraitMotion) -> None:
    block = check_liveportrait(block)
    tensor.fill(out.exp, block.exp)
    tensor.fill(out.t, block.t)
    out.scale, out.pitch, out.yaw, out.roll = block.scale, block.pitch, block.yaw, block.roll


def _liveportrait_from_pb(p: pb.LivePortraitMotion) -> m.LivePortraitMotion:
    arrays: dict[str, Any] = {}
    for name in _LP_TENSORS:
        try:
            arrays[name] = tensor.decode(getattr(p, name))
        except InvalidInput as exc:
            raise InvalidInput(f"motion.liveportrait.{name}: {exc}") from exc
    return check_liveportrait(m.LivePortraitMotion(
        **arrays, scale=p.scale, pitch=p.pitch, yaw=p.yaw, roll=p.roll))


def to_proto(msg: m.Message, out: Any = None, *, raw_pictures: bool = False) -> Any:
    """Fills ``out`` (a new protobuf message of the class's type when None) with ``msg``,
    not yet wrapped in an envelope. Fields are written in place: a picture's bytes are copied
    once, into the message that is serialised."""
    cls = type(msg)
    if out is None:
        out = getattr(pb, cls.__name__)()
    h = out.header
    h.session_id, h.index, h.pts, h.deadline = msg.session_id, msg.index, msg.pts, msg.deadline
    if msg.traceparent:
        h.trace.traceparent = msg.traceparent
    for name in _TENSORS.get(cls, ()):
        tensor.fill(getattr(out, name), getattr(msg, name))
    for name in _PICTURES.get(cls, ()):
        _picture_to_pb(getattr(msg, name), getattr(out, name), raw_pictures)
    for name in _SCALARS.get(cls, ()):
        setattr(out, name, getattr(msg, name))
    if isinstance(msg, m.SessionStart | m.ControlUpdate):
        out.controls.CopyFrom(_controls_to_pb(msg.controls))
    if isinstance(msg, m.SessionStart) and msg.style is not None:
        style.to_pb(msg.style, out.style)
    if isinstance(msg, m.MotionFrame) and msg.liveportrait is not None:
        _liveportrait_to_pb(msg.liveportrait, out.liveportrait)
    if isinstance(msg, m.RenderedFrame):
        to_proto(msg.motion, out.motion)
    return out


def from_proto(cls: type[m.Message], p: Any) -> m.Message:
    """Rebuilds a message of class ``cls`` from its protobuf form."""
    h = p.header
    kwargs: dict[str, Any] = dict(session_id=h.session_id, index=h.index, pts=h.pts,
                                  deadline=h.deadline, traceparent=h.trace.traceparent)
    for name in _TENSORS.get(cls, ()):
        kwargs[name] = tensor.decode(getattr(p, name))
    for name in _PICTURES.get(cls, ()):
        kwargs[name] = _picture_from_pb(getattr(p, name))
    for name in _SCALARS.get(cls, ()):
        kwargs[name] = getattr(p, name)
    if cls in (m.SessionStart, m.ControlUpdate):
        kwargs["controls"] = controls_from_pb(p.controls)
    if cls is m.SessionStart and p.HasField("style"):
        kwargs["style"] = style.from_pb(p.style)
    if cls is m.MotionFrame and p.HasField("liveportrait"):
        kwargs["liveportrait"] = _liveportrait_from_pb(p.liveportrait)
    if cls is m.RenderedFrame:
        kwargs["motion"] = from_proto(m.MotionFrame, p.motion)
    return cls(**kwargs)


def encode(msg: m.Message, *, raw_pictures: bool = False) -> bytes:
    """Message -> envelope bytes; pictures as JPEG unless ``raw_pictures``."""
    env = pb.Envelope()
    to_proto(msg, getattr(env, _ONEOF[type(msg)]), raw_pictures=raw_pictures)
    return env.SerializeToString()


def decode(data: bytes) -> m.Message:
    """Envelope bytes -> message. Raises InvalidInput on anything malformed."""
    env = pb.Envelope()
    try:
        env.ParseFromString(data)
    except Exception as exc:  # protobuf raises its own DecodeError
        raise InvalidInput(f"malformed envelope: {exc}") from exc
    which = env.WhichOneof("body")
    if which is None:
        raise InvalidInput("envelope carries no message")
    return from_proto(_CLASS[which], getattr(env, which))
