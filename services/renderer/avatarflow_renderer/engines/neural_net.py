"""The raw network call of the ``neural`` renderer, one class per architecture.

``RendererNetwork.load(weights_dir, arch, device, dtype)`` owns the device, the precision and
the weights; ``forward_batch`` renders a batch from sources and keypoints. A renderer network
is its keypoint part (``neural_keypoint_net``: what the engine needs to compute keypoints)
plus its generator part (appearance encoder, warper, decoder: ``features`` and ``decode``),
which is what the Triton model serves. The ``nn.Module`` definitions live in
``avatarflow_renderer.models``.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import torch
import yaml
from torch import nn

from avatarflow.contracts.errors import InvalidInput
from avatarflow_renderer.engines import neural_weights as cw
from avatarflow_renderer.engines.neural_keypoint_net import (
    LIVEPORTRAIT_INPUT,
    LIVEPORTRAIT_PARAMS,
    KeypointNetwork,
    LivePortraitKeypoints,
    UpperBodyKeypoints,
    open_weights,
)
from avatarflow_renderer.models import liveportrait as lp
from avatarflow_renderer.models.upperbody import UpperBodyRenderer

__all__ = ["ARCHS", "LIVEPORTRAIT_INPUT", "LIVEPORTRAIT_PARAMS", "LivePortraitNetwork",
           "RendererNetwork", "UpperBodyNetwork"]


class RendererNetwork(KeypointNetwork):
    """Appearance encoding plus warping and generation for one architecture, on top of its
    keypoint part.

    Sources are B x 3 x H x W in [0, 1] (resized to ``source_size`` when they differ);
    keypoints B x ``num_kp`` x 3; frames come out B x 3 x H_out x W_out in [0, 1].
    """

    output_size: tuple[int, int]  # (width, height) it renders

    @classmethod
    def load(cls, weights_dir: str | Path, arch: str = "liveportrait", device: str = "cpu",
             dtype: str = "float32") -> RendererNetwork:
        """The network of ``arch`` ("liveportrait" or "upperbody") with the weights in
        ``weights_dir``, strictly checked; InvalidInput names what does not fit."""
        return open_weights(ARCHS, weights_dir, arch, device, dtype)

    def features(self, source: torch.Tensor) -> torch.Tensor:
        """Appearance feature volume of a source batch (float32, network device)."""
        raise NotImplementedError

    def decode(self, features: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor,
               hand: torch.Tensor | None = None) -> torch.Tensor:
        """The per-frame part: warp ``features`` from ``kp_source`` to ``kp_driving`` and
        generate the frame."""
        raise NotImplementedError

    @torch.inference_mode()
    def forward_batch(self, source: torch.Tensor, kp_source: torch.Tensor,
                      kp_driving: torch.Tensor, hand: torch.Tensor | None = None
                      ) -> torch.Tensor:
        """Sources (B x 3 x H x W in [0, 1]) and keypoints (B x K x 3) -> frames
        (B x 3 x H_out x W_out in [0, 1], float32). ``hand``: B x 3 x H x W hand images
        (upperbody only; None draws no hands)."""
        return self.decode(self.features(source), kp_source, kp_driving, hand)


class LivePortraitNetwork(LivePortraitKeypoints, RendererNetwork):
    """LivePortrait's F, M, W, G and S from its published checkpoint layout."""

    def __init__(self, modules: dict[str, nn.Module], input_shape: tuple[int, int],
                 device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(modules, input_shape, device, dtype)
        w, h = self.source_size
        gen = cast(lp.SpadeGenerator, self.parts["generator"])
        down = 2 ** len(cast(lp.AppearanceEncoder, self.parts["appearance"]).down_blocks)
        up = 4 * (2 if isinstance(gen.conv_img, nn.Sequential) else 1)
        self.output_size = (w // down * up, h // down * up)
        warper = cast(lp.FeatureWarper, self.parts["warper"])
        self.num_kp = warper.dense_motion_network.num_kp

    @classmethod
    def from_directory(cls, root: Path, device: torch.device,
                       dtype: torch.dtype) -> LivePortraitNetwork:
        modules, shape = cls.load_modules(root)
        return cls(modules, shape, device, dtype)

    @torch.inference_mode()
    def features(self, source: torch.Tensor) -> torch.Tensor:
        with self._precision():
            return self.parts["appearance"](self._fit_source(source)).float()

    @torch.inference_mode()
    def decode(self, features: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor,
               hand: torch.Tensor | None = None) -> torch.Tensor:
        if hand is not None:
            raise InvalidInput("the liveportrait arch takes no hand images")
        with self._precision():
            warped = self.parts["warper"](self._in(features), kp_driving=self._in(kp_driving),
                                          kp_source=self._in(kp_source))["out"]
            return self.parts["generator"](warped).float()


class UpperBodyNetwork(UpperBodyKeypoints, RendererNetwork):
    """ChatAnyone's upper-body renderer (``models.upperbody``) from config.yaml + model.pt."""

    def __init__(self, model: UpperBodyRenderer, device: torch.device,
                 dtype: torch.dtype) -> None:
        super().__init__(model.config, device, dtype)
        self.model = model
        self._place(model)

    @classmethod
    def save(cls, model: UpperBodyRenderer, directory: str | Path) -> Path:
        """Writes ``model`` as a weights directory that ``load(..., arch="upperbody")`` reads."""
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        (root / cls.CONFIG_FILE).write_text(yaml.safe_dump(model.config.to_dict(),
                                                           sort_keys=False))
        cw.save_module(model, root / cls.WEIGHTS_FILE)
        return root

    @classmethod
    def from_directory(cls, root: Path, device: torch.device,
                       dtype: torch.dtype) -> UpperBodyNetwork:
        config = cls.read_config(root)
        try:
            model = UpperBodyRenderer(config)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"{root / cls.CONFIG_FILE}: {exc}") from exc
        weights = root / cls.WEIGHTS_FILE
        cw.load_strict(model, cw.read_checkpoint(weights), str(weights))
        return cls(model, device, dtype)

    @torch.inference_mode()
    def features(self, source: torch.Tensor) -> torch.Tensor:
        with self._precision():
            return self.model.appearance(self._fit_source(source)).float()

    @torch.inference_mode()
    def decode(self, features: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor,
               hand: torch.Tensor | None = None) -> torch.Tensor:
        if hand is not None:
            hand = self._fit_source(hand)
        with self._precision():
            return self.model.decode(self._in(features), self._in(kp_source),
                                     self._in(kp_driving), hand).float()


ARCHS: dict[str, type[RendererNetwork]] = {"liveportrait": LivePortraitNetwork,
                                           "upperbody": UpperBodyNetwork}
