"""A clip's labels -> the diffusion network's training examples, laid out as a session lays out
its inputs (``avatarflow_motion_gen.engines.diffusion.session``).

A window starting at frame ``f`` is, with H history, N window and L look-ahead frames:

- ``motion``: N x M targets (the E expression coefficients, rotation in radians, translation
  in template units) of frames ``f .. f+N-1``, what the face DiT's x0 is;
- ``history`` / ``history_valid``: H x M, frames ``f-H .. f-1`` (invalid before the clip);
- ``audio`` / ``audio_valid``: (H + N + L) x D features of frames ``f-H .. f+N+L-1``
  (invalid outside the clip), the same span the session gives the DiT;
- for the body network, over the H + N frames ``f-H .. f+N-1``: ``keypoints`` (the posed head
  without offsets minus the neutral template, as the session's ``_posed``), and its targets:
  head ``offsets`` (K x 3), ``body`` displacements from the canonical pose (B x 3) and ``hands``
  coefficients (2 x C, ``hand_coefficients``), each with a mask of what is labelled (the
  frames with a face; each body keypoint mediapipe saw; each hand found);
- ``style``: the clip's (expression range, pose range) over the data set's mean ranges, the
  coarse style the DiT is conditioned on (1 = typical), ``clip_ranges``.

A window needs labelled face motion on all its N frames; history and audio frames outside the
clip (or without a face, for history) are marked invalid, as a session marks what it has not
seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avatarflow.contracts.motion import (
    BODY_CANONICAL,
    EXPRESSIONS,
    HAND_REST,
    HEAD_TEMPLATE,
    K,
    head_keypoints,
    head_template,
)
from avatarflow_motion_gen.engines.body import WRISTS
from avatarflow_motion_gen.models import HAND_BASIS

E = len(EXPRESSIONS)
M = E + 6  # motion values per frame, as the diffusion config's M


@dataclass
class Window:
    motion: np.ndarray  # N x M float32
    history: np.ndarray  # H x M float32
    history_valid: np.ndarray  # H bool
    audio: np.ndarray  # (H + N + L) x D float32
    audio_valid: np.ndarray  # (H + N + L) bool
    keypoints: np.ndarray  # (H + N) x K*3 float32
    offsets: np.ndarray  # (H + N) x K x 3 float32
    body: np.ndarray  # (H + N) x B x 3 float32
    hands: np.ndarray  # (H + N) x 2 x C float32
    face_mask: np.ndarray  # (H + N) bool: offsets and keypoints labelled
    body_mask: np.ndarray  # (H + N) x B bool: the keypoint was seen
    hands_mask: np.ndarray  # (H + N) x 2 bool
    style: np.ndarray  # 2 float32


def motion_vectors(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """T x M: expression, rotation, translation (NaN where no face)."""
    return np.concatenate([arrays["expression"], arrays["rotation"], arrays["translation"]],
                          axis=1).astype(np.float32)


def posed(motion: np.ndarray) -> np.ndarray:
    """S x M motion -> S x K*3 posed head keypoints (no offsets, scale 1) minus the template."""
    zero = np.zeros((K, 3), dtype=np.float32)
    return np.stack([(head_keypoints(head_template(m[:E]), zero, m[E:E + 3], m[E + 3:], 1.0)
                      - HEAD_TEMPLATE).reshape(-1) for m in motion]).astype(np.float32)


def hand_coefficients(hands: np.ndarray, wrists: np.ndarray, count: int) -> np.ndarray:
    """The inverse of ``models.hand_keypoints``: 2 x 21 x 3 joints at 2 x 3 wrists -> 2 x
    ``count`` coefficients, least squares onto the first ``count`` basis components."""
    out = np.zeros((2, count), dtype=np.float32)
    for h in range(2):
        shape = hands[h] - wrists[h] - HAND_REST[h]
        basis = HAND_BASIS[h, :count].reshape(count, -1).T.astype(np.float64)
        out[h] = np.linalg.lstsq(basis, shape.reshape(-1).astype(np.float64), rcond=None)[0]
    return out


def clip_ranges(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """(expression range, pose range) of a clip: the mean over the expression coefficients,
    and over the three rotation angles, of their standard deviation in the clip."""
    m = motion_vectors(arrays)
    m = m[~np.isnan(m).any(axis=1)]
    if len(m) < 2:
        return np.zeros(2, np.float32)
    return np.array([m[:, :E].std(axis=0).mean(), m[:, E:E + 3].std(axis=0).mean()],
                    dtype=np.float32)


def window(arrays: dict[str, np.ndarray], start: int, *, history: int, size: int,
           lookahead: int, hand_coeffs: int, style: np.ndarray) -> Window | None:
    """The training example starting at frame ``start``; None unless its N frames all have
    face labels."""
    t = len(arrays["audio"])
    h, n, la = history, size, lookahead
    if start < 0 or start + n > t:
        return None
    motion_all = motion_vectors(arrays)
    face = arrays["face_present"].astype(bool)
    if not face[start:start + n].all():
        return None

    def span(a: np.ndarray, lo: int, hi: int, fill: float = 0.0) -> tuple[np.ndarray,
                                                                         np.ndarray]:
        out = np.full((hi - lo, *a.shape[1:]), fill, dtype=a.dtype)
        valid = np.zeros(hi - lo, dtype=bool)
        a0, a1 = max(lo, 0), min(hi, len(a))
        if a1 > a0:
            out[a0 - lo:a1 - lo], valid[a0 - lo:a1 - lo] = a[a0:a1], True
        return out, valid

    audio, audio_valid = span(arrays["audio"], start - h, start + n + la)
    hist, hist_in = span(np.nan_to_num(motion_all), start - h, start)
    hist_face, _ = span(face, start - h, start)
    motion_span, in_clip = span(np.nan_to_num(motion_all), start - h, start + n)
    face_mask = in_clip & span(face, start - h, start + n)[0]
    offsets, _ = span(np.nan_to_num(arrays["head_offset"]), start - h, start + n)
    body_raw, _ = span(np.nan_to_num(arrays["body"]), start - h, start + n)
    body_frames = in_clip & span(arrays["body_present"].astype(bool), start - h, start + n)[0]
    body_mask = span(arrays["body_visible"].astype(bool), start - h, start + n)[0]
    body_mask &= body_frames[:, None]
    hands_raw, _ = span(np.nan_to_num(arrays["hands"]), start - h, start + n)
    hands_mask = span(arrays["hands_present"].astype(bool), start - h, start + n)[0]
    hands_mask &= body_frames[:, None]
    coeffs = np.zeros((h + n, 2, hand_coeffs), dtype=np.float32)
    for i in np.flatnonzero(hands_mask.any(axis=1)):
        coeffs[i] = hand_coefficients(hands_raw[i], body_raw[i][list(WRISTS)], hand_coeffs)
    return Window(
        motion=motion_all[start:start + n], history=hist, history_valid=hist_in & hist_face,
        audio=audio, audio_valid=audio_valid, keypoints=posed(motion_span) * face_mask[:, None],
        offsets=offsets, body=(body_raw - BODY_CANONICAL) * body_mask[:, :, None],
        hands=coeffs, face_mask=face_mask, body_mask=body_mask, hands_mask=hands_mask,
        style=style.astype(np.float32))
