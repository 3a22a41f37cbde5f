"""Body sub-stage of the signal engine: breathing, sway after the head, gestures on stress."""

from __future__ import annotations

import math

import numpy as np

from avatarflow.contracts.motion import BODY, BODY_CANONICAL, HAND_JOINTS, HAND_REST

from .common import decay, follow
from .params import SignalParams

_CANON = BODY_CANONICAL.astype(np.float64)
_UPPER = [BODY[n] for n in ("shoulder_r", "shoulder_l", "elbow_r", "elbow_l", "wrist_r",
                            "wrist_l")]
_HIPS = [BODY["hip_r"], BODY["hip_l"]]
_BREATH = {"shoulder": 1.0, "elbow": 0.6, "wrist": 0.4, "hip": 0.0}
WRISTS = (BODY["wrist_l"], BODY["wrist_r"])  # hand 0 is the left hand, hand 1 the right


def _patterns(p: SignalParams) -> dict[str, np.ndarray]:
    """B x 3 displacement per unit of each motion source; the body is their weighted sum."""
    out = {k: np.zeros((len(BODY), 3)) for k in ("breath", "yaw", "tilt", "left", "right")}
    out["breath"][:, 1] = [-p.breath_rise * _BREATH[n.split("_")[0]] for n in BODY]
    # Shoulders and arms follow the head late and less: a shift with yaw, a tilt with roll.
    for idx, weight in ((_UPPER, 1.0), (_HIPS, 0.3)):
        out["yaw"][idx, 0] = weight * p.sway_yaw
        out["tilt"][idx, 0] = -weight * _CANON[idx, 1]
        out["tilt"][idx, 1] = weight * _CANON[idx, 0]
    (wx, wy), (ex, ey) = p.gesture_wrist, p.gesture_elbow
    out["right"][BODY["wrist_r"], :2] = (wx, wy)
    out["left"][BODY["wrist_l"], :2] = (-wx, wy)
    out["right"][BODY["elbow_r"], :2] = (ex, ey)
    out["left"][BODY["elbow_l"], :2] = (-ex, ey)
    return out


def _curl_delta() -> np.ndarray:
    """2 x 21 x 3: how far each finger joint moves when the hand curls fully."""
    delta = np.zeros((2, HAND_JOINTS, 3))
    for h in range(2):
        for f in range(5):
            base = HAND_REST[h, 1 + 4 * f].astype(np.float64)
            for j in range(1, 4):
                p = HAND_REST[h, 1 + 4 * f + j].astype(np.float64)
                rel = p - base
                curled = base + 0.45 * rel + np.array([0.0, 0.0, -0.6 * np.linalg.norm(rel)])
                delta[h, 1 + 4 * f + j] = curled - p
    return delta


CURL_DELTA = _curl_delta()


class Body:
    """Body keypoint deltas (B x 3, before ``pose_amplitude``) and per-hand finger curl."""

    def __init__(self, p: SignalParams, fps: float, rng: np.random.Generator) -> None:
        self.p = p
        self._patterns = _patterns(p)
        self._breath_omega = 2.0 * math.pi * rng.uniform(*p.breath_hz) / fps
        self._breath_phase = rng.uniform(0.0, 2.0 * math.pi)
        self._lag = follow(fps, p.body_lag_s)
        self._yaw = self._roll = 0.0
        self._gesture_env = np.zeros(2)  # left, right
        self.gesture = np.zeros(2)
        self._attack = follow(fps, p.gesture_attack_s)
        self._keep = decay(fps, p.gesture_decay_s)
        self._gap = max(1, round(p.gesture_gap_s * fps))
        self._since = self._gap

    # The patterns follow from the parameters: a snapshot (taken after every frame) leaves
    # them out, a third of its arrays, and a restored body rebuilds them.
    def __getstate__(self) -> dict:
        s = self.__dict__.copy()
        del s["_patterns"]
        return s

    def __setstate__(self, s: dict) -> None:
        self.__dict__.update(s)
        self._patterns = _patterns(self.p)

    def update(self, n: int, yaw: float, roll: float, stress: float,
               u_side: float, u_amp: float) -> tuple[np.ndarray, np.ndarray]:
        """Frame ``n`` -> (B x 3 deltas, curl per hand 0..1)."""
        p = self.p
        self._yaw += self._lag * (yaw - self._yaw)
        self._roll += self._lag * (roll - self._roll)
        self._since += 1
        self._gesture_env *= self._keep
        if stress >= p.gesture_min_stress and self._since >= self._gap:
            self._since = 0
            amp = stress * (0.6 + 0.4 * u_amp)
            sides = (1,) if u_side < 0.4 else (0,) if u_side < 0.8 else (0, 1)
            for s in sides:
                self._gesture_env[s] = max(self._gesture_env[s], amp)
        self.gesture += self._attack * (self._gesture_env - self.gesture)

        breath = 0.5 * (1.0 - math.cos(self._breath_omega * n + self._breath_phase))
        pat = self._patterns
        delta = (breath * pat["breath"] + self._yaw * pat["yaw"]
                 + (p.sway_roll * self._roll) * pat["tilt"]
                 + self.gesture[0] * pat["left"] + self.gesture[1] * pat["right"])
        return delta, p.finger_curl * self.gesture
