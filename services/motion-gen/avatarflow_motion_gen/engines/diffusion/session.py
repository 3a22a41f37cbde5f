"""One diffusion-engine session: pending features, motion history, windows and controls."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from avatarflow.contracts.controls import Controls
from avatarflow.contracts.errors import InvalidInput
from avatarflow.contracts.motion import (
    BODY_CANONICAL,
    EXPR,
    EXPRESSIONS,
    HEAD_TEMPLATE,
    K,
    head_keypoints,
    head_template,
)

from ...models import hand_keypoints
from ..body import WRISTS
from ..common import MotionOutput
from . import loaded
from .config import E, M
from .loaded import WindowModel

_BLINKS = [EXPR["blink_left"], EXPR["blink_right"]]
_LOW = np.array([0.0 if n in ("jaw_open", "blink_left", "blink_right") else -1.0
                 for n in EXPRESSIONS], dtype=np.float32)
_HIGH = np.ones(E, dtype=np.float32)
_WRISTS = list(WRISTS)
_MAX_OFFSET = 0.2  # head template units: implicit offsets are small corrections
_MAX_BODY = 0.5  # shoulder widths
_MAX_HAND = 1.5  # hand coefficients: the hand basis is linearised


def _finite(a: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    x = np.asarray(a, dtype=np.float32)
    if x.shape != shape:
        raise InvalidInput(f"{what} has shape {x.shape}, needs {shape}")
    if not np.isfinite(x).all():
        raise InvalidInput(f"{what} contains NaN or infinity")
    return x


def _posed(motion: np.ndarray) -> np.ndarray:
    """S x M motion -> S x K*3 posed head keypoints minus the neutral template."""
    zero = np.zeros((K, 3), dtype=np.float32)
    return np.stack([(head_keypoints(head_template(m[:E]), zero, m[E:E + 3], m[E + 3:], 1.0)
                      - HEAD_TEMPLATE).reshape(-1) for m in motion]).astype(np.float32)


def _controlled(raw: np.ndarray, c: Controls) -> np.ndarray:
    """The DiT's motion with the output side of the controls applied (see the package doc)."""
    out = raw.copy()
    blinks = out[:, _BLINKS]
    out[:, :E] *= min(c.expression_intensity, 1.0)
    out[:, _BLINKS] = blinks
    out[:, :E] = np.clip(out[:, :E], _LOW, _HIGH)
    out[:, E:] *= min(c.pose_amplitude, 1.0)
    return out


class DiffusionSession:
    """A session's state, numpy only; ``push`` returns each window's frames once complete.

    Pickles without the network: the engine is re-attached on first use from the engines
    loaded in this process, or loaded again (by the engine's own class, which the session
    keeps) from the same weights directory and options.
    """

    def __init__(self, engine: WindowModel, fps: float, controls: Controls,
                 layout: str) -> None:
        cfg = engine.config
        if not math.isfinite(fps) or fps <= 0.0:
            raise InvalidInput(f"fps must be positive, got {fps}")
        if abs(fps - cfg.fps) > 1e-6:
            raise InvalidInput(f"the diffusion weights in {engine.weights} make motion at "
                               f"{cfg.fps:g} fps; the session asks for {fps:g}")
        cfg.check_layout(layout, str(engine.weights))
        self._engine: WindowModel | None = engine
        self._spec = engine.spec
        self._load: Callable[..., WindowModel] = type(engine)
        self.layout = layout
        self.fps = fps
        self._controls = controls
        self._emotion = cfg.emotion_index(controls.emotion)
        self._frame = 0  # feature frames pushed; the pending ones are the last of them
        self._window = 0  # windows generated: picks each window's noise
        h, d = cfg.history, cfg.audio_dim
        self._pending = np.zeros((0, d), dtype=np.float32)
        self._hist_raw = np.zeros((h, M), dtype=np.float32)  # the DiT's own motion
        self._hist_out = np.zeros((h, M), dtype=np.float32)  # after controls, as emitted
        self._hist_valid = np.zeros(h, dtype=bool)
        self._hist_audio = np.zeros((h, d), dtype=np.float32)
        self._hist_audio_valid = np.zeros(h, dtype=bool)
        self._reference: np.ndarray | None = None  # R x E
        self._appearance: np.ndarray | None = None  # A

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_engine": None}

    @property
    def engine(self) -> WindowModel:
        if self._engine is None:
            self._engine = loaded.attach(self._spec, self._load)
        return self._engine

    def set_controls(self, controls: Controls) -> None:
        """Applies from the next window: style, output scale, emotion and noise seed."""
        self._emotion = self.engine.config.emotion_index(controls.emotion)
        self._controls = controls

    def set_reference(self, expressions: np.ndarray | None) -> None:
        """A reference clip's expression coefficients (T x E) for style transfer, resampled
        to the network's R frames; None returns to the learned null. From the next window."""
        if expressions is None:
            self._reference = None
            return
        x = np.asarray(expressions, dtype=np.float32)
        if x.ndim != 2 or len(x) == 0:
            raise InvalidInput(f"reference expressions have shape {x.shape}, need T x {E}")
        x = _finite(x, (len(x), E), "reference expressions")
        pos = np.linspace(0.0, len(x) - 1, self.engine.config.ref_frames)
        self._reference = np.stack([np.interp(pos, np.arange(len(x)), x[:, j])
                                    for j in range(E)], axis=1).astype(np.float32)

    def set_appearance(self, features: np.ndarray | None) -> None:
        """The source portrait's appearance vector (A), or None for the learned null."""
        dim = self.engine.config.appearance_dim
        self._appearance = None if features is None else _finite(features, (dim,), "appearance")

    def reset_audio(self) -> None:
        """Barge-in: pending features are dropped (their frames never come out); the motion
        history stays, so the next window continues from the last frame emitted."""
        self._pending = self._pending[:0]

    def push(self, features: list[np.ndarray]) -> list[MotionOutput]:
        cfg = self.engine.config
        rows = [_finite(f, (cfg.audio_dim,), "feature vector") for f in features]
        if rows:
            self._pending = np.concatenate([self._pending, np.stack(rows)])
            self._frame += len(rows)
        out: list[MotionOutput] = []
        while len(self._pending) >= cfg.window + cfg.lookahead:
            out += self._generate(cfg.window)
        return out

    def flush(self) -> list[MotionOutput]:
        """The frames still pending: their window runs with null audio where none came."""
        out: list[MotionOutput] = []
        while len(self._pending):
            out += self._generate(min(self.engine.config.window, len(self._pending)))
        return out

    def _generate(self, n: int) -> list[MotionOutput]:
        """Runs one window, emits its first ``n`` frames and moves the history on by them."""
        eng, c = self.engine, self._controls
        cfg = eng.config
        h, w = cfg.history, cfg.window
        have = self._pending[: w + cfg.lookahead]
        audio = np.zeros((h + w + cfg.lookahead, cfg.audio_dim), dtype=np.float32)
        valid = np.zeros(len(audio), dtype=bool)
        audio[:h], valid[:h] = self._hist_audio, self._hist_audio_valid
        audio[h: h + len(have)], valid[h: h + len(have)] = have, True
        raw = eng.face(seed=c.seed, window=self._window, audio=audio, audio_valid=valid,
                       history=self._hist_raw, history_valid=self._hist_valid,
                       style=(c.expression_intensity, c.pose_amplitude), emotion=self._emotion,
                       reference=self._reference)
        motion = _controlled(raw, c)
        offsets, body, hands = eng.body(_posed(np.concatenate([self._hist_out, motion])),
                                        audio[: h + w], valid[: h + w], self._appearance)
        gain_e, gain_p = min(c.expression_intensity, 1.0), min(c.pose_amplitude, 1.0)
        first = self._frame - len(self._pending)
        out = []
        for i in range(n):
            expr = motion[i, :E].copy()
            limbs = (BODY_CANONICAL
                     + gain_p * np.clip(body[h + i], -_MAX_BODY, _MAX_BODY)).astype(np.float32)
            offset = gain_e * np.clip(offsets[h + i], -_MAX_OFFSET, _MAX_OFFSET)
            out.append(MotionOutput(
                frame=first + i,
                rotation=motion[i, E:E + 3].copy(),
                translation=motion[i, E + 3:].copy(),
                scale=1.0,  # ChatAnyone's head pose is 6-D: no scale
                expression=expr,
                head_template=head_template(expr),
                head_offset=offset.astype(np.float32),
                body=limbs,
                hands=hand_keypoints(limbs[_WRISTS],
                                     gain_p * np.clip(hands[h + i], -_MAX_HAND, _MAX_HAND)),
            ))
        self._hist_raw = np.concatenate([self._hist_raw, raw[:n]])[-h:]
        self._hist_out = np.concatenate([self._hist_out, motion[:n]])[-h:]
        self._hist_valid = np.concatenate([self._hist_valid, np.ones(n, dtype=bool)])[-h:]
        self._hist_audio = np.concatenate([self._hist_audio, audio[h: h + n]])[-h:]
        self._hist_audio_valid = np.concatenate([self._hist_audio_valid, valid[h: h + n]])[-h:]
        self._pending = self._pending[n:]
        self._window += 1
        return out
