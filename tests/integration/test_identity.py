"""A silent clip is an idle video of the same person: the first frame's face matches the
portrait."""

from __future__ import annotations

import cv2
import numpy as np
from skimage.metrics import structural_similarity

from avatarflow.cli.inputs import write_wav
from avatarflow.contracts.images import decode_image
from tests.integration.conftest import run_cli
from tests.support.video import CLOSED_BELOW, MouthMeter, read_video

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
    portrait_opening = meter.opening(portrait)
    meter.close()
    meter = MouthMeter()
    frame_lm = meter.landmarks(video.frames[0])
    openings = [meter.opening(f) for f in video.frames[1:]]
    meter.close()
    # Bring the portrait onto the frame (a similarity fitted on landmarks), then compare the
    # face crops at the frame's resolution.
    frame = video.frames[0]
    m, _ = cv2.estimateAffinePartial2D(src_lm[ALIGN], frame_lm[ALIGN])
    aligned = cv2.warpAffine(portrait, m, frame.shape[1::-1], flags=cv2.INTER_LINEAR)
    x0, y0, x1, y1 = _face_box(frame_lm)
    # Landmarks place the face to about a pixel; refine the fit on the pixels themselves.
    mask = np.zeros(frame.shape[:2], np.uint8)
    mask[y0:y1, x0:x1] = 255
    grey = [cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).astype(np.float32) for x in (frame, aligned)]
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-5)
    _, fine = cv2.findTransformECC(grey[0], grey[1], np.eye(2, 3, dtype=np.float32),
                                   cv2.MOTION_AFFINE, criteria, mask, 5)
    aligned = cv2.warpAffine(aligned, fine, frame.shape[1::-1],
                             flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    a = cv2.cvtColor(aligned[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY)
    b = cv2.cvtColor(frame[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY)
    ssim = structural_similarity(a, b, data_range=255)
    print(f"identity: face-crop SSIM {ssim:.3f}")
    assert ssim >= 0.9
    assert np.nanmax(openings) < CLOSED_BELOW, "the mouth stays closed in an idle clip"
    # The portrait smiles with parted lips; at rest the avatar closes them.
    assert np.nanmax(openings) < 0.8 * portrait_opening
