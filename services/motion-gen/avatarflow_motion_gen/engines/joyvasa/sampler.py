"""JoyVASA's sampling: one window by DDPM ancestral steps with classifier-free guidance on
audio, a whole clip window by window (``gen_motion_sequence``), and de-normalisation.

Random numbers come in JoyVASA's order from ``generator`` (None: torch's global generator, so
``torch.manual_seed(seed)`` once before ``generate`` reproduces JoyVASA): the first window's
initial noise (reused by every later window), then one draw per step above 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ...models.joyvasa import JoyVASA

CFG_SCALE = 2.8  # JoyVASA's inference default
RATE = 16000
LEAD, TAIL = 1280, 640  # zeros JoyVASA puts before and after the clip (samples)


@dataclass
class Window:
    """One sampled window: N x L x D motion, the N x L x F audio features it was heard with."""

    motion: torch.Tensor
    audio: torch.Tensor


def sample(model: JoyVASA, audio_feat: torch.Tensor, prev_motion: torch.Tensor | None,
           prev_audio: torch.Tensor | None, noise: torch.Tensor, cfg_scale: float,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Denoises ``noise`` (N x L x D) to clean motion for ``audio_feat`` (N x L x F);
    without history the learned start features stand in."""
    n = audio_feat.shape[0]
    sched, net = model.diffusion_sched, model.denoising_net
    if prev_motion is None:
        prev_motion = model.start_motion_feat.expand(n, -1, -1)
    if prev_audio is None:
        prev_audio = model.start_audio_feat.expand(n, -1, -1)
    null = model.null_audio_feat.expand(n, model.n_motions, -1)
    audio_in = torch.cat([null, audio_feat])  # unconditional first, as JoyVASA batches
    prev_motion_in, prev_audio_in = torch.cat([prev_motion] * 2), torch.cat([prev_audio] * 2)
    x = noise
    for t in range(sched.steps, 0, -1):
        z = (torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device) if t > 1
             else torch.zeros_like(x))
        alpha, bar, bar_prev = sched.alphas[t], sched.alpha_bars[t], sched.alpha_bars[t - 1]
        step = torch.full((2 * n,), t, dtype=torch.long, device=x.device)
        out = net(torch.cat([x, x]), audio_in, prev_motion_in, prev_audio_in, step)
        uncond, cond = out[:, -model.n_motions:].chunk(2)
        target = uncond + cfg_scale * (cond - uncond)
        c0 = (1 - bar_prev) * torch.sqrt(alpha) / (1 - bar)
        c1 = (1 - alpha) * torch.sqrt(bar_prev) / (1 - bar)
        x = c0 * x + c1 * target + sched.sigmas_inflex[t] * z
    return x


def initial_noise(model: JoyVASA, generator: torch.Generator | None = None) -> torch.Tensor:
    """1 x L x D: the first window's starting point, which every later window reuses."""
    shape = (1, model.n_motions, model.motion_dim)
    return torch.randn(shape, generator=generator).to(model.start_motion_feat.device)


@torch.no_grad()
def generate(model: JoyVASA, audio: np.ndarray, cfg_scale: float = CFG_SCALE,
             pad_mode: str = "zero") -> np.ndarray:
    """T x D normalised motion for a whole 16 kHz float32 clip, as ``gen_motion_sequence``:
    the clip padded by 80 ms before and 40 ms after, cut into windows of ``n_motions`` frames
    (the last padded and trimmed), each sampled from the previous one's last frames."""
    dev = model.start_motion_feat.device
    wav = F.pad(torch.from_numpy(np.asarray(audio, np.float32)).to(dev), (LEAD, TAIL))
    unit = RATE / model.fps
    per_window = round(unit * model.n_motions)
    frames = int(len(wav) / RATE * model.fps)
    windows = 1 if frames <= model.n_motions else math.ceil(frames / model.n_motions)
    pad = per_window * windows - len(wav)
    pad_frames = math.ceil(pad / unit)
    if pad > 0:
        fill = 0.0 if pad_mode == "zero" else float(wav[-1])
        wav = F.pad(wav, (0, pad), value=fill)
    noise = initial_noise(model)
    prev_motion = prev_audio = None
    parts = []
    for i in range(windows):
        start, end = i * model.n_motions, (i + 1) * model.n_motions
        feat = model.audio_features(wav[round(start * unit):round(end * unit)][None])
        motion = sample(model, feat, prev_motion, prev_audio, noise, cfg_scale)
        prev_motion, prev_audio = motion[:, -model.n_prev:], feat[:, -model.n_prev:]
        parts.append(motion[:, :-pad_frames] if i == windows - 1 and pad_frames > 0
                     else motion)
    return torch.cat(parts, dim=1)[0].cpu().numpy()


def denormalise(coef: np.ndarray, template: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """T x D normalised motion -> JoyVASA's LivePortrait motion, float32: ``exp`` T x 21 x 3,
    ``scale`` T x 1, ``t`` T x 3, ``pitch`` / ``yaw`` / ``roll`` T (degrees)."""
    c = np.asarray(coef, np.float32)

    def span(lo: int, hi: int, name: str) -> np.ndarray:
        low, high = template[f"min_{name}"], template[f"max_{name}"]
        return (c[:, lo:hi] * (high - low) + low).astype(np.float32)

    exp = c[:, :63] * template["std_exp"] + template["mean_exp"]
    return {"exp": exp.reshape(-1, 21, 3).astype(np.float32), "scale": span(63, 64, "scale"),
            "t": span(64, 67, "t"), "pitch": span(67, 68, "pitch")[:, 0],
            "yaw": span(68, 69, "yaw")[:, 0], "roll": span(69, 70, "roll")[:, 0]}
