"""``avatarflow render-frame``: one LivePortrait frame from a checkpoint directory."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from neural_testkit import (
    FILES,
    full_weights,
    one_thread,  # noqa: F401 - an autouse fixture
    reference_run,
    smooth_image,
    tiny_weights,
)
from PIL import Image

from avatarflow.cli.main import main
from avatarflow_renderer.engines.neural import RendererNetwork

ROOT = Path(__file__).resolve().parents[3]


def save_png(path: Path, img: np.ndarray) -> str:
    Image.fromarray(img).save(path)
    return str(path)


def save_kp(path: Path, kp) -> str:
    np.save(path, np.asarray(kp))
    return str(path)


def test_published_weights_render_livportraits_frame(tmp_path):
    """Random weights in the published layout: the PNG is LivePortrait's own 512 x 512 frame
    for the same source and keypoints (source keypoints from the motion extractor)."""
    pytest.importorskip("mimic_head")
    ref = reference_run(full_weights(), 256, 2)
    out = tmp_path / "deep" / "frame.png"
    code = main(["render-frame", "--weights", str(full_weights()),
                 "--image", save_png(tmp_path / "src.png", ref["image"]),
                 "--kp-driving", save_kp(tmp_path / "d.npy", ref["kp_driving"][0].numpy()),
                 "--out", str(out)])
    assert code == 0
    frame = np.asarray(Image.open(out))
    assert frame.shape == (512, 512, 3) and frame.dtype == np.uint8
    expected = (ref["frame"][0].permute(1, 2, 0).numpy() * 255).round()
    assert np.abs(frame - expected).max() <= 1
    assert frame.std() > 5


def test_source_keypoints_from_a_file(tmp_path):
    rng = np.random.default_rng(0)
    kp_s = rng.uniform(-0.6, 0.6, (21, 3)).astype(np.float32)
    kp_d = (kp_s + rng.normal(0, 0.05, (21, 3))).astype(np.float32)
    image = smooth_image(300, 200, 4)  # resized to the network's input without cropping
    out = tmp_path / "f.png"
    assert main(["render-frame", "--weights", str(tiny_weights()),
                 "--image", save_png(tmp_path / "s.png", image),
                 "--kp-source", save_kp(tmp_path / "s.npy", kp_s),
                 "--kp-driving", save_kp(tmp_path / "d.npy", kp_d), "--out", str(out)]) == 0
    net = RendererNetwork.load(tiny_weights())
    want = net.forward_batch(net.source_from_images([image]), torch.from_numpy(kp_s)[None],
                             torch.from_numpy(kp_d)[None])
    want = (want[0].permute(1, 2, 0).numpy() * 255).round()
    assert np.abs(np.asarray(Image.open(out)).astype(np.float32) - want).max() <= 1


@pytest.fixture
def inputs(tmp_path):
    kp = np.zeros((21, 3), np.float32)
    return {"image": save_png(tmp_path / "s.png", smooth_image(64, 64)),
            "kp": save_kp(tmp_path / "ok.npy", kp), "out": str(tmp_path / "o.png"),
            "dir": tmp_path}


def run_cli(capsys, weights, image, kp, out, *extra) -> tuple[int, str]:
    code = main(["render-frame", "--weights", str(weights), "--image", image,
                 "--kp-driving", kp, "--out", out, *extra])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("kp, words", [
    (np.zeros((20, 3), np.float32), "21 x 3 float32 array, got float32 (20, 3)"),
    (np.zeros((21, 3), np.float64), "got float64 (21, 3)"),
    (np.full((21, 3), np.nan, np.float32), "finite"),
])
def test_bad_keypoints_are_rejected(capsys, inputs, kp, words):
    bad = save_kp(inputs["dir"] / "bad.npy", kp)
    code, err = run_cli(capsys, tiny_weights(), inputs["image"], bad, inputs["out"])
    assert code == 2 and words in err and "--kp-driving" in err
    code, err = run_cli(capsys, tiny_weights(), inputs["image"], inputs["kp"], inputs["out"],
                        "--kp-source", bad)
    assert code == 2 and words in err and "--kp-source" in err


def test_missing_inputs_are_named(capsys, inputs):
    code, err = run_cli(capsys, tiny_weights(), inputs["image"],
                        str(inputs["dir"] / "none.npy"), inputs["out"])
    assert code == 2 and "none.npy: no such file" in err
    (inputs["dir"] / "junk.npy").write_bytes(b"junk")
    code, err = run_cli(capsys, tiny_weights(), inputs["image"],
                        str(inputs["dir"] / "junk.npy"), inputs["out"])
    assert code == 2 and "not a .npy array" in err
    code, err = run_cli(capsys, tiny_weights(), str(inputs["dir"] / "none.png"), inputs["kp"],
                        inputs["out"])
    assert code == 2 and "--image" in err


def test_corrupt_checkpoint_fails_clearly(capsys, inputs):
    weights = inputs["dir"] / "weights"
    shutil.copytree(tiny_weights(), weights)
    (weights / FILES["spade_generator"]).write_bytes(b"\x00" * 64)
    code, err = run_cli(capsys, weights, inputs["image"], inputs["kp"], inputs["out"])
    assert code == 2 and "spade_generator.pth is unreadable" in err
    assert not Path(inputs["out"]).exists()


def test_missing_checkpoint_fails_in_a_subprocess(inputs):
    weights = inputs["dir"] / "weights"
    shutil.copytree(tiny_weights(), weights)
    (weights / FILES["motion_extractor"]).unlink()
    proc = subprocess.run(
        [sys.executable, "-m", "avatarflow.cli.main", "render-frame", "--weights", str(weights),
         "--image", inputs["image"], "--kp-driving", inputs["kp"], "--out", inputs["out"]],
        capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert "motion_extractor.pth is missing" in proc.stderr
    assert proc.stderr.startswith("avatarflow: error:")
