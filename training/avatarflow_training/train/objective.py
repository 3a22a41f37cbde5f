"""ChatAnyone's training objective for the diffusion motion network, on a batch of windows.

Face DiT: the window's motion, normalised with the network's ``motion_mean`` / ``motion_std``,
is noised to a uniformly drawn timestep of the config's schedule (the one its DDIM sampler
walks back), and the DiT predicts the noise: ``||eps - eps_theta(x_t, t, c)||^2``. For
classifier-free guidance a sample's audio is dropped (every frame the null token) with
``p_uncond``; history is dropped with ``p_no_history`` so the first window of a session (no
history) is trained too; the reference expression sequence (another span of the same clip) is
given with ``p_reference``, the learned null otherwise.

Body network: from the posed head keypoints and the audio of the history and window frames it
predicts head offsets, body displacements and hand coefficients, each divided by the network's
``output_std``; a masked mean squared error over the frames that have the label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from avatarflow_motion_gen.models import MotionDiffusion
from avatarflow_training.train.windows import E, Window


@dataclass(frozen=True)
class Objective:
    p_uncond: float = 0.1
    p_no_history: float = 0.1
    p_reference: float = 0.5
    body_weight: float = 1.0


def collate(windows: list[Window], references: list[np.ndarray | None]
            ) -> dict[str, torch.Tensor]:
    """Stacks windows into a batch of tensors (``reference``: R x E or None per window; a
    batch uses references only where every window has one)."""
    def stack(name: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([getattr(w, name) for w in windows]))

    batch = {name: stack(name) for name in (
        "motion", "history", "history_valid", "audio", "audio_valid", "keypoints", "offsets",
        "body", "hands", "face_mask", "body_mask", "hands_mask", "style")}
    if all(r is not None for r in references):
        batch["reference"] = torch.from_numpy(np.stack(references))  # type: ignore[arg-type]
    return batch


def _masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the masked entries (the dims past the mask's averaged)."""
    err = (pred - target) ** 2
    while err.dim() > mask.dim():
        err = err.mean(-1)
    m = mask.float()
    return (err * m).sum() / m.sum().clamp(min=1.0)


def losses(model: MotionDiffusion, batch: dict[str, torch.Tensor], alphas_cumprod: torch.Tensor,
           objective: Objective, generator: torch.Generator, emotion: int = 0
           ) -> dict[str, torch.Tensor]:
    """{"face", "body", "total"} for one batch; randomness only from ``generator``."""
    b, n, _ = batch["motion"].shape
    h = batch["history"].shape[1]
    buffers = dict(model.named_buffers())
    mean, std = buffers["motion_mean"], buffers["motion_std"]
    a_mean, a_std = buffers["audio_mean"], buffers["audio_std"]

    dev = batch["motion"].device

    def rand(*shape: int) -> torch.Tensor:  # drawn on the CPU generator, used on the device
        return torch.rand(*shape, generator=generator).to(dev)

    x0 = (batch["motion"] - mean) / std
    t = torch.randint(0, len(alphas_cumprod), (b,), generator=generator).to(dev)
    noise = torch.randn(x0.shape, generator=generator).to(dev)
    ab = alphas_cumprod[t][:, None, None]
    xt = ab.sqrt() * x0 + (1.0 - ab).sqrt() * noise
    audio = (batch["audio"] - a_mean) / a_std
    audio_valid = batch["audio_valid"] & (rand(b) >= objective.p_uncond)[:, None]
    history = (batch["history"] - mean) / std
    history_valid = batch["history_valid"] & (rand(b) >= objective.p_no_history)[:, None]
    reference = None
    if "reference" in batch and float(rand(1)) < objective.p_reference:
        reference = (batch["reference"] - mean[:E]) / std[:E]
    emotions = torch.full((b,), emotion, dtype=torch.long, device=dev)
    eps = model.face(xt, t, audio, audio_valid, history, history_valid, batch["style"],
                     emotions, reference)
    face = ((eps - noise) ** 2).mean()
    span = h + n
    so, sb, sh = buffers["output_std"]
    offsets, body, hands = model.body(batch["keypoints"], audio[:, :span],
                                      batch["audio_valid"][:, :span], None)
    body_loss = (_masked_mse(offsets, batch["offsets"].flatten(2) / so, batch["face_mask"])
                 + _masked_mse(body.unflatten(2, (-1, 3)), batch["body"] / sb,
                               batch["body_mask"])
                 + _masked_mse(hands.unflatten(2, (2, -1)), batch["hands"] / sh,
                               batch["hands_mask"]))
    return {"face": face, "body": body_loss, "total": face + objective.body_weight * body_loss}


class Step(torch.nn.Module):
    """The losses as a module's forward, so that DistributedDataParallel can wrap the network
    (it synchronises gradients of what runs inside its wrapped forward)."""

    def __init__(self, model: MotionDiffusion, alphas_cumprod: torch.Tensor,
                 objective: Objective) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("alphas_cumprod", alphas_cumprod)
        self.objective = objective

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator
                ) -> dict[str, torch.Tensor]:
        alphas: torch.Tensor = self.alphas_cumprod  # type: ignore[assignment]
        return losses(self.model, batch, alphas, self.objective, generator)
