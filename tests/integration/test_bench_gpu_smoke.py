"""The one-shot GPU benchmark, as an operator runs it, in its ``--smoke`` form (tiny random
weights in the published layouts, CPU, fp32, 1 and 2 sessions): it finishes, and its report
has every figure the GPU run prints (no timing is asserted)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("avatarflow_motion_gen.engines.joyvasa.layout",
                    reason="the joyvasa engine's weights layout is not there yet")

REPO = Path(__file__).resolve().parents[2]
MODULES = ("JoyVASA audio model", "JoyVASA motion diffusion", "LivePortrait motion extractor",
           "LivePortrait appearance feature extractor", "LivePortrait warping module",
           "LivePortrait SPADE generator", "LivePortrait stitching")
SESSION_FIELDS = ("sessions", "held_at_30fps", "fps_min", "fps_median", "first_frame_ms_median",
                  "first_frame_ms_max", "lag_ms_median", "lag_ms_p99", "frames", "expected",
                  "gpu_memory_mib", "stage_ms", "per_session")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench")
    res = subprocess.run([sys.executable, "-m", "bench.gpu", "--smoke", "--out", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads((out / "gpu.json").read_text()), (out / "gpu.md").read_text()


def test_smoke_reports_every_module_per_batch(report: tuple[dict, str]) -> None:
    results, md = report
    assert results["smoke"] and results["device"] == "cpu"
    assert list(results["runs_by_dtype"]) == ["float32"]  # half precision needs CUDA
    modules = results["runs_by_dtype"]["float32"]["modules"]
    for name in MODULES:
        rows = [e for e in modules if e["module"].startswith(name)]
        assert rows, name
        assert all(e["median_ms"] > 0 and e["p99_ms"] >= e["median_ms"] for e in rows), name
        assert name in md
    per_frame = {e["batch"] for e in modules if e["per"] == "frame"}
    assert per_frame == {1, 2}  # batched as the sessions are
    assert any("live (per committed" in e["module"] for e in modules)


def test_smoke_runs_concurrent_sessions_end_to_end(report: tuple[dict, str]) -> None:
    results, md = report
    sessions = results["runs_by_dtype"]["float32"]["sessions"]
    assert [s["sessions"] for s in sessions] == [1, 2]
    for s in sessions:
        assert set(SESSION_FIELDS) <= set(s)
        assert len(s["per_session"]) == s["sessions"]
        assert 0 < s["frames"] <= s["expected"]
        assert 0 <= s["held_at_30fps"] <= s["sessions"]
        assert math.isfinite(s["first_frame_ms_median"]) and s["first_frame_ms_median"] > 0
        assert s["gpu_memory_mib"] is None  # n/a on the CPU
        assert {"motion-gen", "renderer", "refiner"} <= set(s["stage_ms"])
    for heading in ("held at 30 fps", "fps per session", "first frame ms", "GPU memory MiB"):
        assert heading in md
    assert "| 2 |" in md and "n/a" in md
