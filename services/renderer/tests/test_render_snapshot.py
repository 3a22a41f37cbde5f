"""Avatars persisted for other replicas, and renderer sessions continued on one of them."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
from test_render_stage import frame, png

from avatarflow.avatars.store import AvatarStore, avatar_key, decode_avatar
from avatarflow.contracts import messages as m
from avatarflow.contracts.errors import InvalidInput
from avatarflow.dev.testing import DictBacking, of_type, run_test
from avatarflow_renderer import build_stage

KEY = avatar_key("astro", "upper-body", 512, 768)


@pytest.fixture(scope="module")
def analysed():
    """A renderer that analysed the astronaut into a backed store, as the first replica."""
    backing = DictBacking()
    stage = build_stage(store=AvatarStore(backing=backing))
    avatar = stage.prepare_avatar(png(skimage.data.astronaut()), "astro", "upper-body", 512,
                                  768)
    yield stage, backing, avatar
    stage.close()


def test_prepare_stores_under_the_format_key(analysed):
    stage, backing, avatar = analysed
    assert avatar.key == KEY and stage.store.get(KEY) is avatar and set(backing.data) == {KEY}


def test_encoded_astronaut_is_exact_but_for_the_portrait(analysed):
    _, backing, avatar = analysed
    data = backing.data[KEY]
    print(f"encoded avatar 512x768: {len(data) / 1e6:.2f} MB")
    assert len(data) < 1_600_000  # PNG canvas + JPEG portrait + compressed mask, about 1.3 MB
    back = decode_avatar(data)
    for name in avatar.__dataclass_fields__:
        a, b = getattr(avatar, name), getattr(back, name)
        if name == "portrait":
            assert a.shape == b.shape and np.abs(a.astype(np.int16) - b).mean() < 3.0
        elif isinstance(a, np.ndarray):
            assert a.dtype == b.dtype and np.array_equal(a, b), name
        else:
            assert a == b, name


def test_restored_session_renders_the_same_frames(analysed):
    """The second replica loads the avatar from the backing and goes on bit for bit."""
    stage, backing, _ = analysed
    msgs = [m.SessionStart(session_id="r", avatar_id="astro"),
            *[frame("r", i, jaw=0.1 * i) for i in range(6)], m.EndOfAudio(session_id="r")]
    whole = run_test(stage, msgs)
    k = 3
    out = run_test(stage, msgs[:k])
    data = stage.snapshot("r")
    assert data is not None and len(data) < 1000
    fresh = build_stage(store=AvatarStore(backing=backing))
    fresh.restore("r", data)
    out += run_test(fresh, msgs[k:])
    fresh.close()
    want, got = of_type(whole, m.RenderedFrame), of_type(out, m.RenderedFrame)
    assert [f.index for f in got] == [f.index for f in want] == list(range(6))
    assert all(np.array_equal(a.image.rgb(), b.image.rgb()) for a, b in zip(got, want,
                                                                             strict=True))
    assert isinstance(out[-1], m.EndOfAudio) and fresh.session_count == 0


def test_other_format_without_image_is_not_found_with_advice(analysed):
    stage, _, _ = analysed
    out = run_test(stage, [m.SessionStart(session_id="h", avatar_id="astro", mode="head",
                                          width=512, height=512)])
    (err,) = of_type(out, m.SessionError)
    assert err.category == "not_found"
    assert err.message == ("avatar 'astro' has not been analysed for head 512x512: send the "
                           "image or register it for that format")


@pytest.mark.parametrize("args, words", [
    (("", "head", 512, 512), "non-empty id"),
    (("x", "head", 500, 512), "multiple of 16"),
    (("x", "full-body", 512, 512), "mode must be one of"),
])
def test_prepare_validates_before_analysing(analysed, args, words):
    stage, _, _ = analysed
    with pytest.raises(InvalidInput, match=words):
        stage.prepare_avatar(b"not even an image", *args)
