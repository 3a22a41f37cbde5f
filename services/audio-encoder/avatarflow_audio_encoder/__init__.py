"""The audio-encoder service: PCM audio in, one feature vector per video frame out."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from avatarflow_audio_encoder.stage import AudioEncoderStage


def build_stage(engine: str = "mel", **options: Any) -> AudioEncoderStage:
    """Builds the audio-encoder stage; imported lazily so the package itself stays light."""
    from avatarflow_audio_encoder.stage import AudioEncoderStage

    return AudioEncoderStage(engine, **options)
