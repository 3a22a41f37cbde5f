"""Bad input gets a clear message and a non-zero exit, never a traceback."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from avatarflow.cli.inputs import write_wav
from tests.integration.conftest import run_cli


def _png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


def _demo(image: Path, audio: Path, out: Path, *extra: str):
    return run_cli("demo", "--image", str(image), "--audio", str(audio), "--out", str(out),
                   "--no-progress", *extra)


def _assert_clear_error(res, pattern: str, code: int = 2) -> None:
    assert res.returncode == code, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr
    assert "avatarflow: error:" in res.stderr
    import re

    assert re.search(pattern, res.stderr), res.stderr


@pytest.fixture()
def speech(inputs: dict) -> Path:
    return inputs["speech"]


def test_text_file_as_image(tmp_path: Path, speech: Path) -> None:
    img = tmp_path / "portrait.png"
    img.write_text("definitely not a picture\n")
    res = _demo(img, speech, tmp_path / "o.mp4")
    _assert_clear_error(res, r"not a readable image")
    assert not (tmp_path / "o.mp4").exists()


def test_image_without_a_face(tmp_path: Path, speech: Path) -> None:
    img = _png(tmp_path / "coffee.png", skimage.data.coffee())
    res = _demo(img, speech, tmp_path / "o.mp4")
    _assert_clear_error(res, r"no face")
    assert not (tmp_path / "o.mp4").exists()


def test_image_over_4096_px(tmp_path: Path, speech: Path) -> None:
    img = _png(tmp_path / "wide.png", np.zeros((100, 4100, 3), np.uint8))
    _assert_clear_error(_demo(img, speech, tmp_path / "o.mp4"), r"4100x100 px; at most 4096")


def test_decompression_bomb(tmp_path: Path, speech: Path) -> None:
    buf = io.BytesIO()
    Image.new("1", (1024, 1024)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = (30000).to_bytes(4, "big") * 2
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    img = tmp_path / "bomb.png"
    img.write_bytes(bytes(data))
    _assert_clear_error(_demo(img, speech, tmp_path / "o.mp4"), r"30000x30000 px")


def test_audio_that_cannot_be_decoded(tmp_path: Path, inputs: dict) -> None:
    audio = tmp_path / "speech.wav"
    audio.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 10)
    res = _demo(inputs["portrait"], audio, tmp_path / "o.mp4")
    _assert_clear_error(res, r"cannot decode audio|no audio stream")


def test_empty_audio(tmp_path: Path, inputs: dict) -> None:
    audio = tmp_path / "empty.wav"
    write_wav(audio, np.zeros(0, np.int16), 16000)
    res = _demo(inputs["portrait"], audio, tmp_path / "o.mp4")
    _assert_clear_error(res, r"contains no audio samples")


def test_missing_files(tmp_path: Path, inputs: dict) -> None:
    res = _demo(tmp_path / "nope.png", inputs["speech"], tmp_path / "o.mp4")
    _assert_clear_error(res, r"image file .*nope.png does not exist")
    res = _demo(inputs["portrait"], tmp_path / "nope.wav", tmp_path / "o.mp4")
    _assert_clear_error(res, r"audio file .*nope.wav does not exist")


@pytest.mark.parametrize("extra,pattern", [
    (("--size", "500x700"), r"unsupported output size 500x700"),
    (("--size", "4096x4096"), r"unsupported output size"),
    (("--size", "big"), r"--size must look like 512x768"),
    (("--fps", "0"), r"unsupported fps 0"),
    (("--fps", "240"), r"unsupported fps 240"),
    (("--pose-amplitude", "5"), r"pose_amplitude must be within 0..2"),
])
def test_unsupported_output_and_controls(tmp_path: Path, inputs: dict, extra, pattern) -> None:
    res = _demo(inputs["portrait"], inputs["speech"], tmp_path / "o.mp4", *extra)
    _assert_clear_error(res, pattern)


def test_silent_audio_is_valid(tmp_path: Path, inputs: dict) -> None:
    audio = tmp_path / "silence.wav"
    write_wav(audio, np.zeros(8000, np.int16), 16000)
    res = _demo(inputs["portrait"], audio, tmp_path / "idle.mp4", "--mode", "head")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "idle.mp4").stat().st_size > 0
