"""A Hugging Face speech model folder (HuBERT / wav2vec2: config.json + model.safetensors or
pytorch_model.bin) checked strictly for ``avatarflow weights check``, as the "hubert" and
"wav2vec2" engines load it.

The model is built on the meta device from config.json (nothing allocated) and compared
key by key with the weights file. Keys are read as transformers reads them: a checkpoint of a
model with a head (``Wav2Vec2ForCTC``: ``wav2vec2.*`` plus ``lm_head.*``) contributes its base
model's keys, and weight-norm tensors saved as ``weight_g`` / ``weight_v`` are the
parametrisation's ``original0`` / ``original1``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from avatarflow.contracts.errors import MissingExtra
from avatarflow.runtime.weights import FileReport, compare

try:
    import safetensors.torch
    import torch
    import transformers
except ModuleNotFoundError as exc:
    raise MissingExtra(exc.name or "torch", "neural") from exc

transformers.utils.logging.disable_progress_bar()  # a check prints its own report

__all__ = ["check_weights"]

MODELS = {"hubert": "HubertModel", "wav2vec2": "Wav2Vec2Model"}
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # as transformers prefers them
OPTIONAL = ("masked_spec_embed",)  # training-time masking only
WEIGHT_NORM = {".weight_g": ".parametrizations.weight.original0",
               ".weight_v": ".parametrizations.weight.original1"}


def check_weights(root: Path, *, hidden_size: int = 0) -> list[FileReport]:
    """The weights file under ``root`` (and config.json when it is what fails);
    ``hidden_size``: the width the consumer of the features expects (0 = any)."""
    config_report, config = _config(root, hidden_size)
    if config is None:
        return [config_report]
    shown = [] if config_report.ok else [config_report]
    with torch.device("meta"):
        model = getattr(transformers, MODELS[config.model_type])(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    rel = next((f for f in WEIGHT_FILES if (root / f).is_file()), None)
    if rel is None:
        return [*shown, FileReport(path=" or ".join(WEIGHT_FILES), found=False)]
    try:
        state = _read(root / rel)
    except Exception as exc:  # pickle, zip, safetensors and OS errors alike: unusable
        return [*shown, FileReport(path=rel, found=True,
                                   error=f"unreadable: {type(exc).__name__}: {exc}")]
    return [*shown, compare(rel, expected, _base_keys(state, model.base_model_prefix),
                            optional=OPTIONAL)]


def _config(root: Path, hidden_size: int) -> tuple[FileReport, Any]:
    report = FileReport(path="config.json", found=(root / "config.json").is_file())
    if not report.found:
        return report, None
    try:
        kind = json.loads((root / "config.json").read_text()).get("model_type")
        if kind not in MODELS:
            report.error = f"model_type {kind!r}; expected one of {', '.join(MODELS)}"
            return report, None
        config = transformers.AutoConfig.from_pretrained(str(root), local_files_only=True)
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        report.error = f"unreadable: {exc}"
        return report, None
    if hidden_size and config.hidden_size != hidden_size:
        report.mismatched.append(f"hidden_size: file {config.hidden_size}, network "
                                 f"{hidden_size}")
    return report, config


def _read(path: Path) -> Mapping[str, Any]:
    if path.suffix == ".safetensors":
        return safetensors.torch.load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise TypeError("not a state dict")
    return state


def _base_keys(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The base model's tensors, named as the model names them."""
    head = prefix + "."
    if any(k.startswith(head) for k in state):
        state = {k.removeprefix(head): v for k, v in state.items() if k.startswith(head)}
    out = {}
    for key, value in state.items():
        for old, new in WEIGHT_NORM.items():
            if key.endswith(old):
                key = key.removesuffix(old) + new
        out[key] = value
    return out
