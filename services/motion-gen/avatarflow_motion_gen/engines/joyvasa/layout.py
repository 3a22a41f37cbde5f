"""JoyVASA's published weights layout under a weights root (its README's
``pretrained_weights/``): reading it strictly, checking it, and writing tiny random copies.

    ROOT/JoyVASA/motion_generator/<one .pt>      {"args": Namespace, "model": state dict}
    ROOT/JoyVASA/motion_template/motion_template.pkl
    ROOT/chinese-hubert-base/ (or TencentGameMate:chinese-hubert-base/), hubert-base-ls960/,
    ROOT/wav2vec2-base-960h/                     the audio model the checkpoint's args name
"""

from __future__ import annotations

import argparse
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers

from avatarflow.contracts.errors import InvalidInput
from avatarflow.runtime.weights import FileReport

from ...models.joyvasa import AUDIO_HIDDEN, JoyVASA

# Loading is local and quick: transformers' progress bars would only clutter service logs.
transformers.utils.logging.disable_progress_bar()

GENERATOR_DIR = Path("JoyVASA/motion_generator")
TEMPLATE = Path("JoyVASA/motion_template/motion_template.pkl")
AUDIO_DIRS = {  # args.audio_model -> folders tried in order, and the transformers class
    "hubert_zh": (("chinese-hubert-base", "TencentGameMate:chinese-hubert-base"), "HubertModel"),
    "hubert_zh_ori": (("chinese-hubert-base", "TencentGameMate:chinese-hubert-base"),
                      "HubertModel"),
    "hubert": (("hubert-base-ls960",), "HubertModel"),
    "wav2vec2": (("wav2vec2-base-960h",), "Wav2Vec2Model"),
}
TEMPLATE_KEYS = ("mean_exp", "std_exp", "min_scale", "max_scale", "min_t", "max_t",
                 "min_pitch", "max_pitch", "min_yaw", "max_yaw", "min_roll", "max_roll")
# JoyVASA's loader drops the time-step table and rebuilds it; a fresh encoder's masking vector
# only serves training. Old transformers saved the positional conv's weight norm as g / v.
SKIPPED = ("denoising_net.TE.pe",)
OPTIONAL = ("audio_encoder.masked_spec_embed",)
_RENAMES = (("conv.weight_g", "conv.parametrizations.weight.original0"),
            ("conv.weight_v", "conv.parametrizations.weight.original1"))


@dataclass
class Loaded:
    """A loaded generator: the network (CPU, fp32, eval), its args and its template."""

    model: JoyVASA
    args: dict[str, Any]
    template: dict[str, np.ndarray]
    checkpoint: Path


def generator_path(root: Path) -> Path:
    """The one ``.pt`` under ``JoyVASA/motion_generator`` (iter_0020000.pt when several)."""
    folder = root / GENERATOR_DIR
    found = sorted(folder.glob("*.pt")) if folder.is_dir() else []
    if not found:
        raise InvalidInput(f"missing weights file: {folder}/<checkpoint>.pt (JoyVASA's "
                           "motion generator, e.g. iter_0020000.pt)")
    preferred = [p for p in found if p.name == "iter_0020000.pt"]
    return (preferred or found)[-1]


def read_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The checkpoint's args (as a dict) and state dict; only plain data is unpickled."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            data = torch.load(path, map_location="cpu", weights_only=True)
        args, state = data["args"], data["model"]
    except (OSError, RuntimeError, KeyError, TypeError, pickle.UnpicklingError) as exc:
        raise InvalidInput(f"unreadable motion generator {path}: {exc}") from exc
    args = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    return args, dict(state)


def audio_folder(root: Path, audio_model: str) -> tuple[Path, str]:
    """The audio model's folder under ``root`` and its transformers class name."""
    if audio_model not in AUDIO_DIRS:
        raise InvalidInput(f"the motion generator names audio model {audio_model!r}; known: "
                           f"{', '.join(AUDIO_DIRS)}")
    names, cls = AUDIO_DIRS[audio_model]
    for name in names:
        if (root / name / "config.json").is_file():
            return root / name, cls
    raise InvalidInput(f"missing audio model: {root / names[0]}/config.json (Hugging Face "
                       f"layout, for audio_model {audio_model!r})")


def build(root: Path, args: dict[str, Any], state: dict[str, torch.Tensor]) -> JoyVASA:
    """The network as JoyVASA's loader builds it, sized from the checkpoint's tensors, with
    the audio model folder's weights loaded (the checkpoint's are loaded over them later)."""
    folder, cls = audio_folder(root, str(args.get("audio_model")))
    try:
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
        model_cls = getattr(transformers, cls)
        has_weights = any((folder / f).is_file() for f in
                          ("model.safetensors", "pytorch_model.bin"))
        encoder = (model_cls.from_pretrained(folder, config=config, local_files_only=True,
                                             dtype=torch.float32)
                   if has_weights else model_cls(config))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise InvalidInput(f"cannot load the audio model in {folder}: {exc}") from exc
    if int(config.hidden_size) != AUDIO_HIDDEN:
        raise InvalidInput(f"the audio model in {folder} has hidden size {config.hidden_size}; "
                           f"JoyVASA maps {AUDIO_HIDDEN}")
    try:
        _, n_prev, motion_dim = state["start_motion_feat"].shape
        feature_dim = state["start_audio_feat"].shape[2]
        steps = state["diffusion_sched.betas"].shape[0] - 1
        n_motions = int(args["n_motions"])
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise InvalidInput(f"the motion generator lacks what sizes the network: {exc}") from exc
    fps = float(args.get("fps") or 0)
    if fps != 25.0:
        raise InvalidInput(f"the motion generator runs at {fps:g} fps; JoyVASA's network "
                           "resamples its audio for 25")
    if motion_dim < 70:
        raise InvalidInput(f"the motion generator makes {motion_dim} values per frame; "
                           "LivePortrait motion needs 70 (63 exp, scale, 3 t, 3 angles)")
    return JoyVASA(encoder, motion_dim=int(motion_dim), n_motions=n_motions, n_prev=int(n_prev),
                   feature_dim=int(feature_dim), diff_steps=int(steps), fps=fps)


def renamed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict with skipped keys dropped and old weight-norm names brought up to date."""
    out = {}
    for key, value in state.items():
        if key in SKIPPED:
            continue
        for old, new in _RENAMES:
            if key.endswith(old):
                key = key[: -len(old)] + new
        out[key] = value
    return out


def compare(model: torch.nn.Module, state: dict[str, torch.Tensor],
            report: FileReport) -> None:
    """Fills ``report`` with what differs between ``state`` and the network's own keys; keys
    starting ``audio_encoder.`` may be absent (the audio model folder supplies them)."""
    own = model.state_dict()
    report.parameters = int(sum(v.numel() for v in state.values()))
    report.missing = sorted(k for k in own if k not in state and k not in OPTIONAL + SKIPPED
                            and not k.startswith("audio_encoder."))
    report.unexpected = sorted(k for k in state if k not in own)
    report.mismatched = [f"{k}: file {'x'.join(map(str, v.shape))}, network "
                         f"{'x'.join(map(str, own[k].shape))}"
                         for k, v in state.items() if k in own and own[k].shape != v.shape]


def read_template(path: Path) -> dict[str, np.ndarray]:
    """``motion_template.pkl``: the normalisation JoyVASA de-normalises its motion with."""
    if not path.is_file():
        raise InvalidInput(f"missing weights file: {path} (JoyVASA's motion template)")
    try:
        with path.open("rb") as f:
            raw = pickle.load(f)
        template = {k: np.asarray(raw[k], dtype=np.float32).reshape(-1) for k in TEMPLATE_KEYS}
    except (OSError, KeyError, TypeError, ValueError, pickle.UnpicklingError, EOFError) as exc:
        raise InvalidInput(f"unreadable motion template {path}: {exc}") from exc
    sizes = {"mean_exp": 63, "std_exp": 63, "min_t": 3, "max_t": 3}
    for key, value in template.items():
        if value.size != sizes.get(key, 1):
            raise InvalidInput(f"motion template {path}: {key} has {value.size} values, "
                               f"needs {sizes.get(key, 1)}")
    return template


def load(root: Path) -> Loaded:
    """Loads the generator strictly (apart from the keys JoyVASA's loader skips)."""
    path = generator_path(root)
    args, state = read_checkpoint(path)
    model = build(root, args, state)
    state = renamed(state)
    report = FileReport(path=str(path.relative_to(root)), found=True)
    compare(model, state, report)
    if not report.ok:
        detail = (report.missing[:1] and f"missing {report.missing[0]}"
                  or report.unexpected[:1] and f"unexpected {report.unexpected[0]}"
                  or report.mismatched[0])
        raise InvalidInput(f"motion generator {path} does not fit JoyVASA's network "
                           f"({len(report.missing)} missing, {len(report.unexpected)} "
                           f"unexpected, {len(report.mismatched)} mismatched keys): {detail}")
    model.load_state_dict(state, strict=False)
    model.eval().requires_grad_(False)
    return Loaded(model, args, read_template(root / TEMPLATE), path)


def check_weights(root: Path) -> list[FileReport]:
    """One report per file JoyVASA needs under ``root``: the generator (keys, shapes), the
    template and the audio model folder (its config; weights the checkpoint lacks)."""
    reports: list[FileReport] = []
    try:
        path = generator_path(root)
    except InvalidInput as exc:
        return [FileReport(path=str(GENERATOR_DIR / "iter_0020000.pt"), found=False,
                           error=str(exc))]
    gen = FileReport(path=str(path.relative_to(root)), found=True)
    reports.append(gen)
    try:
        args, state = read_checkpoint(path)
        names, _ = AUDIO_DIRS.get(str(args.get("audio_model")), (("?",), ""))
        audio = FileReport(path=f"{names[0]}/config.json", found=False)
        folder, _ = audio_folder(root, str(args.get("audio_model")))
        audio.path, audio.found = str((folder / "config.json").relative_to(root)), True
        model = build(root, args, state)
        audio.parameters = int(sum(p.numel() for p in model.audio_encoder.parameters()))
        compare(model, renamed(state), gen)
        reports.append(audio)
    except InvalidInput as exc:
        gen.error = str(exc)
        if "audio model" in str(exc):
            reports.append(FileReport(path=audio.path, found="missing" not in str(exc),
                                      error=str(exc)))
            gen.error = ""
    template = FileReport(path=str(TEMPLATE), found=(root / TEMPLATE).is_file())
    if template.found:
        try:
            template.parameters = sum(v.size for v in read_template(root / TEMPLATE).values())
        except InvalidInput as exc:
            template.error = str(exc)
    reports.append(template)
    return reports


TINY_AUDIO: dict[str, Any] = dict(
    hidden_size=AUDIO_HIDDEN, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
    conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=16)


# JoyVASA's published generator as its paper and DitTalkingHead's defaults describe it:
# 100-frame windows, 10 frames of history, width 512, 72 motion values; the schedule length is
# read from a real checkpoint, 50 steps assumed. With ``audio_config={}``: HuBERT base.
PUBLISHED_SIZES: dict[str, int] = dict(n_motions=100, n_prev=10, motion_dim=72, feature_dim=512,
                                       diff_steps=50)


def write_random_weights(root: Path, *, seed: int = 0, audio_model: str = "hubert_zh",
                         n_motions: int = 20, n_prev: int = 5, motion_dim: int = 72,
                         feature_dim: int = 32, diff_steps: int = 8,
                         audio_config: dict[str, Any] | None = None) -> None:
    """Writes random weights in JoyVASA's published layout under ``root``: the generator
    checkpoint (``iter_0020000.pt``, with the audio encoder's weights inside), the motion
    template and the audio model folder (by default a tiny config, hidden size 768; pass
    ``audio_config={}`` and the published sizes for a full-size network, e.g. to benchmark)."""
    if audio_model not in AUDIO_DIRS:
        raise InvalidInput(f"unknown audio model {audio_model!r}; known: {', '.join(AUDIO_DIRS)}")
    names, cls = AUDIO_DIRS[audio_model]
    config_cls = transformers.HubertConfig if cls == "HubertModel" else transformers.Wav2Vec2Config
    config = config_cls(**(TINY_AUDIO if audio_config is None else audio_config))
    encoder = getattr(transformers, cls)(config)
    model = JoyVASA(encoder, motion_dim=motion_dim, n_motions=n_motions, n_prev=n_prev,
                    feature_dim=feature_dim, diff_steps=diff_steps)
    # The folder's audio weights differ from the checkpoint's: the checkpoint's must win.
    _randomise(encoder, np.random.default_rng(seed + 1))
    encoder.save_pretrained(root / names[0])
    _randomise(model, np.random.default_rng(seed))
    args = argparse.Namespace(motion_feat_dim=motion_dim, n_motions=n_motions,
                              n_prev_motions=n_prev, feature_dim=feature_dim,
                              audio_model=audio_model, n_diff_steps=diff_steps, fps=25,
                              pad_mode="zero", use_indicator=True, n_layers=6,
                              architecture="decoder", target="sample")
    (root / GENERATOR_DIR).mkdir(parents=True, exist_ok=True)
    torch.save({"args": args, "model": model.state_dict()},
               root / GENERATOR_DIR / "iter_0020000.pt")
    rng = np.random.default_rng(seed + 2)
    f32 = np.float32
    template = {"mean_exp": rng.normal(0, 0.01, 63).astype(f32),
                "std_exp": rng.uniform(0.005, 0.02, 63).astype(f32),
                "min_scale": np.array([1.2], f32), "max_scale": np.array([1.8], f32),
                "min_t": np.array([-0.1, -0.1, -0.05], f32),
                "max_t": np.array([0.1, 0.1, 0.05], f32),
                "min_pitch": np.array([-20.0], f32), "max_pitch": np.array([20.0], f32),
                "min_yaw": np.array([-30.0], f32), "max_yaw": np.array([30.0], f32),
                "min_roll": np.array([-15.0], f32), "max_roll": np.array([15.0], f32)}
    (root / TEMPLATE).parent.mkdir(parents=True, exist_ok=True)
    with (root / TEMPLATE).open("wb") as f:
        pickle.dump(template, f)


def _randomise(model: torch.nn.Module, rng: np.random.Generator) -> None:
    """Fills every parameter from ``rng`` (scaled by fan-in; norms near 1), so the values do
    not depend on how torch or transformers initialise a version's layers."""
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.ndim == 1:
                norm = "norm" in name and name.endswith("weight")
                value = rng.normal(1.0 if norm else 0.0, 0.05, p.shape)
            else:
                value = rng.normal(0.0, 1.0 / np.sqrt(p[0].numel()), p.shape)
            if name.endswith("_feat"):  # start and null features: small, as trained ones
                value = rng.normal(0.0, 0.1, p.shape)
            if name.startswith("denoising_net.motion_dec.2"):  # motion near the template's range
                value *= 0.2
            p.copy_(torch.from_numpy(value.astype(np.float32)))
