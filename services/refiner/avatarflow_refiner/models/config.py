"""Hyper-parameters of the face refine network, with named presets.

Plain data: the wrapper (``avatarflow_refiner.engines.neural``) reads them from a weights
directory's ``config.yaml`` and hands them to the modules.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from avatarflow.contracts import motion as mo


@dataclass(frozen=True)
class RefinerConfig:
    """Sizes of ``FaceRefineNet``.

    The head crop enters at ``image_size`` and is encoded ``2 ** down`` times smaller
    (``feature_size``), warped there, then decoded to ``out_size``.
    """

    image_size: int = 256  # side of the input crops (source face, masked body crop)
    out_size: int = 512  # side of the refined crop
    num_kp: int = mo.K  # explicit head keypoints driving the warp
    down: int = 2  # stride-2 stages of the encoders: feature_size = image_size / 2**down
    channels: int = 128  # appearance feature channels at feature_size
    motion_channels: int = 64  # width of the dense-motion hourglass
    motion_depth: int = 2  # hourglass stages
    res_blocks: int = 4  # AdaIN residual blocks of the generator at feature_size
    style_dim: int = 128  # AdaIN code from the masked body crop
    kp_sigma: float = 0.02  # Gaussian keypoint heatmap variance (normalised crop units)

    def __post_init__(self) -> None:
        problems = []
        if self.image_size % (2 ** (self.down + self.motion_depth)):
            problems.append(f"image_size {self.image_size} is not divisible by "
                            f"2**(down + motion_depth) = {2 ** (self.down + self.motion_depth)}")
        up = self.out_size / max(self.feature_size, 1)
        if up < 1 or up != 2 ** round(math.log2(up)):
            problems.append(f"out_size {self.out_size} is not feature_size "
                            f"{self.feature_size} times a power of two")
        if min(self.num_kp, self.channels, self.motion_channels, self.style_dim) < 1:
            problems.append("num_kp, channels, motion_channels and style_dim must be >= 1")
        if self.kp_sigma <= 0 or self.res_blocks < 0 or self.down < 1:
            problems.append("kp_sigma must be > 0, res_blocks >= 0 and down >= 1")
        if problems:
            raise ValueError("invalid refiner config: " + "; ".join(problems))

    @property
    def feature_size(self) -> int:
        return self.image_size // 2 ** self.down

    @property
    def up(self) -> int:
        """Stride-2 upsampling stages of the generator."""
        return round(math.log2(self.out_size // self.feature_size))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RefinerConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown refiner config keys: {', '.join(unknown)}")
        return cls(**data)


PRESETS: dict[str, RefinerConfig] = {
    # Tests: 64 px crops, a quarter of a million parameters, milliseconds a frame on one core.
    "small": RefinerConfig(image_size=64, out_size=64, channels=16, motion_channels=16,
                           motion_depth=2, res_blocks=1, style_dim=16, kp_sigma=0.02),
    # Serving: 256 px head crop in, 512 px out (ChatAnyone's refiner at LivePortrait scale).
    "full": RefinerConfig(),
}


def preset(name: str, **changes: Any) -> RefinerConfig:
    """A named preset, optionally with some fields changed (e.g. ``out_size=256``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown refiner preset {name!r}; presets: {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **changes)
