"""The renderer stage, fed messages the way the runner feeds it."""

from __future__ import annotations

import io

import numpy as np
import pytest
import skimage.data
from PIL import Image

from avatarflow.avatars.store import AvatarStore, avatar_key
from avatarflow.contracts import messages as m
from avatarflow.contracts import motion as mo
from avatarflow.dev.testing import of_type, run_test
from avatarflow_renderer import build_stage


def png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def frame(session: str, index: int, jaw: float = 0.0) -> m.MotionFrame:
    e = np.zeros(len(mo.EXPRESSIONS), np.float32)
    e[mo.EXPR["jaw_open"]] = jaw
    wrists = mo.BODY_CANONICAL[[mo.BODY["wrist_l"], mo.BODY["wrist_r"]]]
    return m.MotionFrame(
        session_id=session, index=index, pts=index / 30, traceparent="00-abc-def-01",
        deadline=123.5, rotation=np.zeros(3, np.float32), translation=np.zeros(3, np.float32),
        scale=1.0, expression=e, head_template=mo.head_template(e),
        head_offset=np.zeros((mo.K, 3), np.float32), body=mo.BODY_CANONICAL.copy(),
        hands=(mo.HAND_REST + wrists[:, None]).astype(np.float32))


@pytest.fixture(scope="module")
def portrait() -> bytes:
    return png(skimage.data.astronaut())


@pytest.fixture(scope="module")
def stage():
    s = build_stage(store=AvatarStore())
    yield s
    s.close()


def test_session_renders_frames_with_the_envelope_copied(stage, portrait):
    start = m.SessionStart(session_id="s1", avatar_id="astro", image=portrait)
    out = run_test(stage, [start, frame("s1", 0), frame("s1", 1, jaw=0.8),
                           m.EndOfAudio(session_id="s1", index=2)])
    assert isinstance(out[0], m.SessionStart)
    rendered = of_type(out, m.RenderedFrame)
    assert [r.index for r in rendered] == [0, 1]
    r = rendered[1]
    assert r.image.shape == (768, 512, 3) and r.image.rgb().dtype == np.uint8
    assert (r.pts, r.traceparent, r.deadline) == (1 / 30, "00-abc-def-01", 123.5)
    assert r.motion.index == 1
    assert not np.array_equal(rendered[0].image.rgb(), rendered[1].image.rgb())
    assert isinstance(out[-1], m.EndOfAudio)
    # The session is forgotten after the end of audio.
    err = of_type(run_test(stage, [frame("s1", 3)]), m.SessionError)
    assert err and err[0].category == "not_found"


def test_known_avatar_is_reused_without_the_image(stage, portrait):
    run_test(stage, [m.SessionStart(session_id="s2", avatar_id="reuse", image=portrait)])
    key = avatar_key("reuse", "upper-body", 512, 768)
    first = stage.store.get(key)
    out = run_test(stage, [m.SessionStart(session_id="s3", avatar_id="reuse"), frame("s3", 0)])
    assert stage.store.get(key) is first
    assert len(of_type(out, m.RenderedFrame)) == 1


def test_avatar_without_id_is_stored_under_the_session(stage, portrait):
    run_test(stage, [m.SessionStart(session_id="anon", image=portrait, mode="head",
                                    width=512, height=512)])
    assert stage.store.get(avatar_key("anon", "head", 512, 512)).mode == "head"


@pytest.mark.parametrize("kw, words", [
    ({"width": 500, "height": 768}, "multiple of 16"),
    ({"width": 2048, "height": 768}, "between 256 and 1024"),
    ({"mode": "full-body"}, "upper-body"),
])
def test_bad_settings_are_invalid_input(stage, portrait, kw, words):
    out = run_test(stage, [m.SessionStart(session_id="bad", image=portrait, **kw)])
    err = of_type(out, m.SessionError)
    assert err and err[0].category == "invalid_argument" and words in err[0].message


def test_image_without_a_face_says_so(stage):
    out = run_test(stage, [m.SessionStart(session_id="nf", image=png(skimage.data.coffee()))])
    err = of_type(out, m.SessionError)
    assert err and err[0].category == "invalid_argument" and "no face" in err[0].message


def test_unknown_avatar_without_image_and_unknown_session(stage):
    out = run_test(stage, [m.SessionStart(session_id="x", avatar_id="nobody"),
                           frame("never-started", 0)])
    errs = of_type(out, m.SessionError)
    assert [e.category for e in errs] == ["not_found", "not_found"]
