"""The "signal" motion engine: hand-built, weight-free, causal; hierarchical like ChatAnyone.

Audio features drive a face sub-stage (speech activity -> jaw and mouth shape, stressed
syllables -> brows, seeded blinks), then the head pose (seeded sway scaled by recent speech,
nods on stress), then a body sub-stage that follows the head (breathing, sway, gestures). Every
state is a per-frame recursive update and each frame draws the same number of random values, so
output depends only on the frames and the seed, never on how frames were grouped.
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

import numpy as np

from avatarflow.contracts.controls import Controls
from avatarflow.contracts.errors import InvalidInput
from avatarflow.contracts.motion import (
    BODY_CANONICAL,
    EXPR,
    EXPRESSION_BASIS,
    EXPRESSIONS,
    HAND_REST,
    HEAD_TEMPLATE,
    K,
)

from .body import CURL_DELTA, WRISTS, Body
from .common import FeatureLayout, MotionOutput, follow, parse_layout
from .face import Face
from .head import HeadPose
from .params import SignalParams
from .style import style_transform

EMOTION_OFFSETS: dict[str, dict[str, float]] = {
    "neutral": {},
    "happy": {"smile": 0.5, "brow_raise": 0.1},
    "sad": {"smile": -0.3, "brow_frown": 0.3},
    "angry": {"brow_frown": 0.6, "mouth_wide": 0.1},
    # Brows only: a jaw offset would keep the mouth open in silence.
    "surprised": {"brow_raise": 0.6},
}
_BLINKS = [EXPR["blink_left"], EXPR["blink_right"]]
_LOW = np.array([0.0 if n in ("jaw_open", "blink_left", "blink_right") else -1.0
                 for n in EXPRESSIONS])
_HIGH = np.ones(len(EXPRESSIONS))
_BASIS = EXPRESSION_BASIS.reshape(len(EXPRESSIONS), -1)  # as motion.head_template computes
_WRISTS = np.array(WRISTS)[:, None]  # 2 x 1: picks the wrist under each hand
_DRAWS = 8  # uniforms per frame: 3 blink, 3 jitter, 2 gesture
_SNAP = 1e-3  # eased controls land exactly on their target from this close
# The engine drives no implicit offsets: every frame shares one read-only array of zeros.
_NO_OFFSET = np.zeros((K, 3), dtype=np.float32)
_NO_OFFSET.flags.writeable = False


def emotion_offset(emotion: str) -> np.ndarray:
    """E offsets added to the expression coefficients for ``emotion``."""
    out = np.zeros(len(EXPRESSIONS))
    for name, value in EMOTION_OFFSETS[emotion].items():
        out[EXPR[name]] = value
    return out


class SignalSession:
    """One session's motion state; ``push`` returns one output per feature frame."""

    def __init__(self, params: SignalParams, fps: float, controls: Controls,
                 layout: str) -> None:
        if not math.isfinite(fps) or fps <= 0.0:
            raise InvalidInput(f"fps must be positive, got {fps}")
        self.layout: FeatureLayout = parse_layout(layout)
        self.fps = fps
        self._params = params
        self._style_gain, self._style_offset = style_transform(params, None)
        init = np.random.default_rng([controls.seed, 1])
        self._rng = np.random.default_rng([controls.seed, 0])
        self._face = Face(params, fps, first_blink=float(init.random()))
        self._head = HeadPose(params, fps, init)
        self._body = Body(params, fps, init)
        self._frame = 0
        self._ease = follow(fps, params.control_s)
        self._controls = controls
        self._intensity = controls.expression_intensity
        self._amplitude = controls.pose_amplitude
        self._offset = emotion_offset(controls.emotion)
        self._target_offset = self._offset.copy()
        mel = self.layout.mel
        n = mel.stop - mel.start
        lo0, lo1 = int(0.05 * n), max(1, int(0.3 * n))
        hi0 = int(0.45 * n)
        self._low = slice(mel.start + lo0, mel.start + max(lo0 + 1, lo1))
        self._high = slice(mel.start + hi0, mel.start + max(hi0 + 1, int(0.75 * n)))
        self._low_w = 1.0 / (self._low.stop - self._low.start)
        self._high_w = 1.0 / (self._high.stop - self._high.start)

    def set_controls(self, controls: Controls) -> None:
        """New controls ease in over ``control_s``; a new seed reseeds future random draws."""
        if controls.seed != self._controls.seed:
            self._rng = np.random.default_rng([controls.seed, 0])
        self._controls = controls
        self._target_offset = emotion_offset(controls.emotion)

    def set_reference(self, expressions: np.ndarray | None) -> None:
        """Speak in the style of a reference clip (T x E expression coefficients) from the next
        frame on; None returns to the engine's own style. See ``engines/style.py``."""
        self._style_gain, self._style_offset = style_transform(self._params, expressions)

    def reset_audio(self) -> None:
        """Barge-in: forget the utterance; the mouth closes smoothly, pose continues."""
        self._face.reset_audio()

    def push(self, features: list[np.ndarray]) -> list[MotionOutput]:
        return [self._step(f) for f in features]

    def flush(self) -> list[MotionOutput]:
        return []  # causal: nothing is held back

    def _eased(self, value: float, target: float) -> float:
        """One easing step that lands exactly on the target once close enough."""
        value += self._ease * (target - value)
        return target if abs(target - value) < _SNAP else value

    def _step(self, features: np.ndarray) -> MotionOutput:
        x = self.layout.check(features)
        lay = self.layout
        u = self._rng.random(_DRAWS)
        c = self._controls
        self._intensity = self._eased(self._intensity, c.expression_intensity)
        self._amplitude = self._eased(self._amplitude, c.pose_amplitude)
        if not np.array_equal(self._offset, self._target_offset):
            self._offset += self._ease * (self._target_offset - self._offset)
            near = np.abs(self._target_offset - self._offset) < _SNAP
            self._offset[near] = self._target_offset[near]

        energy = min(max(float(x[lay.energy_db]), -100.0), 0.0)
        voicing = None if lay.voicing is None else float(x[lay.voicing])
        low = float(x[self._low].sum()) * self._low_w
        high = float(x[self._high].sum()) * self._high_w
        expr, _, stress = self._face.update(energy, voicing, low, high, u[0:3])
        level = self._face.speech.level
        rotation, translation, scale = self._head.update(self._frame, level, stress, u[3:6])
        delta, curl = self._body.update(self._frame, rotation[1], rotation[2], stress,
                                        float(u[6]), float(u[7]))

        blinks = expr[_BLINKS]
        expr = (expr * self._style_gain + self._style_offset + self._offset) * self._intensity
        expr[_BLINKS] = blinks
        expr = np.clip(expr, _LOW, _HIGH).astype(np.float32)
        amp = self._amplitude
        body = (BODY_CANONICAL + amp * delta).astype(np.float32)
        hands = (body[_WRISTS] + HAND_REST
                 + ((amp * curl)[:, None, None] * CURL_DELTA).astype(np.float32))
        out = MotionOutput(
            frame=self._frame,
            rotation=(amp * rotation).astype(np.float32),
            translation=(amp * translation).astype(np.float32),
            scale=float(np.float32(1.0 + amp * (scale - 1.0))),
            expression=expr,
            head_template=HEAD_TEMPLATE + (expr @ _BASIS).reshape(K, 3),
            head_offset=_NO_OFFSET,
            body=body,
            hands=hands,
        )
        self._frame += 1
        return out


class SignalEngine:
    """Creates signal-engine sessions; options override ``SignalParams`` fields."""

    def __init__(self, **options: Any) -> None:
        known = {f.name for f in fields(SignalParams)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InvalidInput(f"unknown signal engine option(s): {', '.join(unknown)}")
        self.params = SignalParams(**options)

    def open_session(self, fps: float, controls: Controls, layout: str) -> SignalSession:
        return SignalSession(self.params, fps, controls, layout)

    def close(self) -> None:
        """Nothing to release: the engine holds no weights."""
