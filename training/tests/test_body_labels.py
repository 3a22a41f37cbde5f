"""Body and hand labels and the cut check, on observations whose truth is known."""

from __future__ import annotations

import cv2
import numpy as np
import skimage.data

from avatarflow.contracts import motion as mo
from avatarflow_training.dataset.body import BodyObservation, body_labels
from avatarflow_training.dataset.clip import _Cuts


def _seen(shift_x: float, width_px: float = 200.0, hands: bool = True) -> BodyObservation:
    """The canonical body drawn at ``width_px`` shoulder width, centred at (320 + shift, 240)."""
    body = mo.BODY_CANONICAL.astype(np.float64) * width_px + [320.0 + shift_x, 240.0, 0.0]
    hand = np.full((2, 21, 3), np.nan)
    if hands:
        wrists = body[[mo.BODY["wrist_l"], mo.BODY["wrist_r"]]]
        hand = mo.HAND_REST.astype(np.float64) * width_px + wrists[:, None]
    return BodyObservation(body, np.ones(mo.B), hand)


def test_a_sway_shows_in_shoulder_widths_relative_to_the_clip() -> None:
    sway = 20.0 * np.sin(np.arange(30) / 3.0)  # pixels, shoulder width 200
    labels = body_labels([_seen(s) for s in sway])
    assert labels.present.all() and labels.body_visible.all()
    centre = sway - np.median(sway)
    expected = mo.BODY_CANONICAL[None] + np.stack([centre / 200.0, 0 * centre, 0 * centre],
                                                  axis=1)[:, None]
    np.testing.assert_allclose(labels.body, expected, atol=1e-5)
    wrists = labels.body[:, [mo.BODY["wrist_l"], mo.BODY["wrist_r"]]]
    np.testing.assert_allclose(labels.hands, mo.HAND_REST[None] + wrists[:, :, None], atol=1e-5)


def test_missing_shoulders_or_hands_are_marked_not_invented() -> None:
    hidden = _seen(0.0)
    hidden.visibility[[mo.BODY["shoulder_l"], mo.BODY["shoulder_r"]]] = 0.1
    labels = body_labels([_seen(0.0), hidden, None, _seen(0.0, hands=False)])
    assert labels.present.tolist() == [True, False, False, True]
    assert np.isnan(labels.body[1]).all() and np.isnan(labels.body[2]).all()
    assert labels.hands_present.tolist() == [[True, True], [False, False], [False, False],
                                             [False, False]]
    assert np.isnan(labels.hands[3]).all()
    assert not body_labels([None]).present.any()


def test_a_new_shot_is_found_by_the_picture_or_by_the_face_jumping() -> None:
    a = cv2.resize(skimage.data.astronaut(), (64, 64), interpolation=cv2.INTER_AREA)
    b = cv2.resize(skimage.data.chelsea(), (64, 64), interpolation=cv2.INTER_AREA)
    face = mo.HEAD_TEMPLATE.astype(np.float64) * 10 + 32
    cuts = _Cuts()
    assert not cuts.starts_shot(a, face)
    assert not cuts.starts_shot(np.clip(a.astype(int) + 8, 0, 255).astype(np.uint8),
                                face + 2.0)  # a little brighter, a small head move
    assert cuts.starts_shot(b, face)  # another picture
    cuts = _Cuts()
    cuts.starts_shot(a, face)
    assert cuts.starts_shot(a, face + 40.0)  # the same picture, the face elsewhere: a cut
