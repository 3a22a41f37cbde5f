"""The motion-gen stage: AudioFeatures in, one MotionFrame per feature frame out."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from avatarflow.contracts import messages as m
from avatarflow.contracts.controls import Controls
from avatarflow.contracts.errors import AvatarflowError, InvalidInput
from avatarflow.contracts.style import StyleReference
from avatarflow.runtime.stage import Stage

from . import engines
from .engines.common import MotionOutput


class _Envelope(NamedTuple):
    frame: int  # session-relative feature frame number, as the engine counts
    msg_index: int  # the message's index
    pts: float
    traceparent: str
    deadline: float


@dataclass
class _Session:
    fps: float
    controls: Controls
    # Handed to the engine session when it opens, then dropped: the engine keeps what it
    # needs of it (and its snapshot with it), so a session's saved state stays small.
    style: StyleReference | None = None
    # The engine session, opened by the first AudioFeatures (it needs their layout).
    motion: engines.MotionSession | None = None
    layout: str = ""
    frames: int = 0
    pending: deque[_Envelope] = field(default_factory=deque)  # fed, motion not yet out


class MotionGenStage(Stage[_Session, m.AudioFeatures]):
    """Turns each session's audio features into motion with a named engine."""

    name = "motion-gen"
    accepts = m.AudioFeatures

    def __init__(self, engine: str = "signal", **options: Any) -> None:
        super().__init__()
        self.engine: engines.MotionEngine = engines.create(engine, **options)

    def start(self, msg: m.SessionStart) -> _Session:
        return _Session(fps=msg.fps, controls=msg.controls, style=msg.style)

    def control(self, session: _Session, msg: m.ControlUpdate) -> None:
        session.controls = msg.controls
        if session.motion is not None:
            session.motion.set_controls(msg.controls)

    def interrupt(self, session: _Session, msg: m.Interrupt) -> None:
        if session.motion is not None:
            session.motion.reset_audio()

    def finish(self, session: _Session, msg: m.EndOfAudio) -> list[m.Message]:
        rest = session.motion.flush() if session.motion is not None else []
        return self._frames(msg.session_id, session, rest)

    def frame(self, session: _Session, msg: m.AudioFeatures) -> list[m.Message]:
        s = session
        if s.motion is None:
            if not msg.layout:
                raise InvalidInput("the first AudioFeatures of a session must name its layout")
            motion = self.engine.open_session(s.fps, s.controls, msg.layout)
            if s.style is not None:
                motion.set_reference(s.style.expressions)
            s.motion, s.style, s.layout = motion, None, msg.layout
        elif msg.layout and msg.layout != s.layout:
            raise InvalidInput(f"feature layout changed from {s.layout!r} to {msg.layout!r}")
        s.pending.append(_Envelope(s.frames, msg.index, msg.pts, msg.traceparent, msg.deadline))
        try:
            out = s.motion.push([msg.features])
        except Exception:
            s.pending.pop()
            raise
        s.frames += 1
        return self._frames(msg.session_id, s, out)

    @staticmethod
    def _frames(sid: str, s: _Session, outputs: list[MotionOutput]) -> list[m.Message]:
        frames: list[m.Message] = []
        for o in outputs:
            # Engines may hold frames back or drop them after a barge-in; match by frame number.
            while len(s.pending) > 1 and s.pending[0].frame < o.frame:
                s.pending.popleft()
            if not s.pending:
                raise AvatarflowError("motion engine returned more frames than it was fed")
            env = s.pending.popleft()
            frames.append(m.MotionFrame(
                session_id=sid, index=env.msg_index, pts=env.pts, traceparent=env.traceparent,
                deadline=env.deadline,
                rotation=o.rotation, translation=o.translation, scale=o.scale,
                expression=o.expression, head_template=o.head_template,
                head_offset=o.head_offset, body=o.body, hands=o.hands,
                liveportrait=o.liveportrait))
        return frames

    def close(self) -> None:
        self._sessions.clear()
        self.engine.close()
