"""LivePortrait's keypoint MLPs S: stitching and the lip / eye retargeting networks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class KeypointMLP(nn.Module):
    """Fully connected ReLU network on flattened keypoints (and ratios).

    Published sizes: stitching 126 -> [128, 128, 64] -> 65 (source and driving keypoints ->
    keypoint delta + tx, ty); lip 65 -> [128, 128, 64] -> 63 (source keypoints + source and
    target lip-open ratios -> keypoint delta); eye 66 -> [256, 256, 128, 128, 64] -> 63
    (source keypoints + two source eye-open ratios + the target one -> keypoint delta).
    """

    def __init__(self, input_size: int, hidden_sizes: Sequence[int], output_size: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = input_size
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, output_size))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)
