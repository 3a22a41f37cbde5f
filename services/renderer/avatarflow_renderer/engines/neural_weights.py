"""Checkpoint files of the ``neural`` renderer: strict loading with errors that name the file
and the offending keys.

LivePortrait's published layout (one directory)::

    base_models/appearance_feature_extractor.pth   state dict of F
    base_models/motion_extractor.pth               state dict of M
    base_models/warping_module.pth                 state dict of W
    base_models/spade_generator.pth                state dict of G
    retargeting_models/stitching_retargeting_module.pth
        {"retarget_shoulder": S stitching, "retarget_mouth": S lip, "retarget_eye": S eye},
        each a state dict saved from DataParallel (keys prefixed "module.")
    models.yaml                                    optional: LivePortrait's hyper-parameter
                                                   file (model_params), plus our optional
                                                   input_shape: [h, w] (LivePortrait's
                                                   inference input, 256 x 256); the
                                                   published values when absent

Our upper-body renderer: ``config.yaml`` (``UpperBodyConfig`` fields) + ``model.pt``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from avatarflow.contracts.errors import InvalidInput

BASE_MODELS = {  # our module name -> file in the published layout
    "appearance": "base_models/appearance_feature_extractor.pth",
    "motion": "base_models/motion_extractor.pth",
    "warper": "base_models/warping_module.pth",
    "generator": "base_models/spade_generator.pth",
}
RETARGETING_FILE = "retargeting_models/stitching_retargeting_module.pth"
RETARGETING_KEYS = {"stitching": "retarget_shoulder", "lip": "retarget_mouth",
                    "eye": "retarget_eye"}
PARALLEL_PREFIX = "module."
SHOWN = 5  # offending keys named in an error


def read_checkpoint(path: Path) -> Any:
    """``torch.load`` on the CPU without executing pickled code; InvalidInput when the file
    is missing or unreadable."""
    if not path.is_file():
        raise InvalidInput(f"checkpoint {path} is missing")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and OS errors alike: not a usable checkpoint
        raise InvalidInput(f"checkpoint {path} is unreadable: {type(exc).__name__}: {exc}"
                           ) from exc


def _listed(keys: list[str]) -> str:
    more = f" (and {len(keys) - SHOWN} more)" if len(keys) > SHOWN else ""
    return ", ".join(keys[:SHOWN]) + more


def load_strict(module: nn.Module, state: Any, where: str) -> None:
    """Loads ``state`` into ``module`` only when its keys and shapes are exactly the module's.

    ``where`` names the source (file and entry) in the error message.
    """
    if not isinstance(state, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise InvalidInput(f"{where}: not a state dict of tensors")
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} (expected {expected[k]})"
             for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    problems = []
    if missing:
        problems.append(f"missing keys {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_listed(unexpected)}")
    if wrong:
        problems.append(f"wrong shapes {_listed(wrong)}")
    if problems:
        raise InvalidInput(f"{where} does not match the {type(module).__name__} it is "
                           f"loaded into: {'; '.join(problems)}")
    module.load_state_dict(state, strict=True)


def strip_parallel_prefix(state: Any) -> Any:
    """Keys saved from ``DataParallel`` without their ``module.`` prefix."""
    if not isinstance(state, Mapping):
        return state
    return {(k.removeprefix(PARALLEL_PREFIX) if isinstance(k, str) else k): v
            for k, v in state.items()}


def load_liveportrait(modules: Mapping[str, nn.Module], root: Path) -> None:
    """Fills LivePortrait's modules (keys of ``BASE_MODELS`` and ``RETARGETING_KEYS``) from
    the published layout under ``root``; only the files of the modules given are read (the
    renderer's keypoint part has no F, W or G)."""
    for name, rel in BASE_MODELS.items():
        if name in modules:
            load_strict(modules[name], read_checkpoint(root / rel), str(root / rel))
    if not any(name in modules for name in RETARGETING_KEYS):
        return
    path = root / RETARGETING_FILE
    bundle = read_checkpoint(path)
    if not isinstance(bundle, Mapping):
        raise InvalidInput(f"{path}: expected a dict with {', '.join(RETARGETING_KEYS.values())}")
    absent = [key for key in RETARGETING_KEYS.values() if key not in bundle]
    if absent:
        raise InvalidInput(f"{path}: missing entries {', '.join(absent)} (has "
                           f"{', '.join(map(str, bundle)) or 'nothing'})")
    for name, key in RETARGETING_KEYS.items():
        if name in modules:
            load_strict(modules[name], strip_parallel_prefix(bundle[key]), f"{path} [{key}]")


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"{path} is unreadable: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidInput(f"{path}: expected a mapping at the top level")
    return data


def save_module(module: nn.Module, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(module.state_dict(), path)
