"""Training examples cut from a clip's labels: the frames, spans and masks a diffusion session
gives the network, and targets in the network's units."""

from __future__ import annotations

import numpy as np
import pytest

from avatarflow.contracts import motion as mo
from avatarflow_motion_gen.engines.body import WRISTS
from avatarflow_motion_gen.models import hand_keypoints
from avatarflow_training.train.windows import (
    E,
    M,
    clip_ranges,
    hand_coefficients,
    motion_vectors,
    posed,
    window,
)

T, D = 40, 5


def _clip(seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Labels of T frames whose values say their frame; the hand coefficients used."""
    rng = np.random.default_rng(seed)
    f = np.arange(T, dtype=np.float32)
    body = np.repeat(mo.BODY_CANONICAL[None], T, axis=0) + rng.normal(0, 0.02, (T, mo.B, 3))
    coeffs = rng.uniform(-1, 1, (T, 2, 6)).astype(np.float32)
    hands = np.stack([hand_keypoints(b[list(WRISTS)], c) for b, c in zip(body, coeffs,
                                                                         strict=True)])
    arrays = {
        "audio": np.repeat(f[:, None], D, axis=1), "face_present": np.ones(T, bool),
        "expression": rng.uniform(0, 0.5, (T, E)).astype(np.float32),
        "rotation": rng.normal(0, 0.1, (T, 3)).astype(np.float32),
        "translation": rng.normal(0, 0.02, (T, 3)).astype(np.float32),
        "scale": np.ones(T, np.float32),
        "head_offset": rng.normal(0, 0.01, (T, mo.K, 3)).astype(np.float32),
        "body_present": np.ones(T, bool), "body": body.astype(np.float32),
        "body_visible": np.ones((T, mo.B), bool), "hands": hands,
        "hands_present": np.ones((T, 2), bool)}
    return arrays, coeffs


def test_hand_coefficients_invert_the_hand_basis() -> None:
    _, coeffs = _clip()
    wrists = mo.BODY_CANONICAL[list(WRISTS)]
    for c in (6, 3):
        hands = hand_keypoints(wrists, coeffs[0][:, :c])
        np.testing.assert_allclose(hand_coefficients(hands, wrists, c), coeffs[0][:, :c],
                                   atol=1e-4)


def test_posed_keypoints_are_what_a_session_gives_the_body_network() -> None:
    pytest.importorskip("torch")
    from avatarflow_motion_gen.engines.diffusion.session import _posed

    arrays, _ = _clip()
    m = motion_vectors(arrays)
    assert m.shape == (T, M)
    np.testing.assert_array_equal(posed(m), _posed(m))


def test_a_window_holds_the_spans_a_session_would() -> None:
    arrays, coeffs = _clip()
    h, n, la = 8, 8, 2
    w = window(arrays, 3, history=h, size=n, lookahead=la, hand_coeffs=6,
               style=np.array([1.0, 0.5]))
    assert w is not None
    np.testing.assert_array_equal(w.motion, motion_vectors(arrays)[3:11])
    # audio of frames -5 .. 12: the five before the clip invalid
    assert w.audio_valid.tolist() == [False] * 5 + [True] * 13
    np.testing.assert_array_equal(w.audio[5:, 0], np.arange(0, 13))
    assert w.history_valid.tolist() == [False] * 5 + [True] * 3
    np.testing.assert_array_equal(w.history[5:], motion_vectors(arrays)[0:3])
    assert w.face_mask.tolist() == [False] * 5 + [True] * 11
    np.testing.assert_allclose(w.body[5:], arrays["body"][0:11] - mo.BODY_CANONICAL, atol=1e-6)
    np.testing.assert_allclose(w.hands[5:], coeffs[0:11], atol=1e-4)
    assert not w.hands[:5].any() and not w.hands_mask[:5].any()
    assert w.style.tolist() == [1.0, 0.5]


def test_windows_need_a_face_on_every_frame_they_generate() -> None:
    arrays, _ = _clip()
    arrays["face_present"][20] = False
    for k in ("expression", "rotation", "translation"):
        arrays[k][20] = np.nan
    kw = {"history": 4, "size": 8, "lookahead": 2, "hand_coeffs": 6, "style": np.ones(2)}
    assert window(arrays, 14, **kw) is None and window(arrays, 35, **kw) is None
    w = window(arrays, 21, **kw)
    assert w is not None and w.history_valid.tolist() == [True, True, True, False]
    w = window(arrays, 24, **kw)
    assert w is not None and w.history_valid.tolist() == [False, True, True, True]
    assert np.isfinite(w.history).all() and np.isfinite(w.keypoints).all()


def test_clip_ranges_measure_expression_and_head_motion() -> None:
    arrays, _ = _clip()
    still = {**arrays, "expression": np.zeros((T, E), np.float32),
             "rotation": np.zeros((T, 3), np.float32)}
    assert clip_ranges(still).tolist() == [0.0, 0.0]
    ranges = clip_ranges(arrays)
    assert ranges[0] == pytest.approx(arrays["expression"].std(axis=0).mean(), rel=1e-5)
    assert ranges[1] == pytest.approx(arrays["rotation"].std(axis=0).mean(), rel=1e-5)
