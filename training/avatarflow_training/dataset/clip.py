"""One video clip -> a training sample: per video frame, the motion labels from the pixels and
the audio features from the clip's sound track, or the reason the clip cannot be used.

A clip is unusable when it has no video or no sound, is shorter than ``min_seconds``, shows a
face in too few frames (``min_face``), or has a cut: consecutive frames whose thumbnails differ
by more than ``CUT_LEVEL`` (mean absolute difference of 32 x 32 grey images, 0-255) or whose
face jumps by more than ``CUT_JUMP`` of its own eye distance. Cut a long recording into shots
before building, or leave cuts to this check.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from avatarflow.cli.media import load_audio
from avatarflow.contracts import motion as mo
from avatarflow.contracts.errors import InvalidInput, MissingExtra
from avatarflow_training.dataset.body import BodyObservation, BodyTracker, body_labels
from avatarflow_training.dataset.face import face_labels
from avatarflow_training.dataset.tracking import FaceTracker

CUT_LEVEL = 30.0  # consecutive frames of one shot differ by a few levels; a cut by tens
CUT_JUMP = 1.0
THUMB = 32
_EYES = [mo.HEAD["eye_r_out"], mo.HEAD["eye_l_out"]]


class Unusable(Exception):
    """The clip cannot be used; the message says why."""


@dataclass
class Clip:
    """A labelled clip: T frames of every array, and what describes it."""

    id: str
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)


def clip_id(path: Path) -> str:
    """A stable id from the file's resolved path, size and modification time."""
    st = path.stat()
    text = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return f"{path.stem[:40]}-{hashlib.sha1(text.encode()).hexdigest()[:12]}"


@dataclass
class _Tracks:
    fps: float
    width: int
    height: int
    faces: list[np.ndarray | None] = field(default_factory=list)
    bodies: list[BodyObservation | None] = field(default_factory=list)


class _Cuts:
    """Finds where a new shot starts, a frame at a time."""

    def __init__(self) -> None:
        self.thumb: np.ndarray | None = None
        self.face: np.ndarray | None = None

    def starts_shot(self, rgb: np.ndarray, face: np.ndarray | None) -> bool:
        thumb = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (THUMB, THUMB),
                           interpolation=cv2.INTER_AREA).astype(np.float32)
        cut = self.thumb is not None and float(np.abs(thumb - self.thumb).mean()) > CUT_LEVEL
        if face is not None and self.face is not None:
            iod = float(np.linalg.norm(self.face[_EYES[0], :2] - self.face[_EYES[1], :2]))
            jump = float(np.linalg.norm(face[:, :2].mean(0) - self.face[:, :2].mean(0)))
            cut = cut or jump > CUT_JUMP * max(iod, 1.0)
        self.thumb = thumb
        self.face = face if face is not None else self.face
        return cut


def _track(path: Path) -> _Tracks:
    """Decodes the video a frame at a time and tracks face and body in each (no frame kept)."""
    try:
        import av
    except ModuleNotFoundError as exc:  # pragma: no cover - cli extra
        raise MissingExtra("av", "cli") from exc
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise Unusable("no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0.0)
            if not fps:
                raise Unusable("the file does not state its frame rate")
            tracks = _Tracks(fps, stream.codec_context.width, stream.codec_context.height)
            cuts = _Cuts()
            with FaceTracker() as faces, BodyTracker() as bodies:
                for frame in container.decode(stream):
                    rgb = frame.to_ndarray(format="rgb24")
                    face = faces.track(rgb)
                    if cuts.starts_shot(rgb, face):
                        n = len(tracks.faces)
                        raise Unusable(f"a cut at {n / fps:.2f} s (frame {n}): one shot per "
                                       "clip")
                    tracks.faces.append(face)
                    tracks.bodies.append(bodies.track(rgb))
    except (av.error.FFmpegError, ValueError) as exc:
        raise Unusable(f"cannot decode the video: {exc}") from exc
    return tracks


def loudness(pcm: np.ndarray, rate: int, fps: float, frames: int) -> np.ndarray:
    """Per video frame, the RMS level of its own samples in dB re full scale (-100 silent):
    the speech envelope lip sync is measured against, whatever the audio engine."""
    x = pcm.astype(np.float64) / 32768.0
    out = np.full(frames, -100.0, dtype=np.float32)
    for i in range(frames):
        seg = x[round(i * rate / fps):round((i + 1) * rate / fps)]
        if seg.size:
            rms = float(np.sqrt(np.mean(seg * seg)))
            out[i] = max(-100.0, 20.0 * np.log10(rms)) if rms > 0 else -100.0
    return out


def label_clip(path: Path, engine: Any, *, min_seconds: float = 2.0,
               min_face: float = 0.9) -> Clip:
    """Labels ``path`` with ``engine`` (an audio-encoder ``FeatureEngine``); raises Unusable."""
    try:
        pcm, rate = load_audio(path)
    except InvalidInput as exc:
        raise Unusable(f"no usable sound track: {exc.message}") from exc
    tracks = _track(path)
    fps, faces, bodies = tracks.fps, tracks.faces, tracks.bodies
    if len(faces) < min_seconds * fps:
        raise Unusable(f"too short: {len(faces) / fps:.2f} s, under {min_seconds:g} s")
    found = sum(f is not None for f in faces)
    if found < min_face * len(faces):
        raise Unusable(f"a face in only {found} of {len(faces)} frames")
    stream = engine.open_session(rate, fps)
    features = stream.push(pcm) + stream.flush()
    n = min(len(faces), len(features))
    face, body = face_labels(faces[:n]), body_labels(bodies[:n])
    arrays = {
        "audio": np.stack(features[:n]).astype(np.float32),
        "loudness": loudness(pcm, rate, fps, n),
        "face_present": face.present, "rotation": face.rotation,
        "translation": face.translation, "scale": face.scale, "expression": face.expression,
        "head_offset": face.head_offset,
        "body_present": body.present, "body": body.body, "body_visible": body.body_visible,
        "hands": body.hands, "hands_present": body.hands_present,
    }
    meta = {"id": clip_id(path), "source": str(path), "fps": fps, "frames": n,
            "duration_s": n / fps, "video_frames": len(faces), "audio_frames": len(features),
            "sample_rate": rate, "width": tracks.width, "height": tracks.height,
            "audio_layout": engine.layout,
            "face_frames": int(face.present.sum()), "body_frames": int(body.present.sum()),
            "hand_frames": [int(v) for v in body.hands_present.sum(axis=0)]}
    return Clip(meta["id"], arrays, meta)
