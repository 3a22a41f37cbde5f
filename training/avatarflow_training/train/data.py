"""The clips of a built dataset in memory, the network's normalisation statistics from them,
and random batches of training windows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from avatarflow.contracts.errors import InvalidInput
from avatarflow.contracts.motion import BODY_CANONICAL
from avatarflow_motion_gen.engines.body import WRISTS
from avatarflow_motion_gen.models.diffusion import BODY_STD, HAND_STD, OFFSET_STD
from avatarflow_training.dataset.shards import read_clips
from avatarflow_training.train.windows import (
    E,
    Window,
    clip_ranges,
    hand_coefficients,
    motion_vectors,
    window,
)


class ClipSet:
    """Every clip of a dataset, with the window starts each allows for a window shape."""

    def __init__(self, clips: list[tuple[dict[str, Any], dict[str, np.ndarray]]], *,
                 history: int, size: int, lookahead: int, hand_coeffs: int,
                 ref_frames: int) -> None:
        if not clips:
            raise InvalidInput("the dataset holds no clips")
        self.clips = clips
        self.shape = {"history": history, "size": size, "lookahead": lookahead,
                      "hand_coeffs": hand_coeffs}
        self.ref_frames = ref_frames
        self.layout = {m.get("audio_layout", "") for m, _ in clips}
        ranges = np.stack([clip_ranges(a) for _, a in clips])
        self.mean_ranges = np.maximum(ranges.mean(axis=0), 1e-6)
        self.styles = [(r / self.mean_ranges).astype(np.float32) for r in ranges]
        self.starts = []
        for i, (_, a) in enumerate(clips):
            face = a["face_present"].astype(bool)
            ok = np.convolve(face, np.ones(size), "valid") == size  # all N frames have a face
            self.starts += [(i, int(s)) for s in np.flatnonzero(ok)]
        if not self.starts:
            raise InvalidInput(f"no clip has {size} consecutive frames with a face")

    @classmethod
    def load(cls, ds: str | Path, **shape: int) -> ClipSet:
        return cls(list(read_clips(ds)), **shape)

    def statistics(self) -> dict[str, np.ndarray]:
        """audio_mean/std (D) and motion_mean/std (M) over every labelled frame."""
        audio = np.concatenate([a["audio"] for _, a in self.clips]).astype(np.float64)
        motion = np.concatenate([motion_vectors(a) for _, a in self.clips]).astype(np.float64)
        motion = motion[~np.isnan(motion).any(axis=1)]
        out = {"audio_mean": audio.mean(0), "audio_std": np.maximum(audio.std(0), 1e-3),
               "motion_mean": motion.mean(0), "motion_std": np.maximum(motion.std(0), 1e-3)}
        out["output_std"] = self._output_std()
        return out

    def _output_std(self) -> np.ndarray:
        """The body network's units: the spread of the head offsets, of the body keypoints
        seen (around the canonical pose) and of the hand coefficients over the data set
        (the network's defaults where a label is absent)."""
        offsets, body, hands = [], [], []
        for _, a in self.clips:
            offsets.append(a["head_offset"][a["face_present"].astype(bool)].reshape(-1))
            seen = a["body_visible"].astype(bool) & a["body_present"].astype(bool)[:, None]
            body.append((a["body"] - BODY_CANONICAL)[seen].reshape(-1))
            for i, hand in zip(*np.nonzero(a["hands_present"]), strict=True):
                wrist = a["body"][i, WRISTS[hand]]
                both = np.stack([wrist, wrist])
                coeffs = hand_coefficients(np.nan_to_num(a["hands"][i]), both,
                                           self.shape["hand_coeffs"])
                hands.append(coeffs[hand])
        defaults = (OFFSET_STD, BODY_STD, HAND_STD)
        parts = [np.concatenate(offsets), np.concatenate(body),
                 np.concatenate(hands) if hands else np.zeros(0)]
        return np.array([max(float(np.sqrt(np.mean(p**2))), 1e-3) if p.size else d
                         for p, d in zip(parts, defaults, strict=True)], dtype=np.float32)

    def sample(self, rng: np.random.Generator, count: int
               ) -> tuple[list[Window], list[np.ndarray | None]]:
        """``count`` windows drawn uniformly over every start, each with a reference: the
        expressions of ``ref_frames`` other frames of its clip (None when it is too short)."""
        windows, refs = [], []
        for k in rng.integers(0, len(self.starts), count):
            i, start = self.starts[int(k)]
            _, arrays = self.clips[i]
            w = window(arrays, start, style=self.styles[i], **self.shape)
            assert w is not None  # every start was checked
            windows.append(w)
            expr = arrays["expression"][arrays["face_present"].astype(bool)]
            if len(expr) >= self.ref_frames:
                r0 = int(rng.integers(0, len(expr) - self.ref_frames + 1))
                refs.append(expr[r0:r0 + self.ref_frames, :E].astype(np.float32))
            else:
                refs.append(None)
        return windows, refs
