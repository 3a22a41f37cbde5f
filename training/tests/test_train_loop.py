"""Training the diffusion network on a small data set: the loss falls, a stopped run resumes
exactly, and the export is a weights directory the ``diffusion`` engine loads and runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from train_samples import FPS, LAYOUT, TINY, D, labelled_clip  # noqa: E402

from avatarflow.contracts.controls import Controls  # noqa: E402
from avatarflow.contracts.errors import InvalidInput  # noqa: E402
from avatarflow_motion_gen.engines.diffusion import DiffusionEngine, preset  # noqa: E402
from avatarflow_training.dataset.shards import write_shard  # noqa: E402
from avatarflow_training.train.data import ClipSet  # noqa: E402
from avatarflow_training.train.loop import TrainConfig, Trainer, model_config, run  # noqa: E402


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ds = tmp_path_factory.mktemp("ds")
    write_shard(ds / "shards" / "a.tar", [labelled_clip(k) for k in range(3)])
    return ds


def _trainer(ds: Path, **cfg: object) -> Trainer:
    config = TrainConfig(model=TINY, batch_size=8, lr=3e-3, **cfg)  # type: ignore[arg-type]
    shape = preset("small", **TINY)
    data = ClipSet.load(ds, history=shape.history, size=shape.window,
                        lookahead=shape.lookahead, hand_coeffs=shape.hand_coeffs,
                        ref_frames=shape.ref_frames)
    return Trainer(data, config, model_config(config, data, FPS))


def test_the_loss_falls(dataset: Path) -> None:
    trainer = _trainer(dataset)
    totals = [trainer.step()["total"] for _ in range(60)]
    assert np.mean(totals[-10:]) < 0.7 * np.mean(totals[:10]), totals


def test_a_stopped_run_resumes_exactly(dataset: Path, tmp_path: Path) -> None:
    straight = _trainer(dataset)
    expected = [straight.step()["total"] for _ in range(6)]
    first = _trainer(dataset)
    got = [first.step()["total"] for _ in range(3)]
    first.save(tmp_path / "ckpt.pt")
    second = _trainer(dataset, seed=99)  # whatever it would start from, the checkpoint wins
    second.restore(tmp_path / "ckpt.pt")
    got += [second.step()["total"] for _ in range(3)]
    assert got == expected


def test_the_export_loads_strictly_into_the_engine(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = TrainConfig(model=TINY, batch_size=4, steps=4, checkpoint_every=2, log_every=1)
    run(dataset, cfg, out)
    assert (out / "checkpoint.pt").is_file()
    assert len((out / "metrics.csv").read_text().splitlines()) == 5  # header + 4 steps
    engine = DiffusionEngine(weights=str(out / "export"))
    session = engine.open_session(FPS, Controls(), LAYOUT)
    frames = session.push([np.zeros(D, np.float32)] * 12) + session.flush()
    assert len(frames) == 12 and all(np.isfinite(f.expression).all() for f in frames)
    run(dataset, cfg, out)  # done already: resumes at step 4 and trains nothing more
    assert len((out / "metrics.csv").read_text().splitlines()) == 5


def test_the_trained_engine_runs_in_the_embedded_pipeline(dataset: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    import wave

    import skimage.data
    import skimage.io

    from avatarflow.cli.main import main

    out = tmp_path / "run"
    run(dataset, TrainConfig(model=TINY, batch_size=4, steps=2), out)
    speech = tmp_path / "speech.wav"
    t = np.arange(32000) / 16000
    pcm = (8000 * np.sin(2 * np.pi * 150 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype("<i2")
    with wave.open(str(speech), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm.tobytes())
    portrait = tmp_path / "portrait.png"
    skimage.io.imsave(portrait, skimage.data.astronaut())
    monkeypatch.setenv("AVATARFLOW_MOTION_GEN_ENGINE", "diffusion")
    monkeypatch.setenv("AVATARFLOW_MOTION_GEN_WEIGHTS", str(out / "export"))
    video = tmp_path / "out.mp4"
    assert main(["demo", "--image", str(portrait), "--audio", str(speech), "--out", str(video),
                 "--no-progress"]) == 0
    import av

    with av.open(str(video)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == 60  # 2 s at 30 fps, every frame made by the trained network


def test_torchrun_with_two_cpu_processes_trains_the_same_config(dataset: Path,
                                                                tmp_path: Path) -> None:
    import subprocess
    import sys

    import yaml

    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"model": TINY, "batch_size": 4, "steps": 4,
                                      "log_every": 1, "checkpoint_every": 2}))
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", "-m", "avatarflow.cli.main", "train", "motion",
               "--data", str(dataset), "--config", str(config), "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len((out / "metrics.csv").read_text().splitlines()) == 5  # rank 0 alone logs
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert state["step"] == 4 and len(state["generators"]) == 2
    DiffusionEngine(weights=str(out / "export"))  # loads strictly
    # a two-process checkpoint resumed by one process: refused, saying why
    cfg = TrainConfig(model=TINY, batch_size=4, steps=6)
    with pytest.raises(InvalidInput, match="resume it with as many"):
        run(dataset, cfg, out)
