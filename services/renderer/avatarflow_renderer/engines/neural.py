"""The "neural" renderer: a LivePortrait-family warping GAN (torch).

``arch="liveportrait"`` runs LivePortrait's published checkpoints (head mode, 512 x 512
frames); ``arch="upperbody"`` runs ChatAnyone's upper-body renderer (512 x 768 frames with the
``full`` preset, hands injected into the generator). Portrait analysis is the warp engine's
(mediapipe); the session-constant network inputs (appearance volume, source keypoints) are
computed from ``avatar.canvas`` when a session starts and cached per avatar. Frames of several
sessions render in one batched forward (``render_batch``).

``RendererNetwork`` is the raw network call, shared with the Triton model::

    net = RendererNetwork.load(weights_dir, arch, device, dtype)
    frames = net.forward_batch(source, kp_source, kp_driving, hand)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from avatarflow.avatar import Avatar
from avatarflow.errors import InvalidInput, MissingExtra
from avatarflow.messages import MotionFrame

try:
    import torch
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installed extra
    raise MissingExtra("torch", "neural") from exc

import cv2

from avatarflow_renderer.analysis import PortraitAnalyser
from avatarflow_renderer.engines.neural_drive import Source, driver_for
from avatarflow_renderer.engines.neural_net import RendererNetwork
from avatarflow_renderer.engines.warp import PlanCache

__all__ = ["NeuralEngine", "RendererNetwork"]


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """B x 3 x H x W in [0, 1] -> B x H x W x 3 uint8 (rounded)."""
    x = (frames.clamp(0, 1) * 255).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


class NeuralEngine:
    """Analyses portraits (mediapipe) and renders motion frames with a neural network.

    Options: ``weights`` (directory, required), ``arch`` ("liveportrait" or "upperbody"),
    ``device`` (torch device), ``dtype`` ("float32"; "float16" / "bfloat16" on CUDA),
    ``cache`` (avatars whose source tensors are kept). The canvas is resized to the network's
    input without cropping and the frame back to the canvas size, so an arch suits the mode
    whose aspect ratio it was made for (liveportrait: square head canvases).
    """

    def __init__(self, weights: str = "", device: str = "cpu", dtype: str = "float32",
                 arch: str = "liveportrait", cache: int = 16, **options: Any) -> None:
        if options:
            raise InvalidInput(f"unknown neural engine options: {', '.join(options)}")
        if not weights:
            raise InvalidInput("the neural renderer needs weights: a directory in "
                               "LivePortrait's published layout (arch liveportrait) or with "
                               "config.yaml + model.pt (arch upperbody)")
        self.network = RendererNetwork.load(weights, arch, device, dtype)
        self.driver = driver_for(self.network)
        self.sources: PlanCache[Source] = PlanCache(self._encode, capacity=cache)
        self._analyser: PortraitAnalyser | None = None

    def prepare(self, image_rgb: np.ndarray, avatar_id: str, mode: str, width: int,
                height: int) -> Avatar:
        if self._analyser is None:
            self._analyser = PortraitAnalyser()
        avatar = self._analyser.analyse(image_rgb, avatar_id, mode, width, height)
        self.warm(avatar)
        return avatar

    def warm(self, avatar: Avatar) -> None:
        """Encodes the avatar's canvas now (a session is starting), so its first frame is as
        fast as the rest."""
        self.sources.get(avatar)

    @torch.inference_mode()
    def _encode(self, avatar: Avatar) -> Source:
        return self.driver.source(avatar)

    @torch.inference_mode()
    def frames(self, items: Sequence[tuple[Avatar, MotionFrame]]) -> torch.Tensor:
        """One batched forward: B x 3 x H_out x W_out float32 in [0, 1] at the network's
        output size."""
        avatars = [a for a, _ in items]
        sources = [self.sources.get(a) for a in avatars]
        kp_driving, hands = self.driver.drive(avatars, sources, [m for _, m in items])
        features = torch.cat([s.features for s in sources])
        kp_source = torch.cat([s.kp for s in sources])
        return self.network.decode(features, kp_source, kp_driving, hands)

    def render_batch(self, items: Sequence[tuple[Avatar, MotionFrame]]) -> list[np.ndarray]:
        """H x W x 3 uint8 RGB per (avatar, motion) pair, the frames of any sessions rendered
        in one forward."""
        if not items:
            return []
        out = []
        for (avatar, _), img in zip(items, to_uint8(self.frames(items)), strict=True):
            size = (avatar.width, avatar.height)
            if img.shape[1::-1] != size:
                shrink = avatar.width < img.shape[1]
                img = cv2.resize(img, size, interpolation=cv2.INTER_AREA if shrink
                                 else cv2.INTER_LINEAR)
            out.append(np.ascontiguousarray(img))
        return out

    def render(self, avatar: Avatar, motion: MotionFrame) -> np.ndarray:
        """H x W x 3 uint8 RGB for one motion frame."""
        return self.render_batch([(avatar, motion)])[0]

    def close(self) -> None:
        if self._analyser is not None:
            self._analyser.close()
            self._analyser = None
        self.sources.clear()
