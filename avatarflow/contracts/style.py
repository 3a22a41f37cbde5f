"""Speaking-style references: a short clip of expression coefficients a session imitates.

A reference is ``expressions: T x E float32`` (names in
``avatarflow.contracts.motion.EXPRESSIONS``) at a stated ``fps``. ``avatarflow
style-reference`` extracts one from a video and saves it as an ``.npz`` file holding
``expressions`` and ``fps``; the gateway checks it with ``check``; the motion engines read
it (see their ``set_reference``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avatarflow.contracts import tensor
from avatarflow.contracts.errors import InvalidInput, OutOfRange
from avatarflow.contracts.limits import MAX_STYLE_FPS, MAX_STYLE_FRAMES, MIN_STYLE_FRAMES
from avatarflow.contracts.motion import EXPRESSIONS
from avatarflow.contracts.v1 import pipeline_pb2 as pb

E = len(EXPRESSIONS)
MIN_FRAMES, MAX_FRAMES = MIN_STYLE_FRAMES, MAX_STYLE_FRAMES
MAX_FPS = MAX_STYLE_FPS
# Coefficients that only make sense as 0..1 (a closed jaw or an open eye is 0); every other
# coefficient is signed, -1..1.
UNSIGNED = ("jaw_open", "blink_left", "blink_right")
LOW = np.array([0.0 if n in UNSIGNED else -1.0 for n in EXPRESSIONS], dtype=np.float32)
HIGH = np.ones(E, dtype=np.float32)


@dataclass(frozen=True, eq=False)
class StyleReference:
    """A checked reference clip."""

    expressions: np.ndarray  # T x E float32
    fps: float


def check(expressions: np.ndarray, fps: float) -> StyleReference:
    """Raises InvalidInput (shape, NaN) or OutOfRange (length, values, fps) naming the problem."""
    x = np.asarray(expressions)
    if x.ndim != 2 or x.shape[1] != E:
        raise InvalidInput(f"style reference expressions have shape {x.shape}; need T x {E} "
                           f"({', '.join(EXPRESSIONS)})")
    if not np.issubdtype(x.dtype, np.floating):
        raise InvalidInput(f"style reference expressions must be float32, got {x.dtype}")
    if not np.isfinite(x).all():
        raise InvalidInput("style reference expressions contain NaN or infinity")
    if not MIN_FRAMES <= len(x) <= MAX_FRAMES:
        raise OutOfRange(f"a style reference needs {MIN_FRAMES}..{MAX_FRAMES} frames, "
                         f"got {len(x)}")
    if not math.isfinite(fps) or not 0.0 < fps <= MAX_FPS:
        raise OutOfRange(f"style reference fps must be within (0, {MAX_FPS:g}], got {fps}")
    x = x.astype(np.float32)
    bad = np.flatnonzero(((x < LOW - 1e-6) | (x > HIGH + 1e-6)).any(axis=0))
    if len(bad):
        j = int(bad[0])
        worst = float(x[:, j].min() if x[:, j].min() < LOW[j] else x[:, j].max())
        raise OutOfRange(f"style reference {EXPRESSIONS[j]} must be within "
                         f"{LOW[j]:g}..{HIGH[j]:g}, got {worst:g}")
    return StyleReference(np.clip(x, LOW, HIGH), float(fps))


def to_pb(ref: StyleReference, out: pb.StyleReference | None = None) -> pb.StyleReference:
    out = pb.StyleReference() if out is None else out
    tensor.fill(out.expressions, ref.expressions.astype(np.float32))
    out.fps = ref.fps
    return out


def from_pb(p: pb.StyleReference) -> StyleReference:
    """A checked reference from its protobuf form (bad tensors raise InvalidInput)."""
    return check(tensor.decode(p.expressions), p.fps)


def save(ref: StyleReference, path: str | Path) -> Path:
    """Writes ``expressions`` and ``fps`` to an ``.npz`` file."""
    path = Path(path)
    if path.suffix != ".npz":
        raise InvalidInput(f"a style reference is saved as .npz, got {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, expressions=ref.expressions.astype(np.float32), fps=np.float64(ref.fps))
    return path


def load(path: str | Path) -> StyleReference:
    """Reads and checks a file written by ``save``."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"style file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            expressions, fps = data["expressions"], float(data["fps"])
    except (OSError, ValueError, KeyError) as exc:
        raise InvalidInput(f"style file {path} is not a style reference .npz "
                           f"(expressions, fps): {exc}") from exc
    return check(expressions, fps)
