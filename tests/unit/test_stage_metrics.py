"""The per-frame stage metrics cost nothing while no one can read them and count every frame
once /metrics is served (``metrics.serve`` turns recording on)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from avatarflow.telemetry import metrics
from avatarflow.telemetry.metrics import StageMeter

STAGE = "unit-test-stage"


@pytest.fixture
def meter() -> Iterator[StageMeter]:
    was = metrics.recording()
    yield StageMeter(STAGE)
    metrics.record(was)


def _value(name: str) -> float:
    return REGISTRY.get_sample_value(name, {"stage": STAGE}) or 0.0


def _frame(meter: StageMeter, work_s: float) -> None:
    meter.received(0.002)
    meter.processed(work_s, 2)
    meter.left(0.04)
    meter.waiting(lambda: 3)
    meter.was_shed()
    meter.was_dropped()


def _counts() -> dict[str, float]:
    names = ("avatarflow_stage_frames_total", "avatarflow_stage_late_frames_total",
             "avatarflow_stage_frame_seconds_count", "avatarflow_stage_queue_seconds_count",
             "avatarflow_stage_frame_latency_seconds_count", "avatarflow_stage_stream_lag",
             "avatarflow_stage_shed_frames_total", "avatarflow_stage_dropped_frames_total")
    return {n: _value(n) for n in names}


def test_off_records_nothing_and_never_asks_for_the_backlog(meter: StageMeter) -> None:
    metrics.record(False)
    before = _counts()
    _frame(meter, 0.004)

    def backlog() -> int:
        raise AssertionError("the backlog was read while metrics are off")

    meter.waiting(backlog)
    assert _counts() == before


def test_on_counts_each_frame(meter: StageMeter) -> None:
    metrics.record(True)
    before = _counts()
    _frame(meter, 0.004)  # within the frame interval
    _frame(meter, 0.050)  # two frames that each took longer than 33.3 ms
    after = _counts()
    delta = {k: after[k] - before[k] for k in after}
    assert delta == {
        "avatarflow_stage_frames_total": 4, "avatarflow_stage_late_frames_total": 2,
        "avatarflow_stage_frame_seconds_count": 4, "avatarflow_stage_queue_seconds_count": 2,
        "avatarflow_stage_frame_latency_seconds_count": 2,
        "avatarflow_stage_stream_lag": 3 - before["avatarflow_stage_stream_lag"],
        "avatarflow_stage_shed_frames_total": 2, "avatarflow_stage_dropped_frames_total": 2}
