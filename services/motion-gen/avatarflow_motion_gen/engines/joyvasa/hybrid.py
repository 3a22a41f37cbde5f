"""LivePortrait motion -> the hybrid motion fields, so renderers without LivePortrait (the CPU
default) still animate a joyvasa session: head pose from the angles, the mouth from the lip
keypoints' expression deltas, a neutral body. All relative to the session's first frame, as
LivePortrait drives a portrait."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from avatarflow.contracts.controls import Controls
from avatarflow.contracts.messages import LivePortraitMotion
from avatarflow.contracts.motion import BODY_CANONICAL, EXPR, EXPRESSIONS, K, head_template

from ...models import hand_keypoints
from ..body import WRISTS
from ..common import MotionOutput

# LivePortrait's implicit keypoints on the lips (as its expression editing picks them).
LIPS = [14, 17, 19, 20]
_MOUTH_Z = 3.0  # template standard deviations of lip movement for a fully open jaw
_MAX_ROTATION = 0.6  # radians
_MAX_SHIFT = 0.3  # head template units


def controlled(lp: LivePortraitMotion, ref: LivePortraitMotion,
               c: Controls) -> LivePortraitMotion:
    """Expression and pose moved away from the first frame by the controls' gains."""
    if c.expression_intensity == 1.0 and c.pose_amplitude == 1.0:
        return lp
    e, p = c.expression_intensity, c.pose_amplitude
    return replace(lp, exp=(ref.exp + e * (lp.exp - ref.exp)).astype(np.float32),
                   pitch=ref.pitch + p * (lp.pitch - ref.pitch),
                   yaw=ref.yaw + p * (lp.yaw - ref.yaw),
                   roll=ref.roll + p * (lp.roll - ref.roll),
                   t=(ref.t + p * (lp.t - ref.t)).astype(np.float32))


def hybrid(frame: int, lp: LivePortraitMotion, ref: LivePortraitMotion, c: Controls,
           template: dict[str, np.ndarray]) -> MotionOutput:
    """One MotionOutput carrying ``lp`` (after the controls) and its hybrid reading."""
    lp = controlled(lp, ref, c)
    angles = np.array([lp.pitch - ref.pitch, lp.yaw - ref.yaw, lp.roll - ref.roll])
    rotation = np.clip(np.radians(angles), -_MAX_ROTATION, _MAX_ROTATION).astype(np.float32)
    shift = np.zeros(3, np.float32)
    shift[:2] = np.clip(2.0 * (lp.t - ref.t)[:2], -_MAX_SHIFT, _MAX_SHIFT)
    std = template["std_exp"].reshape(21, 3)[LIPS, 1]
    lips = np.abs((lp.exp - ref.exp)[LIPS, 1]) / np.maximum(std, 1e-6)
    expression = np.zeros(len(EXPRESSIONS), np.float32)
    expression[EXPR["jaw_open"]] = float(np.clip(lips.mean() / _MOUTH_Z, 0.0, 1.0))
    body = BODY_CANONICAL.copy()
    return MotionOutput(
        frame=frame, rotation=rotation, translation=shift,
        scale=float(np.clip(lp.scale / max(ref.scale, 1e-6), 0.5, 2.0)),
        expression=expression, head_template=head_template(expression),
        head_offset=np.zeros((K, 3), np.float32), body=body,
        hands=hand_keypoints(body[list(WRISTS)], np.zeros((2, 1), np.float32)),
        liveportrait=lp)
