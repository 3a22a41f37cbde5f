"""Style references: extracted from a video the warp renderer made with known expressions, and
the CLI's answers for clips without a face."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage.data

from avatarflow.cli.main import main
from avatarflow.cli.media import Mp4Writer
from avatarflow.contracts import motion as mo
from avatarflow.contracts import style
from avatarflow.contracts.messages import MotionFrame

FRAMES = 24
FPS = 24.0


def _motion(e: np.ndarray) -> MotionFrame:
    wrists = mo.BODY_CANONICAL[[mo.BODY["wrist_l"], mo.BODY["wrist_r"]]]
    return MotionFrame(
        session_id="s", rotation=np.zeros(3, np.float32), translation=np.zeros(3, np.float32),
        scale=1.0, expression=e, head_template=mo.head_template(e),
        head_offset=np.zeros((mo.K, 3), np.float32), body=mo.BODY_CANONICAL.copy(),
        hands=(mo.HAND_REST + wrists[:, None]).astype(np.float32))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """An MP4 of the astronaut speaking with known jaw and brows, and those coefficients."""
    from avatarflow_renderer.analysis import analyse
    from avatarflow_renderer.engines import create

    t = np.arange(FRAMES)
    truth = np.zeros((FRAMES, len(mo.EXPRESSIONS)), np.float32)
    truth[:, mo.EXPR["jaw_open"]] = 0.35 + 0.35 * np.sin(2 * np.pi * t / 8.0)
    truth[:, mo.EXPR["brow_raise"]] = 0.45 + 0.45 * np.sin(2 * np.pi * t / 13.0 + 1.0)
    engine = create("warp")
    try:
        avatar = analyse(skimage.data.astronaut(), "astronaut", "head", 256, 256)
        path = tmp_path_factory.mktemp("style") / "speaking.mp4"
        writer = Mp4Writer(path, 256, 256, FPS, crf=16)
        for e in truth:
            writer.write(engine.render(avatar, _motion(e)))
        writer.close()
    finally:
        engine.close()
    return path, truth


def test_extraction_recovers_the_rendered_expressions(rendered, tmp_path: Path, capsys) -> None:
    video, truth = rendered
    out = tmp_path / "style.npz"
    assert main(["style-reference", "--video", str(video), "--out", str(out)]) == 0
    ref = style.load(out)
    assert ref.fps == FPS and ref.expressions.dtype == np.float32
    assert ref.expressions.shape == (FRAMES, len(mo.EXPRESSIONS))  # every frame has the face
    for name in ("jaw_open", "brow_raise"):
        r = np.corrcoef(ref.expressions[:, mo.EXPR[name]], truth[:, mo.EXPR[name]])[0, 1]
        assert r > 0.8, (name, r)
    assert f"{FRAMES} frames at 24 fps" in capsys.readouterr().out


def test_fps_option_overrides_the_files_rate(rendered, tmp_path: Path) -> None:
    out = tmp_path / "style.npz"
    assert main(["style-reference", "--video", str(rendered[0]), "--out", str(out),
                 "--fps", "12.5"]) == 0
    assert style.load(out).fps == 12.5


def test_a_clip_without_a_face_is_a_clear_error(tmp_path: Path, capsys) -> None:
    video = tmp_path / "noise.mp4"
    writer = Mp4Writer(video, 128, 128, 10.0)
    rng = np.random.default_rng(0)
    for _ in range(10):
        writer.write(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8))
    writer.close()
    out = tmp_path / "style.npz"
    assert main(["style-reference", "--video", str(video), "--out", str(out)]) == 2
    assert "no face found in any of the 10 frames" in capsys.readouterr().err
    assert not out.exists()


def test_saved_references_round_trip_and_are_checked(tmp_path: Path) -> None:
    x = np.full((20, len(mo.EXPRESSIONS)), 0.25, np.float32)
    path = style.save(style.check(x, 30.0), tmp_path / "a.npz")
    np.testing.assert_array_equal(style.load(path).expressions, x)
    np.savez(tmp_path / "b.npz", expressions=x[:3], fps=30.0)
    with pytest.raises(style.OutOfRange, match="8..1800 frames, got 3"):
        style.load(tmp_path / "b.npz")
