"""Samples the training tests share: a motion frame with a known head and face, and a small
labelled clip whose mouth opens with its loudness (imported by name: pytest puts this folder
on the path)."""

from __future__ import annotations

import numpy as np

from avatarflow.contracts import motion as mo
from avatarflow.contracts.messages import MotionFrame


def posed_frame(rotation: np.ndarray, e: np.ndarray) -> MotionFrame:
    wrists = mo.BODY_CANONICAL[[mo.BODY["wrist_l"], mo.BODY["wrist_r"]]]
    return MotionFrame(
        session_id="s", rotation=rotation.astype(np.float32),
        translation=np.zeros(3, np.float32), scale=1.0, expression=e,
        head_template=mo.head_template(e), head_offset=np.zeros((mo.K, 3), np.float32),
        body=mo.BODY_CANONICAL.copy(), hands=(mo.HAND_REST + wrists[:, None]).astype(np.float32))


LAYOUT, D, FPS = "mel40+energy_db+voicing+zcr+flux", 44, 30.0
TINY = {"width": 16, "heads": 2, "face_layers": 1, "body_layers": 1, "train_steps": 100}


def labelled_clip(k: int, t: int = 90) -> tuple[dict, dict[str, np.ndarray]]:
    """A clip whose mouth opens with the loudness of its 'audio'."""
    rng = np.random.default_rng(k)
    loud = np.clip(np.sin(np.arange(t) / 3.0 + k) + rng.normal(0, 0.1, t), 0, None)
    audio = rng.normal(0, 1, (t, D)).astype(np.float32)
    audio[:, 40] = 40 * loud - 60  # energy_db
    expr = np.zeros((t, len(mo.EXPRESSIONS)), np.float32)
    expr[:, mo.EXPR["jaw_open"]] = 0.6 * loud
    arrays = {
        "audio": audio, "loudness": (40 * loud - 60).astype(np.float32),
        "face_present": np.ones(t, bool), "expression": expr,
        "rotation": rng.normal(0, 0.05, (t, 3)).astype(np.float32),
        "translation": np.zeros((t, 3), np.float32), "scale": np.ones(t, np.float32),
        "head_offset": np.zeros((t, mo.K, 3), np.float32),
        "body_present": np.ones(t, bool),
        "body": np.repeat(mo.BODY_CANONICAL[None], t, axis=0),
        "body_visible": np.ones((t, mo.B), bool),
        "hands": np.full((t, 2, 21, 3), np.nan, np.float32),
        "hands_present": np.zeros((t, 2), bool)}
    meta = {"id": f"clip{k}", "fps": FPS, "frames": t, "audio_layout": LAYOUT}
    return meta, arrays
