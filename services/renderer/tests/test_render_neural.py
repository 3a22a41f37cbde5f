"""The "neural" renderer engine: frames, batching across sessions, strict weights, and the
LivePortrait driving path against LivePortrait's own keypoint code."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
import skimage.data
import torch
from neural_testkit import (
    motion,
    one_thread,  # noqa: F401 - an autouse fixture
    randomise,
    reference_wrapper,
    synthetic_avatar,
    tiny_weights,
)
from PIL import Image

from avatarflow.avatars.store import AvatarStore
from avatarflow.contracts import messages as m
from avatarflow.contracts.errors import InvalidInput, MissingExtra
from avatarflow.dev.testing import of_type, run_test
from avatarflow_renderer import build_stage
from avatarflow_renderer.engines import create
from avatarflow_renderer.engines.neural import RendererNetwork
from avatarflow_renderer.engines.neural_net import UpperBodyNetwork
from avatarflow_renderer.models.upperbody import UpperBodyConfig, UpperBodyRenderer


@pytest.fixture(scope="module")
def lp_engine():
    eng = create("neural", weights=str(tiny_weights()))
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def ub_weights(tmp_path_factory):
    model = UpperBodyRenderer(UpperBodyConfig.preset("small"))
    randomise(model, seed=5)
    return UpperBodyNetwork.save(model, tmp_path_factory.mktemp("upperbody"))


@pytest.fixture(scope="module")
def ub_engine(ub_weights):
    eng = create("neural", weights=str(ub_weights), arch="upperbody")
    yield eng
    eng.close()


def diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).max())


def test_liveportrait_frames_have_the_avatar_size(lp_engine):
    for w, h in ((512, 512), (256, 384)):
        out = lp_engine.render(synthetic_avatar("sz", width=w, height=h), motion())
        assert out.shape == (h, w, 3) and out.dtype == np.uint8 and out.std() > 1


def test_liveportrait_controls_change_the_frame_and_repeat(lp_engine):
    avatar = synthetic_avatar("ctl")
    rest = lp_engine.render(avatar, motion())
    assert np.array_equal(rest, lp_engine.render(avatar, motion()))  # deterministic
    for kw in ({"expr": {"jaw_open": 1.0}}, {"expr": {"blink_left": 1.0, "blink_right": 1.0}},
               {"rotation": (0.0, 0.3, 0.0)}, {"translation": (0.3, 0.0, 0.0)},
               {"scale": 1.2}):
        assert diff(lp_engine.render(avatar, motion(**kw)), rest) > 2, kw


def test_liveportrait_driving_follows_liveportrait(lp_engine):
    """Driving keypoints as LivePortrait's own code makes them: the motion's rotation composed
    onto the source pose, scale and shift applied, lip and eye retargeting deltas added, then
    stitching."""
    pytest.importorskip("mimic_head")
    from mimic_head.utils.camera import get_rotation_matrix

    ref = reference_wrapper(tiny_weights())
    avatar = synthetic_avatar("drv", seed=3)
    mo_ = motion(expr={"jaw_open": 0.6, "blink_left": 0.5}, rotation=(0.1, -0.2, 0.05),
                 translation=(0.2, -0.1, 0.4), scale=1.1)
    src = lp_engine.sources.get(avatar)
    ours, _ = lp_engine.driver.drive([avatar], [src], [mo_])

    with torch.inference_mode():
        image = lp_engine.network.source_from_images([avatar.canvas])
        info = ref.get_kp_info(image)
        x_s = ref.transform_keypoint(info)
        r_s = get_rotation_matrix(info["pitch"], info["yaw"], info["roll"])
        deg = torch.tensor(np.degrees(mo_.rotation))[None].float()
        r_m = get_rotation_matrix(deg[:, 0], deg[:, 1], deg[:, 2])
        t = info["t"].clone()
        t[:, 0] += 0.2 * avatar.face_axes[0, 0] * 2 / avatar.width  # template units -> norm
        t[:, 1] += -0.1 * avatar.face_axes[1, 1] * 2 / avatar.height
        t[:, 2] = 0
        x_d = info["scale"][..., None] * 1.1 * (info["kp"] @ (r_m @ r_s) + info["exp"])
        x_d = x_d + t[:, None]
        lip_s, eyes_s = driver_ratios(avatar)
        lip_d, eye_d = target_ratios(mo_, eyes_s)
        x_d = (x_d + ref.retarget_lip(x_s, torch.tensor([[lip_s, lip_d]])).view(1, -1, 3)
               + ref.retarget_eye(x_s, torch.tensor([[*eyes_s, eye_d]])).view(1, -1, 3))
        expected = ref.stitching(x_s, x_d)
    assert torch.allclose(src.kp, x_s, atol=1e-5)
    assert float((ours - expected).abs().max()) < 1e-5


def driver_ratios(avatar):
    from avatarflow_renderer.engines import neural_kp as kpm

    return kpm.lip_ratio(avatar.face_points), kpm.eye_ratios(avatar.face_points)


def target_ratios(frame, eyes_s):
    from avatarflow_renderer.engines import neural_kp as kpm

    driven = frame.head_template + frame.head_offset
    openness = np.mean(kpm.eye_ratios(driven)) / kpm.REST_EYE_RATIO
    return kpm.lip_ratio(driven), float(np.mean(eyes_s) * openness)


def test_mouth_ratio_follows_jaw_open():
    from avatarflow_renderer.engines import neural_kp as kpm

    closed, half, open_ = (target_ratios(motion(expr={"jaw_open": v}), (0.3, 0.3))[0]
                           for v in (0.0, 0.5, 1.0))
    assert closed < 0.01 < half < open_ and 0.3 < open_ < 0.8  # LivePortrait's range
    shut = target_ratios(motion(expr={"blink_left": 1, "blink_right": 1}), (0.3, 0.3))[1]
    assert shut < 0.05 and kpm.REST_EYE_RATIO > 0.3


@pytest.mark.parametrize("engine_name", ["lp_engine", "ub_engine"])
def test_render_batch_equals_per_item_rendering(engine_name, request):
    engine = request.getfixturevalue(engine_name)
    mode = "head" if engine_name == "lp_engine" else "upper-body"
    size = (512, 512) if mode == "head" else (512, 768)
    a = synthetic_avatar("a", mode, *size, seed=1)
    b = synthetic_avatar("b", mode, *size, seed=2)
    items = [(a, motion("sa", 0, {"jaw_open": 0.7}, rotation=(0.1, 0.0, 0.0))),
             (b, motion("sb", 0, {"smile": 0.5}, rotation=(0.0, -0.2, 0.0), hand_shift=(0.1, 0)))]
    batched = engine.frames(items)
    single = torch.cat([engine.frames([it]) for it in items])
    assert float((batched - single).abs().max()) < 1e-5
    frames = engine.render_batch(items)
    for (avatar, frame), img in zip(items, frames, strict=True):
        assert img.shape == (avatar.height, avatar.width, 3) and img.dtype == np.uint8
        assert diff(img, engine.render(avatar, frame)) <= 1  # rounding of equal floats
    assert engine.render_batch([]) == []


def test_upperbody_frames_and_hands(ub_engine):
    avatar = synthetic_avatar("ub", "upper-body", 512, 768)
    assert ub_engine.network.output_size == (128, 192)
    rest = ub_engine.render(avatar, motion())
    assert rest.shape == (768, 512, 3) and rest.dtype == np.uint8 and rest.std() > 1
    assert np.array_equal(rest, ub_engine.render(avatar, motion()))
    raised = ub_engine.render(avatar, motion(hand_shift=(0.0, -1.0)))  # rest: below the frame
    assert diff(raised, rest) > 2
    assert diff(ub_engine.render(avatar, motion(expr={"jaw_open": 1.0})), rest) > 2


def test_upperbody_inputs(ub_engine):
    """Driving keypoints: head then body, normalised to [-1, 1]; the hand image shows hands."""
    avatar = synthetic_avatar("ubk", "upper-body", 512, 768)
    driver = ub_engine.driver
    kp_rest = driver.keypoints(avatar, motion())
    assert kp_rest.shape == (62, 3) and kp_rest.dtype == np.float32
    assert np.allclose(kp_rest, ub_engine.sources.get(avatar).kp[0].numpy(), atol=1e-6)
    assert np.abs(kp_rest[:54, :2]).max() < 1  # the face is in the frame (the hips are not)
    turned = driver.keypoints(avatar, motion(rotation=(0.0, 0.0, 0.2)))
    assert np.abs(turned[:54] - kp_rest[:54]).max() > 0.01
    assert np.allclose(turned[54:], kp_rest[54:])
    assert driver.hand_image(avatar, motion()).max() == 0  # hands at rest: below the frame
    hands = driver.hand_image(avatar, motion(hand_shift=(0.0, -1.0)))
    assert hands.shape == (192 // 2, 128 // 2, 3) and hands.max() == 1.0
    assert hands[..., 0].sum() > 0 and hands[..., 1].sum() > 0 and hands[..., 2].sum() > 0


def test_upperbody_weights_are_strict(ub_weights, tmp_path):
    net = RendererNetwork.load(ub_weights, "upperbody")
    assert net.source_size == (64, 96) and net.num_kp == 62

    def broken(edit_state=None, config_text=None, drop=None):
        root = tmp_path / f"w{len(list(tmp_path.iterdir()))}"
        root.mkdir()
        state = torch.load(ub_weights / "model.pt", weights_only=True)
        if edit_state:
            edit_state(state)
        torch.save(state, root / "model.pt")
        (root / "config.yaml").write_text(config_text or (ub_weights / "config.yaml").read_text())
        if drop:
            (root / drop).unlink()
        with pytest.raises(InvalidInput) as exc:
            RendererNetwork.load(root, "upperbody")
        return exc.value.message

    assert "model.pt is missing" in broken(drop="model.pt")
    assert "config.yaml is missing" in broken(drop="config.yaml")
    msg = broken(edit_state=lambda s: s.pop("generator.fc.bias"))
    assert "model.pt" in msg and "missing keys generator.fc.bias" in msg
    msg = broken(edit_state=lambda s: s.__setitem__("warper.fourth.bias", torch.zeros(2)))
    assert "wrong shapes warper.fourth.bias (2,)" in msg
    config = (ub_weights / "config.yaml").read_text()
    assert "unknown fields colour" in broken(config_text=config + "colour: 3\n")
    assert "num_kp is 21" in broken(config_text=config.replace("num_kp: 62", "num_kp: 21"))


def test_network_call_matches_the_engine(ub_engine):
    """What the Triton model calls: forward_batch on raw tensors gives the engine's frames."""
    avatar = synthetic_avatar("net", "upper-body", 512, 768, seed=4)
    frame = motion(expr={"jaw_open": 0.4}, hand_shift=(0.05, -0.2))
    net = ub_engine.network
    source = net.source_from_images([avatar.canvas])
    kp_s = ub_engine.sources.get(avatar).kp
    kp_d, hands = ub_engine.driver.drive([avatar], [ub_engine.sources.get(avatar)], [frame])
    out = net.forward_batch(source, kp_s, kp_d, hands)
    assert out.shape == (1, 3, 192, 128) and out.dtype == torch.float32
    assert float((out - ub_engine.frames([(avatar, frame)])).abs().max()) < 1e-5


def test_stage_renders_with_the_neural_engine(ub_weights):
    """The renderer stage on the neural engine: mediapipe analysis, then frames."""
    buf = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()).save(buf, format="PNG")
    stage = build_stage("neural", store=AvatarStore(), weights=str(ub_weights),
                        arch="upperbody")
    try:
        out = run_test(stage, [m.SessionStart(session_id="s", avatar_id="astro",
                                              image=buf.getvalue()),
                               motion("s", 0), motion("s", 1, {"jaw_open": 0.8})])
        assert len(stage.engine.sources._plans) == 1  # encoded when the session started
    finally:
        stage.close()
    frames = of_type(out, m.RenderedFrame)
    assert [f.index for f in frames] == [0, 1]
    assert frames[0].image.shape == (768, 512, 3)


def test_options_are_checked(tmp_path):
    with pytest.raises(InvalidInput, match="needs weights"):
        create("neural")
    with pytest.raises(InvalidInput, match="unknown neural engine options: grid"):
        create("neural", weights=str(tiny_weights()), grid=3)
    with pytest.raises(InvalidInput, match="does not exist"):
        create("neural", weights=str(tmp_path / "none"))
    with pytest.raises(InvalidInput, match="needs a CUDA device"):
        create("neural", weights=str(tiny_weights()), dtype="float16")


def test_missing_torch_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.delitem(sys.modules, "avatarflow_renderer.engines.neural")
    with pytest.raises(MissingExtra) as exc:
        create("neural", weights="anything")
    assert "torch" in exc.value.message and "avatarflow[neural]" in exc.value.message
