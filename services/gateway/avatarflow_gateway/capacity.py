"""How many sessions one gateway process takes by default: its CPU, measured per frame.

``make bench`` (bench/run_efficiency.py -> bench/results/capacity.md) measures the gateway's
own CPU at about 1.7 ms per 512x768 frame (the JPEG bytes pass through untouched; TLS adds
5-12%, bench/results/security.md), so one core carries about 20 sessions at 30 fps. The
default keeps 30% of that in hand for bursts, handshakes and registrations: 13 sessions per
core the process may use (tests/unit/test_capacity_plan.py checks it against the measurement).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from avatarflow.runtime.settings import Settings

SESSIONS_PER_CORE = 13
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max ..."


def usable_cores(cpu_max: Path = CGROUP_CPU_MAX) -> float:
    """The cores this process may use: its CPU affinity, capped by a container's CPU limit."""
    cores = float(len(os.sched_getaffinity(0)))
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return cores
    if quota == "max":
        return cores
    return min(cores, int(quota) / int(period))


def session_limit(settings: Settings, cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """``max_sessions`` when set, else SESSIONS_PER_CORE per usable core (at least one)."""
    if settings.max_sessions:
        return settings.max_sessions
    return max(1, math.floor(SESSIONS_PER_CORE * usable_cores(cpu_max)))
