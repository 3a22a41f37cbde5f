"""The dataset on disk: WebDataset tar shards plus a manifest.

::

    DS/manifest.json             what the dataset holds (``manifest``)
    DS/progress.jsonl            one line per finished clip (kept, or skipped and why): resume
    DS/shards/<name>.tar         samples, one per clip: <id>.json (its meta) and <id>.npz
                                 (its arrays, T frames each; ``ARRAYS``)

A shard is written as ``<name>.tar.partial`` and renamed when complete, and its clips are
recorded in the progress file only after that, so a build stopped at any point resumes with
the clips it had not finished. Any tar tool lists a shard; ``webdataset.WebDataset`` reads it
(``read_clips``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from avatarflow.contracts.errors import InvalidInput, MissingExtra

SHARDS, PROGRESS, MANIFEST = "shards", "progress.jsonl", "manifest.json"
# Every sample's arrays: name -> (shape after T, dtype, what it is).
ARRAYS: dict[str, tuple[str, str, str]] = {
    "audio": ("D", "float32", "audio features of the chosen engine at the video's rate"),
    "loudness": ("", "float32", "RMS level of the frame's own samples, dB re full scale"),
    "face_present": ("", "bool", "a face was found"),
    "rotation": ("3", "float32", "head pitch, yaw, roll (radians), relative to the clip"),
    "translation": ("3", "float32", "head translation, template units"),
    "scale": ("", "float32", "head scale, relative to the clip"),
    "expression": ("E", "float32", "expression coefficients (motion.EXPRESSIONS)"),
    "head_offset": ("K x 3", "float32", "head keypoint offsets, template units"),
    "body_present": ("", "bool", "the shoulders were seen"),
    "body": ("B x 3", "float32", "upper-body keypoints, canonical body units"),
    "body_visible": ("B", "bool", "mediapipe saw the keypoint"),
    "hands": ("2 x 21 x 3", "float32", "hand joints (left, right), canonical body units"),
    "hands_present": ("2", "bool", "the hand was found"),
}


def _wds() -> Any:
    try:
        import webdataset
    except ModuleNotFoundError as exc:  # pragma: no cover - train extra
        raise MissingExtra("webdataset", "train") from exc
    return webdataset


def write_shard(path: Path, samples: list[tuple[dict[str, Any], dict[str, np.ndarray]]]) -> None:
    """Writes (meta, arrays) samples to ``path`` through a ``.partial`` file."""
    partial = path.with_name(path.name + ".partial")
    partial.parent.mkdir(parents=True, exist_ok=True)
    with _wds().TarWriter(str(partial)) as sink:
        for meta, arrays in samples:
            sink.write({"__key__": meta["id"], "json": meta, "npz": arrays})
    partial.replace(path)


def shard_paths(ds: Path) -> list[Path]:
    return sorted((ds / SHARDS).glob("*.tar"))


def read_clips(ds: str | Path) -> Iterator[tuple[dict[str, Any], dict[str, np.ndarray]]]:
    """Every (meta, arrays) sample of the dataset at ``ds``, shard by shard."""
    paths = shard_paths(Path(ds))
    if not paths:
        raise InvalidInput(f"{ds} holds no shards ({SHARDS}/*.tar): build it with "
                           "`avatarflow dataset build`")
    wds = _wds()
    # every process of a distributed run reads every shard (each draws its own windows)
    for sample in wds.WebDataset([str(p) for p in paths], shardshuffle=False,
                                 empty_check=False, nodesplitter=_every_shard).decode():
        yield sample["json"], sample["npz"]


def _every_shard(urls: Any) -> Any:
    return urls


def read_progress(ds: Path) -> list[dict[str, Any]]:
    """The finished clips' records; a torn last line (a build killed mid-write) is ignored."""
    path = ds / PROGRESS
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def append_progress(ds: Path, records: list[dict[str, Any]]) -> None:
    """Records a shard's clips in one write: a stop leaves all of them recorded or none."""
    with (ds / PROGRESS).open("a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records))
