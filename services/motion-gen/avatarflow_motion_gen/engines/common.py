"""What every motion engine shares: the feature layout and the per-frame motion it returns."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from avatarflow.contracts.errors import InvalidInput
from avatarflow.contracts.messages import LivePortraitMotion

_MEL = re.compile(r"mel(\d+)")


@dataclass(frozen=True, slots=True)
class FeatureLayout:
    """Where each named part sits in a feature vector such as ``mel40+energy_db+voicing``."""

    text: str
    dim: int
    mel: slice  # the first ``melN`` part: log10 mel energies, low to high frequency
    energy_db: int
    voicing: int | None = None
    zcr: int | None = None
    flux: int | None = None

    def check(self, features: np.ndarray) -> np.ndarray:
        """Returns ``features`` as a float64 vector, or raises InvalidInput when it is unusable."""
        x = np.asarray(features, dtype=np.float64)
        if x.shape != (self.dim,):
            raise InvalidInput(f"feature vector has shape {x.shape}, layout {self.text!r} "
                               f"needs ({self.dim},)")
        if not np.isfinite(x).all():
            raise InvalidInput("feature vector contains NaN or infinity")
        return x


def parse_layout(layout: str) -> FeatureLayout:
    """Parses a ``+``-separated layout; ``melN`` spans N dims, every other part one dim."""
    positions: dict[str, int] = {}
    mel: slice | None = None
    dim = 0
    for part in layout.split("+"):
        part = part.strip()
        match = _MEL.fullmatch(part)
        if match and int(match.group(1)) > 0:
            n = int(match.group(1))
            if mel is None:
                mel = slice(dim, dim + n)
            dim += n
            continue
        positions.setdefault(part, dim)
        dim += 1
    if mel is None:
        raise InvalidInput(f"feature layout {layout!r} has no melN part")
    if "energy_db" not in positions:
        raise InvalidInput(f"feature layout {layout!r} has no energy_db part")
    return FeatureLayout(text=layout, dim=dim, mel=mel, energy_db=positions["energy_db"],
                         voicing=positions.get("voicing"), zcr=positions.get("zcr"),
                         flux=positions.get("flux"))


@dataclass(slots=True)
class MotionOutput:
    """One frame of motion; fields as in ``avatarflow.contracts.messages.MotionFrame``."""

    frame: int  # session-relative number of the feature frame this motion belongs to
    rotation: np.ndarray  # 3 float32: pitch, yaw, roll (radians)
    translation: np.ndarray  # 3 float32, head template units
    scale: float
    expression: np.ndarray  # E float32
    head_template: np.ndarray  # K x 3 float32
    head_offset: np.ndarray  # K x 3 float32
    body: np.ndarray  # B x 3 float32
    hands: np.ndarray  # 2 x 21 x 3 float32
    liveportrait: LivePortraitMotion | None = None  # engines that speak LivePortrait


def follow(fps: float, tau_s: float) -> float:
    """Per-frame weight of a one-pole smoother with time constant ``tau_s`` at ``fps``."""
    if tau_s <= 0.0:
        return 1.0
    return 1.0 - math.exp(-1.0 / (fps * tau_s))


def decay(fps: float, tau_s: float) -> float:
    """Per-frame factor of an exponential decay with time constant ``tau_s``."""
    return 1.0 - follow(fps, tau_s)
