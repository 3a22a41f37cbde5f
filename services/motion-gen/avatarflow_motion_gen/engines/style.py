"""Speaking style of the signal engine: a reference clip's statistics reshape its expressions.

Per coefficient the reference's spread over the engine's typical spread in speech scales the
audio-driven motion (a reference with a wide jaw range opens the mouth wider, one that barely
moves its jaw keeps it small), and the reference's mean level, less the scaled typical level,
shifts the coefficients that may rest away from zero (a reference that smiles yields a smile).
The jaw and the mouth rounding are only scaled, never shifted, so silence still closes the
mouth; blinks keep the engine's own timing. Only two E vectors are kept per session.
"""

from __future__ import annotations

import numpy as np

from avatarflow.contracts.errors import InvalidInput
from avatarflow.contracts.motion import EXPRESSIONS

from .params import SignalParams

E = len(EXPRESSIONS)
_SCALED = np.array([n in ("jaw_open", "mouth_wide", "mouth_round", "brow_raise")
                    for n in EXPRESSIONS])
_SHIFTED = np.array([n in ("mouth_wide", "smile", "brow_raise", "brow_frown")
                     for n in EXPRESSIONS])


def style_transform(p: SignalParams, expressions: np.ndarray | None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(gain E, offset E) so that ``gain * e + offset`` speaks like ``expressions`` (T x E);
    None gives the identity."""
    gain, offset = np.ones(E), np.zeros(E)
    if expressions is None:
        return gain, offset
    x = np.asarray(expressions, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != E or len(x) == 0 or not np.isfinite(x).all():
        raise InvalidInput(f"reference expressions must be finite T x {E}, got shape {x.shape}")
    mean, spread = np.asarray(p.style_mean), np.asarray(p.style_spread)
    lo, hi = p.style_gain_range
    ratio = x.std(axis=0) / np.maximum(spread, 1e-6)
    gain[_SCALED] = np.clip(ratio, lo, hi)[_SCALED]
    shift = np.clip(x.mean(axis=0) - gain * mean, -p.style_max_offset, p.style_max_offset)
    offset[_SHIFTED] = shift[_SHIFTED]
    return gain, offset
