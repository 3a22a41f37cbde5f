"""LivePortrait-exact mode: our modules against LivePortrait's own implementation (the
reference, mimic-head's vendored copy) on the same random weights in the published layout."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from neural_testkit import (
    FILES,
    RETARGETING,
    TINY_PARAMS,
    full_weights,
    one_thread,  # noqa: F401 - an autouse fixture
    reference_modules,
    reference_run,
    reference_wrapper,
    tiny_weights,
)

from avatarflow.contracts.errors import InvalidInput
from avatarflow_renderer.engines import neural_kp as kpm
from avatarflow_renderer.engines.neural import RendererNetwork
from avatarflow_renderer.engines.neural_net import LIVEPORTRAIT_PARAMS, LivePortraitNetwork

pytest.importorskip("mimic_head")
TOL = 1e-5


def shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("params", [LIVEPORTRAIT_PARAMS, TINY_PARAMS],
                         ids=["published", "tiny"])
def test_parameter_names_and_shapes_are_the_published_ones(params):
    ours = LivePortraitNetwork.build(params)
    ref = reference_modules(params)
    pairs = {"appearance": "appearance_feature_extractor", "motion": "motion_extractor",
             "warper": "warping_module", "generator": "spade_generator",
             "stitching": "retarget_shoulder", "lip": "retarget_mouth", "eye": "retarget_eye"}
    for name, ref_name in pairs.items():
        assert shapes(ours[name]) == shapes(ref[ref_name]), name
    assert shapes(ours["appearance"]) and len(shapes(ours["generator"])) > 100


def test_pose_math_matches_the_reference():
    from mimic_head.utils.camera import get_rotation_matrix, headpose_pred_to_degree

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 66, generator=g) * 3
    assert torch.allclose(kpm.bins_to_degrees(logits), headpose_pred_to_degree(logits),
                          atol=1e-5)
    p, y, r = (torch.rand(4, 1, generator=g) * 120 - 60 for _ in range(3))
    assert torch.allclose(kpm.rotation(p, y, r), get_rotation_matrix(p, y, r), atol=1e-6)


def compare_network(root, ours: LivePortraitNetwork, size: int,
                    seed: int) -> tuple[dict[str, float], dict[str, float]]:
    """Every stage of ours vs the reference on one source: max abs differences, and the
    reference outputs' standard deviations (to show they are not trivial)."""
    ref = reference_run(root, size, seed)
    source, x_s, x_d = ref["source"], ref["kp_source"], ref["kp_driving"]
    diffs: dict[str, float] = {}
    spread: dict[str, float] = {}

    def check(name, a, b, min_std=1e-3):
        assert a.shape == b.shape, (name, a.shape, b.shape)
        if min_std:
            spread[name] = float(b.float().std())
            assert spread[name] > min_std, f"{name}: the compared output is (nearly) constant"
        diffs[name] = float((a - b).abs().max())

    with torch.inference_mode():
        check("appearance", ours.features(source), ref["features"])
        raw = ours.parts["motion"](source)
        for k in ("pitch", "yaw", "roll", "t", "exp", "scale", "kp"):
            check(f"motion.{k}", raw[k], ref["raw"][k], min_std=0 if k == "scale" else 1e-3)
        info = ours.motion_info(source)
        for k in ("pitch", "yaw", "roll", "kp", "exp"):
            check(f"info.{k}", info[k], ref["info"][k], min_std=0)
        check("kp_source", kpm.source_keypoints(info), x_s)
        check("retarget_lip", ours.retarget_lip(x_s, ref["lip_ratios"]).flatten(1),
              ref["retarget_lip"])
        check("retarget_eye", ours.retarget_eye(x_s, ref["eye_ratios"]).flatten(1),
              ref["retarget_eye"])
        check("stitching", ours.stitch(x_s, x_d), ref["stitching"])
        frame = ours.forward_batch(source, x_s, x_d)
        check("frame", frame, ref["frame"])
    assert frame.shape == (1, 3, *ours.output_size[::-1])
    return diffs, spread


def test_tiny_network_matches_the_reference():
    root = tiny_weights()
    diffs, spread = compare_network(root, RendererNetwork.load(root), 64, seed=1)
    print("max abs differences vs LivePortrait (tiny):", diffs, "output std:", spread)
    assert max(diffs.values()) < TOL, diffs


def test_published_size_matches_the_reference():
    """The published hyper-parameters: 256 x 256 source -> 32 x 16 x 64 x 64 features ->
    512 x 512 frame, every stage equal to LivePortrait's within fp32 rounding."""
    root = full_weights()
    net = RendererNetwork.load(root, "liveportrait")
    assert (net.source_size, net.output_size, net.num_kp) == ((256, 256), (512, 512), 21)
    with torch.inference_mode():
        assert net.features(torch.zeros(1, 3, 256, 256)).shape == (1, 32, 16, 64, 64)
    diffs, spread = compare_network(root, net, 256, seed=2)
    print("max abs differences vs LivePortrait:", diffs, "output std:", spread)
    assert max(diffs.values()) < TOL, diffs


@pytest.fixture
def tiny_copy(tmp_path):
    dst = tmp_path / "weights"
    shutil.copytree(tiny_weights(), dst)
    return dst


def load_error(root) -> str:
    with pytest.raises(InvalidInput) as exc:
        RendererNetwork.load(root, "liveportrait")
    return exc.value.message


def test_missing_file_is_named(tiny_copy):
    (tiny_copy / FILES["warping_module"]).unlink()
    msg = load_error(tiny_copy)
    assert "warping_module.pth" in msg and "missing" in msg


def test_wrong_and_missing_keys_are_named(tiny_copy):
    path = tiny_copy / FILES["spade_generator"]
    state = torch.load(path, weights_only=True)
    state["fc.extra"] = state.pop("fc.weight")
    torch.save(state, path)
    msg = load_error(tiny_copy)
    assert "spade_generator.pth" in msg
    assert "missing keys fc.weight" in msg and "unexpected keys fc.extra" in msg


def test_wrong_shape_is_named(tiny_copy):
    path = tiny_copy / FILES["appearance_feature_extractor"]
    state = torch.load(path, weights_only=True)
    state["second.bias"] = torch.zeros(3)
    torch.save(state, path)
    msg = load_error(tiny_copy)
    assert "appearance_feature_extractor.pth" in msg and "second.bias (3,)" in msg


def test_retargeting_entries_are_checked(tiny_copy):
    path = tiny_copy / RETARGETING
    bundle = torch.load(path, weights_only=True)
    del bundle["retarget_eye"]
    bundle["retarget_mouth"] = {k.replace("mlp.0.", "mlp.9."): v
                                for k, v in bundle["retarget_mouth"].items()}
    torch.save(bundle, path)
    assert "missing entries retarget_eye" in load_error(tiny_copy)
    bundle["retarget_eye"] = bundle["retarget_shoulder"]
    torch.save(bundle, path)
    msg = load_error(tiny_copy)
    assert "[retarget_mouth]" in msg and "missing keys mlp.0.weight" in msg


def test_corrupt_file_is_named(tiny_copy):
    (tiny_copy / FILES["motion_extractor"]).write_bytes(b"not a checkpoint")
    msg = load_error(tiny_copy)
    assert "motion_extractor.pth" in msg and "unreadable" in msg


def test_prefixes_stripped_like_the_reference(tiny_copy):
    """The published retargeting file keeps DataParallel's prefix; both loaders agree."""
    bundle = torch.load(tiny_copy / RETARGETING, weights_only=True)
    assert all(k.startswith("module.") for k in bundle["retarget_mouth"])
    ours = RendererNetwork.load(tiny_copy, "liveportrait")
    ref = reference_wrapper(tiny_copy).stitching_retargeting_module
    for name in ("stitching", "lip", "eye"):
        for k, v in ref[name].state_dict().items():
            assert torch.equal(ours.parts[name].state_dict()[k], v)


def test_bad_arch_device_dtype():
    root = tiny_weights()
    for kw, text in (({"arch": "nope"}, "unknown arch"), ({"device": "warp9"}, "device"),
                     ({"dtype": "float8"}, "unknown dtype")):
        with pytest.raises(InvalidInput, match=text):
            RendererNetwork.load(root, **kw)
    with pytest.raises(InvalidInput, match="does not exist"):
        RendererNetwork.load(root / "nowhere")


def test_tiny_frames_are_images():
    net = RendererNetwork.load(tiny_weights())
    kp = torch.from_numpy(np.random.default_rng(0).uniform(-0.5, 0.5, (2, 21, 3))).float()
    out = net.forward_batch(torch.rand(2, 3, 64, 64), kp, kp.flip(0))
    assert out.shape == (2, 3, 128, 128) and out.dtype == torch.float32
    assert 0 <= out.min() and out.max() <= 1
