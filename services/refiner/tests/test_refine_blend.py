"""The blend refiner: a sharper face pasted without a seam, and its stage."""

from __future__ import annotations

import copy
import io
import time

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image

from avatarflow.avatars import warp
from avatarflow.avatars.store import AvatarStore, avatar_key
from avatarflow.contracts import messages as m
from avatarflow.contracts import motion as mo
from avatarflow.dev.testing import of_type, run_test
from avatarflow_refiner import build_stage
from avatarflow_refiner.engines import create
from avatarflow_renderer import build_stage as build_renderer

DEADLINE = 4102444800.0  # 2100-01-01: in time, so every frame is refined


def motion(jaw: float = 0.0, yaw: float = 0.0, blink: float = 0.0, index: int = 0,
           session: str = "s") -> m.MotionFrame:
    e = np.zeros(len(mo.EXPRESSIONS), np.float32)
    e[mo.EXPR["jaw_open"]] = jaw
    e[mo.EXPR["blink_left"]] = e[mo.EXPR["blink_right"]] = blink
    wrists = mo.BODY_CANONICAL[[mo.BODY["wrist_l"], mo.BODY["wrist_r"]]]
    return m.MotionFrame(
        session_id=session, index=index, pts=index / 30, traceparent="tp", deadline=DEADLINE,
        rotation=np.array([0.0, yaw, 0.0], np.float32), translation=np.zeros(3, np.float32),
        scale=1.0, expression=e, head_template=mo.head_template(e),
        head_offset=np.zeros((mo.K, 3), np.float32), body=mo.BODY_CANONICAL.copy(),
        hands=(mo.HAND_REST + wrists[:, None]).astype(np.float32))


@pytest.fixture(scope="module")
def shared():
    """Renderer and refiner stages sharing one avatar store, as the embedded pipeline does."""
    store = AvatarStore()
    renderer, refiner = build_renderer(store=store), build_stage(store=store)
    buf = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()).save(buf, format="PNG")
    start = m.SessionStart(session_id="s", avatar_id="astro", image=buf.getvalue())
    run_test(renderer, [start])
    yield renderer, refiner, store.get(avatar_key("astro", "upper-body", 512, 768)), start
    renderer.close()
    refiner.close()


@pytest.fixture(scope="module")
def engine():
    eng = create("blend")
    yield eng
    eng.close()


def sharpness(img: np.ndarray, box) -> float:
    x0, y0, x1, y1 = box
    gray = cv2.cvtColor(img[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


@pytest.mark.parametrize("kw", [{}, {"jaw": 0.8, "yaw": 0.15}, {"blink": 1.0}])
def test_face_is_sharper_and_pasted_without_a_seam(shared, engine, kw):
    renderer, _, avatar, _ = shared
    mf = motion(**kw)
    body = renderer.engine.render(avatar, mf)
    final = engine.refine(avatar, body, mf)
    plan = engine.plans.get(avatar)
    bx0, by0 = plan.warp.box[:2]
    ix0, iy0, ix1, iy1 = plan.inner
    inner = (bx0 + ix0, by0 + iy0, bx0 + ix1, by0 + iy1)
    assert sharpness(final, inner) > 1.2 * sharpness(body, inner)
    diff = np.abs(final.astype(np.int16) - body.astype(np.int16)).max(axis=2)
    outside = np.ones(diff.shape, bool)
    outside[inner[1]: inner[3], inner[0]: inner[2]] = plan.mask[..., 0] < 1e-3
    assert diff[outside].mean() < 0.05
    # Across the feathered edge the refined face fades in: no step between neighbours.
    ring = (plan.mask[..., 0] > 0.05) & (plan.mask[..., 0] < 0.5)
    region = diff[inner[1]: inner[3], inner[0]: inner[2]]
    assert region[ring].mean() < 6


def test_refined_face_keeps_the_body_pass_geometry(shared, engine):
    renderer, _, avatar, _ = shared
    mf = motion(jaw=0.6, yaw=0.1)
    body = renderer.engine.render(avatar, mf)
    final = engine.refine(avatar, body, mf)
    small = [cv2.GaussianBlur(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).astype(np.float32), (0, 0), 2)
             for x in (body, final)]
    plan = engine.plans.get(avatar)
    x0, y0, x1, y1 = plan.warp.box
    assert np.abs(small[0] - small[1])[y0:y1, x0:x1].mean() < 4


def test_stage_turns_rendered_frames_into_final_frames(shared):
    renderer, refiner, _, start = shared
    rendered = run_test(renderer, [start, motion(jaw=0.5, index=4)])
    out = run_test(refiner, rendered + [m.EndOfAudio(session_id="s", index=5)])
    assert isinstance(out[0], m.SessionStart)
    final = of_type(out, m.FinalFrame)
    assert len(final) == 1
    f = final[0]
    assert (f.index, f.pts, f.traceparent, f.deadline) == (4, 4 / 30, "tp", DEADLINE)
    assert f.refined and refiner.degraded == 0
    assert f.image.shape == (768, 512, 3) and f.image.rgb().dtype == np.uint8
    assert not np.array_equal(f.image.rgb(), rendered[1].image.rgb())
    assert isinstance(out[-1], m.EndOfAudio)
    again = of_type(run_test(refiner, rendered[1:]), m.SessionError)
    assert again and again[0].category == "not_found"


def test_stage_without_the_avatar_is_not_found():
    refiner = build_stage(store=AvatarStore())
    out = run_test(refiner, [m.SessionStart(session_id="lost", avatar_id="missing")])
    err = of_type(out, m.SessionError)
    assert err and err[0].category == "not_found" and "missing" in err[0].message


def test_refine_speed_smoke(shared, engine):
    """Prints the median; speed is asserted by benchmarks, not tests."""
    renderer, _, avatar, _ = shared
    frames = [motion(jaw=0.4 + 0.4 * np.sin(i / 3), yaw=0.1 * np.sin(i / 5)) for i in range(80)]
    bodies = [renderer.engine.render(avatar, f) for f in frames]
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        times = []
        for i, (b, f) in enumerate(zip(bodies, frames, strict=True)):
            t = time.perf_counter()
            engine.refine(avatar, b, f)
            if i >= 10:
                times.append(time.perf_counter() - t)
    finally:
        cv2.setNumThreads(threads)
    print(f"blend refine 512x768: median {np.median(times) * 1e3:.2f} ms/frame")


def test_a_refiner_in_the_renderers_process_reuses_the_frames_warp(shared, engine):
    """Embedded or co-located, the refiner gets the very MotionFrame the renderer rendered: it
    reuses that frame's solved warp (controls, field, grids) instead of solving it again, and
    refines to the same pixels as a refiner in a process of its own."""
    renderer, _, avatar, _ = shared
    mf = motion(jaw=0.6, yaw=0.1, index=7)
    body = renderer.engine.render(avatar, mf)
    plan = warp.plans().get(avatar)
    assert engine.plans.get(avatar).warp is plan  # one warp plan per avatar in a process
    solved = plan.solve(mf)  # the renderer's
    reused = engine.refine(avatar, body, mf)
    assert plan.solve(mf) is solved
    alone = engine.refine(avatar, body, copy.copy(mf))  # as decoded off the bus: solved anew
    assert plan.solve(copy.copy(mf)) is not solved
    assert np.array_equal(reused, alone)
