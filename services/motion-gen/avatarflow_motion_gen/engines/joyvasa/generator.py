"""A loaded JoyVASA generator: owns device, precision and weights; runs without gradients.
One per (root, device, dtype) per process, shared by every session."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from avatarflow.runtime import devices

from . import layout, sampler


class Generator:
    """A loaded JoyVASA generator on its device: one window at a time, numpy in and out."""

    def __init__(self, root: str, device: str, dtype: str) -> None:
        self.device, self.dtype = devices.resolve(device, dtype)
        loaded = layout.load(Path(root))
        self.model = loaded.model.to(self.device, self.dtype)
        self.template = loaded.template
        self.args = loaded.args
        self.pad_mode = str(loaded.args.get("pad_mode") or "zero")
        m = self.model
        self.n_motions, self.n_prev, self.motion_dim = m.n_motions, m.n_prev, m.motion_dim
        self.unit = sampler.RATE / m.fps  # 640 samples per frame at 25 fps
        self.start_motion = m.start_motion_feat[0].float().cpu().numpy()  # n_prev x D
        self.start_audio = m.start_audio_feat[0].float().cpu().numpy()  # n_prev x F

    def noise(self, seed: int) -> torch.Tensor:
        """The session's initial noise (1 x L x D), reused by every window as JoyVASA does."""
        gen = torch.Generator().manual_seed(seed)
        return sampler.initial_noise(self.model, gen).to(self.dtype)

    @torch.no_grad()
    def window(self, audio: np.ndarray, prev_motion: np.ndarray, prev_audio: np.ndarray,
               seed: int, block: int, cfg_scale: float) -> tuple[np.ndarray, np.ndarray]:
        """One window: 16 kHz audio (L x 640 samples), history n_prev x D and n_prev x F ->
        L x D normalised motion and the L x F audio features it was heard with."""
        dev, dt = self.device, self.dtype
        wav = torch.from_numpy(np.ascontiguousarray(audio, np.float32)).to(dev, dt)[None]
        feat = self.model.audio_features(wav)
        gen = torch.Generator().manual_seed(_mix(seed, block))
        motion = sampler.sample(
            self.model, feat, torch.from_numpy(prev_motion).to(dev, dt)[None],
            torch.from_numpy(prev_audio).to(dev, dt)[None], self.noise(seed).to(dev),
            cfg_scale, gen)
        return (motion[0].float().cpu().numpy(), feat[0].float().cpu().numpy())


def _mix(seed: int, block: int) -> int:
    """A generator seed per (session seed, block): blocks draw independent step noise."""
    return (seed * 1_000_003 + block * 7_919 + 1) % (2**63 - 1)


@functools.cache
def load(root: str, device: str, dtype: str) -> Generator:
    """The process's one generator per (weights root, device, dtype)."""
    return Generator(root, device, dtype)
