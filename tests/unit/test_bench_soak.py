"""The capacity benchmarks count what a viewer notices: a frame that never came is dropped, one
that came past the frame budget is late, one without refinement is unrefined; a step holds
only under 1% of each, and the efficiency ratio leaves the load generator out."""

from __future__ import annotations

from typing import Any

from bench.run_efficiency import KINDS, summarize, table
from bench.run_soak import LAYOUTS, capacity
from bench.soak_probe import FPS, session_figures, step_figures

T0 = 100.0  # the first audio chunk left at this monotonic time


def _arrivals(n: int, delay_s: float = 0.15) -> list[tuple[int, float, bool | None]]:
    """Frames 0..n-1, each ``delay_s`` after the audio that completes it was sent."""
    return [(i, T0 + (i + 1) / FPS + delay_s, True) for i in range(n)]


def test_a_session_that_kept_up_has_nothing_dropped_late_or_unrefined() -> None:
    f = session_figures(_arrivals(300), T0, 10.0, budget_s=0.5)
    assert (f["expected"], f["delivered"], f["dropped"], f["late"], f["unrefined"]) == \
        (300, 300, 0, 0, 0)
    assert abs(f["fps"] - FPS) < 0.01
    assert step_figures([f, f])["passed"]


def test_missing_late_and_unrefined_frames_are_counted_apart() -> None:
    frames = _arrivals(300)
    del frames[10:16]  # six never came
    frames[20] = (frames[20][0], frames[20][1] + 0.4, True)  # 550 ms after its audio
    frames[30] = (frames[30][0], frames[30][1], False)  # shed by the refiner
    f = session_figures(frames, T0, 10.0, budget_s=0.5)
    assert (f["dropped"], f["late"], f["unrefined"]) == (6, 1, 1)
    step = step_figures([f])
    assert step["dropped_or_late_fraction"] == 7 / 300
    assert not step["passed"]  # 2.3% dropped or late


def test_a_step_fails_on_unrefined_frames_alone() -> None:
    frames = [(i, t, i % 50 != 0) for i, t, _ in _arrivals(300)]  # 2% unrefined
    step = step_figures([session_figures(frames, T0, 10.0, budget_s=0.5)])
    assert step["dropped_or_late_fraction"] == 0 and not step["passed"]


def test_capacity_is_the_last_step_that_held() -> None:
    held, failed = {"sessions": 2, "passed": True}, {"sessions": 3, "passed": False}
    assert capacity([held, failed], start=2) == "2"
    assert capacity([{**failed, "sessions": 2}], start=2) == "<2"
    assert capacity([held, {**held, "sessions": 3}], start=2) == ">=3"
    assert capacity([{"sessions": 2, "skipped": "no colocate"}], start=2) == "no colocate"


def _run(per_process: dict[str, float]) -> dict[str, Any]:
    return {"cpu_ms_per_frame": per_process, "cores_used": 1.0, "delivered_ratio": 1.0,
            "unrefined": 0, "frames": 100}


def test_the_ratio_counts_the_deployment_not_the_client() -> None:
    raw = {"256x256": {"embedded": [_run({"embedded": 4.0})],
                       "cluster": [_run({"renderer": 4.0, "redis-server": 1.0, "client": 9.0})],
                       "colocated": [{"skipped": "no colocate parameter"}]}}
    s = summarize(raw)["256x256"]
    assert s["cluster"]["total"] == 5.0 and s["cluster"]["ratio"] == 1.25
    assert s["colocated"] == {"note": "no colocate parameter"}


def test_the_fused_layout_is_measured_by_default_and_compared_like_the_others() -> None:
    assert "fused" in KINDS and "fused" in LAYOUTS
    raw = {"256x256": {"embedded": [_run({"embedded": 4.0})],
                       "cluster": [_run({"audio-encoder": 2.0, "motion-gen": 2.0,
                                         "renderer": 4.0, "client": 9.0})],
                       "colocated": [_run({"audio-encoder": 2.0, "motion-gen": 2.0,
                                           "renderer": 3.0})],
                       "fused": [_run({"audio-encoder": 2.5, "renderer": 3.0})]}}
    s = summarize(raw)["256x256"]
    assert s["fused"]["total"] == 5.5 and s["fused"]["ratio"] == 5.5 / 4.0
    report = {"machine": {"cpu": "x", "cores": 2, "python": "3.11"}, "date": "d",
              "load_before": (0.0,), "load_after": (0.0,), "wall_s": 60.0, "reps": 1,
              "window_s": 20.0, "warmup_s": 4.0,
              "plan": [{"mode": "head", "size": "256x256", "sessions": 4}],
              "summary": {"256x256": s}}
    text = table(report)
    assert "| fused | - | 2.50 | - | 3.00 | - | **5.50** | 1.38x |" in text
    assert "Co-location (renderer+refiner) saves 1.00 ms per frame (12% " in text
    assert "Fusing both pairs saves 2.50 ms per frame (31% " in text
    skipped = summarize({"256x256": {"fused": [{"skipped": "cannot co-locate motion-gen"}]}})
    assert skipped["256x256"]["fused"] == {"note": "cannot co-locate motion-gen"}
