"""A silent clip is an idle video of the same person: the first frame's face matches the
portrait."""

from __future__ import annotations

import cv2
import numpy as np
from skimage.metrics import structural_similarity

from avatarflow.cli.inputs import write_wav
from avatarflow.images import decode_image
from tests.integration.conftest import run_cli
from tests.support.video import MouthMeter, read_video

ALIGN = [33, 263, 1, 61, 291, 152, 10, 234, 454]  # eyes, nose, mouth corners, chin, forehead


def _face_box(lm: np.ndarray, margin: float = 0.1) -> tuple[int, int, int, int]:
    x0, y0 = lm.min(axis=0)
    x1, y1 = lm.max(axis=0)
    mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    return int(x0 - mx), int(y0 - my), int(x1 + mx), int(y1 + my)


def test_silent_clip_keeps_identity(inputs: dict, tmp_path) -> None:
    silence = tmp_path / "silence.wav"
    write_wav(silence, np.zeros(16000 * 2, np.int16), 16000)
    out = tmp_path / "idle.mp4"
    res = run_cli("demo", "--image", str(inputs["portrait"]), "--audio", str(silence),
                  "--out", str(out), "--no-progress")
    assert res.returncode == 0, res.stderr
    video = read_video(out)
    assert abs(len(video.frames) - 60) <= 1
    portrait = decode_image(inputs["portrait"].read_bytes())
    meter = MouthMeter()
    src_lm = meter.landmarks(portrait)
    meter.close()
    meter = MouthMeter()
    frame_lm = meter.landmarks(video.frames[0])
    openings = [meter.opening(f) for f in video.frames[1:]]
    meter.close()
    # Bring the frame into the portrait's coordinates, then compare the face crops.
    m, _ = cv2.estimateAffinePartial2D(frame_lm[ALIGN], src_lm[ALIGN])
    aligned = cv2.warpAffine(video.frames[0], m, portrait.shape[1::-1], flags=cv2.INTER_AREA)
    x0, y0, x1, y1 = _face_box(src_lm)
    a = cv2.cvtColor(portrait[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY)
    b = cv2.cvtColor(aligned[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY)
    ssim = structural_similarity(a, b, data_range=255)
    print(f"identity: face-crop SSIM {ssim:.3f}")
    assert ssim >= 0.9
    assert np.nanmax(openings) < 0.06, "the mouth stays closed in an idle clip"
