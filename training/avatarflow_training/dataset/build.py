"""``avatarflow dataset build``: videos -> shards and manifest, on every core, resumable.

The clips still to do (those not in the progress file) are cut into batches of
``clips_per_shard``; each batch is one task of a process pool: its worker labels the clips
(``clip.label_clip``), writes the usable ones as one shard and returns a record per clip. The
manifest is rewritten from the progress file at the end of every run.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from avatarflow.contracts.errors import InvalidInput
from avatarflow_training.dataset import shards
from avatarflow_training.dataset.clip import Unusable, clip_id, label_clip

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
FORMAT, VERSION = "avatarflow-motion-dataset", 1
STATS = ("audio", "rotation", "translation", "scale", "expression")  # summarised per dim


@dataclass(frozen=True)
class BuildOptions:
    out: Path
    audio_engine: str = "mel"
    engine_options: dict[str, Any] = field(default_factory=dict)
    workers: int = 0  # 0 = every core
    clips_per_shard: int = 8
    min_seconds: float = 2.0
    min_face: float = 0.9


def find_videos(source: str | Path) -> list[Path]:
    """A directory's videos (recursively), or the paths a list file names, one per line
    (relative ones from the list's folder; blank lines and # comments ignored)."""
    src = Path(source)
    if src.is_dir():
        found = sorted(p for p in src.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    elif src.is_file():
        found = []
        for line in src.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                p = Path(line).expanduser()
                found.append(p if p.is_absolute() else src.parent / p)
        missing = [str(p) for p in found if not p.is_file()]
        if missing:
            raise InvalidInput(f"{src} names {len(missing)} file(s) that do not exist, "
                               f"e.g. {missing[0]}")
    else:
        raise InvalidInput(f"--videos {src}: no such directory or list file")
    if not found:
        raise InvalidInput(f"no videos ({', '.join(VIDEO_SUFFIXES)}) in {src}")
    return found


_ENGINE: dict[str, Any] = {}  # per worker process: the audio engine, built once


def _engine(name: str, options: dict[str, Any]) -> Any:
    key = json.dumps([name, options], sort_keys=True, default=str)
    if key not in _ENGINE:
        from avatarflow_audio_encoder.engines import create

        _ENGINE[key] = create(name, **options)
    return _ENGINE[key]


def _stats(arrays: dict[str, np.ndarray]) -> dict[str, list[list[float]]]:
    """Per summarised array: [count, sum, sum of squares] per dim over the frames labelled."""
    out = {}
    for name in STATS:
        a = arrays[name].reshape(len(arrays[name]), -1).astype(np.float64)
        a = a[~np.isnan(a).any(axis=1)]
        out[name] = [[float(len(a))] * a.shape[1], a.sum(axis=0).tolist(),
                     (a * a).sum(axis=0).tolist()]
    return out


def label_batch(paths: list[str], opts: BuildOptions) -> list[dict[str, Any]]:
    """A pool task: labels the clips, writes the usable ones as one shard; a record each."""
    engine = _engine(opts.audio_engine, opts.engine_options)
    samples: list[tuple[dict[str, Any], dict[str, np.ndarray]]] = []
    records: list[dict[str, Any]] = []
    for p in paths:
        path = Path(p)
        try:
            clip = label_clip(path, engine, min_seconds=opts.min_seconds,
                              min_face=opts.min_face)
        except Unusable as exc:
            records.append({"id": clip_id(path), "source": p, "status": "skipped",
                            "reason": str(exc)})
            continue
        samples.append((clip.meta, clip.arrays))
        records.append({**clip.meta, "status": "ok", "stats": _stats(clip.arrays)})
    if samples:
        name = hashlib.sha1("|".join(m["id"] for m, _ in samples).encode()).hexdigest()[:16]
        shards.write_shard(opts.out / shards.SHARDS / f"{name}.tar", samples)
        for r in records:
            if r["status"] == "ok":
                r["shard"] = f"{shards.SHARDS}/{name}.tar"
    return records


def build(videos: list[Path], opts: BuildOptions,
          on_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Labels every video not yet done and writes the manifest; returns it."""
    out = opts.out
    (out / shards.SHARDS).mkdir(parents=True, exist_ok=True)
    records = shards.read_progress(out)
    kept = {r["shard"] for r in records if r["status"] == "ok"}
    for stale in (out / shards.SHARDS).iterdir():
        # half-written by a stopped run, or written but never recorded: its clips are redone
        if stale.name.endswith(".partial") or f"{shards.SHARDS}/{stale.name}" not in kept:
            stale.unlink()
    done = {r["id"] for r in records}
    todo = [str(p) for p in videos if clip_id(p) not in done]
    batches = [todo[i:i + opts.clips_per_shard]
               for i in range(0, len(todo), opts.clips_per_shard)]
    workers = min(opts.workers or os.cpu_count() or 1, max(len(batches), 1))
    finished = len(videos) - len(todo)
    if on_progress is not None:
        on_progress(finished, len(videos))
    if batches:
        # spawn: each worker builds its own mediapipe graphs and engine, nothing inherited
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"),
                                 initializer=_one_thread) as pool:
            futures = [pool.submit(label_batch, b, opts) for b in batches]
            for f in as_completed(futures):
                records = f.result()
                shards.append_progress(out, records)
                finished += len(records)
                if on_progress is not None:
                    on_progress(finished, len(videos))
    manifest = make_manifest(out, opts)
    (out / shards.MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def _one_thread() -> None:
    """A worker per core: no numerical library may start a pool of its own."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    import cv2

    cv2.setNumThreads(1)


def make_manifest(out: Path, opts: BuildOptions) -> dict[str, Any]:
    """What the dataset holds, from its progress file: clips, skips and label statistics."""
    records = {r["id"]: r for r in shards.read_progress(out)}  # the last word on each clip
    ok = [r for r in records.values() if r["status"] == "ok"]
    skipped = [{"source": r["source"], "reason": r["reason"]} for r in records.values()
               if r["status"] == "skipped"]
    labels: dict[str, Any] = {}
    for name in STATS:
        parts = [np.array(r["stats"][name], dtype=np.float64) for r in ok]
        if not parts:
            continue
        count, total, squares = np.sum(parts, axis=0)
        mean = total / np.maximum(count, 1)
        std = np.sqrt(np.maximum(squares / np.maximum(count, 1) - mean**2, 0.0))
        labels[name] = {"frames": int(count[0]), "mean": mean.round(6).tolist(),
                        "std": std.round(6).tolist()}
    frames = sum(r["frames"] for r in ok)
    keep = ("id", "source", "shard", "frames", "fps", "duration_s", "width", "height",
            "sample_rate", "face_frames", "body_frames", "hand_frames")
    return {
        "format": FORMAT, "version": VERSION,
        "written": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "audio_engine": opts.audio_engine,
        "audio_layout": ok[0]["audio_layout"] if ok else "",
        "arrays": {n: {"shape": f"T x {s}" if s else "T", "dtype": d, "what": w}
                   for n, (s, d, w) in shards.ARRAYS.items()},
        "clips": [{k: r[k] for k in keep if k in r} for r in ok],
        "skipped": skipped,
        "totals": {"clips": len(ok), "skipped": len(skipped), "frames": frames,
                   "hours": round(sum(r["duration_s"] for r in ok) / 3600, 4),
                   "face_frames": sum(r["face_frames"] for r in ok),
                   "body_frames": sum(r["body_frames"] for r in ok),
                   "hand_frames": [sum(r["hand_frames"][i] for r in ok) for i in (0, 1)]},
        "labels": labels,
    }
