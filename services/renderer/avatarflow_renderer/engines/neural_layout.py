"""LivePortrait's published weights directory as a whole: a strict per-file check for
``avatarflow weights check`` and a writer of random weights in the same layout (tests and
benchmarks).

The check builds the networks the renderer builds (hyper-parameters from ``models.yaml`` when
present, the published ones otherwise) on the meta device, so it allocates no weights, and
compares every file's keys and shapes with them, reading the files as the renderer reads them
(``neural_weights``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from avatarflow.contracts.errors import InvalidInput
from avatarflow.runtime.weights import FileReport, compare
from avatarflow_renderer.engines import neural_weights as cw
from avatarflow_renderer.engines.neural_keypoint_net import LivePortraitKeypoints
from avatarflow_renderer.engines.neural_net import LIVEPORTRAIT_PARAMS

__all__ = ["TINY_PARAMS", "check_weights", "write_random_weights"]

# LivePortrait hyper-parameters small enough for quick tests (models.yaml ``model_params``):
# narrow F, W and G; M (the motion extractor) and the retargeting MLPs keep their published
# sizes, which the keypoints (and JoyVASA's motion) depend on.
TINY_PARAMS: dict[str, Any] = {
    **LIVEPORTRAIT_PARAMS,
    "appearance_feature_extractor_params": {
        "image_channel": 3, "block_expansion": 8, "num_down_blocks": 2, "max_features": 64,
        "reshape_channel": 8, "reshape_depth": 8, "num_resblocks": 1},
    "warping_module_params": {
        "num_kp": 21, "block_expansion": 8, "max_features": 64, "num_down_blocks": 2,
        "reshape_channel": 8, "estimate_occlusion_map": True,
        "dense_motion_params": {"block_expansion": 8, "max_features": 32, "num_blocks": 2,
                                "reshape_depth": 8, "compress": 1}},
    "spade_generator_params": {"upscale": 2, "block_expansion": 8, "max_features": 64,
                               "num_down_blocks": 2},
}


def _shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _read(root: Path, rel: str) -> tuple[Any, FileReport | None]:
    """The file's contents, or the report that says why there are none."""
    if not (root / rel).is_file():
        return None, FileReport(path=rel, found=False)
    try:
        return cw.read_checkpoint(root / rel), None
    except InvalidInput as exc:
        return None, FileReport(path=rel, found=True, error=exc.message)


def check_weights(root: Path) -> list[FileReport]:
    """One report per file of LivePortrait's layout under ``root`` (base_models/*.pth, then
    retargeting_models/stitching_retargeting_module.pth, whose entries' keys are named
    ``<entry>/<key>``)."""
    try:
        params, _ = LivePortraitKeypoints.hyper_parameters(root)
        with torch.device("meta"):
            modules = LivePortraitKeypoints.build(params)
    except (InvalidInput, TypeError, ValueError, KeyError) as exc:
        message = exc.message if isinstance(exc, InvalidInput) else f"unusable models.yaml: {exc}"
        return [FileReport(path="models.yaml", found=True, error=message)]
    reports = []
    for name, rel in cw.BASE_MODELS.items():
        state, failed = _read(root, rel)
        if failed is None and not isinstance(state, Mapping):
            failed = FileReport(path=rel, found=True, error="not a state dict")
        reports.append(failed or compare(rel, _shapes(modules[name]), state))
    reports.append(_check_retargeting(root, modules))
    return reports


def _check_retargeting(root: Path, modules: Mapping[str, nn.Module]) -> FileReport:
    """The retargeting bundle: one state dict per entry (DataParallel-prefixed keys)."""
    rel = cw.RETARGETING_FILE
    bundle, failed = _read(root, rel)
    if failed is not None:
        return failed
    if not isinstance(bundle, Mapping):
        return FileReport(path=rel, found=True, error="not a dict of state dicts")
    report = FileReport(path=rel, found=True)
    for name, key in cw.RETARGETING_KEYS.items():
        if key not in bundle:
            report.missing.append(f"{key}/")
            continue
        state = cw.strip_parallel_prefix(bundle[key])
        if not isinstance(state, Mapping):
            report.error = f"entry {key} is not a state dict"
            continue
        part = compare(rel, _shapes(modules[name]), state)
        report.parameters += part.parameters
        report.missing += [f"{key}/{k}" for k in part.missing]
        report.unexpected += [f"{key}/{k}" for k in part.unexpected]
        report.mismatched += [f"{key}/{k}" for k in part.mismatched]
    report.unexpected += [f"{k}/" for k in bundle if k not in cw.RETARGETING_KEYS.values()]
    return report


def write_random_weights(root: Path, *, params: dict[str, Any] | None = None,
                         input_shape: tuple[int, int] | None = None, seed: int = 0) -> Path:
    """Seeded random weights in LivePortrait's published layout under ``root`` (retargeting
    entries saved with DataParallel's ``module.`` prefix, as published). With ``params``
    (models.yaml ``model_params``, e.g. smaller networks for tests) a models.yaml is written
    too, with ``input_shape`` [h, w] when given. Pictures rendered with them are noise."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        modules = LivePortraitKeypoints.build(params)
    for name, rel in cw.BASE_MODELS.items():
        cw.save_module(modules[name], root / rel)
    bundle = {key: {cw.PARALLEL_PREFIX + k: v for k, v in modules[name].state_dict().items()}
              for name, key in cw.RETARGETING_KEYS.items()}
    (root / cw.RETARGETING_FILE).parent.mkdir(parents=True, exist_ok=True)
    torch.save(bundle, root / cw.RETARGETING_FILE)
    if params is not None:
        doc: dict[str, Any] = {"model_params": params}
        if input_shape is not None:
            doc["input_shape"] = list(input_shape)
        (root / "models.yaml").write_text(yaml.safe_dump(doc))
    return root
