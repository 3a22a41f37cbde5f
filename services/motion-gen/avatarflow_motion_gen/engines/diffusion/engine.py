"""The diffusion engine's wrapper: owns device, precision and weights; runs without gradients."""

from __future__ import annotations

import numpy as np
import torch

from avatarflow.contracts.controls import Controls
from avatarflow.contracts.errors import InvalidInput
from avatarflow.contracts.motion import B, K
from avatarflow.runtime import devices

from ...models import MotionDiffusion
from . import loaded
from .config import DiffusionConfig, M, build_model, load_config, load_weights
from .sampler import DDIM, noise_seed
from .session import DiffusionSession


class DiffusionEngine:
    """Loads the network once and runs it for every session.

    Args:
        weights: a directory with ``config.yaml`` (or ``.json``) and ``model.pt`` (or
            ``model.safetensors``), as ``save`` writes it. Required.
        device: a torch device, e.g. ``cpu`` or ``cuda:0``.
        dtype: ``float32``, ``float16`` or ``bfloat16``.
        steps: DDIM steps, overriding the checkpoint's config.
        guidance: audio classifier-free guidance scale (1 = conditional only), overriding it.
    """

    def __init__(self, weights: str = "", device: str = "cpu", dtype: str = "float32",
                 steps: int | None = None, guidance: float | None = None,
                 **unknown: object) -> None:
        if unknown:
            raise InvalidInput(f"unknown diffusion engine option(s): {', '.join(sorted(unknown))}")
        self.device, self.dtype = devices.resolve(device, dtype)
        if not weights:
            raise InvalidInput("the diffusion engine needs weights=<directory> holding "
                               "config.yaml and model.pt")
        self.weights, config = load_config(weights)
        overrides = {k: v for k, v in (("steps", steps), ("guidance", guidance)) if v is not None}
        self.config: DiffusionConfig = config.with_inference(**overrides)
        model = build_model(self.config)
        load_weights(model, self.weights)
        stats = {n: b.detach().float().numpy() for n, b in model.named_buffers()}
        self._audio_mean, self._audio_std = stats["audio_mean"], stats["audio_std"]
        self._motion_mean, self._motion_std = stats["motion_mean"], stats["motion_std"]
        self._output_std = [float(v) for v in stats["output_std"]]
        self.model: MotionDiffusion = model.to(self.device, self.dtype).eval()
        self.sampler = DDIM(self.config.schedule, self.config.train_steps, self.config.steps)
        self.spec: dict[str, object] = {
            "weights": str(self.weights), "device": device, "dtype": dtype,
            "steps": self.config.steps, "guidance": self.config.guidance}
        loaded.register(self)

    def open_session(self, fps: float, controls: Controls, layout: str) -> DiffusionSession:
        return DiffusionSession(self, fps, controls, layout)

    def _tensor(self, a: np.ndarray, dtype: torch.dtype | None = None) -> torch.Tensor:
        """A batch of one on the engine's device."""
        return torch.from_numpy(np.ascontiguousarray(a)).to(self.device, dtype or self.dtype)[None]

    def face(self, *, seed: int, window: int, audio: np.ndarray, audio_valid: np.ndarray,
             history: np.ndarray, history_valid: np.ndarray, style: tuple[float, float],
             emotion: int, reference: np.ndarray | None) -> np.ndarray:
        """Window ``window``'s motion: N x M float32 (expression, radians, template units).

        Args:
            audio: S x D raw features, ``audio_valid`` S bool (False: no audio there).
            history: H x M motion of the frames before, ``history_valid`` H bool.
            style: (expression range, pose range), 1 = typical. emotion: its index.
            reference: R x E expression coefficients, or None.
        """
        cfg, g = self.config, self.config.guidance
        b = 1 if g == 1.0 else 2  # the second row is unconditional: null audio everywhere
        mean, std = self._motion_mean, self._motion_std
        e = len(mean) - 6
        with torch.inference_mode():
            a = self._tensor((audio - self._audio_mean) / self._audio_std).expand(b, -1, -1)
            av = self._tensor(audio_valid, torch.bool).repeat(b, 1)
            av[1:] = False
            h = self._tensor((history - mean) / std).expand(b, -1, -1)
            hv = self._tensor(history_valid, torch.bool).expand(b, -1)
            st = self._tensor(np.array(style, dtype=np.float32)).expand(b, -1)
            em = torch.full((b,), emotion, dtype=torch.long, device=self.device)
            ref = None if reference is None else self._tensor(
                (reference - mean[:e]) / std[:e]).expand(b, -1, -1)

            def eps(x: torch.Tensor, t: int) -> torch.Tensor:
                ts = torch.full((b,), t, dtype=torch.long, device=self.device)
                out = self.model.face(x.to(self.dtype).expand(b, -1, -1), ts, a, av, h, hv,
                                      st, em, ref).float()
                return out if b == 1 else out[1:] + g * (out[:1] - out[1:])

            # Drawn on the CPU in float32, so the noise is the same on every device.
            gen = torch.Generator().manual_seed(noise_seed(seed, window))
            noise = torch.randn((1, cfg.window, M), generator=gen).to(self.device)
            x0 = self.sampler.sample(eps, noise, cfg.clip_x0)[0].cpu().numpy()
        return (x0 * std + mean).astype(np.float32)

    def body(self, keypoints: np.ndarray, audio: np.ndarray, audio_valid: np.ndarray,
             appearance: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per frame (head offsets S x K x 3, body displacements S x B x 3, hand coefficients
        S x 2 x C), float32 in their units.

        Args:
            keypoints: S x K*3 posed head keypoints minus the neutral template.
            audio: S x D raw features, ``audio_valid`` S bool. appearance: A or None.
        """
        with torch.inference_mode():
            app = None if appearance is None else self._tensor(appearance)
            outs = self.model.body(
                self._tensor(keypoints), self._tensor((audio - self._audio_mean) / self._audio_std),
                self._tensor(audio_valid, torch.bool), app)
            off, body, hands = (x[0].float().cpu().numpy() for x in outs)
        s, (so, sb, sh) = len(keypoints), self._output_std
        return (so * off.reshape(s, K, 3), sb * body.reshape(s, B, 3), sh * hands.reshape(s, 2, -1))

    def close(self) -> None:
        """Stops offering this engine to restored sessions; live sessions keep theirs."""
        loaded.forget(self)
