"""Network definitions of the neural motion engines (``nn.Module`` only: no config files,
devices or checkpoints here; ``engines.diffusion`` owns those)."""

from __future__ import annotations

from .body import BodyNet
from .diffusion import MotionDiffusion
from .face_dit import FaceDiT
from .hands import HAND_BASIS, HAND_COMPONENTS, hand_keypoints

__all__ = ["BodyNet", "FaceDiT", "HAND_BASIS", "HAND_COMPONENTS", "MotionDiffusion",
           "hand_keypoints"]
