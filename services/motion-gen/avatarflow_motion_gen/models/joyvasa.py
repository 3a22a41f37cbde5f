"""JoyVASA's motion generator: a diffusion transformer from audio to LivePortrait motion.

Written from the published architecture (jdh-algo/JoyVASA, ``DitTalkingHead``) so that its
checkpoints load under their own key names: ``audio_encoder.*`` (a Hugging Face HuBERT or
wav2vec 2.0 model), ``audio_feature_map``, ``start_audio_feat``, ``start_motion_feat``,
``null_audio_feat``, ``denoising_net.*`` and ``diffusion_sched.*``. The network is built as
JoyVASA's own loader builds it: the denoiser always has 8 heads, 8 layers, an MLP ratio of 4,
a one-frame audio alignment mask, sinusoidal positions (600) and a time-step table of 501 rows,
never uses the padding indicator, and predicts the clean sample.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

AUDIO_HIDDEN = 768  # the audio feature map's input: a base-size HuBERT / wav2vec 2.0
_HEADS, _LAYERS, _MLP_RATIO = 8, 8, 4
_TE_ROWS = 501  # the loader never passes n_diff_steps to the denoiser: its default, 500, + 1
_PE_ROWS = 600


def sinusoids(rows: int, dim: int) -> torch.Tensor:
    """1 x rows x dim float32: the transformer's sin (even) / cos (odd) position table."""
    pos = torch.arange(0, rows, dtype=torch.float).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2).float() * (-math.log(10000.0) / dim))
    table = torch.zeros(rows, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)
    return table.unsqueeze(0)


class Sinusoids(nn.Module):
    """A fixed position table (buffer ``pe``) added to a sequence; dropout idle in eval."""

    def __init__(self, dim: int, rows: int) -> None:
        super().__init__()
        self.dropout = nn.Dropout(p=0.1)
        self.register_buffer("pe", sinusoids(rows, dim))
        self.pe: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x + self.pe[:, : x.shape[1], :])


class DiffusionSchedule(nn.Module):
    """DDPM schedule buffers, index 0 a padding step with beta = 0 (a checkpoint carries its
    own values; the cosine schedule here only gives a fresh network sensible ones)."""

    def __init__(self, steps: int, s: float = 0.008) -> None:
        super().__init__()
        x = torch.linspace(0, steps, steps + 1)
        bars = torch.cos(((x / steps) + s) / (1 + s) * torch.pi * 0.5) ** 2
        bars = bars / bars[0]
        betas = torch.cat([torch.zeros(1), torch.clip(1 - bars[1:] / bars[:-1], 1e-4, 0.999)])
        alphas = 1 - betas
        alpha_bars = torch.cumsum(torch.log(alphas), 0).exp()
        prev = torch.cat([alpha_bars[:1], alpha_bars[:-1]])
        inflex = torch.zeros_like(betas)
        inflex[1:] = ((1 - prev[1:]) / (1 - alpha_bars[1:])) * betas[1:]
        self.steps = steps
        for name, value in (("betas", betas), ("alphas", alphas), ("alpha_bars", alpha_bars),
                            ("sigmas_flex", betas.sqrt()), ("sigmas_inflex", inflex.sqrt())):
            self.register_buffer(name, value)
        self.alphas: torch.Tensor
        self.alpha_bars: torch.Tensor
        self.sigmas_inflex: torch.Tensor


class Denoiser(nn.Module):
    """The DiT: noisy motion (after the history) cross-attending to the audio, one frame each."""

    def __init__(self, motion_dim: int, feature_dim: int, n_prev: int, n_motions: int) -> None:
        super().__init__()
        self.n_prev = n_prev
        self.TE = Sinusoids(feature_dim, _TE_ROWS)
        self.diff_step_map = nn.Sequential(nn.Linear(feature_dim, feature_dim), nn.GELU(),
                                           nn.Linear(feature_dim, feature_dim))
        self.PE = Sinusoids(feature_dim, _PE_ROWS)
        self.feature_proj = nn.Linear(motion_dim, feature_dim)
        layer = nn.TransformerDecoderLayer(d_model=feature_dim, nhead=_HEADS,
                                           dim_feedforward=_MLP_RATIO * feature_dim,
                                           activation="gelu", batch_first=True)
        self.transformer = nn.TransformerDecoder(layer, num_layers=_LAYERS)
        # True = blocked: motion frame i reads audio frame i only.
        n = n_prev + n_motions
        self.register_buffer("alignment_mask", ~torch.eye(n, dtype=torch.bool))
        self.alignment_mask: torch.Tensor
        self.motion_dec = nn.Sequential(nn.Linear(feature_dim, feature_dim // 2), nn.GELU(),
                                        nn.Linear(feature_dim // 2, motion_dim))

    def forward(self, motion: torch.Tensor, audio: torch.Tensor, prev_motion: torch.Tensor,
                prev_audio: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """motion: N x L x D, audio: N x L x F, prev_*: N x Lp x (D | F), step: N int64 ->
        N x (Lp + L) x D predicted clean motion."""
        step_emb = self.diff_step_map(self.TE.pe[0, step]).unsqueeze(1)  # N x 1 x F
        x = self.PE(self.feature_proj(torch.cat([prev_motion, motion], dim=1))) + step_emb
        memory = torch.cat([prev_audio, audio], dim=1)
        out = self.transformer(x, memory, memory_mask=self.alignment_mask)
        return self.motion_dec(out)


class JoyVASA(nn.Module):
    """Audio encoder, audio feature map, learned start/null features, denoiser and schedule.

    ``audio_encoder`` is a transformers ``HubertModel`` or ``Wav2Vec2Model`` built by the
    caller from its config (this module loads nothing).
    """

    def __init__(self, audio_encoder: nn.Module, *, motion_dim: int, n_motions: int,
                 n_prev: int, feature_dim: int, diff_steps: int, fps: float = 25.0) -> None:
        super().__init__()
        self.motion_dim, self.n_motions, self.n_prev, self.fps = (motion_dim, n_motions,
                                                                   n_prev, fps)
        self.audio_encoder = audio_encoder
        self.audio_feature_map = nn.Linear(AUDIO_HIDDEN, feature_dim)
        self.start_audio_feat = nn.Parameter(torch.randn(1, n_prev, feature_dim))
        self.start_motion_feat = nn.Parameter(torch.randn(1, n_prev, motion_dim))
        self.denoising_net = Denoiser(motion_dim, feature_dim, n_prev, n_motions)
        self.diffusion_sched = DiffusionSchedule(diff_steps)
        self.null_audio_feat = nn.Parameter(torch.randn(1, 1, feature_dim))

    def audio_features(self, audio: torch.Tensor) -> torch.Tensor:
        """N x S float32 16 kHz window (S = 16000 n_motions / fps) -> N x n_motions x F."""
        frames = self.n_motions
        hidden = encode(self.audio_encoder, pad_audio(audio), self.fps, 2 * frames)
        hidden = F.interpolate(hidden.transpose(1, 2), size=frames, mode="linear",
                               align_corners=False).transpose(1, 2)
        return self.audio_feature_map(hidden)


def encode(model: Any, wav: torch.Tensor, fps: float, frames: int) -> torch.Tensor:
    """N x S audio -> N x frames x hidden: the CNN's 50 Hz features cut to the frames' span and
    resampled to ``frames`` before the transformer, as JoyVASA runs its audio encoder."""
    feats = model.feature_extractor(wav)  # N x C x L at 50 Hz
    feats = feats[:, :, : round(frames * 50 / fps)]
    feats = F.interpolate(feats, size=frames, mode="linear", align_corners=False)
    hidden = model.feature_projection(feats.transpose(1, 2))
    if isinstance(hidden, tuple):  # wav2vec 2.0 also returns the normalised CNN features
        hidden = hidden[0]
    out: torch.Tensor = model.encoder(hidden, return_dict=True)[0]
    return out


def pad_audio(audio: torch.Tensor, unit: int = 320, threshold: int = 80) -> torch.Tensor:
    """Pads N x S audio on both sides (reflect, twice, then replicate) so that the CNN's
    receptive field covers every 20 ms unit."""
    n_units = audio.shape[1] // unit
    side = math.ceil((unit * n_units + threshold - audio.shape[1]) / 2)
    if side >= 0:
        reflect, replicate = side // 2, side % 2
        if reflect > 0:
            audio = F.pad(audio, (reflect, reflect), mode="reflect")
            audio = F.pad(audio, (reflect, reflect), mode="reflect")
        if replicate > 0:
            audio = F.pad(audio, (1, 1), mode="replicate")
    return audio
