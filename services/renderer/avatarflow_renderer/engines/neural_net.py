"""The raw network call of the ``neural`` renderer, one class per architecture.

``RendererNetwork.load(weights_dir, arch, device, dtype)`` owns the device, the precision and
the weights; ``forward_batch`` renders a batch from sources and keypoints. The engine (and the
Triton model) call only this; the ``nn.Module`` definitions live in
``avatarflow_renderer.models``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from avatarflow import devices
from avatarflow import motion as mo
from avatarflow.errors import InvalidInput
from avatarflow_renderer.engines import neural_kp as kpm
from avatarflow_renderer.engines import neural_weights as cw
from avatarflow_renderer.models import liveportrait as lp
from avatarflow_renderer.models.upperbody import UpperBodyConfig, UpperBodyRenderer

# LivePortrait's models.yaml as published (model_params).
LIVEPORTRAIT_PARAMS: dict[str, Any] = {
    "appearance_feature_extractor_params": {
        "image_channel": 3, "block_expansion": 64, "num_down_blocks": 2, "max_features": 512,
        "reshape_channel": 32, "reshape_depth": 16, "num_resblocks": 6},
    "motion_extractor_params": {"num_kp": 21, "backbone": "convnextv2_tiny"},
    "warping_module_params": {
        "num_kp": 21, "block_expansion": 64, "max_features": 512, "num_down_blocks": 2,
        "reshape_channel": 32, "estimate_occlusion_map": True,
        "dense_motion_params": {"block_expansion": 32, "max_features": 1024, "num_blocks": 5,
                                "reshape_depth": 16, "compress": 4}},
    "spade_generator_params": {"upscale": 2, "block_expansion": 64, "max_features": 512,
                               "num_down_blocks": 2},
    "stitching_retargeting_module_params": {
        "stitching": {"input_size": 126, "hidden_sizes": [128, 128, 64], "output_size": 65},
        "lip": {"input_size": 65, "hidden_sizes": [128, 128, 64], "output_size": 63},
        "eye": {"input_size": 66, "hidden_sizes": [256, 256, 128, 128, 64], "output_size": 63}},
}
LIVEPORTRAIT_INPUT = (256, 256)  # (height, width), LivePortrait's input_shape


class RendererNetwork:
    """Appearance encoding plus warping and generation for one architecture.

    Weights stay float32; float16 / bfloat16 run the networks under autocast (CUDA only), as
    LivePortrait's half-precision flag does. Tensors go in on any device and dtype; outputs
    are float32 on the network's device.
    Sources are B x 3 x H x W in [0, 1] (resized to ``source_size`` when they differ);
    keypoints B x ``num_kp`` x 3; frames come out B x 3 x H_out x W_out in [0, 1].
    """

    arch: ClassVar[str] = ""
    source_size: tuple[int, int]  # (width, height) the network encodes
    output_size: tuple[int, int]  # (width, height) it renders
    num_kp: int

    def __init__(self, device: torch.device, dtype: torch.dtype) -> None:
        self.device, self.dtype = device, dtype

    @classmethod
    def load(cls, weights_dir: str | Path, arch: str = "liveportrait", device: str = "cpu",
             dtype: str = "float32") -> RendererNetwork:
        """The network of ``arch`` ("liveportrait" or "upperbody") with the weights in
        ``weights_dir``, strictly checked; InvalidInput names what does not fit."""
        if arch not in ARCHS:
            raise InvalidInput(f"unknown arch {arch!r}; use one of {', '.join(ARCHS)}")
        root = Path(weights_dir)
        if not root.is_dir():
            raise InvalidInput(f"weights directory {root} does not exist")
        dev, dt = devices.resolve(device, dtype)
        return ARCHS[arch].from_directory(root, dev, dt)

    @classmethod
    def from_directory(cls, root: Path, device: torch.device,
                       dtype: torch.dtype) -> RendererNetwork:
        raise NotImplementedError

    def _place(self, *modules: nn.Module) -> None:
        for m in modules:
            m.to(device=self.device).eval().requires_grad_(False)

    def _in(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(device=self.device, dtype=torch.float32)

    def _precision(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.dtype,
                              enabled=self.dtype != torch.float32)

    def source_from_images(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """H x W x 3 uint8 RGB images -> B x 3 x h x w float32 in [0, 1] at ``source_size``,
        resized without cropping (area interpolation)."""
        w, h = self.source_size
        batch = [img if img.shape[:2] == (h, w)
                 else cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA) for img in images]
        x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float() / 255.0
        return x.to(self.device)

    def _fit_source(self, source: torch.Tensor) -> torch.Tensor:
        w, h = self.source_size
        source = self._in(source)
        if tuple(source.shape[-2:]) != (h, w):
            source = F.interpolate(source, size=(h, w), mode="bilinear", antialias=True,
                                   align_corners=False)
        return source

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


class LivePortraitNetwork(RendererNetwork):
    """LivePortrait's F, M, W, G and S from its published checkpoint layout."""

    arch = "liveportrait"

    def __init__(self, modules: dict[str, nn.Module], input_shape: tuple[int, int],
                 device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(device, dtype)
        self.parts = modules
        self._place(*modules.values())
        h, w = input_shape
        self.source_size = (w, h)
        gen = self.parts["generator"]
        down = 2 ** len(self.parts["appearance"].down_blocks)
        up = 4 * (2 if isinstance(gen.conv_img, nn.Sequential) else 1)
        self.output_size = (w // down * up, h // down * up)
        self.num_kp = self.parts["warper"].dense_motion_network.num_kp

    @staticmethod
    def build(params: dict[str, Any] | None = None) -> dict[str, nn.Module]:
        """Freshly initialised modules for LivePortrait hyper-parameters (``model_params``
        of its models.yaml; the published ones by default)."""
        p = LIVEPORTRAIT_PARAMS if params is None else params
        s = p["stitching_retargeting_module_params"]
        return {"appearance": lp.AppearanceEncoder(**p["appearance_feature_extractor_params"]),
                "motion": lp.HeadMotionEstimator(**p["motion_extractor_params"]),
                "warper": lp.FeatureWarper(**p["warping_module_params"]),
                "generator": lp.SpadeGenerator(**p["spade_generator_params"]),
                **{name: lp.KeypointMLP(**s[name]) for name in ("stitching", "lip", "eye")}}

    @staticmethod
    def hyper_parameters(root: Path) -> tuple[dict[str, Any], tuple[int, int]]:
        """(model_params, input_shape) from ``root/models.yaml``, published values for what
        it leaves out."""
        params = copy.deepcopy(LIVEPORTRAIT_PARAMS)
        path = root / "models.yaml"
        if not path.exists():
            return params, LIVEPORTRAIT_INPUT
        data = cw.read_yaml(path)
        given = data.get("model_params", {})
        if not isinstance(given, dict):
            raise InvalidInput(f"{path}: model_params must be a mapping")
        unknown = sorted(set(given) - set(params))
        if unknown:
            raise InvalidInput(f"{path}: unknown model_params {', '.join(unknown)}")
        params.update(given)
        shape = data.get("input_shape", LIVEPORTRAIT_INPUT)
        if (not isinstance(shape, list | tuple) or len(shape) != 2
                or not all(isinstance(v, int) and v >= 16 for v in shape)):
            raise InvalidInput(f"{path}: input_shape must be [height, width], got {shape!r}")
        return params, (shape[0], shape[1])

    @classmethod
    def from_directory(cls, root: Path, device: torch.device,
                       dtype: torch.dtype) -> LivePortraitNetwork:
        params, shape = cls.hyper_parameters(root)
        try:
            modules = cls.build(params)
        except (TypeError, ValueError, KeyError) as exc:
            raise InvalidInput(f"{root / 'models.yaml'}: unusable hyper-parameters: {exc}"
                               ) from exc
        cw.load_liveportrait(modules, root)
        return cls(modules, shape, device, dtype)

    @torch.inference_mode()
    def features(self, source: torch.Tensor) -> torch.Tensor:
        with self._precision():
            return self.parts["appearance"](self._fit_source(source)).float()

    @torch.inference_mode()
    def motion_info(self, source: torch.Tensor) -> dict[str, torch.Tensor]:
        """The motion estimator on a source batch, pose in degrees (``neural_kp.motion_info``),
        float32."""
        with self._precision():
            raw = self.parts["motion"](self._fit_source(source))
        return kpm.motion_info({k: v.float() for k, v in raw.items()})

    @torch.inference_mode()
    def decode(self, features: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor,
               hand: torch.Tensor | None = None) -> torch.Tensor:
        if hand is not None:
            raise InvalidInput("the liveportrait arch takes no hand images")
        with self._precision():
            warped = self.parts["warper"](self._in(features), kp_driving=self._in(kp_driving),
                                          kp_source=self._in(kp_source))["out"]
            return self.parts["generator"](warped).float()

    def _mlp(self, name: str, *inputs: torch.Tensor) -> torch.Tensor:
        b = inputs[0].shape[0]
        x = torch.cat([self._in(p).reshape(b, -1) for p in inputs], dim=1)
        with self._precision():
            return self.parts[name](x).float()

    @torch.inference_mode()
    def retarget_lip(self, kp_source: torch.Tensor, ratios: torch.Tensor) -> torch.Tensor:
        """Keypoint delta (B x K x 3) that sets the lip-open ratio: ``ratios`` B x 2 holds the
        source's ratio and the target one."""
        return self._mlp("lip", kp_source, ratios).view(kp_source.shape)

    @torch.inference_mode()
    def retarget_eye(self, kp_source: torch.Tensor, ratios: torch.Tensor) -> torch.Tensor:
        """Keypoint delta (B x K x 3) that sets the eye-open ratio: ``ratios`` B x 3 holds the
        source's two eye ratios and the target one."""
        return self._mlp("eye", kp_source, ratios).view(kp_source.shape)

    @torch.inference_mode()
    def stitch(self, kp_source: torch.Tensor, kp_driving: torch.Tensor) -> torch.Tensor:
        """LivePortrait's stitching: driving keypoints corrected so the animated crop stays
        aligned with the source (a keypoint delta plus a shared x, y shift)."""
        b, k, _ = kp_driving.shape
        delta = self._mlp("stitching", kp_source, kp_driving)
        shift = delta[:, 3 * k: 3 * k + 2]
        out = kp_driving.float() + delta[:, : 3 * k].view(b, k, 3)
        return torch.cat([out[..., :2] + shift[:, None], out[..., 2:]], dim=-1)


class UpperBodyNetwork(RendererNetwork):
    """ChatAnyone's upper-body renderer (``models.upperbody``) from config.yaml + model.pt."""

    arch = "upperbody"
    CONFIG_FILE, WEIGHTS_FILE = "config.yaml", "model.pt"

    def __init__(self, model: UpperBodyRenderer, device: torch.device,
                 dtype: torch.dtype) -> None:
        super().__init__(device, dtype)
        self.model = model
        self._place(model)
        c = model.config
        self.source_size = (c.source_width, c.source_height)
        self.output_size = c.output_size
        self.num_kp = c.num_kp

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
        path = root / cls.CONFIG_FILE
        if not path.is_file():
            raise InvalidInput(f"{path} is missing")
        try:
            config = UpperBodyConfig.from_dict(cw.read_yaml(path))
            if config.num_kp != mo.K + mo.B:
                raise ValueError(f"num_kp is {config.num_kp}; avatarflow's motion has {mo.K} "
                                 f"head + {mo.B} body keypoints ({mo.K + mo.B})")
            model = UpperBodyRenderer(config)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"{path}: {exc}") from exc
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
