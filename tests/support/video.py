"""Measuring what a viewer sees in an output video: frames, durations, mouth opening."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Video:
    frames: list[np.ndarray]  # H x W x 3 uint8 RGB
    fps: float
    video_seconds: float
    audio_seconds: float
    audio: np.ndarray  # float32 mono, at audio_rate
    audio_rate: int


def read_video(path: Path) -> Video:
    import av

    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        fps = float(vs.average_rate)
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(vs)]
    with av.open(str(path)) as c:
        st = c.streams.audio[0]
        rate = st.rate
        parts = [f.to_ndarray().astype(np.float32).mean(axis=0) for f in c.decode(st)]
        a_dur = float(st.duration * st.time_base) if st.duration else 0.0
    audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return Video(frames, fps, len(frames) / fps, a_dur or audio.size / rate, audio, rate)


# Lips together read below this. Calibrated on the astronaut: her portrait's smile with parted
# lips and teeth reads 0.12, the rendered closed smile 0.06-0.075 (face mesh places the inner
# lip points on the lips' inner edges, which a thick closed smile keeps a few pixels apart), and
# open speech frames 0.15-0.3.
CLOSED_BELOW = 0.09


class MouthMeter:
    """Inner-lip gap over eye-corner distance, from mediapipe face mesh on each frame."""

    def __init__(self) -> None:
        import mediapipe as mp

        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=False, refine_landmarks=False, max_num_faces=1,
            min_detection_confidence=0.3, min_tracking_confidence=0.3)

    def landmarks(self, rgb: np.ndarray) -> np.ndarray | None:
        res = self._mesh.process(np.ascontiguousarray(rgb))
        if not res.multi_face_landmarks:
            return None
        h, w = rgb.shape[:2]
        return np.array([[p.x * w, p.y * h] for p in res.multi_face_landmarks[0].landmark])

    def opening(self, rgb: np.ndarray) -> float:
        lm = self.landmarks(rgb)
        if lm is None:
            return float("nan")
        return float(np.linalg.norm(lm[13] - lm[14]) / np.linalg.norm(lm[33] - lm[263]))

    def close(self) -> None:
        self._mesh.close()


def frame_energy(pcm: np.ndarray, rate: int, fps: float, n_frames: int) -> np.ndarray:
    """RMS of the input audio over each video frame's interval (linear, full scale = 1)."""
    x = pcm.astype(np.float64) / 32768.0
    out = np.zeros(n_frames)
    for i in range(n_frames):
        seg = x[int(i * rate / fps):int((i + 1) * rate / fps)]
        out[i] = np.sqrt(np.mean(seg**2)) if seg.size else 0.0
    return out


def silent_frames(pcm: np.ndarray, rate: int, fps: float, n_frames: int,
                  margin: int = 3) -> np.ndarray:
    """Frames whose interval and ``margin`` frames either side hold only digital silence."""
    quiet = frame_energy(pcm, rate, fps, n_frames) < 1e-4
    keep = quiet.copy()
    for s in range(1, margin + 1):
        keep[s:] &= quiet[:-s]
        keep[:-s] &= quiet[s:]
    return keep
