"""The warp renderer on the astronaut portrait, judged the way a viewer would: by what
mediapipe's face mesh sees on the rendered frames."""

from __future__ import annotations

import time

import cv2
import mediapipe as mp
import numpy as np
import pytest
import skimage.data
from skimage.metrics import structural_similarity

from avatarflow.avatars.warp import WarpPlan
from avatarflow.contracts import motion as mo
from avatarflow.contracts.errors import InvalidInput
from avatarflow.contracts.messages import MotionFrame
from avatarflow_renderer.analysis import analyse
from avatarflow_renderer.engines import create


def motion(expr: dict[str, float] | None = None, rotation=(0.0, 0.0, 0.0),
           body: np.ndarray | None = None) -> MotionFrame:
    e = np.zeros(len(mo.EXPRESSIONS), np.float32)
    for name, v in (expr or {}).items():
        e[mo.EXPR[name]] = v
    wrists = mo.BODY_CANONICAL[[mo.BODY["wrist_l"], mo.BODY["wrist_r"]]]
    return MotionFrame(
        session_id="s", rotation=np.array(rotation, np.float32),
        translation=np.zeros(3, np.float32), scale=1.0, expression=e,
        head_template=mo.head_template(e), head_offset=np.zeros((mo.K, 3), np.float32),
        body=mo.BODY_CANONICAL.copy() if body is None else body.astype(np.float32),
        hands=(mo.HAND_REST + wrists[:, None]).astype(np.float32))


@pytest.fixture(scope="module")
def engine():
    eng = create("warp")
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def avatar(engine):
    return analyse(skimage.data.astronaut(), "astronaut", "upper-body", 512, 768)


@pytest.fixture(scope="module")
def mesh():
    fm = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=False)
    yield fm
    fm.close()


def landmarks(mesh, img: np.ndarray) -> np.ndarray:
    res = mesh.process(img)
    assert res.multi_face_landmarks, "face mesh lost the face on a rendered frame"
    h, w = img.shape[:2]
    return np.array([(p.x * w, p.y * h) for p in res.multi_face_landmarks[0].landmark])


def gaps(mesh, img: np.ndarray) -> tuple[float, float]:
    """(inner-lip gap 13-14, mean eyelid gap 159-145 / 386-374) over the eye-corner span."""
    p = landmarks(mesh, img)
    norm = np.linalg.norm(p[33] - p[263])
    eye = (np.linalg.norm(p[159] - p[145]) + np.linalg.norm(p[386] - p[374])) / 2
    return float(np.linalg.norm(p[13] - p[14]) / norm), float(eye / norm)


def face_crop(engine, avatar, img: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = engine.plans.get(avatar).box
    return cv2.cvtColor(img[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY)


def test_canvas_sizes_per_mode(engine, avatar):
    assert avatar.canvas.shape == (768, 512, 3)
    assert engine.render(avatar, motion()).shape == (768, 512, 3)
    head = analyse(skimage.data.astronaut(), "head", "head", 512, 512)
    out = engine.render(head, motion({"jaw_open": 0.5}))
    assert out.shape == (512, 512, 3) and out.dtype == np.uint8
    # Head framing is tighter: the eyes are farther apart on the same canvas width.
    assert np.hypot(*head.face_axes[:, 0]) > 1.5 * np.hypot(*avatar.face_axes[:, 0])


def test_rest_keeps_identity_and_closes_the_smile(engine, avatar, mesh):
    rest = engine.render(avatar, motion())
    ssim = structural_similarity(face_crop(engine, avatar, rest),
                                 face_crop(engine, avatar, avatar.canvas))
    assert ssim >= 0.95
    open_canvas, _ = gaps(mesh, avatar.canvas)  # the portrait smiles with teeth
    closed, _ = gaps(mesh, rest)
    assert closed < 0.09 and closed < 0.7 * open_canvas


def test_jaw_open_opens_the_mouth_in_proportion(engine, avatar, mesh):
    g = [gaps(mesh, engine.render(avatar, motion({"jaw_open": j})))[0] for j in (0, 0.4, 0.8)]
    print("mouth opening at jaw 0 / 0.4 / 0.8:", [round(x, 3) for x in g])
    assert g[2] > 0.15
    assert g[0] < g[1] < g[2]
    assert g[2] > 2 * g[0]


def test_blink_closes_the_eyes(engine, avatar, mesh):
    _, open_eyes = gaps(mesh, engine.render(avatar, motion()))
    _, closed = gaps(mesh, engine.render(avatar, motion({"blink_left": 1, "blink_right": 1})))
    print("eyelid gap open / blink:", round(open_eyes, 3), round(closed, 3))
    assert closed < 0.8 * open_eyes


@pytest.mark.parametrize("rotation", [(0.0, 0.25, 0.0), (0.2, 0.0, 0.0)])
def test_head_pose_moves_the_face_the_way_the_keypoints_go(engine, avatar, mesh, rotation):
    m = motion(rotation=rotation)
    d = mo.head_keypoints(m.head_template, m.head_offset, m.rotation, m.translation, 1.0)
    expected = ((d - mo.HEAD_TEMPLATE) @ avatar.face_axes.T)[mo.HEAD["nose_tip"]]
    before = landmarks(mesh, engine.render(avatar, motion()))[1]
    after = landmarks(mesh, engine.render(avatar, m))[1]
    moved = after - before
    assert np.dot(moved, expected) > 0.5 * np.dot(expected, expected)


def test_body_motion_moves_the_shoulders_and_not_the_background(engine, avatar):
    assert avatar.body_visible[[mo.BODY["shoulder_r"], mo.BODY["shoulder_l"]]].all()
    body = mo.BODY_CANONICAL.copy()
    body[[mo.BODY["shoulder_r"], mo.BODY["shoulder_l"]], 1] += 0.06  # shrug down
    out = engine.render(avatar, motion(body=body))
    rest = engine.render(avatar, motion())
    shift = 0.06 * avatar.body_scale
    x, y = avatar.body_points[mo.BODY["shoulder_l"]].astype(int)
    patch = rest[y - 24: y + 24, x - 24: x + 24].astype(np.float32)
    scores = [np.abs(out[y - 24 + dy: y + 24 + dy, x - 24: x + 24] - patch).mean()
              for dy in range(0, int(shift * 1.5))]
    assert abs(int(np.argmin(scores)) - shift) < 0.4 * shift
    bg = avatar.person_mask < 0.01
    bg &= cv2.erode(bg.astype(np.uint8), np.ones((31, 31), np.uint8)).astype(bool)
    assert bg.sum() > 1000
    assert np.abs(out.astype(int) - rest.astype(int))[bg].max() <= 2


def test_no_face_is_invalid_input(engine):
    with pytest.raises(InvalidInput, match="no face"):
        analyse(skimage.data.coffee(), "coffee", "upper-body", 512, 768)
    ramp = np.tile(np.linspace(0, 255, 300, dtype=np.uint8)[None, :, None], (300, 1, 3))
    with pytest.raises(InvalidInput, match="no face"):
        analyse(ramp, "ramp", "head", 512, 512)


def test_render_speed_smoke(engine, avatar):
    """Prints the median; speed is asserted by benchmarks, not tests."""
    plan = engine.plans.get(avatar)
    assert isinstance(plan, WarpPlan)
    frames = [motion({"jaw_open": 0.4 + 0.4 * np.sin(i / 3), "blink_left": float(i % 25 == 0)},
                     rotation=(0.05 * np.sin(i / 7), 0.1 * np.sin(i / 5), 0.0))
              for i in range(120)]
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        times = []
        for i, m in enumerate(frames):
            t = time.perf_counter()
            engine.render(avatar, m)
            if i >= 20:
                times.append(time.perf_counter() - t)
    finally:
        cv2.setNumThreads(threads)
    print(f"warp render 512x768: median {np.median(times) * 1e3:.2f} ms/frame")
