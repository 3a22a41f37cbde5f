"""ChatAnyone's body sub-stage: head keypoints + audio + appearance -> offsets, body, hands.

A small transformer over the frames of a window and its history. Each frame's token is the sum
of its projected 3-D head keypoints (the face parameters posed on the head template), its audio
features (a learned null where a frame has none) and a position; a source appearance token
(a learned null when the session has none) is prepended. Per frame it predicts the implicit head
keypoint offsets dX_head (K x 3), the upper-body keypoint displacements (B x 3) and the hand
coefficients (2 x C), all in units normalised by the statistics ``MotionDiffusion`` holds.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import EncoderBlock, embed_or_null, learned


class BodyNet(nn.Module):
    """Args: keypoint_dim (K * 3), audio_dim (D), appearance_dim (A), body_dim (B * 3),
    hand_dim (2 * C), the transformer size, and ``frames``: most frames per call (H + N)."""

    def __init__(self, *, keypoint_dim: int, audio_dim: int, appearance_dim: int, body_dim: int,
                 hand_dim: int, width: int, heads: int, layers: int, mlp_ratio: int,
                 frames: int) -> None:
        super().__init__()
        self.keypoints_in = nn.Linear(keypoint_dim, width)
        self.audio_in = nn.Sequential(nn.Linear(audio_dim, width), nn.LayerNorm(width))
        self.audio_null = learned(width)
        self.appearance_in = nn.Linear(appearance_dim, width)
        self.appearance_null = learned(width)
        self.pos = learned(frames + 1, width)  # position 0 is the appearance token
        self.blocks = nn.ModuleList(EncoderBlock(width, heads, mlp_ratio) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.offset_out = nn.Linear(width, keypoint_dim)
        self.body_out = nn.Linear(width, body_dim)
        self.hands_out = nn.Linear(width, hand_dim)

    def forward(self, keypoints: torch.Tensor, audio: torch.Tensor, audio_valid: torch.Tensor,
                appearance: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(offsets B x S x K*3, body B x S x B*3, hands B x S x 2*C), normalised.

        Args:
            keypoints: B x S x K*3 posed head keypoints minus the neutral template.
            audio: B x S x D normalised features; audio_valid: B x S bool.
            appearance: B x A source appearance vector, or None.
        """
        b, s, _ = keypoints.shape
        frames = (self.keypoints_in(keypoints)
                  + embed_or_null(self.audio_in(audio), audio_valid, self.audio_null))
        if appearance is None:
            app = self.appearance_null.expand(b, 1, -1)
        else:
            app = self.appearance_in(appearance)[:, None]
        x = torch.cat([app, frames], dim=1) + self.pos[: s + 1]
        for block in self.blocks:
            x = block(x)
        x = self.norm(x[:, 1:])
        return self.offset_out(x), self.body_out(x), self.hands_out(x)
