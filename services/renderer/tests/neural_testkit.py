"""Shared pieces of the neural renderer tests: random checkpoints in LivePortrait's published
layout made from the reference implementation, the reference wrapper, synthetic avatars and
motion frames.

The reference is mimic-head's vendored copy of LivePortrait's own module code, used only here
as ground truth.
"""

from __future__ import annotations

import atexit
import copy
import functools
import shutil
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
import yaml

from avatarflow.avatars.store import Avatar
from avatarflow.contracts import motion as mo
from avatarflow.contracts.messages import MotionFrame
from avatarflow_renderer.engines import neural_layout
from avatarflow_renderer.engines.neural_net import LIVEPORTRAIT_PARAMS

# LivePortrait hyper-parameters small enough for quick tests (models.yaml schema).
TINY_PARAMS: dict[str, Any] = copy.deepcopy(neural_layout.TINY_PARAMS)
TINY_INPUT = (64, 64)
FILES = {"appearance_feature_extractor": "base_models/appearance_feature_extractor.pth",
         "motion_extractor": "base_models/motion_extractor.pth",
         "warping_module": "base_models/warping_module.pth",
         "spade_generator": "base_models/spade_generator.pth"}
RETARGETING = "retargeting_models/stitching_retargeting_module.pth"


@pytest.fixture(autouse=True)
def one_thread():
    """Every test of a module that imports this fixture runs torch on one thread, as a
    service replica does (and so that two cores are not oversubscribed)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randomise(module: torch.nn.Module, seed: int) -> None:
    """Seeded random parameters and batch-norm statistics at a scale that keeps activations
    in range (fan-in scaled weights, spectral-norm vectors from power iteration)."""
    g = torch.Generator().manual_seed(seed)
    state = module.state_dict()
    with torch.no_grad():
        for name in sorted(state):
            t = state[name]
            leaf = name.rsplit(".", 1)[-1]
            if not t.dtype.is_floating_point or leaf in ("weight_u", "weight_v"):
                continue
            if leaf == "running_mean":
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif leaf == "running_var":
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif leaf in ("gamma", "beta"):  # GRN
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif t.ndim >= 2:
                t.copy_(torch.randn(t.shape, generator=g) / np.sqrt(t[0].numel()))
            elif leaf == "weight":
                t.copy_(1 + torch.randn(t.shape, generator=g) * 0.1)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.05)
        for name in sorted(state):
            if name.endswith(".weight_u"):
                prefix = name[: -len("weight_u")]
                w = state[prefix + "weight_orig"].reshape(state[name].shape[0], -1)
                u = torch.randn(w.shape[0], generator=g)
                for _ in range(10):
                    v = torch.nn.functional.normalize(w.T @ u, dim=0)
                    u = torch.nn.functional.normalize(w @ v, dim=0)
                state[name].copy_(u)
                state[prefix + "weight_v"].copy_(v)


def reference_modules(params: dict[str, Any]) -> dict[str, torch.nn.Module]:
    from mimic_head.modules.appearance_feature_extractor import AppearanceFeatureExtractor
    from mimic_head.modules.motion_extractor import MotionExtractor
    from mimic_head.modules.spade_generator import SPADEDecoder
    from mimic_head.modules.stitching_retargeting_network import StitchingRetargetingNetwork
    from mimic_head.modules.warping_network import WarpingNetwork

    s = params["stitching_retargeting_module_params"]
    return {
        "appearance_feature_extractor": AppearanceFeatureExtractor(
            **params["appearance_feature_extractor_params"]),
        "motion_extractor": MotionExtractor(**params["motion_extractor_params"]),
        "warping_module": WarpingNetwork(**params["warping_module_params"]),
        "spade_generator": SPADEDecoder(**params["spade_generator_params"]),
        "retarget_shoulder": StitchingRetargetingNetwork(**s["stitching"]),
        "retarget_mouth": StitchingRetargetingNetwork(**s["lip"]),
        "retarget_eye": StitchingRetargetingNetwork(**s["eye"]),
    }


def write_liveportrait(root: Path, params: dict[str, Any] | None = None,
                       input_shape: tuple[int, int] | None = None, seed: int = 0) -> Path:
    """Random reference weights saved exactly as LivePortrait publishes them (retargeting
    state dicts with DataParallel's ``module.`` prefix); with ``params``, also a models.yaml."""
    modules = reference_modules(params or LIVEPORTRAIT_PARAMS)
    for i, m in enumerate(modules.values()):
        randomise(m, seed * 100 + i)
    for name, rel in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        torch.save(modules[name].state_dict(), root / rel)
    bundle = {key: {f"module.{k}": v for k, v in modules[key].state_dict().items()}
              for key in ("retarget_shoulder", "retarget_mouth", "retarget_eye")}
    (root / RETARGETING).parent.mkdir(parents=True, exist_ok=True)
    torch.save(bundle, root / RETARGETING)
    if params is not None:
        doc: dict[str, Any] = {"model_params": params}
        if input_shape is not None:
            doc["input_shape"] = list(input_shape)
        (root / "models.yaml").write_text(yaml.safe_dump(doc))
    return root


def reference_wrapper(root: Path):
    """LivePortrait's own wrapper (fp32, CPU) loading ``root`` its own way."""
    from mimic_head.config.inference_config import InferenceConfig
    from mimic_head.live_portrait_wrapper import LivePortraitWrapper

    kw: dict[str, Any] = {}
    if (root / "models.yaml").exists():
        kw["models_config"] = str(root / "models.yaml")
    cfg = InferenceConfig(
        checkpoint_F=str(root / FILES["appearance_feature_extractor"]),
        checkpoint_M=str(root / FILES["motion_extractor"]),
        checkpoint_W=str(root / FILES["warping_module"]),
        checkpoint_G=str(root / FILES["spade_generator"]),
        checkpoint_S=str(root / RETARGETING), flag_use_half_precision=False, device="cpu", **kw)
    return LivePortraitWrapper(cfg)


@functools.cache
def full_weights() -> Path:
    """Random weights with the published hyper-parameters, written once per test process."""
    root = Path(tempfile.mkdtemp(prefix="avatarflow-lp-full-"))
    atexit.register(shutil.rmtree, root, True)
    return write_liveportrait(root, seed=7)


@functools.cache
def tiny_weights() -> Path:
    root = Path(tempfile.mkdtemp(prefix="avatarflow-lp-tiny-"))
    atexit.register(shutil.rmtree, root, True)
    return write_liveportrait(root, TINY_PARAMS, TINY_INPUT, seed=3)


def smooth_image(width: int, height: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 5, 3)).astype(np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def synthetic_avatar(avatar_id: str = "a", mode: str = "head", width: int = 512,
                     height: int = 512, seed: int = 0) -> Avatar:
    """An avatar with template-shaped keypoints on a smooth random canvas (no mediapipe)."""
    iod = (0.27 if mode == "head" else 0.15) * width
    eye_mid = np.array([width / 2, (0.42 if mode == "head" else 0.34) * height], np.float32)
    face = (eye_mid + mo.HEAD_TEMPLATE[:, :2] * iod).astype(np.float32)
    body_scale = 5.0 * iod
    origin = face[mo.HEAD["chin"]] + np.array([0.0, 0.9 * iod], np.float32)
    body = (origin + mo.BODY_CANONICAL[:, :2] * body_scale).astype(np.float32)
    wrists = body[[mo.BODY["wrist_l"], mo.BODY["wrist_r"]]]
    hands = (wrists[:, None] + mo.HAND_REST[:, :, :2] * body_scale).astype(np.float32)
    canvas = smooth_image(width, height, seed)
    return Avatar(
        avatar_id=avatar_id, mode=mode, width=width, height=height, canvas=canvas,
        portrait=canvas.copy(), canvas_from_portrait=np.eye(2, 3), face_points=face,
        face_rest=face.copy(), face_axes=np.array([[iod, 0, 0], [0, iod, 0]], np.float32),
        body_points=body, body_visible=np.ones(mo.B, bool), body_scale=body_scale,
        hand_points=hands, hand_visible=np.ones(2, bool),
        person_mask=np.ones((height, width), np.float32),
        mouth_color=np.array([80, 20, 20], np.uint8), skin_color=np.array([200, 160, 140],
                                                                          np.uint8))


def motion(session: str = "s", index: int = 0, expr: dict[str, float] | None = None,
           rotation=(0.0, 0.0, 0.0), translation=(0.0, 0.0, 0.0), scale: float = 1.0,
           hand_shift=(0.0, 0.0)) -> MotionFrame:
    e = np.zeros(len(mo.EXPRESSIONS), np.float32)
    for name, v in (expr or {}).items():
        e[mo.EXPR[name]] = v
    wrists = mo.BODY_CANONICAL[[mo.BODY["wrist_l"], mo.BODY["wrist_r"]]]
    hands = (mo.HAND_REST + wrists[:, None]).astype(np.float32)
    hands[..., :2] += np.asarray(hand_shift, np.float32)
    return MotionFrame(
        session_id=session, index=index, rotation=np.array(rotation, np.float32),
        translation=np.array(translation, np.float32), scale=scale, expression=e,
        head_template=mo.head_template(e), head_offset=np.zeros((mo.K, 3), np.float32),
        body=mo.BODY_CANONICAL.copy(), hands=hands)


@functools.cache
def reference_run(root: Path, size: int, seed: int) -> dict[str, Any]:
    """LivePortrait's own wrapper on a seeded uint8 source image (size x size): its inputs and
    every intermediate output, computed once per process (the published size takes seconds)."""
    ref = reference_wrapper(root)
    g = torch.Generator().manual_seed(seed)
    image = smooth_image(size, size, seed)
    noise = torch.randint(-12, 13, image.shape, generator=g).numpy()
    image = np.clip(image.astype(np.int64) + noise, 0, 255).astype(np.uint8)
    source = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    out: dict[str, Any] = {"image": image, "source": source}
    with torch.inference_mode():
        out["features"] = ref.extract_feature_3d(source)
        out["raw"] = ref.motion_extractor(source)
        out["info"] = ref.get_kp_info(source)
        x_s = out["kp_source"] = ref.transform_keypoint(out["info"])
        x_d = out["kp_driving"] = x_s + torch.randn(x_s.shape, generator=g) * 0.05
        out["lip_ratios"] = torch.tensor([[0.1, 0.4]])
        out["eye_ratios"] = torch.tensor([[0.35, 0.3, 0.05]])
        out["retarget_lip"] = ref.retarget_lip(x_s, out["lip_ratios"])
        out["retarget_eye"] = ref.retarget_eye(x_s, out["eye_ratios"])
        out["stitching"] = ref.stitching(x_s, x_d)
        out["frame"] = ref.warp_decode(out["features"], x_s, x_d)["out"]
    return out
