"""The keypoint part of the ``neural`` renderer's network: what turns an avatar and motion
frames into keypoints, without the generator (appearance encoder, warper, decoder).

The engine always runs this part where it runs; the generator part runs in-process
(``neural_net.RendererNetwork``, which extends these classes) or on Triton. Per arch:

- liveportrait: the motion extractor M (source keypoints, pose and expression, once per
  avatar) and the stitching / lip / eye retargeting MLPs (per frame, tiny), loaded strictly
  from the same published layout as the full network (only those files are read);
- upperbody: no network, only the sizes of ``config.yaml``.

``KeypointNetwork.load(weights_dir, arch, device, dtype)`` opens it.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, cast

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from avatarflow.contracts import motion as mo
from avatarflow.contracts.errors import InvalidInput
from avatarflow.runtime import devices
from avatarflow_renderer.engines import neural_kp as kpm
from avatarflow_renderer.engines import neural_weights as cw
from avatarflow_renderer.models import liveportrait as lp
from avatarflow_renderer.models.upperbody import UpperBodyConfig

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
KEYPOINT_PARTS = ("motion", "stitching", "lip", "eye")  # LivePortrait modules of this part


def open_weights(archs: Mapping[str, type[KeypointNetwork]], weights_dir: str | Path,
                 arch: str, device: str, dtype: str) -> Any:
    """``archs[arch]`` from ``weights_dir``, after checking the arch, directory, device and
    dtype; InvalidInput names what does not fit."""
    if arch not in archs:
        raise InvalidInput(f"unknown arch {arch!r}; use one of {', '.join(archs)}")
    root = Path(weights_dir)
    if not root.is_dir():
        raise InvalidInput(f"weights directory {root} does not exist")
    dev, dt = devices.resolve(device, dtype)
    return archs[arch].from_directory(root, dev, dt)


class KeypointNetwork:
    """Device, precision and sizes of a renderer network, and its keypoint computations.

    Weights stay float32; float16 / bfloat16 run the networks under autocast (CUDA only), as
    LivePortrait's half-precision flag does. Tensors go in on any device and dtype; outputs
    are float32 on the network's device. Sources are B x 3 x H x W in [0, 1] at
    ``source_size``; keypoints B x ``num_kp`` x 3.
    """

    arch: ClassVar[str] = ""
    source_size: tuple[int, int]  # (width, height) the network encodes
    num_kp: int

    def __init__(self, device: torch.device, dtype: torch.dtype) -> None:
        self.device, self.dtype = device, dtype

    @classmethod
    def load(cls, weights_dir: str | Path, arch: str = "liveportrait", device: str = "cpu",
             dtype: str = "float32") -> KeypointNetwork:
        """The keypoint part of ``arch`` ("liveportrait" or "upperbody") from
        ``weights_dir``, strictly checked; only the files this part needs are read."""
        return open_weights(KEYPOINT_ARCHS, weights_dir, arch, device, dtype)

    @classmethod
    def from_directory(cls, root: Path, device: torch.device,
                       dtype: torch.dtype) -> KeypointNetwork:
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


class LivePortraitKeypoints(KeypointNetwork):
    """LivePortrait's motion extractor M and keypoint MLPs S (keys of ``KEYPOINT_PARTS`` in
    ``modules``; the full network's subclass adds F, W and G)."""

    arch = "liveportrait"

    def __init__(self, modules: Mapping[str, nn.Module], input_shape: tuple[int, int],
                 device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(device, dtype)
        self.parts = dict(modules)
        self._place(*self.parts.values())
        h, w = input_shape
        self.source_size = (w, h)
        motion = cast(lp.HeadMotionEstimator, self.parts["motion"])
        self.num_kp = motion.detector.fc_kp.out_features // 3

    @staticmethod
    def build(params: dict[str, Any] | None = None,
              names: Sequence[str] | None = None) -> dict[str, nn.Module]:
        """Freshly initialised modules for LivePortrait hyper-parameters (``model_params``
        of its models.yaml; the published ones by default): all of F, M, W, G and S, or only
        those in ``names``."""
        p = LIVEPORTRAIT_PARAMS if params is None else params
        s = p["stitching_retargeting_module_params"]
        makers: dict[str, Callable[[], nn.Module]] = {
            "appearance": lambda: lp.AppearanceEncoder(
                **p["appearance_feature_extractor_params"]),
            "motion": lambda: lp.HeadMotionEstimator(**p["motion_extractor_params"]),
            "warper": lambda: lp.FeatureWarper(**p["warping_module_params"]),
            "generator": lambda: lp.SpadeGenerator(**p["spade_generator_params"]),
            **{name: functools.partial(lp.KeypointMLP, **s[name])
               for name in ("stitching", "lip", "eye")}}
        return {name: make() for name, make in makers.items() if names is None or name in names}

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
    def load_modules(cls, root: Path, names: Sequence[str] | None = None
                     ) -> tuple[dict[str, nn.Module], tuple[int, int]]:
        """The modules (all, or ``names``) with their weights from ``root``, and the input
        shape."""
        params, shape = cls.hyper_parameters(root)
        try:
            modules = cls.build(params, names)
        except (TypeError, ValueError, KeyError) as exc:
            raise InvalidInput(f"{root / 'models.yaml'}: unusable hyper-parameters: {exc}"
                               ) from exc
        cw.load_liveportrait(modules, root)
        return modules, shape

    @classmethod
    def from_directory(cls, root: Path, device: torch.device,
                       dtype: torch.dtype) -> LivePortraitKeypoints:
        modules, shape = cls.load_modules(root, KEYPOINT_PARTS)
        return LivePortraitKeypoints(modules, shape, device, dtype)

    @torch.inference_mode()
    def motion_info(self, source: torch.Tensor) -> dict[str, torch.Tensor]:
        """The motion estimator on a source batch, pose in degrees (``neural_kp.motion_info``),
        float32."""
        with self._precision():
            raw = self.parts["motion"](self._fit_source(source))
        return kpm.motion_info({k: v.float() for k, v in raw.items()})

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


class UpperBodyKeypoints(KeypointNetwork):
    """The upper-body renderer's sizes from its ``config.yaml``: its keypoints are computed
    without a network."""

    arch = "upperbody"
    CONFIG_FILE, WEIGHTS_FILE = "config.yaml", "model.pt"

    def __init__(self, config: UpperBodyConfig, device: torch.device,
                 dtype: torch.dtype) -> None:
        super().__init__(device, dtype)
        self.config = config
        self.source_size = (config.source_width, config.source_height)
        self.output_size = config.output_size
        self.num_kp = config.num_kp

    @classmethod
    def read_config(cls, root: Path) -> UpperBodyConfig:
        """``root/config.yaml``, checked against avatarflow's keypoints."""
        path = root / cls.CONFIG_FILE
        if not path.is_file():
            raise InvalidInput(f"{path} is missing")
        try:
            config = UpperBodyConfig.from_dict(cw.read_yaml(path))
            if config.num_kp != mo.K + mo.B:
                raise ValueError(f"num_kp is {config.num_kp}; avatarflow's motion has {mo.K} "
                                 f"head + {mo.B} body keypoints ({mo.K + mo.B})")
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"{path}: {exc}") from exc
        return config

    @classmethod
    def from_directory(cls, root: Path, device: torch.device,
                       dtype: torch.dtype) -> UpperBodyKeypoints:
        return UpperBodyKeypoints(cls.read_config(root), device, dtype)


KEYPOINT_ARCHS: dict[str, type[KeypointNetwork]] = {"liveportrait": LivePortraitKeypoints,
                                                    "upperbody": UpperBodyKeypoints}
