"""The refiner stage: late frames pass unrefined, sessions continue on another replica."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
import skimage.data
from PIL import Image
from test_refine_blend import DEADLINE, motion

from avatarflow.avatars.store import AvatarStore
from avatarflow.contracts import messages as m
from avatarflow.contracts.picture import Picture
from avatarflow.dev.testing import DictBacking, of_type, run_test
from avatarflow_refiner import build_stage
from avatarflow_renderer import build_stage as build_renderer


@pytest.fixture(scope="module")
def session():
    """A backing holding the analysed astronaut, a SessionStart and six body passes."""
    backing = DictBacking()
    renderer = build_renderer(store=AvatarStore(backing=backing))
    buf = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()).save(buf, format="PNG")
    start = m.SessionStart(session_id="s", avatar_id="astro", image=buf.getvalue())
    frames = [motion(jaw=0.15 * i, yaw=0.02 * i, index=i) for i in range(6)]
    out = run_test(renderer, [start, *frames])
    renderer.close()
    yield backing, start, of_type(out, m.RenderedFrame)


def _late(frame: m.RenderedFrame, deadline: float) -> m.RenderedFrame:
    jpeg_only = Picture(jpeg=frame.image.jpeg(), width=frame.image.width,
                        height=frame.image.height)
    return m.RenderedFrame(session_id=frame.session_id, index=frame.index, pts=frame.pts,
                           deadline=deadline, image=jpeg_only, motion=frame.motion)


@pytest.mark.parametrize("margin, late_by", [(0.010, 1.0), (0.010, -0.005), (0.5, -0.2)])
def test_late_frame_passes_the_body_pass_on_unrefined(session, margin, late_by):
    backing, start, rendered = session
    refiner = build_stage(store=AvatarStore(backing=backing), refine_margin_s=margin)
    late = _late(rendered[2], time.time() - late_by)
    out = run_test(refiner, [start, late])
    (f,) = of_type(out, m.FinalFrame)
    assert not f.refined and refiner.degraded == 1
    assert f.image is late.image and repr(f.image).endswith(", jpeg)")  # never decoded
    assert (f.index, f.pts, f.deadline) == (late.index, late.pts, late.deadline)


@pytest.mark.parametrize("deadline", [0.0, DEADLINE])
def test_frame_in_time_or_without_deadline_is_refined(session, deadline):
    backing, start, rendered = session
    refiner = build_stage(store=AvatarStore(backing=backing))
    (f,) = of_type(run_test(refiner, [start, _late(rendered[2], deadline)]), m.FinalFrame)
    assert f.refined and refiner.degraded == 0
    assert not np.array_equal(f.image.rgb(), rendered[2].image.rgb())


def test_late_frame_of_an_unknown_session_is_still_not_found(session):
    _, _, rendered = session
    refiner = build_stage(store=AvatarStore())
    (err,) = run_test(refiner, [_late(rendered[0], 1.0)])
    assert isinstance(err, m.SessionError) and err.category == "not_found"


def test_runner_may_drop_frames_already_late_for_renderer_and_refiner():
    refiner, renderer = build_stage(), build_renderer()
    assert refiner.drops_late and renderer.drops_late
    refiner.close()
    renderer.close()


def test_restored_session_refines_the_same_frames(session):
    backing, start, rendered = session
    msgs = [start, *rendered, m.EndOfAudio(session_id="s", index=6)]
    first = build_stage(store=AvatarStore(backing=backing))
    whole = run_test(first, msgs)
    k = 4
    out = run_test(first, msgs[:k])
    data = first.snapshot("s")
    assert data is not None and len(data) < 1000
    fresh = build_stage(store=AvatarStore(backing=backing))  # another replica
    fresh.restore("s", data)
    out += run_test(fresh, msgs[k:])
    want, got = of_type(whole, m.FinalFrame), of_type(out, m.FinalFrame)
    assert [f.index for f in got] == [f.index for f in want] == list(range(6))
    assert all(f.refined for f in got)
    assert all(np.array_equal(a.image.rgb(), b.image.rgb()) for a, b in zip(got, want,
                                                                             strict=True))


def test_a_shed_frame_goes_on_unrefined_and_undecoded(session):
    """Load shedding (the runner is behind on this session): the refiner does not drop the
    frame, it forwards the body pass as it came."""
    backing, start, rendered = session
    refiner = build_stage(store=AvatarStore(backing=backing))
    run_test(refiner, [start])
    frame = _late(rendered[3], DEADLINE)
    (f,) = refiner.shed(frame)
    assert isinstance(f, m.FinalFrame) and not f.refined and refiner.degraded == 1
    assert f.image is frame.image and repr(f.image).endswith(", jpeg)")
    assert (f.index, f.pts, f.deadline) == (frame.index, frame.pts, frame.deadline)
