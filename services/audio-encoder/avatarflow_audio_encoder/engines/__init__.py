"""Audio-encoder engines, chosen by name: each turns a stream of PCM into one feature vector
per video frame. The interface below is all the stage relies on, so model-based engines
("hubert", "wav2vec2") drop in beside "mel"."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from avatarflow.runtime import engines

ENGINES = {
    "mel": "avatarflow_audio_encoder.engines.mel:MelEngine",
    "hubert": "avatarflow_audio_encoder.engines.ssl:HubertEngine",
    "wav2vec2": "avatarflow_audio_encoder.engines.ssl:Wav2Vec2Engine",
    "pcm": "avatarflow_audio_encoder.engines.pcm:PCMEngine",
}


class FeatureSession(Protocol):
    """One audio stream of one session."""

    def push(self, pcm: np.ndarray) -> list[np.ndarray]:
        """Adds N int16 samples; returns a D float32 vector per video frame now complete."""

    def flush(self) -> list[np.ndarray]:
        """Ends the stream; returns the remaining frames, ceil(duration * fps) in all."""


class FeatureEngine(Protocol):
    """A loaded engine: ``dim`` features per frame laid out as ``layout`` names them."""

    dim: int
    layout: str
    names: tuple[str, ...]

    def open_session(self, sample_rate: int, fps: float) -> FeatureSession: ...


def create(name: str, **options: Any) -> FeatureEngine:
    """Instantiates audio-encoder engine ``name``; an unknown name raises InvalidInput."""
    return engines.create(ENGINES, "audio-encoder", name, "audio", **options)
