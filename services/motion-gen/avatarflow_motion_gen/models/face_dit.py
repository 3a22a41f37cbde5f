"""ChatAnyone's face sub-stage: a diffusion transformer over expression + 6-D head pose.

It predicts the noise eps added to a window of N motion frames (ChatAnyone's objective,
L = ||eps - eps_theta(x_t, t, c)||^2). Conditions:

- diffusion timestep, coarse style (expression range, pose range) and emotion: summed into one
  vector that modulates every block through AdaLN (shift, scale, gate);
- audio features: cross-attention; frames without audio use a learned null token, which is also
  the unconditional input for classifier-free guidance;
- previous motion (history frames): cross-attention; frames before the session use a learned null;
- an optional reference expression sequence: R tokens concatenated with the noisy motion along
  time (self-attention sees both; only motion tokens are read out); a learned null when absent.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import Attention, Mlp, embed_or_null, learned, modulate, timestep_embedding


class FaceBlock(nn.Module):
    """AdaLN-modulated self-attention, cross-attention to audio and to history, AdaLN MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(width, heads)
        self.norm_audio = nn.LayerNorm(width)
        self.audio_attn = Attention(width, heads)
        self.norm_history = nn.LayerNorm(width)
        self.history_attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(width, mlp_ratio)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))

    def forward(self, x: torch.Tensor, cond: torch.Tensor, audio: torch.Tensor,
                history: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(cond).chunk(6, dim=-1)
        x = x + gate1[:, None] * self.attn(modulate(self.norm1(x), shift1, scale1))
        x = x + self.audio_attn(self.norm_audio(x), audio)
        x = x + self.history_attn(self.norm_history(x), history)
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))


class FaceDiT(nn.Module):
    """eps_theta for a window of motion frames (normalised expression + rotation + translation).

    Args:
        motion_dim: M values per frame (E expression coefficients + 3 rotation + 3 translation).
        expression_dim: E, the width of a reference expression frame.
        audio_dim: D features per audio frame.
        width, heads, layers, mlp_ratio: transformer size.
        window: N frames denoised at once.
        history: H previous frames attended to.
        audio_frames: S audio frames attended to (the window's context, history to look-ahead).
        ref_frames: R reference expression frames.
        emotions: size of the emotion vocabulary.
        style_dim: coarse style values (expression range, pose range).
    """

    def __init__(self, *, motion_dim: int, expression_dim: int, audio_dim: int, width: int,
                 heads: int, layers: int, mlp_ratio: int, window: int, history: int,
                 audio_frames: int, ref_frames: int, emotions: int, style_dim: int = 2) -> None:
        super().__init__()
        self.width = width
        self.motion_in = nn.Linear(motion_dim, width)
        self.motion_pos = learned(window, width)
        self.ref_in = nn.Linear(expression_dim, width)
        self.ref_null = learned(ref_frames, width)
        self.ref_pos = learned(ref_frames, width)
        self.audio_in = nn.Sequential(nn.Linear(audio_dim, width), nn.LayerNorm(width))
        self.audio_null = learned(width)
        self.audio_pos = learned(audio_frames, width)
        self.history_in = nn.Linear(motion_dim, width)
        self.history_null = learned(width)
        self.history_pos = learned(history, width)
        self.time = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.style = nn.Sequential(nn.Linear(style_dim, width), nn.SiLU(),
                                   nn.Linear(width, width))
        self.emotion = nn.Embedding(emotions, width)
        self.blocks = nn.ModuleList(FaceBlock(width, heads, mlp_ratio) for _ in range(layers))
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.out = nn.Linear(width, motion_dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor, audio: torch.Tensor,
                audio_valid: torch.Tensor, history: torch.Tensor, history_valid: torch.Tensor,
                style: torch.Tensor, emotion: torch.Tensor,
                reference: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted noise, B x N x M.

        Args:
            x: B x N x M noisy motion x_t. t: B timesteps (long).
            audio: B x S x D normalised features; audio_valid: B x S bool (False: null token).
            history: B x H x M normalised motion; history_valid: B x H bool.
            style: B x 2 (expression range, pose range; 1 = typical). emotion: B (long).
            reference: B x R x E normalised expression coefficients, or None.
        """
        b, n, _ = x.shape
        cond = (self.time(timestep_embedding(t, self.width).to(x.dtype)) + self.style(style)
                + self.emotion(emotion))
        motion = self.motion_in(x) + self.motion_pos[:n]
        if reference is None:
            ref = self.ref_null.expand(b, -1, -1)
        else:
            ref = self.ref_in(reference)
        tokens = torch.cat([ref + self.ref_pos, motion], dim=1)
        audio_tok = embed_or_null(self.audio_in(audio), audio_valid, self.audio_null)
        audio_tok = audio_tok + self.audio_pos[: audio.shape[1]]
        hist_tok = embed_or_null(self.history_in(history), history_valid, self.history_null)
        hist_tok = hist_tok + self.history_pos[: history.shape[1]]
        for block in self.blocks:
            tokens = block(tokens, cond, audio_tok, hist_tok)
        shift, scale = self.final_ada(cond).chunk(2, dim=-1)
        return self.out(modulate(self.final_norm(tokens[:, -n:]), shift, scale))
