"""The ``liveportrait-joyvasa`` profile as an operator runs it: one weights root laid out as
JoyVASA's README lays out ``pretrained_weights/`` (small random weights in the published
layouts), checked with ``avatarflow weights check``, then a session end to end through
``avatarflow demo --profile`` and through a local cluster selected by the same profile. The
weights are random, so the pictures are noise: what is checked is what the profile promises
(frames, timestamps, audio sync, and that JoyVASA's LivePortrait motion reached the
renderer)."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from avatarflow.cli.main import main as avatarflow
from tests.integration import renderer_spy
from tests.integration.conftest import run_cli

pytest.importorskip("avatarflow_motion_gen.engines.joyvasa.layout",
                    reason="the joyvasa engine's weights layout is not there yet")

PROFILE = "liveportrait-joyvasa"
SECONDS = 1.6  # of speech: enough to cross a JoyVASA window of the tiny test network
FPS = 30.0


def _joyvasa_registered() -> bool:
    from avatarflow_motion_gen.engines import ENGINES

    return "joyvasa" in ENGINES


needs_engine = pytest.mark.skipif(
    not _joyvasa_registered(),
    reason="the motion-gen engine 'joyvasa' is not registered yet (being written)")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from avatarflow.dev.weights import write_random_root

    return write_random_root(tmp_path_factory.mktemp("pretrained_weights"), PROFILE, seed=1)


@pytest.fixture(scope="module")
def speech(inputs: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from avatarflow.cli.inputs import write_wav

    rate = inputs["rate"]
    pcm = inputs["pcm"][: int(SECONDS * rate)]
    path = tmp_path_factory.mktemp("speech") / "short.wav"
    write_wav(path, pcm, rate)
    return {"path": path, "pcm": pcm, "rate": rate}


# -- avatarflow weights check ----------------------------------------------------------------

def test_weights_check_passes_on_the_published_layout(root: Path) -> None:
    res = run_cli("weights", "check", str(root), "--profile", PROFILE)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert f"OK: profile {PROFILE} can run on {root}" in out
    for rel in ("JoyVASA/motion_generator/iter_0020000.pt",
                "JoyVASA/motion_template/motion_template.pkl",
                "chinese-hubert-base/model.safetensors",
                "liveportrait/base_models/motion_extractor.pth",
                "liveportrait/retargeting_models/stitching_retargeting_module.pth"):
        assert f"ok       {rel}  (" in out, rel
    assert "28,118,728 parameters" in out  # the motion extractor keeps its published size


def _variant(root: Path, tmp: Path) -> Path:
    """A copy of ``root`` made of links, so one file can be replaced cheaply."""
    out = tmp / "variant"
    for path in root.rglob("*"):
        if path.is_file():
            (out / path.relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(path, out / path.relative_to(root))
    return out


def _rewrite(root: Path, rel: str, change) -> None:
    data = torch.load(root / rel, map_location="cpu", weights_only=True)
    (root / rel).unlink()
    change(data)
    torch.save(data, root / rel)


def _rename_key(bundle: dict) -> None:
    lip = bundle["retarget_mouth"]
    lip["module.mlp.0.weights"] = lip.pop("module.mlp.0.weight")


def _wrong_shape(state: dict) -> None:
    key = next(k for k, v in state.items() if v.ndim == 4)
    state[key] = state[key][:-1]


@pytest.mark.parametrize(("case", "expected"), [
    ("missing file", ["MISSING  liveportrait/base_models/warping_module.pth"]),
    ("renamed key", [
        "BAD      liveportrait/retargeting_models/stitching_retargeting_module.pth",
        "1 missing keys: retarget_mouth/mlp.0.weight",
        "1 unexpected keys: retarget_mouth/mlp.0.weights"]),
    ("wrong shape", [
        "BAD      liveportrait/base_models/appearance_feature_extractor.pth",
        "1 shape mismatches: first.conv.weight: file 7x3x3x3, network 8x3x3x3"]),
])
def test_weights_check_names_what_is_wrong(root: Path, tmp_path: Path, case: str,
                                           expected: list[str],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    broken = _variant(root, tmp_path)
    base = "liveportrait/base_models"
    if case == "missing file":
        (broken / base / "warping_module.pth").unlink()
    elif case == "renamed key":
        _rewrite(broken, "liveportrait/retargeting_models/stitching_retargeting_module.pth",
                 _rename_key)
    else:
        _rewrite(broken, f"{base}/appearance_feature_extractor.pth", _wrong_shape)
    code = avatarflow(["weights", "check", str(broken), "--profile", PROFILE])
    out = capsys.readouterr().out
    assert code == 2, out
    for line in expected:
        assert line in out, out
    verdict = out.strip().splitlines()[-1]
    assert verdict.startswith(f"FAIL: profile {PROFILE} cannot run on {broken}: 1 file(s)")
    assert out.count("BAD") + out.count("MISSING") == 1, out


def test_weights_check_of_a_root_that_is_not_there(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert avatarflow(["weights", "check", str(tmp_path / "nowhere")]) == 2
    assert f"weights root {tmp_path / 'nowhere'} is not a directory" in capsys.readouterr().err


# -- one session end to end ------------------------------------------------------------------

@needs_engine
def test_demo_runs_a_session_on_the_profile(root: Path, speech: dict, inputs: dict,
                                            tmp_path: Path) -> None:
    from avatarflow.cli import demo
    from tests.support.video import read_video

    seen = renderer_spy.install()
    out = tmp_path / "joyvasa.mp4"
    p = argparse.ArgumentParser()
    demo.add_arguments(p)
    args = p.parse_args(["--image", str(inputs["portrait"]), "--audio", str(speech["path"]),
                         "--out", str(out), "--profile", PROFILE, "--weights", str(root),
                         "--no-progress"])
    summary = demo.run(args)
    expected = math.ceil(speech["pcm"].size / speech["rate"] * FPS)
    assert summary["frames"] == expected
    video = read_video(out)
    assert len(video.frames) == expected and video.fps == pytest.approx(FPS)
    assert video.frames[0].shape == (512, 512, 3)  # the profile's mode: head
    assert abs(video.audio_seconds - video.video_seconds) <= 1 / FPS
    assert seen["with"] == expected and seen["without"] == 0


@needs_engine
def test_local_cluster_runs_a_session_on_the_profile(root: Path, speech: dict, inputs: dict,
                                                     tmp_path: Path) -> None:
    import asyncio

    from avatarflow.client.api import AvatarClient, run_session
    from avatarflow.contracts.v1 import api_pb2
    from avatarflow.dev.cluster import LocalCluster

    class SpiedCluster(LocalCluster):
        def command_for(self, service: str, replica: int = 0) -> list[str]:
            cmd = super().command_for(service, replica)
            if service == "renderer":
                return [sys.executable, renderer_spy.__file__, *cmd[3:]]
            return cmd

    rate, pcm = speech["rate"], speech["pcm"]

    async def talk(target: str):
        async with AvatarClient(target) as c:
            avatar = await c.register(inputs["portrait"].read_bytes(), mode="head")
            cfg = api_pb2.SessionConfig(avatar_id=avatar.avatar_id, sample_rate=rate,
                                        output=api_pb2.OutputFormat(mode="head"))
            return await run_session(c, cfg, pcm, rate)

    # On two shared CPU cores the networks run slower than real time, and JoyVASA's live
    # look-ahead (280 ms) plus that compute can exceed the default 500 ms frame budget: keep
    # every frame (no shedding, a long budget) so that the count is exact.
    env = {"AVATARFLOW_SHED_AFTER_MS": "0", "AVATARFLOW_FRAME_BUDGET_MS": "10000"}
    with SpiedCluster(profile=PROFILE, weights_root=root, log_dir=tmp_path / "logs",
                      env=env) as cluster:
        rec = asyncio.run(talk(cluster.gateway_target))
        log = cluster.log_path("renderer").read_text()
    expected = math.ceil(pcm.size / rate * FPS)
    print(f"{len(rec.frames)} frames, first after {rec.first_frame_latency_s * 1e3:.0f} ms")
    assert rec.ended is not None and rec.ended.frames == len(rec.frames)
    assert len(rec.frames) == expected
    assert rec.indexes_strictly_increase
    assert all(f.pts == pytest.approx(f.index / FPS, abs=1e-3) for f in rec.frames)
    assert (rec.started.output.width, rec.started.output.height) == (512, 512)
    gaps = [e.gap for e in rec.events if e.WhichOneof("kind") == "gap"]
    back = np.concatenate([np.frombuffer(f.audio, "<i2") for f in rec.frames])
    if not gaps:  # the audio that comes back is the audio that went in
        assert np.array_equal(back[:pcm.size], pcm[:back.size])
    assert back.size >= pcm.size - rate / FPS
    assert renderer_spy.LOG_LINE in log, log[-2000:]

