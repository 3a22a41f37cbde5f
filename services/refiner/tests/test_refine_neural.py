"""The neural refiner: ChatAnyone's face refine network, its weights, batching and pasting."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from test_refine_blend import DEADLINE, motion

from avatarflow.avatars.store import AvatarStore, avatar_key
from avatarflow.contracts import messages as m
from avatarflow.contracts import motion as mo
from avatarflow.contracts.errors import InvalidInput, MissingExtra
from avatarflow.dev.testing import of_type, run_test
from avatarflow_refiner import build_stage
from avatarflow_refiner.engines import create
from avatarflow_refiner.engines.neural import RefinerNetwork
from avatarflow_refiner.models import preset
from avatarflow_renderer import build_stage as build_renderer

FORMATS = {"body": ("upper-body", 512, 768), "head": ("head", 512, 512)}


@pytest.fixture(scope="module")
def avatars():
    """The astronaut analysed in two output formats (two sessions' avatars), the renderer that
    analysed them, its store and one SessionStart per format."""
    store = AvatarStore()
    renderer = build_renderer(store=store)
    buf = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()).save(buf, format="PNG")
    starts, found = {}, {}
    for name, (mode, w, h) in FORMATS.items():
        starts[name] = m.SessionStart(session_id=name, avatar_id="astro", image=buf.getvalue(),
                                      mode=mode, width=w, height=h)
        run_test(renderer, [starts[name]])
        found[name] = store.get(avatar_key("astro", mode, w, h))
    yield renderer, store, found, starts
    renderer.close()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return RefinerNetwork.create(preset("small"), seed=3).save(
        tmp_path_factory.mktemp("refiner-small"))


@pytest.fixture(scope="module")
def engine(weights):
    eng = create("neural", weights=str(weights))
    yield eng
    eng.close()


def inputs(net: RefinerNetwork, b: int = 2, seed: int = 0) -> list[torch.Tensor]:
    cfg = net.config
    g = torch.Generator().manual_seed(seed)
    s, k = cfg.image_size, cfg.num_kp
    kp = torch.rand(b, k, 3, generator=g) * 1.6 - 0.8
    return [torch.rand(b, 3, s, s, generator=g), kp, kp + 0.05 * torch.randn(b, k, 3,
                                                                              generator=g),
            torch.rand(b, 3, s, s, generator=g)]


@pytest.mark.parametrize("out_size", [64, 128])
def test_network_maps_crops_and_keypoints_to_a_refined_crop(out_size):
    net = RefinerNetwork.create(preset("small", out_size=out_size))
    out = net.forward_batch(*inputs(net, b=3))
    assert out.shape == (3, 3, out_size, out_size) and out.dtype == torch.float32
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0


def test_network_rejects_inputs_of_the_wrong_shape():
    net = RefinerNetwork.create(preset("small"))
    source, kp_s, kp_d, context = inputs(net)
    with pytest.raises(InvalidInput, match=r"kp_driving is \[2, 53, 3\], expected \[B, 54, 3\]"):
        net.forward_batch(source, kp_s, kp_d[:, :53], context)
    with pytest.raises(InvalidInput, match="batch sizes differ"):
        net.forward_batch(source, kp_s, kp_d, context[:1])


def test_network_is_deterministic_per_seed():
    a, b = RefinerNetwork.create(preset("small"), seed=7), RefinerNetwork.create(preset("small"),
                                                                                 seed=7)
    x = inputs(a)
    assert torch.equal(a.forward_batch(*x), a.forward_batch(*x))
    assert torch.equal(a.forward_batch(*x), b.forward_batch(*x))
    other = RefinerNetwork.create(preset("small"), seed=8)
    assert not torch.equal(a.forward_batch(*x), other.forward_batch(*x))


def test_saved_weights_reload_strictly_and_identically(tmp_path):
    net = RefinerNetwork.create(preset("small", out_size=128), seed=5)
    d = net.save(tmp_path / "w")
    again = RefinerNetwork.load(d)
    assert again.config == net.config
    x = inputs(net)
    assert torch.equal(again.forward_batch(*x), net.forward_batch(*x))
    state = torch.load(d / "model.pt", weights_only=True)
    state["stray.weight"] = torch.zeros(1)
    torch.save(state, d / "model.pt")
    with pytest.raises(InvalidInput, match="stray.weight"):
        RefinerNetwork.load(d)
    with pytest.raises(InvalidInput, match="missing config.yaml, model.pt"):
        RefinerNetwork.load(tmp_path / "empty")


def test_refine_batch_of_two_sessions_equals_two_refine_calls(avatars, engine):
    renderer, _, found, _ = avatars
    items = []
    for name, jaw, yaw in (("body", 0.6, 0.1), ("head", 0.2, -0.15)):
        mf = motion(jaw=jaw, yaw=yaw, session=name)
        items.append((found[name], renderer.engine.render(found[name], mf), mf))
    batched = engine.refine_batch(items)
    single = [engine.refine(*item) for item in items]
    for (avatar, frame, _), a, b in zip(items, batched, single, strict=True):
        assert a.shape == frame.shape == (avatar.height, avatar.width, 3) and a.dtype == np.uint8
        assert np.abs(a.astype(np.int16) - b).max() <= 1  # float rounding at .5 may differ
    # The network's float output agrees to 1e-5 batched or one at a time.
    crops = [engine.plans.get(a) for a, _, _ in items]
    x = [torch.from_numpy(np.stack(v)) for v in zip(*(
        (c.source, c.kp_source, c.driving(mf), c.context(f))
        for c, (_, f, mf) in zip(crops, items, strict=True)), strict=True)]
    together = engine.network.forward_batch(*x)
    for i in range(2):
        alone = engine.network.forward_batch(*(t[i:i + 1] for t in x))
        torch.testing.assert_close(together[i:i + 1], alone, atol=1e-5, rtol=0)
    assert engine.refine_batch([]) == []


@pytest.mark.parametrize("name", list(FORMATS))
def test_only_the_face_inside_the_head_box_changes(avatars, engine, name):
    renderer, _, found, _ = avatars
    avatar = found[name]
    mf = motion(jaw=0.5, yaw=0.1)
    body = renderer.engine.render(avatar, mf)
    final = engine.refine(avatar, body, mf)
    crop = engine.plans.get(avatar)
    x0, y0, x1, y1 = crop.paste_box
    assert crop.inside[0] <= x0 < x1 <= crop.inside[2]
    assert crop.inside[1] <= y0 < y1 <= crop.inside[3]
    changed = np.any(final != body, axis=2)
    assert changed[y0:y1, x0:x1].mean() > 0.3  # the face was re-rendered
    changed[y0:y1, x0:x1] = False
    assert not changed.any()
    # The feathered mask fades to zero inside the pasted region: no seam at its border
    # (where the region meets the canvas edge the picture ends anyway).
    mask = crop.paste_mask[..., 0]
    assert crop.mask.max() == pytest.approx(1.0, abs=1e-3)
    edges = [(mask[0], y0 > 0), (mask[-1], y1 < avatar.height), (mask[:, 0], x0 > 0),
             (mask[:, -1], x1 < avatar.width)]
    assert max(e.max() for e, interior in edges if interior) < 1e-2


def test_neutral_motion_drives_the_keypoints_to_the_rest_pose(avatars, engine):
    _, _, found, _ = avatars
    avatar = found["body"]
    crop = engine.plans.get(avatar)
    kp = crop.driving(motion())
    rest = crop.normalise(avatar.face_rest, mo.HEAD_TEMPLATE[:, 2])
    np.testing.assert_allclose(kp, rest, atol=1e-4)
    assert np.all(np.abs(kp[:, :2]) < 0.9)  # every keypoint well inside the crop
    moved = crop.driving(motion(jaw=1.0))
    chin = mo.HEAD["chin"]
    assert moved[chin, 1] > kp[chin, 1] + 0.05  # the jaw opens downwards in the crop


def test_stage_with_the_neural_engine_refines_rendered_frames(avatars, weights):
    renderer, store, _, starts = avatars
    start = starts["body"]
    rendered = run_test(renderer, [start, motion(jaw=0.5, index=3, session="body")])
    refiner = build_stage(engine="neural", store=store, weights=str(weights))
    out = run_test(refiner, rendered + [m.EndOfAudio(session_id="body", index=4)])
    (f,) = of_type(out, m.FinalFrame)
    body = of_type(rendered, m.RenderedFrame)[0]
    assert (f.index, f.deadline, f.refined) == (3, DEADLINE, True)
    assert f.image.shape == (768, 512, 3) and f.image.rgb().dtype == np.uint8
    assert not np.array_equal(f.image.rgb(), body.image.rgb())
    refiner.close()


def test_engine_options_are_checked(weights):
    with pytest.raises(InvalidInput, match="needs weights"):
        create("neural")
    with pytest.raises(TypeError, match="steps"):
        create("neural", weights=str(weights), steps=3)
    with pytest.raises(InvalidInput, match="unknown dtype"):
        create("neural", weights=str(weights), dtype="int8")


def test_without_torch_the_error_names_the_extra(monkeypatch, weights):
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.delitem(sys.modules, "avatarflow_refiner.engines.neural")
    with pytest.raises(MissingExtra, match=r"avatarflow\[neural\]"):
        create("neural", weights=str(weights))
