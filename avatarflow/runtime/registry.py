"""The pipeline's shape: which stage reads which topic. One source of truth for the embedded
runner, the distributed workers and the deployment (stream and consumer-group names)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StageSpec:
    name: str  # service name, as in services/<name>/
    module: str  # python package that provides build_stage(engine, **options)
    input: str  # topic it consumes
    output: str  # topic it produces

    @property
    def group(self) -> str:
        return f"{self.name}-workers"


AUDIO, FEATURES, MOTION, RENDERED, FRAMES = "audio", "features", "motion", "rendered", "frames"

PIPELINE: tuple[StageSpec, ...] = (
    StageSpec("audio-encoder", "avatarflow_audio_encoder", AUDIO, FEATURES),
    StageSpec("motion-gen", "avatarflow_motion_gen", FEATURES, MOTION),
    StageSpec("renderer", "avatarflow_renderer", MOTION, RENDERED),
    StageSpec("refiner", "avatarflow_refiner", RENDERED, FRAMES),
)
DEFAULT_ENGINES = {"audio-encoder": "mel", "motion-gen": "signal", "renderer": "warp",
                   "refiner": "blend"}
