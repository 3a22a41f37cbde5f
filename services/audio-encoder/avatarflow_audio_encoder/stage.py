"""The audio-encoder stage: audio chunks in, one ``AudioFeatures`` per video frame out.

Frame indexes count from 0 per session. An interrupt drops the buffered audio; with index 0 it
keeps counting, so presentation timestamps (``index / fps``) keep advancing, and with an index
above 0 the next frame gets that index: the frames after the interrupt point were dropped
downstream and never shown, so the count may move back. Audio for an unknown session is
NotFound; control messages for one pass on untouched, as there is nothing to flush.

A session pickles small (the engine's tables stay out), so the runner can hand it to another
replica after every message.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from avatarflow.contracts import messages as m
from avatarflow.contracts.errors import InvalidInput
from avatarflow.runtime.stage import Stage
from avatarflow_audio_encoder import engines
from avatarflow_audio_encoder.engines import FeatureEngine, FeatureSession
from avatarflow_audio_encoder.resample import MAX_RATE, MIN_RATE

MIN_FPS, MAX_FPS = 1.0, 60.0


@dataclass
class _Session:
    stream: FeatureSession
    sample_rate: int
    fps: float
    next_index: int = 0  # index of the next frame


class AudioEncoderStage(Stage[_Session, m.AudioChunk]):
    """Encodes each session's audio with one engine, chosen by name."""

    name = "audio-encoder"
    accepts = m.AudioChunk

    def __init__(self, engine: str = "mel", **options: Any) -> None:
        super().__init__()
        self.engine: FeatureEngine = engines.create(engine, **options)

    def start(self, msg: m.SessionStart) -> _Session:
        rate, fps = msg.sample_rate, msg.fps
        if not isinstance(rate, int | np.integer) or not MIN_RATE <= rate <= MAX_RATE:
            raise InvalidInput(f"sample rate {rate!r} Hz is not supported: "
                               f"use an integer rate within {MIN_RATE}..{MAX_RATE} Hz")
        if not MIN_FPS <= fps <= MAX_FPS:
            raise InvalidInput(f"fps {fps!r} is not supported: use {MIN_FPS:g}..{MAX_FPS:g}")
        rate = int(rate)
        return _Session(self.engine.open_session(rate, fps), rate, fps)

    def frame(self, session: _Session, msg: m.AudioChunk) -> list[m.Message]:
        pcm = msg.pcm
        if not isinstance(pcm, np.ndarray) or pcm.dtype != np.int16 or pcm.ndim != 1:
            got = (f"{pcm.dtype} array of shape {pcm.shape}" if isinstance(pcm, np.ndarray)
                   else type(pcm).__name__)
            raise InvalidInput(f"audio chunk {msg.index} must be mono int16 PCM "
                               f"(a 1-D int16 array), got {got}")
        if msg.sample_rate != session.sample_rate:
            raise InvalidInput(f"audio chunk {msg.index} is at {msg.sample_rate} Hz but the "
                               f"session started at {session.sample_rate} Hz")
        return self._frames(session, msg, session.stream.push(pcm))

    def interrupt(self, session: _Session, msg: m.Interrupt) -> None:
        session.stream = self.engine.open_session(session.sample_rate, session.fps)
        if msg.index > 0:
            session.next_index = msg.index

    def finish(self, session: _Session, msg: m.EndOfAudio) -> list[m.Message]:
        return self._frames(session, msg, session.stream.flush())

    def forward(self, session: _Session, msg: m.Message) -> m.Message:
        """EndOfAudio moves from the chunk count to the frame clock: its index is the number
        of frames the session produced."""
        if isinstance(msg, m.EndOfAudio):
            return dataclasses.replace(msg, index=session.next_index,
                                       pts=session.next_index / session.fps)
        return msg

    def close(self) -> None:
        self._sessions.clear()

    def _frames(self, s: _Session, msg: m.Message, features: list[np.ndarray]) -> list[m.Message]:
        out: list[m.Message] = []
        for f in features:
            out.append(m.AudioFeatures(
                session_id=msg.session_id, index=s.next_index, pts=s.next_index / s.fps,
                features=f, layout=self.engine.layout, traceparent=msg.traceparent,
                deadline=msg.deadline))
            s.next_index += 1
        return out
