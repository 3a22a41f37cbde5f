"""The motion-gen stage: AudioFeatures in, one MotionFrame per feature frame out."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from avatarflow.contracts import messages as m
from avatarflow.contracts.controls import Controls
from avatarflow.contracts.errors import AvatarflowError, InvalidInput, NotFound
from avatarflow.contracts.style import StyleReference
from avatarflow.runtime.stage import Stage

from . import engines


class _Envelope(NamedTuple):
    frame: int  # session-relative feature frame number, as the engine counts
    index: int
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
    motion: Any = None  # the engine session, opened by the first AudioFeatures (needs layout)
    layout: str = ""
    frames: int = 0
    pending: deque[_Envelope] = field(default_factory=deque)  # fed, motion not yet out


class MotionGenStage(Stage):
    """Turns each session's audio features into motion with a named engine."""

    name = "motion-gen"
    _sessions: dict[str, _Session]

    def __init__(self, engine: str = "signal", **options: Any) -> None:
        super().__init__()
        self.engine = engines.create(engine, **options)

    def process(self, msg: m.Message) -> Iterable[m.Message]:
        if isinstance(msg, m.AudioFeatures):
            return self._features(msg)
        sid = msg.session_id
        if isinstance(msg, m.SessionStart):
            self._sessions[sid] = _Session(fps=msg.fps, controls=msg.controls, style=msg.style)
        elif isinstance(msg, m.ControlUpdate) and sid in self._sessions:
            s = self._sessions[sid]
            s.controls = msg.controls
            if s.motion is not None:
                s.motion.set_controls(msg.controls)
        elif isinstance(msg, m.Interrupt) and sid in self._sessions:
            if self._sessions[sid].motion is not None:
                self._sessions[sid].motion.reset_audio()
        elif isinstance(msg, m.EndOfAudio) and sid in self._sessions:
            s = self._sessions.pop(sid)
            rest = s.motion.flush() if s.motion is not None else []
            return [*self._frames(sid, s, rest), msg]
        return (msg,)

    def _features(self, msg: m.AudioFeatures) -> list[m.Message]:
        s = self._sessions.get(msg.session_id)
        if s is None:
            raise NotFound(f"motion-gen has no session {msg.session_id!r}")
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
    def _frames(sid: str, s: _Session, outputs: Iterable[Any]) -> list[m.Message]:
        frames: list[m.Message] = []
        for o in outputs:
            # Engines may hold frames back or drop them after a barge-in; match by frame number.
            frame = getattr(o, "frame", None)
            while len(s.pending) > 1 and frame is not None and s.pending[0].frame < frame:
                s.pending.popleft()
            if not s.pending:
                raise AvatarflowError("motion engine returned more frames than it was fed")
            env = s.pending.popleft()
            frames.append(m.MotionFrame(
                session_id=sid, index=env.index, pts=env.pts, traceparent=env.traceparent,
                deadline=env.deadline,
                rotation=o.rotation, translation=o.translation, scale=o.scale,
                expression=o.expression, head_template=o.head_template,
                head_offset=o.head_offset, body=o.body, hands=o.hands))
        return frames

    def close(self) -> None:
        self._sessions.clear()
        close = getattr(self.engine, "close", None)
        if close is not None:
            close()
