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
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from avatarflow.contracts import messages as m
from avatarflow.contracts.errors import InvalidInput, NotFound
from avatarflow.runtime.stage import Stage
from avatarflow_audio_encoder import engines
from avatarflow_audio_encoder.engines import FeatureSession
from avatarflow_audio_encoder.resample import MAX_RATE, MIN_RATE

MIN_FPS, MAX_FPS = 1.0, 60.0


@dataclass
class _Session:
    stream: FeatureSession
    sample_rate: int
    fps: float
    next_index: int = 0  # index of the next frame


class AudioEncoderStage(Stage):
    """Encodes each session's audio with one engine, chosen by name."""

    name = "audio-encoder"
    _sessions: dict[str, _Session]

    def __init__(self, engine: str = "mel", **options: Any) -> None:
        super().__init__()
        self.engine = engines.create(engine, **options)

    def process(self, msg: m.Message) -> Iterable[m.Message]:
        if isinstance(msg, m.AudioChunk):
            return self._chunk(msg)
        if isinstance(msg, m.SessionStart):
            self._start(msg)
        elif isinstance(msg, m.EndOfAudio):
            return self._end(msg)
        elif isinstance(msg, m.Interrupt):
            s = self._sessions.get(msg.session_id)
            if s is not None:
                s.stream = self.engine.open_session(s.sample_rate, s.fps)
                if msg.index > 0:
                    s.next_index = msg.index
        return (msg,)

    def close(self) -> None:
        self._sessions.clear()

    def _start(self, msg: m.SessionStart) -> None:
        rate, fps = msg.sample_rate, msg.fps
        if not isinstance(rate, int | np.integer) or not MIN_RATE <= rate <= MAX_RATE:
            raise InvalidInput(f"sample rate {rate!r} Hz is not supported: "
                               f"use an integer rate within {MIN_RATE}..{MAX_RATE} Hz")
        if not MIN_FPS <= fps <= MAX_FPS:
            raise InvalidInput(f"fps {fps!r} is not supported: use {MIN_FPS:g}..{MAX_FPS:g}")
        rate = int(rate)
        self._sessions[msg.session_id] = _Session(self.engine.open_session(rate, fps), rate, fps)

    def _chunk(self, msg: m.AudioChunk) -> list[m.Message]:
        s = self._sessions.get(msg.session_id)
        if s is None:
            raise NotFound(f"audio for unknown session {msg.session_id!r}: "
                           "send SessionStart first")
        pcm = msg.pcm
        if not isinstance(pcm, np.ndarray) or pcm.dtype != np.int16 or pcm.ndim != 1:
            got = (f"{pcm.dtype} array of shape {pcm.shape}" if isinstance(pcm, np.ndarray)
                   else type(pcm).__name__)
            raise InvalidInput(f"audio chunk {msg.index} must be mono int16 PCM "
                               f"(a 1-D int16 array), got {got}")
        if msg.sample_rate != s.sample_rate:
            raise InvalidInput(f"audio chunk {msg.index} is at {msg.sample_rate} Hz but the "
                               f"session started at {s.sample_rate} Hz")
        return self._frames(s, msg, s.stream.push(pcm))

    def _end(self, msg: m.EndOfAudio) -> list[m.Message]:
        s = self._sessions.pop(msg.session_id, None)
        if s is None:
            return [msg]
        out = self._frames(s, msg, s.stream.flush())
        out.append(dataclasses.replace(msg, index=s.next_index, pts=s.next_index / s.fps))
        return out

    def _frames(self, s: _Session, msg: m.Message, features: list[np.ndarray]) -> list[m.Message]:
        out: list[m.Message] = []
        for f in features:
            out.append(m.AudioFeatures(
                session_id=msg.session_id, index=s.next_index, pts=s.next_index / s.fps,
                features=f, layout=self.engine.layout, traceparent=msg.traceparent,
                deadline=msg.deadline))
            s.next_index += 1
        return out
