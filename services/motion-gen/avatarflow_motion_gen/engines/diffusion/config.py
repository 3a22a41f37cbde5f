"""The diffusion engine's hyper-parameters, presets and weights directory.

A weights directory holds ``config.yaml`` (or ``config.json``), the fields of
``DiffusionConfig``, and ``model.pt`` (or ``model.safetensors``), the state dict of
``models.MotionDiffusion``, loaded strictly. ``save`` writes one.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
import yaml

from avatarflow.contracts.controls import EMOTIONS
from avatarflow.contracts.errors import InvalidInput, MissingExtra
from avatarflow.contracts.motion import EXPRESSIONS, B, K

from ...models import HAND_COMPONENTS, BodyNet, FaceDiT, MotionDiffusion

CONFIG_FILES = ("config.yaml", "config.yml", "config.json")
WEIGHT_FILES = ("model.safetensors", "model.pt")
INFERENCE = ("steps", "guidance", "clip_x0")  # settings an engine option may override
E = len(EXPRESSIONS)
M = E + 6  # motion values per frame: expression, rotation (pitch, yaw, roll), translation
_SIZED = re.compile(r"(.*\D)(\d+)")


def layout_dim(layout: str) -> int:
    """Dims of a ``+``-separated feature layout: a part ending in a number N > 0 spans N dims
    (``mel40``, ``hubert768``), any other part one (``energy_db``)."""
    dim = 0
    for part in layout.split("+"):
        part = part.strip()
        if not part:
            raise InvalidInput(f"feature layout {layout!r} has an empty part")
        match = _SIZED.fullmatch(part)
        dim += int(match.group(2)) if match and int(match.group(2)) > 0 else 1
    return dim


@dataclass(frozen=True)
class DiffusionConfig:
    """Architecture (fixed by a checkpoint) and inference settings (``INFERENCE``)."""

    audio_layout: str = "mel40+energy_db+voicing+zcr+flux"  # what the network was trained on
    fps: float = 30.0  # the motion frame rate it generates
    width: int = 32
    heads: int = 2
    face_layers: int = 2
    body_layers: int = 2
    mlp_ratio: int = 2
    window: int = 8  # N new frames per window
    history: int = 8  # H previous frames conditioning each window
    lookahead: int = 2  # L frames of audio needed past a window's end
    ref_frames: int = 8  # R reference expression frames (style transfer)
    appearance_dim: int = 16  # A, the source appearance vector
    hand_coeffs: int = 6  # C per hand, the first C of models.HAND_COMPONENTS
    emotions: tuple[str, ...] = EMOTIONS  # the learned emotion embeddings, in order
    schedule: str = "cosine"  # beta schedule: cosine or linear
    train_steps: int = 1000
    prediction: str = "eps"  # the face DiT predicts the noise (ChatAnyone); nothing else
    steps: int = 4  # DDIM steps at inference
    guidance: float = 2.0  # audio classifier-free guidance scale; 1 = conditional only
    clip_x0: float = 3.0  # x0 estimates are clipped to +-clip_x0 standard deviations

    @property
    def audio_dim(self) -> int:
        return layout_dim(self.audio_layout)

    def validate(self, source: str = "diffusion config") -> DiffusionConfig:
        """Returns self, or raises InvalidInput naming ``source`` and the bad field."""
        def bad(msg: str) -> InvalidInput:
            return InvalidInput(f"{source}: {msg}")

        for name in ("width", "heads", "face_layers", "body_layers", "mlp_ratio", "window",
                     "history", "ref_frames", "appearance_dim", "hand_coeffs", "train_steps",
                     "steps"):
            if getattr(self, name) < 1:
                raise bad(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lookahead < 0:
            raise bad(f"lookahead must not be negative, got {self.lookahead}")
        if self.width % self.heads:
            raise bad(f"width {self.width} is not a multiple of heads {self.heads}")
        if self.hand_coeffs > len(HAND_COMPONENTS):
            raise bad(f"hand_coeffs must be at most {len(HAND_COMPONENTS)}")
        if self.schedule not in ("cosine", "linear"):
            raise bad(f"schedule must be cosine or linear, got {self.schedule!r}")
        if self.prediction != "eps":
            raise bad(f"prediction must be 'eps' (noise), got {self.prediction!r}")
        if self.steps > self.train_steps:
            raise bad(f"steps {self.steps} exceeds train_steps {self.train_steps}")
        if not (self.guidance >= 0.0 and self.clip_x0 > 0.0 and self.fps > 0.0):
            raise bad("guidance must be >= 0, clip_x0 and fps > 0")
        if not self.emotions or len(set(self.emotions)) != len(self.emotions):
            raise bad("emotions must be a non-empty list of distinct names")
        self.audio_dim  # noqa: B018  (raises on a malformed layout)
        return self

    def with_inference(self, **settings: Any) -> DiffusionConfig:
        """A copy with inference settings (``INFERENCE``) replaced."""
        wrong = sorted(set(settings) - set(INFERENCE))
        if wrong:
            raise InvalidInput(f"not inference settings: {', '.join(wrong)}")
        values = {k: _coerce(k, v, "diffusion engine option") for k, v in settings.items()}
        return replace(self, **values).validate("diffusion engine options")

    def check_layout(self, layout: str, source: str) -> None:
        """Raises InvalidInput unless ``layout`` has the feature dim the network takes."""
        dim = layout_dim(layout)
        if dim != self.audio_dim:
            raise InvalidInput(f"feature layout {layout!r} has {dim} dims but the diffusion "
                               f"weights in {source} take {self.audio_dim} "
                               f"({self.audio_layout!r})")

    def emotion_index(self, emotion: str) -> int:
        if emotion not in self.emotions:
            raise InvalidInput(f"the diffusion weights know no emotion {emotion!r}; "
                               f"they know {', '.join(self.emotions)}")
        return self.emotions.index(emotion)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "emotions": list(self.emotions)}

    @classmethod
    def from_dict(cls, data: Any, source: str) -> DiffusionConfig:
        """Builds a config from parsed YAML/JSON; fields not given keep their defaults."""
        if not isinstance(data, dict):
            raise InvalidInput(f"{source} must hold a mapping of settings")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise InvalidInput(f"{source}: unknown setting(s) {', '.join(map(str, unknown))}")
        values = {name: _coerce(name, value, source) for name, value in data.items()}
        return cls(**values).validate(source)


def _coerce(name: str, value: Any, source: str) -> Any:
    """``value`` as the type of field ``name``'s default, or InvalidInput naming ``source``."""
    kind = type(getattr(DiffusionConfig, name))
    ok = {str: isinstance(value, str),
          tuple: isinstance(value, list | tuple) and all(isinstance(v, str) for v in value),
          int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, int | float) and not isinstance(value, bool)}[kind]
    if not ok:
        raise InvalidInput(f"{source}: {name} must be {kind.__name__}, got {value!r}")
    return tuple(value) if kind is tuple else kind(value)


PRESETS = {
    "small": DiffusionConfig(),  # tiny: for tests
    "full": DiffusionConfig(width=512, heads=8, face_layers=6, body_layers=2, mlp_ratio=4,
                            history=16, ref_frames=32, appearance_dim=256, steps=8),
}


def preset(name: str, **overrides: Any) -> DiffusionConfig:
    """A preset ("small" or "full") with fields replaced."""
    if name not in PRESETS:
        raise InvalidInput(f"unknown diffusion preset {name!r}; choose {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides).validate()


def build_model(config: DiffusionConfig) -> MotionDiffusion:
    """A freshly initialised network of ``config``'s architecture (CPU, float32)."""
    c = config
    face = FaceDiT(motion_dim=M, expression_dim=E, audio_dim=c.audio_dim, width=c.width,
                   heads=c.heads, layers=c.face_layers, mlp_ratio=c.mlp_ratio, window=c.window,
                   history=c.history, audio_frames=c.history + c.window + c.lookahead,
                   ref_frames=c.ref_frames, emotions=len(c.emotions))
    body = BodyNet(keypoint_dim=K * 3, audio_dim=c.audio_dim, appearance_dim=c.appearance_dim,
                   body_dim=B * 3, hand_dim=2 * c.hand_coeffs, width=c.width, heads=c.heads,
                   layers=c.body_layers, mlp_ratio=c.mlp_ratio, frames=c.history + c.window)
    return MotionDiffusion(face, body, audio_dim=c.audio_dim, expression_dim=E)


def _find(directory: Path, names: tuple[str, ...], what: str) -> Path:
    for name in names:
        if (directory / name).is_file():
            return directory / name
    raise InvalidInput(f"diffusion weights directory {directory} has no {what} "
                       f"({' or '.join(names)})")


def load_config(weights: str | Path) -> tuple[Path, DiffusionConfig]:
    """(the resolved directory, its config); InvalidInput naming the directory if unusable."""
    directory = Path(weights).expanduser().resolve()
    if not directory.is_dir():
        raise InvalidInput(f"diffusion weights directory {directory} does not exist")
    path = _find(directory, CONFIG_FILES, "config")
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise InvalidInput(f"cannot read {path}: {exc}") from exc
    return directory, DiffusionConfig.from_dict(data, str(path))


def load_weights(model: MotionDiffusion, directory: Path) -> None:
    """Loads the directory's state dict into ``model`` strictly (every key, every shape)."""
    path = _find(directory, WEIGHT_FILES, "weights")
    try:
        if path.suffix == ".safetensors":
            try:
                from safetensors.torch import load_file
            except ModuleNotFoundError as exc:
                raise MissingExtra("safetensors", "neural") from exc
            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except MissingExtra:
        raise
    except Exception as exc:  # torch and safetensors raise many kinds on a corrupt file
        raise InvalidInput(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise InvalidInput(f"{path} does not hold a state dict of tensors")
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise InvalidInput(f"{path} does not fit {directory}'s config: missing keys "
                           f"{missing[:5] or 'none'}, unexpected keys {unexpected[:5] or 'none'}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InvalidInput(f"{path} does not fit {directory}'s config: {exc}") from exc


def save(model: MotionDiffusion, config: DiffusionConfig, directory: str | Path) -> Path:
    """Writes ``config.yaml`` and ``model.pt`` (a plain state dict) into ``directory``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, out / "model.pt")
    return out
