"""The motion-gen stage run through the test harness, as the runner would drive it."""

from __future__ import annotations

import numpy as np
import pytest
from motion_gen_synth import FPS, LAYOUT, speech

from avatarflow.contracts import messages as m
from avatarflow.contracts.controls import Controls
from avatarflow.contracts.errors import InvalidInput
from avatarflow.contracts.motion import EXPR
from avatarflow.dev.testing import of_type, run_test
from avatarflow_motion_gen import build_stage
from avatarflow_motion_gen.engines import create
from avatarflow_motion_gen.stage import MotionGenStage

SID = "s1"


def features(frames: np.ndarray, first: int = 0, sid: str = SID) -> list[m.AudioFeatures]:
    return [m.AudioFeatures(session_id=sid, index=first + i, pts=(first + i) / FPS,
                            traceparent=f"00-{first + i:032x}-{i:016x}-01",
                            deadline=1000.0 + i, features=f, layout=LAYOUT)
            for i, f in enumerate(frames)]


def start(sid: str = SID, **controls) -> m.SessionStart:
    return m.SessionStart(session_id=sid, fps=FPS, controls=Controls(**controls))


def test_one_motion_frame_per_feature_frame_with_its_index() -> None:
    feats = features(speech(4.0, seed=1).features, first=37)
    out = run_test(build_stage(), [start(), *feats, m.EndOfAudio(session_id=SID, index=157)])
    assert isinstance(out[0], m.SessionStart) and isinstance(out[-1], m.EndOfAudio)
    frames = of_type(out, m.MotionFrame)
    assert [f.index for f in frames] == [f.index for f in feats]
    assert [f.pts for f in frames] == [f.pts for f in feats]
    assert [f.traceparent for f in frames] == [f.traceparent for f in feats]
    assert [f.deadline for f in frames] == [f.deadline for f in feats]
    assert all(f.session_id == SID for f in frames)


def test_stage_motion_equals_engine_motion() -> None:
    frames = speech(3.0, seed=2).features
    out = of_type(run_test(MotionGenStage(), [start(seed=5), *features(frames)]), m.MotionFrame)
    direct = create("signal").open_session(FPS, Controls(seed=5), LAYOUT).push(list(frames))
    for got, want in zip(out, direct, strict=True):
        for name in ("rotation", "expression", "head_template", "body", "hands"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
        assert got.scale == want.scale


def test_unknown_session_is_not_found() -> None:
    frames = speech(1.0, seed=3).features
    out = run_test(build_stage(), features(frames[:2], sid="ghost"))
    assert all(isinstance(o, m.SessionError) for o in out)
    assert out[0].category == "not_found" and out[0].stage == "motion-gen"
    assert "ghost" in out[0].message


def test_end_of_audio_drops_the_session() -> None:
    frames = speech(1.0, seed=4).features
    out = run_test(build_stage(), [start(), *features(frames[:3]), m.EndOfAudio(session_id=SID),
                                   *features(frames[3:4], first=3)])
    assert len(of_type(out, m.MotionFrame)) == 3
    assert isinstance(out[-1], m.SessionError) and out[-1].category == "not_found"


def test_controls_and_interrupts_apply_and_pass_on() -> None:
    frames = speech(6.0, seed=5).features
    update = m.ControlUpdate(session_id=SID, controls=Controls(expression_intensity=0.0))
    interrupt = m.Interrupt(session_id=SID)
    out = run_test(build_stage(), [start(), *features(frames[:90]), interrupt, update,
                                   *features(frames[90:], first=90)])
    assert interrupt in out and update in out
    assert out.index(interrupt) == 91 and out.index(update) == 92  # passed on in place
    jaw = np.array([f.expression[EXPR["jaw_open"]] for f in of_type(out, m.MotionFrame)])
    assert jaw[:90].max() > 0.5
    assert np.all(jaw[-40:] == 0.0)  # intensity eased to zero


def test_controls_before_the_first_features_are_used() -> None:
    frames = speech(2.0, seed=6).features
    update = m.ControlUpdate(session_id=SID, controls=Controls(pose_amplitude=0.0))
    out = of_type(run_test(build_stage(), [start(), update, *features(frames)]), m.MotionFrame)
    assert all(np.all(f.rotation == 0.0) for f in out)


def test_bad_features_are_invalid_input() -> None:
    bad = m.AudioFeatures(session_id=SID, features=np.zeros(41, np.float32), layout="mel40+zcr")
    out = run_test(build_stage(), [start(), bad])
    assert isinstance(out[-1], m.SessionError) and out[-1].category == "invalid_argument"
    good = features(speech(1.0, seed=7).features[:2])
    short = m.AudioFeatures(session_id=SID, index=2, features=np.zeros(10, np.float32))
    out = run_test(build_stage(), [start(), *good, short, *features([good[0].features], 3)])
    assert isinstance(out[3], m.SessionError) and out[3].category == "invalid_argument"
    assert isinstance(out[4], m.MotionFrame) and out[4].index == 3  # the session goes on


def test_unknown_engine_names_the_choices() -> None:
    with pytest.raises(InvalidInput, match="signal"):
        build_stage("nope")
    assert build_stage().name == "motion-gen"
