"""The gateway's default session limit follows the CPU it may use."""

from __future__ import annotations

import os
from pathlib import Path

from avatarflow.runtime.settings import Settings
from avatarflow_gateway.capacity import SESSIONS_PER_CORE, session_limit, usable_cores


def _settings(**kw: object) -> Settings:
    return Settings.load("gateway", environ={}, **kw)


def test_an_explicit_limit_wins(tmp_path: Path) -> None:
    assert session_limit(_settings(max_sessions=5), tmp_path / "absent") == 5


def test_a_container_cpu_limit_caps_the_default(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("50000 100000\n")  # half a core
    assert usable_cores(cpu_max) == min(0.5, len(os.sched_getaffinity(0)))
    assert session_limit(_settings(), cpu_max) == max(1, int(SESSIONS_PER_CORE * 0.5))


def test_without_a_limit_every_core_counts(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("max 100000\n")
    cores = len(os.sched_getaffinity(0))
    assert session_limit(_settings(), cpu_max) == SESSIONS_PER_CORE * cores
    assert session_limit(_settings(), tmp_path / "absent") == SESSIONS_PER_CORE * cores
