"""ChatAnyone's upper-body renderer: LivePortrait's warping GAN driven by explicit head and
body keypoints, with hand images injected into the generator.

Appearance encoder -> feature warper (K = 54 head + 8 body keypoints, normalised image
coordinates with depth) -> SPADE generator whose features at three scales are modulated by a
rasterised hand image through AdaIN (``f = f + AdaIN(f, hand features)``). The output is twice
the source size: 512 x 768 (W x H) from a 256 x 384 source with the ``full`` preset.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from avatarflow_renderer.models.liveportrait import (
    AppearanceEncoder,
    FeatureWarper,
    SpadeGenerator,
)

# The encoder halves the source twice and the generator doubles it twice, then pixel-shuffles:
# the output is twice the source size.
DOWN_BLOCKS = 2


@dataclass(frozen=True)
class UpperBodyConfig:
    """Hyper-parameters of ``UpperBodyRenderer`` (names follow LivePortrait's models.yaml)."""

    source_width: int = 256
    source_height: int = 384
    num_kp: int = 62  # avatarflow.contracts.motion: K head + B body keypoints
    block_expansion: int = 64
    max_features: int = 512
    reshape_channel: int = 32
    reshape_depth: int = 16
    num_resblocks: int = 6
    flow_block_expansion: int = 32
    flow_max_features: int = 1024
    flow_num_blocks: int = 5
    compress: int = 4
    spade_hidden: int = 128
    out_channels: int = 64
    hand_channels: int = 32

    def __post_init__(self) -> None:
        if self.reshape_channel * self.reshape_depth != self.max_features:
            raise ValueError("reshape_channel x reshape_depth must equal max_features")
        step = 2 ** (DOWN_BLOCKS + self.flow_num_blocks)
        if self.source_width % step or self.source_height % step:
            raise ValueError(f"source size {self.source_width}x{self.source_height} must be a "
                             f"multiple of {step} (2 ** (2 + flow_num_blocks))")

    @property
    def output_size(self) -> tuple[int, int]:
        """(width, height) of the rendered frame."""
        return 2 * self.source_width, 2 * self.source_height

    @classmethod
    def preset(cls, name: str) -> UpperBodyConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
        return cls(**PRESETS[name])

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> UpperBodyConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown fields {', '.join(unknown)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, dict[str, Any]] = {
    "full": {},
    "small": {"source_width": 64, "source_height": 96, "block_expansion": 8,
              "max_features": 64, "reshape_channel": 16, "reshape_depth": 4, "num_resblocks": 1,
              "flow_block_expansion": 8, "flow_max_features": 32, "flow_num_blocks": 2,
              "compress": 1, "spade_hidden": 16, "out_channels": 16, "hand_channels": 8},
}


def adain(content: torch.Tensor, style: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Adaptive instance norm: ``content`` normalised per channel, then given the per-channel
    mean and standard deviation of ``style`` (same channel count, any resolution)."""
    c_mean = content.mean(dim=(2, 3), keepdim=True)
    c_std = (content.var(dim=(2, 3), keepdim=True, unbiased=False) + eps).sqrt()
    s_mean = style.mean(dim=(2, 3), keepdim=True)
    s_std = (style.var(dim=(2, 3), keepdim=True, unbiased=False) + eps).sqrt()
    return (content - c_mean) / c_std * s_std + s_mean


class HandEncoder(nn.Module):
    """Hand image (B x 3 x H x W) -> features at full, half and quarter resolution."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.levels = nn.ModuleList([
            nn.Conv2d(3, width, kernel_size=3, padding=1),
            nn.Conv2d(width, 2 * width, kernel_size=3, stride=2, padding=1),
            nn.Conv2d(2 * width, 4 * width, kernel_size=3, stride=2, padding=1),
        ])
        self.widths = (width, 2 * width, 4 * width)

    def forward(self, hand: torch.Tensor) -> list[torch.Tensor]:
        feats, x = [], hand
        for conv in self.levels:
            x = F.leaky_relu(conv(x), 0.2)
            feats.append(x)
        return feats


class HandInjection(nn.Module):
    """``f + AdaIN(f, proj(hand features))``: hand features projected to the generator's
    channels by a 1x1 conv."""

    def __init__(self, channels: int, hand_channels: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(hand_channels, channels, kernel_size=1)

    def forward(self, f: torch.Tensor, hand: torch.Tensor) -> torch.Tensor:
        return f + adain(f, self.proj(hand))


class HandConditionedGenerator(SpadeGenerator):
    """LivePortrait's SPADE generator with hand injection after the middle blocks (1/4 of the
    source resolution), after ``up_0`` (1/2) and after ``up_1`` (full)."""

    def __init__(self, config: UpperBodyConfig) -> None:
        super().__init__(upscale=2, max_features=config.max_features,
                         block_expansion=config.block_expansion,
                         out_channels=config.out_channels,
                         num_down_blocks=DOWN_BLOCKS, hidden=config.spade_hidden)
        self.hand_encoder = HandEncoder(config.hand_channels)
        quarter, half, full = reversed(self.hand_encoder.widths)
        w = self.in_channels
        self.inject = nn.ModuleList([HandInjection(2 * w, quarter), HandInjection(w, half),
                                     HandInjection(config.out_channels, full)])

    def forward(self, feature: torch.Tensor, hand: torch.Tensor | None = None) -> torch.Tensor:
        if hand is None:
            b, _, h, w = feature.shape
            hand = feature.new_zeros(b, 3, h * 2 ** DOWN_BLOCKS, w * 2 ** DOWN_BLOCKS)
        full, half, quarter = self.hand_encoder(hand)
        x = self.inject[0](self.middle(feature), quarter)
        x = self.inject[1](self.up_0(self.up(x), feature), half)
        x = self.inject[2](self.up_1(self.up(x), feature), full)
        return self.to_image(x)


class UpperBodyRenderer(nn.Module):
    """Source (B x 3 x H x W in [0, 1]), source and driving keypoints (B x num_kp x 3,
    normalised x, y in [-1, 1] over the source, z in the same units) and a hand image
    (B x 3 x H x W in [0, 1], or None) -> B x 3 x 2H x 2W image in [0, 1]."""

    def __init__(self, config: UpperBodyConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.appearance = AppearanceEncoder(
            3, c.block_expansion, DOWN_BLOCKS, c.max_features, c.reshape_channel,
            c.reshape_depth, c.num_resblocks)
        self.warper = FeatureWarper(
            num_kp=c.num_kp, block_expansion=c.block_expansion, max_features=c.max_features,
            num_down_blocks=DOWN_BLOCKS, reshape_channel=c.reshape_channel,
            estimate_occlusion_map=True,
            dense_motion_params={"block_expansion": c.flow_block_expansion,
                                 "max_features": c.flow_max_features,
                                 "num_blocks": c.flow_num_blocks,
                                 "reshape_depth": c.reshape_depth, "compress": c.compress})
        self.generator = HandConditionedGenerator(config)

    def decode(self, volume: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor,
               hand: torch.Tensor | None) -> torch.Tensor:
        """The per-frame part: warp the source's appearance volume and generate."""
        warped = self.warper(volume, kp_driving=kp_driving, kp_source=kp_source)["out"]
        return self.generator(warped, hand)

    def forward(self, source: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor,
                hand: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(self.appearance(source), kp_source, kp_driving, hand)
