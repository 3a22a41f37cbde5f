"""``avatarflow eval motion``: how a motion engine moves on held-out clips, beside the clips'
own labels (what a perfect model would reach on these measures).

Per clip, the engine runs on the clip's audio features as a session would, and its motion is
measured against the clip's loudness (the RMS level of each frame's own samples):

- ``lipsync_r``: correlation of the mouth opening (``jaw_open``) with the loudness, floored
  ``SPAN_DB`` below the clip's loudest frame;
- ``closed``: of the silent frames (``SILENT_DB`` or more below the loudest), the share whose
  mouth opening is under ``CLOSED``;
- ``diversity``: the mean standard deviation over time of the expression coefficients and of
  the head rotation (a frozen face scores 0);
- ``jitter``: the mean absolute second difference of the same values, frame to frame.

The same measures of the clip's labels (``real``) bound what a model can reach with these
labels. Results are per clip and averaged over clips.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avatarflow.contracts.controls import Controls
from avatarflow.contracts.errors import InvalidInput
from avatarflow.contracts.motion import EXPR
from avatarflow_training.dataset.shards import read_clips

SPAN_DB = 50.0
SILENT_DB = 35.0
CLOSED = 0.15
JAW = EXPR["jaw_open"]
MEASURES = ("lipsync_r", "closed", "diversity", "jitter")


@dataclass
class Motion:
    """A clip's motion: T x E expression coefficients and T x 3 rotations."""

    expression: np.ndarray
    rotation: np.ndarray


def measure(motion: Motion, loudness: np.ndarray) -> dict[str, float]:
    """The four measures of one clip's motion against its loudness (NaN where undefined)."""
    peak = float(np.max(loudness))
    envelope = np.maximum(loudness, peak - SPAN_DB)
    jaw = motion.expression[:, JAW]
    r = (float(np.corrcoef(jaw, envelope)[0, 1]) if jaw.std() > 1e-9 and envelope.std() > 1e-9
         else float("nan"))
    silent = loudness <= peak - SILENT_DB
    closed = float((jaw[silent] < CLOSED).mean()) if silent.any() else float("nan")
    values = np.concatenate([motion.expression, motion.rotation], axis=1)
    diversity = float(values.std(axis=0).mean())
    jitter = float(np.abs(np.diff(values, n=2, axis=0)).mean()) if len(values) > 2 else 0.0
    return {"lipsync_r": r, "closed": closed, "diversity": diversity, "jitter": jitter}


def generate(engine: Any, arrays: dict[str, np.ndarray], fps: float, layout: str) -> Motion:
    """The engine's motion for a clip's audio features, as a session makes it."""
    session = engine.open_session(fps, Controls(), layout)
    frames = session.push(list(arrays["audio"])) + session.flush()
    frames = sorted(frames, key=lambda f: f.frame)[: len(arrays["audio"])]
    return Motion(np.stack([f.expression for f in frames]),
                  np.stack([f.rotation for f in frames]))


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    out = {}
    for k in MEASURES:
        vals = [r[k] for r in rows if not np.isnan(r[k])]
        out[k] = float(np.mean(vals)) if vals else float("nan")
    return out


def evaluate(engine: Any, data: str | Path) -> dict[str, Any]:
    """Every clip of the dataset at ``data``: the engine's measures and the labels'."""
    clips = []
    for meta, arrays in read_clips(data):
        if "loudness" not in arrays:
            raise InvalidInput(f"{data} was built without loudness: rebuild it with this "
                               "version of `avatarflow dataset build`")
        face = arrays["face_present"].astype(bool)
        real = Motion(arrays["expression"][face], arrays["rotation"][face])
        made = generate(engine, arrays, float(meta["fps"]), meta["audio_layout"])
        clips.append({"id": meta["id"], "frames": int(meta["frames"]),
                      "model": measure(made, arrays["loudness"][: len(made.expression)]),
                      "real": measure(real, arrays["loudness"][face])})
    if not clips:
        raise InvalidInput(f"{data} holds no clips")
    return {"clips": clips, "model": _mean([c["model"] for c in clips]),
            "real": _mean([c["real"] for c in clips])}


def engine_weights(path: str | Path) -> Path:
    """A run directory (its ``export``) or a weights directory itself."""
    p = Path(path)
    return p / "export" if (p / "export" / "config.yaml").is_file() else p
