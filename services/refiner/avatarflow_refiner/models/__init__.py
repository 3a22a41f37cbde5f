"""The refiner's networks (``nn.Module`` definitions only; the engine wrapper owns device,
precision and weights)."""

from avatarflow_refiner.models.config import PRESETS, RefinerConfig, preset
from avatarflow_refiner.models.refiner import FaceRefineNet

__all__ = ["PRESETS", "FaceRefineNet", "RefinerConfig", "preset"]
