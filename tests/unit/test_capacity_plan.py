"""The capacity the deployment is planned with never exceeds what the benchmark measured: the
Helm chart's autoscaling targets (sessions per replica at each stage's CPU limit) and the
gateway's default session limit per core are at most the sessions at 30 fps the measured CPU
per frame allows (bench/results/efficiency.json, bench.capacity), at the product's size."""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

from avatarflow_gateway import capacity
from bench import capacity as plan_of

ROOT = Path(__file__).resolve().parents[2]
EFFICIENCY = ROOT / "bench" / "results" / "efficiency.json"


def _plan() -> dict:
    values = yaml.safe_load(plan_of.VALUES.read_text())
    return plan_of.plan(json.loads(EFFICIENCY.read_text()), values)


def test_the_chart_scales_out_before_a_stage_runs_out_of_cpu() -> None:
    p = _plan()
    values = yaml.safe_load(plan_of.VALUES.read_text())
    separate = p["sizes"][p["chart"]["size"]]["cluster"]["sessions_per_core"]
    for stage in plan_of.STAGES:
        target = values["components"][stage]["autoscaling"]["sessionsPerReplica"]
        measured = separate[stage] * plan_of.cpu_limit(values, stage)
        assert target <= math.floor(measured), (stage, target, measured)


def test_the_gateway_admits_no_more_sessions_per_core_than_it_carries() -> None:
    p = _plan()
    assert capacity.SESSIONS_PER_CORE <= p["gateway_sessions_per_core"] / plan_of.HEADROOM


def test_sessions_per_core_follow_from_cpu_per_frame() -> None:
    assert plan_of.per_core(33.3) == 1000 / (30 * 33.3)  # one frame's budget: one session
    assert plan_of.cpu_limit({"components": {"x": {"resources": {"limits": {"cpu": "500m"}}}}},
                             "x") == 0.5
