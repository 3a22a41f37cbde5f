"""``avatarflow eval motion``: the measures on labels whose mouth follows the loudness, and a
trained model and the signal engine measured the same way."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from train_samples import TINY, labelled_clip  # noqa: E402

from avatarflow.cli.main import main  # noqa: E402
from avatarflow.contracts import motion as mo  # noqa: E402
from avatarflow_training.dataset.shards import write_shard  # noqa: E402
from avatarflow_training.evaluate import Motion, measure  # noqa: E402
from avatarflow_training.train.loop import TrainConfig, run  # noqa: E402


def _motion(jaw: np.ndarray) -> Motion:
    e = np.zeros((len(jaw), len(mo.EXPRESSIONS)), np.float32)
    e[:, mo.EXPR["jaw_open"]] = jaw
    return Motion(e, np.zeros((len(jaw), 3), np.float32))


def test_the_measures_say_what_a_viewer_sees() -> None:
    t = np.arange(120)
    loud = np.where((t // 20) % 2 == 0, -20.0, -90.0)  # speech and silence in turns
    synced = measure(_motion(np.where(loud > -50, 0.6, 0.0)), loud)
    assert synced["lipsync_r"] > 0.99 and synced["closed"] == 1.0
    lagging = measure(_motion(np.roll(np.where(loud > -50, 0.6, 0.0), 20)), loud)
    assert lagging["lipsync_r"] < 0 and lagging["closed"] == 0.0
    frozen = measure(_motion(np.zeros(120)), loud)
    assert np.isnan(frozen["lipsync_r"]) and frozen["diversity"] == 0.0
    noisy = measure(_motion(np.random.default_rng(0).uniform(0, 0.6, 120)), loud)
    assert noisy["jitter"] > 5 * synced["jitter"]  # the square wave jumps 12 times


def test_eval_reports_the_model_beside_the_real_labels(tmp_path: Path, capsys) -> None:
    ds = tmp_path / "ds"
    write_shard(ds / "shards" / "a.tar", [labelled_clip(k) for k in range(2)])
    run(ds, TrainConfig(model=TINY, batch_size=4, steps=3), tmp_path / "run")
    out = tmp_path / "eval.json"
    assert main(["eval", "motion", "--data", str(ds), "--weights", str(tmp_path / "run"),
                 "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert len(results["clips"]) == 2 and results["engine"] == "diffusion"
    assert results["real"]["lipsync_r"] > 0.95  # these labels open the mouth with the sound
    assert results["real"]["closed"] == 1.0
    assert set(results["model"]) == {"lipsync_r", "closed", "diversity", "jitter"}
    assert "| real labels |" in capsys.readouterr().out
    assert main(["eval", "motion", "--data", str(ds), "--engine", "signal"]) == 0


def test_training_evaluates_on_the_holdout_set_as_it_goes(tmp_path: Path) -> None:
    train_ds, holdout = tmp_path / "train", tmp_path / "holdout"
    write_shard(train_ds / "shards" / "a.tar", [labelled_clip(k) for k in range(2)])
    write_shard(holdout / "shards" / "b.tar", [labelled_clip(5)])
    out = tmp_path / "run"
    run(train_ds, TrainConfig(model=TINY, batch_size=4, steps=4, eval_every=2), out,
        holdout=holdout)
    rows = (out / "evals.csv").read_text().splitlines()
    assert rows[0] == "step,lipsync_r,closed,diversity,jitter"
    assert [r.split(",")[0] for r in rows[1:]] == ["2", "4"]
