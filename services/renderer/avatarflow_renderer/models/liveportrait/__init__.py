"""LivePortrait's renderer, module by module, with the published checkpoints' parameter names.

Appearance encoder F (image -> 3D feature volume), head-motion estimator M (image -> canonical
keypoints, pose bins, expression, scale, translation), feature warper W (volume + source and
driving keypoints -> warped 2D features), SPADE generator G (features -> 512x512 image) and the
keypoint MLPs S (stitching, lip and eye retargeting). Constructor defaults are the published
hyper-parameters (LivePortrait's ``models.yaml``).
"""

from __future__ import annotations

from avatarflow_renderer.models.liveportrait.appearance import AppearanceEncoder
from avatarflow_renderer.models.liveportrait.keypoint_mlp import KeypointMLP
from avatarflow_renderer.models.liveportrait.motion import HeadMotionEstimator
from avatarflow_renderer.models.liveportrait.spade import SpadeGenerator
from avatarflow_renderer.models.liveportrait.warping import FeatureWarper, FlowEstimator

__all__ = ["AppearanceEncoder", "FeatureWarper", "FlowEstimator", "HeadMotionEstimator",
           "KeypointMLP", "SpadeGenerator"]
