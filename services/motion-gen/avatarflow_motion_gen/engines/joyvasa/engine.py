"""The joyvasa engine: options, the shared generator, live sessions."""

from __future__ import annotations

import math
from pathlib import Path

from avatarflow.contracts.controls import Controls
from avatarflow.contracts.errors import InvalidInput
from avatarflow.runtime import devices

from . import sampler
from .generator import load
from .session import JoyVASASession

MAX_LOOKAHEAD_MS = 4000.0


class JoyVASAEngine:
    """JoyVASA's motion generator as a motion engine (see the package docstring).

    Args:
        weights: the weights root (JoyVASA's ``pretrained_weights/`` layout). Required.
        device, dtype: where and in what precision the generator runs.
        cfg_scale: classifier-free guidance on audio (JoyVASA's default 2.8).
        stride: JoyVASA frames (25 fps) committed per window in live sessions.
        lookahead_ms: audio a live window hears past its last committed frame's audio.
    """

    def __init__(self, weights: str = "", device: str = "cpu", dtype: str = "float32",
                 cfg_scale: float = sampler.CFG_SCALE, stride: int = 5,
                 lookahead_ms: float = 80.0, **unknown: object) -> None:
        if unknown:
            raise InvalidInput(f"unknown joyvasa engine option(s): {', '.join(sorted(unknown))}")
        if not weights:
            raise InvalidInput("the joyvasa engine needs weights=<root> laid out as JoyVASA's "
                               "pretrained_weights/ (JoyVASA/motion_generator/*.pt, ...)")
        if not math.isfinite(cfg_scale):
            raise InvalidInput(f"option 'cfg_scale' must be finite, got {cfg_scale!r}")
        if not 0.0 <= lookahead_ms <= MAX_LOOKAHEAD_MS:
            raise InvalidInput(f"option 'lookahead_ms' must be within 0..{MAX_LOOKAHEAD_MS:g}, "
                               f"got {lookahead_ms!r}")
        device = str(devices.resolve(device, dtype)[0])
        self.key = (str(Path(weights).resolve()), device, dtype)
        self.generator = load(*self.key)
        n = self.generator.n_motions
        if not isinstance(stride, int) or not 1 <= stride <= n:
            raise InvalidInput(f"option 'stride' must be an integer 1..{n} (the window), got "
                               f"{stride!r}")
        self.cfg_scale, self.stride = float(cfg_scale), stride
        self.lookahead = round(lookahead_ms * sampler.RATE / 1000.0)

    def open_session(self, fps: float, controls: Controls, layout: str) -> JoyVASASession:
        return JoyVASASession(self.key, self.stride, self.lookahead, self.cfg_scale, fps,
                              controls, layout)

    def close(self) -> None:
        """The generator stays cached for other engines of this process."""
