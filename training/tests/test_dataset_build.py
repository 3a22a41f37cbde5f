"""``avatarflow dataset build`` on short clips the warp renderer made with known motion and a
sound track: the documented shards and manifest, unusable clips skipped with their reason, a
second run resuming instead of redoing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from train_samples import posed_frame

from avatarflow.cli.main import main
from avatarflow.cli.media import Mp4Writer
from avatarflow.contracts import motion as mo
from avatarflow_training.dataset import shards
from avatarflow_training.dataset.clip import clip_id

FPS, RATE, SECONDS = 24.0, 16000, 2.5


def _speech(seconds: float, seed: int) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    syllables = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t + seed)
    voice = np.sin(2 * np.pi * (120 + 20 * seed) * t) * syllables
    return (9000 * voice).astype(np.int16)


def _write(path: Path, frames: list[np.ndarray], pcm: np.ndarray | None) -> Path:
    writer = Mp4Writer(path, 256, 256, FPS, sample_rate=RATE if pcm is not None else None,
                       crf=18)
    for f in frames:
        writer.write(f)
    writer.close(pcm)
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two talking clips, one without a face, one too short; all with sound."""
    from avatarflow_renderer.analysis import analyse
    from avatarflow_renderer.engines import create

    root = tmp_path_factory.mktemp("videos")
    n = int(FPS * SECONDS)
    engine = create("warp")
    try:
        avatar = analyse(skimage.data.astronaut(), "astronaut", "head", 256, 256)
        for k in range(2):
            t = np.arange(n)
            rot = np.zeros((n, 3), np.float32)
            rot[:, 1] = 0.2 * np.sin(2 * np.pi * t / (20.0 + 7 * k))
            e = np.zeros((n, len(mo.EXPRESSIONS)), np.float32)
            e[:, mo.EXPR["jaw_open"]] = 0.3 + 0.3 * np.sin(2 * np.pi * t / 6.0 + k)
            frames = [engine.render(avatar, posed_frame(r, x)) for r, x in zip(rot, e, strict=True)]
            _write(root / f"talk{k}.mp4", frames, _speech(SECONDS, k))
        short = frames[: int(FPS)]
    finally:
        engine.close()
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 255, (256, 256, 3), dtype=np.uint8) for _ in range(n)]
    _write(root / "noface.mp4", noise, _speech(SECONDS, 2))
    _write(root / "short.mp4", short, _speech(1.0, 3))
    return root


def test_build_writes_shards_and_a_manifest_and_skips_what_it_cannot_use(
        videos: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ds"
    assert main(["dataset", "build", "--videos", str(videos), "--out", str(out),
                 "--workers", "2", "--clips-per-shard", "2", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "2 clips" in printed and "2 skipped" in printed
    manifest = json.loads((out / shards.MANIFEST).read_text())
    assert manifest["format"] == "avatarflow-motion-dataset" and manifest["version"] == 1
    assert manifest["audio_engine"] == "mel" and manifest["audio_layout"].startswith("mel40")
    assert sorted(Path(c["source"]).name for c in manifest["clips"]) == ["talk0.mp4",
                                                                         "talk1.mp4"]
    reasons = {Path(s["source"]).name: s["reason"] for s in manifest["skipped"]}
    assert reasons["noface.mp4"].startswith("a face in only 0 of")
    assert reasons["short.mp4"].startswith("too short: 1.00 s")
    assert manifest["totals"]["frames"] == 2 * int(FPS * SECONDS)
    assert manifest["labels"]["expression"]["frames"] == 2 * int(FPS * SECONDS)
    assert len(manifest["labels"]["audio"]["mean"]) == 44
    # the shards hold what the manifest lists, every array T frames long
    samples = list(shards.read_clips(out))
    assert sorted(m["id"] for m, _ in samples) == sorted(c["id"] for c in manifest["clips"])
    for meta, arrays in samples:
        assert set(arrays) == set(shards.ARRAYS)
        t = meta["frames"]
        assert arrays["audio"].shape == (t, 44) and arrays["expression"].shape == (t, 8)
        assert arrays["head_offset"].shape == (t, mo.K, 3)
        assert arrays["hands"].shape == (t, 2, 21, 3) and arrays["face_present"].all()
        jaw = arrays["expression"][:, mo.EXPR["jaw_open"]]
        assert jaw.std() > 0.05  # the mouth moves in the labels


def test_a_second_run_resumes_and_a_half_written_shard_is_redone(videos: Path,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "ds"
    talk = sorted(videos.glob("talk*.mp4"))
    listing = tmp_path / "clips.txt"
    listing.write_text(f"# two clips\n{talk[0]}\n\n{talk[1]}\n")
    args = ["dataset", "build", "--videos", str(listing), "--out", str(out), "--workers", "1",
            "--clips-per-shard", "1", "--no-progress"]
    assert main(args) == 0
    first = shards.read_progress(out)
    assert len(first) == 2 and len(shards.shard_paths(out)) == 2
    # a run stopped after one clip: its record gone, a half-written shard left behind
    lines = (out / shards.PROGRESS).read_text().splitlines()
    (out / shards.PROGRESS).write_text(lines[0] + "\n")
    (out / shards.SHARDS / "dead.tar.partial").write_bytes(b"half")
    assert main(args) == 0
    again = shards.read_progress(out)
    assert [r["id"] for r in again] == [first[0]["id"], first[1]["id"]]
    assert not list((out / shards.SHARDS).glob("*.partial"))
    assert len(shards.shard_paths(out)) == 2  # the unrecorded shard was not kept twice
    assert main(args) == 0  # nothing left to do: nothing redone
    assert len(shards.read_progress(out)) == 2
    assert clip_id(talk[0]) in {r["id"] for r in again}


def test_a_missing_directory_or_list_entry_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["dataset", "build", "--videos", str(tmp_path / "nope"), "--out",
                 str(tmp_path / "ds")]) == 2
    assert "no such directory or list file" in capsys.readouterr().err
    listing = tmp_path / "list.txt"
    listing.write_text("missing.mp4\n")
    assert main(["dataset", "build", "--videos", str(listing), "--out",
                 str(tmp_path / "ds")]) == 2
    assert "do not exist" in capsys.readouterr().err
