"""Few-step deterministic DDIM sampling for a noise-predicting (eps) network."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch


def alphas_cumprod(schedule: str, train_steps: int) -> np.ndarray:
    """alpha_bar_t for t = 0 .. train_steps - 1 of a ``cosine`` or ``linear`` beta schedule."""
    if schedule == "linear":
        betas = np.linspace(1e-4, 0.02, train_steps)
    else:  # cosine, Nichol & Dhariwal 2021
        f = np.cos((np.arange(train_steps + 1) / train_steps + 0.008) / 1.008 * np.pi / 2) ** 2
        betas = np.clip(1.0 - f[1:] / f[:-1], 0.0, 0.999)
    return np.cumprod(1.0 - betas)


def noise_seed(seed: int, window: int) -> int:
    """A 64-bit generator seed for window ``window`` of a session seeded ``seed``."""
    return int(np.random.SeedSequence([seed, window]).generate_state(1, np.uint64)[0])


class DDIM:
    """DDIM with eta = 0 over ``steps`` timesteps of a ``train_steps`` schedule, trailing
    spacing (the first step starts from pure noise at t = train_steps - 1, the last lands on
    the clean sample)."""

    def __init__(self, schedule: str, train_steps: int, steps: int) -> None:
        ab = alphas_cumprod(schedule, train_steps)
        ts = np.round(train_steps - np.arange(steps) * train_steps / steps).astype(np.int64) - 1
        self.timesteps = [int(t) for t in ts]
        self._ab = [float(ab[t]) for t in ts]
        self._ab_prev = [*self._ab[1:], 1.0]

    def sample(self, eps: Callable[[torch.Tensor, int], torch.Tensor], x: torch.Tensor,
               clip: float) -> torch.Tensor:
        """Denoises ``x`` (pure noise) to x0; x0 estimates are clipped to +-``clip``."""
        for t, a, a_prev in zip(self.timesteps, self._ab, self._ab_prev, strict=True):
            e = eps(x, t)
            x0 = ((x - math.sqrt(1.0 - a) * e) / math.sqrt(a)).clamp(-clip, clip)
            e = (x - math.sqrt(a) * x0) / math.sqrt(1.0 - a)  # the noise the clipped x0 implies
            x = math.sqrt(a_prev) * x0 + math.sqrt(1.0 - a_prev) * e
        return x
