"""``avatarflow motion --engine joyvasa``: a clip's JoyVASA motion at 25 fps in an .npz, the same
as the engine's offline sampler for the same seed; bad input exits 2 with a message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from avatarflow.cli.inputs import write_wav
from avatarflow.cli.main import main as avatarflow

layout = pytest.importorskip("avatarflow_motion_gen.engines.joyvasa.layout")
sampler = pytest.importorskip("avatarflow_motion_gen.engines.joyvasa.sampler")

SHAPES = {"exp": (21, 3), "scale": (1,), "t": (3,), "pitch": (), "yaw": (), "roll": ()}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pretrained_weights")
    layout.write_random_weights(path, seed=2, n_motions=20, n_prev=5, diff_steps=4)
    return path


@pytest.fixture(scope="module")
def wav(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    t = np.arange(int(16000 * 1.3)) / 16000
    pcm = (8000 * np.sin(2 * np.pi * 200 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.int16)
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    write_wav(path, pcm, 16000)
    return path, pcm


def test_motion_file_holds_joyvasa_motion_at_25_fps(root: Path, wav: tuple[Path, np.ndarray],
                                                    tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path, pcm = wav
    out = tmp_path / "m.npz"
    code = avatarflow(["motion", "--engine", "joyvasa", "--weights", str(root), "--audio",
                       str(path), "--seed", "9", "--cfg-scale", "2.0", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    got = np.load(out)
    frames = (pcm.size + 1280 + 640) // 640  # JoyVASA pads 80 ms before and 40 ms after
    assert sorted(got.files) == sorted(SHAPES)
    for name, shape in SHAPES.items():
        assert got[name].shape == (frames, *shape) and got[name].dtype == np.float32, name
    loaded = layout.load(root)
    torch.manual_seed(9)
    want = sampler.denormalise(sampler.generate(loaded.model, pcm / np.float32(32768), 2.0),
                               loaded.template)
    for name in SHAPES:
        np.testing.assert_array_equal(got[name], want[name])
    assert f"{frames} frames at 25 fps" in capsys.readouterr().out


@pytest.mark.parametrize(("case", "message"), [
    ("no audio file", "does not exist"),
    ("not audio", "cannot decode audio"),
    ("no weights", "JoyVASA/motion_template/motion_template.pkl"),
])
def test_bad_input_exits_2_and_says_why(root: Path, wav: tuple[Path, np.ndarray],
                                        tmp_path: Path, case: str, message: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    audio, weights = wav[0], root
    if case == "no audio file":
        audio = tmp_path / "missing.wav"
    elif case == "not audio":
        audio = tmp_path / "noise.wav"
        audio.write_bytes(b"RIFF0000WAVEjunk" * 8)
    else:
        weights = tmp_path / "partial"
        layout.write_random_weights(weights, seed=2, n_motions=20, n_prev=5, diff_steps=4)
        (weights / layout.TEMPLATE).unlink()
    code = avatarflow(["motion", "--weights", str(weights), "--audio", str(audio), "--out",
                       str(tmp_path / "m.npz")])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m.npz").exists()
