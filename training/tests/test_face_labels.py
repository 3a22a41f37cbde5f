"""Face labels from the pixels: a clip the warp renderer made with known head motion and
mouth, tracked with mediapipe, gives back that motion (relative to the clip's own pose)."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
from train_samples import posed_frame

from avatarflow.contracts import motion as mo
from avatarflow_training.dataset.face import face_labels, mean_rotation, similarity
from avatarflow_training.dataset.tracking import FaceTracker

FRAMES = 48


@pytest.fixture(scope="module")
def clip() -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Frames of the astronaut nodding, turning and speaking; the rotations and expressions."""
    from avatarflow_renderer.analysis import analyse
    from avatarflow_renderer.engines import create

    t = np.arange(FRAMES)
    rotation = np.zeros((FRAMES, 3), np.float32)
    rotation[:, 0] = 0.12 * np.sin(2 * np.pi * t / 17.0)  # pitch
    rotation[:, 1] = 0.25 * np.sin(2 * np.pi * t / 23.0 + 0.5)  # yaw
    expression = np.zeros((FRAMES, len(mo.EXPRESSIONS)), np.float32)
    expression[:, mo.EXPR["jaw_open"]] = 0.35 + 0.35 * np.sin(2 * np.pi * t / 7.0)
    engine = create("warp")
    try:
        avatar = analyse(skimage.data.astronaut(), "astronaut", "head", 256, 256)
        frames = [engine.render(avatar, posed_frame(r, e)) for r, e in zip(rotation, expression,
                                                                      strict=True)]
    finally:
        engine.close()
    return frames, rotation, expression


def test_the_pose_fit_inverts_a_known_similarity() -> None:
    rot = mo.euler_to_matrix(np.array([0.1, -0.3, 0.05])).astype(np.float64)
    kp = 42.0 * mo.HEAD_TEMPLATE.astype(np.float64) @ rot.T + np.array([100.0, 80.0, 5.0])
    a, r, b = similarity(kp)
    assert a == pytest.approx(42.0) and np.allclose(r, rot, atol=1e-6)
    assert np.allclose(b, [100.0, 80.0, 5.0], atol=1e-6)
    assert np.allclose(mean_rotation(np.stack([rot, rot])), rot, atol=1e-9)


def test_labels_follow_the_rendered_head_and_mouth(clip) -> None:
    frames, rotation, expression = clip
    with FaceTracker() as tracker:
        labels = face_labels([tracker.track(f) for f in frames])
    assert labels.present.all()
    for axis, name in ((0, "pitch"), (1, "yaw")):
        r = np.corrcoef(labels.rotation[:, axis], rotation[:, axis])[0, 1]
        assert r > 0.9, (name, r)
    jaw = mo.EXPR["jaw_open"]
    assert np.corrcoef(labels.expression[:, jaw], expression[:, jaw])[0, 1] > 0.8
    # relative to the clip: about the portrait's scale, the offsets small beside the face
    assert np.all(np.abs(labels.scale - 1.0) < 0.15)
    assert np.nanmedian(np.abs(labels.head_offset)) < 0.1


def test_frames_without_a_face_are_marked_and_kept_in_place(clip) -> None:
    frames = clip[0][:12]
    blank = np.zeros_like(frames[0])
    with FaceTracker() as tracker:
        labels = face_labels([tracker.track(f) for f in [*frames[:6], blank, *frames[6:]]])
    assert labels.present.tolist() == [True] * 6 + [False] + [True] * 6
    assert np.isnan(labels.rotation[6]).all() and not np.isnan(labels.rotation[7]).any()
    assert face_labels([None, None]).present.tolist() == [False, False]
