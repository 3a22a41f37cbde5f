"""The "neural" renderer: a LivePortrait-family warping GAN (torch).

``arch="liveportrait"`` runs LivePortrait's published checkpoints (head mode, 512 x 512
frames); ``arch="upperbody"`` runs ChatAnyone's upper-body renderer (512 x 768 frames with the
``full`` preset, hands injected into the generator). The renderer stage analyses the portrait
(mediapipe); the session-constant network inputs (appearance, source keypoints) are computed
from ``avatar.canvas`` when a session starts (``warm``) and cached per avatar. Frames of several
sessions render in one batched forward (``render_batch``).

The network is a keypoint part, which always runs here, and a generator part (appearance
encoder, warper, decoder: the heavy part), which runs here too by default or, with
``triton_url``, on the Triton model ``triton_model`` (deploy/triton/model_repository/renderer,
``neural_triton``): one request per batch, the appearance volumes cached on the server by
avatar, no image sent per frame.

``RendererNetwork`` is the raw network call, shared with the Triton model::

    net = RendererNetwork.load(weights_dir, arch, device, dtype)
    frames = net.forward_batch(source, kp_source, kp_driving, hand)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

import numpy as np

from avatarflow.avatars.plans import PlanCache
from avatarflow.avatars.store import Avatar
from avatarflow.contracts.errors import InvalidInput, MissingExtra
from avatarflow.contracts.messages import LivePortraitMotion, MotionFrame

try:
    import torch
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installed extra
    raise MissingExtra("torch", "neural") from exc

import cv2

from avatarflow_renderer.engines.neural_drive import Source, driver_for
from avatarflow_renderer.engines.neural_keypoint_net import KeypointNetwork
from avatarflow_renderer.engines.neural_lpmotion import drive_named
from avatarflow_renderer.engines.neural_net import RendererNetwork

__all__ = ["NeuralEngine", "RendererNetwork"]

Inputs = tuple[list[Any], torch.Tensor, torch.Tensor, torch.Tensor | None]
Anchors = Sequence[LivePortraitMotion | None] | None


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """B x 3 x H x W in [0, 1] -> B x H x W x 3 uint8 (rounded)."""
    x = (frames.clamp(0, 1) * 255).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


class Generator(Protocol):
    """The generator part (appearance encoder, warper, decoder), here or on Triton."""

    def encode(self, image: torch.Tensor) -> Any:
        """An avatar's appearance from its source image (1 x 3 x h x w)."""
        ...

    def render(self, appearances: Sequence[Any], kp_source: torch.Tensor,
               kp_driving: torch.Tensor, hand: torch.Tensor | None = None) -> torch.Tensor:
        """B x 3 x H_out x W_out float32 in [0, 1]: one frame per appearance."""
        ...

    async def render_async(self, appearances: Sequence[Any], kp_source: torch.Tensor,
                           kp_driving: torch.Tensor, hand: torch.Tensor | None = None
                           ) -> torch.Tensor: ...

    def close(self) -> None: ...


class LocalGenerator:
    """The generator part in-process: an avatar's appearance is its feature volume."""

    def __init__(self, net: RendererNetwork) -> None:
        self.net = net

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        return self.net.features(image)

    def render(self, appearances: Sequence[torch.Tensor], kp_source: torch.Tensor,
               kp_driving: torch.Tensor, hand: torch.Tensor | None = None) -> torch.Tensor:
        return self.net.decode(torch.cat(list(appearances)), kp_source, kp_driving, hand)

    async def render_async(self, appearances: Sequence[torch.Tensor], kp_source: torch.Tensor,
                           kp_driving: torch.Tensor, hand: torch.Tensor | None = None
                           ) -> torch.Tensor:
        """In-process there is nothing to wait for: ``render``."""
        return self.render(appearances, kp_source, kp_driving, hand)

    def close(self) -> None:
        """Holds nothing beyond the network."""


class NeuralEngine:
    """Renders motion frames of analysed avatars with a neural network, many at once.

    Options: ``weights`` (directory, required), ``arch`` ("liveportrait" or "upperbody"),
    ``device`` (torch device), ``dtype`` ("float32"; "float16" / "bfloat16" on CUDA),
    ``cache`` (avatars whose source tensors are kept), ``triton_url`` (host:port: the
    generator runs on that Triton server) and ``triton_model`` (its model name). With
    ``triton_url``, ``weights`` is the same directory the Triton model loads (the operator
    mounts it on the renderer pods too): only the keypoint part's files are read from it
    (liveportrait's motion extractor and retargeting MLPs; upperbody's config.yaml), and
    ``device`` / ``dtype`` apply to that part. The canvas is resized to the network's input
    without cropping and the frame back to the canvas size, so an arch suits the mode whose
    aspect ratio it was made for (liveportrait: square head canvases).

    Frames carrying a LivePortrait motion block (arch liveportrait) are driven as JoyVASA
    drives LivePortrait, relative to the session's first such frame (the ``anchors`` the
    renderer stage keeps); ``liveportrait_drive`` picks JoyVASA's flags ("joyvasa": its
    inference config's defaults, "joyvasa-cli": its inference.py's; ``neural_lpmotion``).
    """

    batches = True

    def __init__(self, weights: str = "", device: str = "cpu", dtype: str = "float32",
                 arch: str = "liveportrait", cache: int = 16, triton_url: str = "",
                 triton_model: str = "renderer", liveportrait_drive: str = "joyvasa",
                 **options: Any) -> None:
        if options:
            raise InvalidInput(f"unknown neural engine options: {', '.join(options)}")
        if not weights:
            raise InvalidInput("the neural renderer needs weights: a directory in "
                               "LivePortrait's published layout (arch liveportrait) or with "
                               "config.yaml + model.pt (arch upperbody; config.yaml alone "
                               "when the network runs on Triton)")
        if triton_url:
            from avatarflow_renderer.engines.neural_triton import TritonGenerator

            self.network: KeypointNetwork = KeypointNetwork.load(weights, arch, device, dtype)
            self.generator: Generator = TritonGenerator(triton_url, triton_model)
        else:
            net = RendererNetwork.load(weights, arch, device, dtype)
            self.network, self.generator = net, LocalGenerator(net)
        self.driver = driver_for(self.network, drive_named(liveportrait_drive))
        self.sources: PlanCache[Source] = PlanCache(self._encode, capacity=cache)

    def warm(self, avatar: Avatar) -> None:
        """Computes the avatar's source now (a session is starting), so its first frame is as
        fast as the rest (on Triton, its first request also carries its image)."""
        self.sources.get(avatar)

    @torch.inference_mode()
    def _encode(self, avatar: Avatar) -> Source:
        image = self.network.source_from_images([avatar.canvas])
        source = self.driver.source(avatar, image)
        return replace(source, appearance=self.generator.encode(image))

    @torch.inference_mode()
    def _inputs(self, items: Sequence[tuple[Avatar, MotionFrame]], anchors: Anchors) -> Inputs:
        avatars = [a for a, _ in items]
        sources = [self.sources.get(a) for a in avatars]
        kp_driving, hands = self.driver.drive(avatars, sources, [m for _, m in items],
                                              anchors or [None] * len(items))
        kp_source = torch.cat([s.kp for s in sources])
        return [s.appearance for s in sources], kp_source, kp_driving, hands

    @torch.inference_mode()
    def frames(self, items: Sequence[tuple[Avatar, MotionFrame]],
               anchors: Anchors = None) -> torch.Tensor:
        """One batched forward: B x 3 x H_out x W_out float32 in [0, 1] at the network's
        output size. ``anchors``: per item, its session's first LivePortrait motion block
        (None: the item's own block, as for a session's first frame)."""
        return self.generator.render(*self._inputs(items, anchors))

    async def frames_async(self, items: Sequence[tuple[Avatar, MotionFrame]],
                           anchors: Anchors = None) -> torch.Tensor:
        """``frames`` for asyncio code: on Triton the request is in flight while the event
        loop runs others (concurrent calls are concurrent requests)."""
        return await self.generator.render_async(*self._inputs(items, anchors))

    def render_batch(self, items: Sequence[tuple[Avatar, MotionFrame]],
                     anchors: Anchors = None) -> list[np.ndarray]:
        """H x W x 3 uint8 RGB per (avatar, motion) pair, the frames of any sessions rendered
        in one forward."""
        return self._images(items, self.frames(items, anchors)) if items else []

    async def render_batch_async(self, items: Sequence[tuple[Avatar, MotionFrame]],
                                 anchors: Anchors = None) -> list[np.ndarray]:
        """``render_batch`` for asyncio code."""
        return self._images(items, await self.frames_async(items, anchors)) if items else []

    @staticmethod
    def _images(items: Sequence[tuple[Avatar, MotionFrame]],
                frames: torch.Tensor) -> list[np.ndarray]:
        out = []
        for (avatar, _), img in zip(items, to_uint8(frames), strict=True):
            size = (avatar.width, avatar.height)
            if img.shape[1::-1] != size:
                shrink = avatar.width < img.shape[1]
                img = cv2.resize(img, size, interpolation=cv2.INTER_AREA if shrink
                                 else cv2.INTER_LINEAR)
            out.append(np.ascontiguousarray(img))
        return out

    def render(self, avatar: Avatar, motion: MotionFrame,
               anchor: LivePortraitMotion | None = None) -> np.ndarray:
        """H x W x 3 uint8 RGB for one motion frame."""
        return self.render_batch([(avatar, motion)], [anchor])[0]

    def close(self) -> None:
        self.sources.clear()
        self.generator.close()  # a Triton client's channel
