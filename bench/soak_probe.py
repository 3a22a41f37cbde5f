"""One soak step in a fresh process, for ``bench.run_soak``: N sessions held on a fresh cluster.

``python soak_probe.py --layout separate|colocated|fused|fused-2 --sessions N --minutes M
--json-out F`` starts this tree's LocalCluster (co-located: ``LocalCluster(colocate=True)``;
fused: ``LocalCluster(colocate=("motion-gen", "refiner"))``; fused-2: the same with two
renderer replicas, each with its refiner, as a node of two 1-core pods would run them; each
reported as skipped where the tree lacks it), registers the portrait and holds N sessions for M
minutes
each, the speech looped and paced in real time in 20 ms chunks through the public API. It
counts, per session and in all:

- dropped: frames the session's audio should have made (30 per second) that never arrived;
- late: frames that arrived more than the frame budget (500 ms, the gateway's default
  ``frame_budget_ms``) after the audio that completes their span was sent;
- unrefined: frames delivered with ``refined`` false (the refiner shed them to keep the rate),
  beside each stage's own counters (Status: dropped, degraded);
- latency (audio sent -> frame received, per frame) p50 / p99, and fps per session.

Like bench/compare_probe.py (whose helpers it imports: run it beside that file), it runs in
the tree that is its working directory and first on PYTHONPATH, and reports which files it
imported, so ``bench.compare.run_probe`` can prove each side measured its own code.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

FPS = 30.0
STAGES = ("audio-encoder", "motion-gen", "renderer", "refiner")
MAX_BAD = 0.01  # the target: under 1% dropped or late, under 1% unrefined
MIN_FPS = FPS * 0.97  # as bench.compare_probe decides that a session held 30 fps


def session_figures(frames: list[tuple[int, float, bool | None]], first_audio_at: float,
                    seconds: float, budget_s: float) -> dict[str, Any]:
    """One session's counts from what its client received: ``frames`` as (index, arrival
    time, refined) in arrival order, arrival times on the clock of ``first_audio_at``.

    Frame ``i`` covers the audio [i / fps, (i + 1) / fps); paced in real time, the audio that
    completes it is sent ``(i + 1) / fps`` after the first chunk, and the frame is late when
    it arrives more than ``budget_s`` after that.
    """
    expected = int(round(seconds * FPS))
    index = np.array([f[0] for f in frames], np.float64)
    arrival = np.array([f[1] for f in frames], np.float64)
    latency_ms = (arrival - (first_audio_at + (index + 1) / FPS)) * 1e3
    steady = arrival[arrival >= arrival[0] + 1.0] if len(arrival) else arrival
    known = [f[2] for f in frames if f[2] is not None]
    return {"expected": expected, "delivered": len(frames),
            "dropped": max(0, expected - len(frames)),
            "late": int((latency_ms > budget_s * 1e3).sum()),
            "unrefined": sum(not r for r in known) if known or not frames else None,
            "fps": (len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) > 2 else 0.0,
            "latency_ms": latency_ms}


def step_figures(sessions: list[dict[str, Any]]) -> dict[str, Any]:
    """The step's totals over its sessions, and whether it held the target."""
    expected = sum(s["expected"] for s in sessions)
    delivered = sum(s["delivered"] for s in sessions)
    dropped, late = sum(s["dropped"] for s in sessions), sum(s["late"] for s in sessions)
    unknown = any(s["unrefined"] is None for s in sessions)
    unrefined = None if unknown else sum(s["unrefined"] for s in sessions)
    lat = np.concatenate([s["latency_ms"] for s in sessions] or [np.zeros(0)])
    fps = [s["fps"] for s in sessions]
    out = {"sessions": len(sessions), "expected": expected, "delivered": delivered,
           "dropped": dropped, "late": late,
           "dropped_or_late_fraction": (dropped + late) / max(expected, 1),
           "unrefined": unrefined,
           "unrefined_fraction": None if unrefined is None else unrefined / max(delivered, 1),
           "latency_p50_ms": float(np.percentile(lat, 50)) if lat.size else 0.0,
           "latency_p99_ms": float(np.percentile(lat, 99)) if lat.size else 0.0,
           "fps_min": min(fps, default=0.0), "fps_median": float(np.median(fps or [0.0]))}
    out["passed"] = bool(out["dropped_or_late_fraction"] < MAX_BAD
                         and (unrefined is None or out["unrefined_fraction"] < MAX_BAD)
                         and out["fps_min"] >= MIN_FPS)
    return out


# -- the cluster side ------------------------------------------------------------------------

def _replicas(cluster: Any, services: tuple[str, ...]) -> list[tuple[str, int, str]]:
    """(service, replica, name) of each running process of each service that has any (a
    co-located refiner has none: ``LocalCluster.services`` leaves it out; a tree without that
    property has them all); the name is the service's, ``<service>-<n>`` for replica n > 0."""
    names = getattr(cluster, "services", services)
    out = []
    for s in names:
        for i in range(cluster.replicas(s) if hasattr(cluster, "replicas") else 1):
            if cluster.pid(s, i) is not None and cluster.alive(s, i):
                out.append((s, i, s if i == 0 else f"{s}-{i}"))
    return out


def _processes(cluster: Any, services: tuple[str, ...]) -> dict[str, int]:
    """The pid of each running process, by name (see ``_replicas``)."""
    return {name: cluster.pid(s, i) for s, i, name in _replicas(cluster, services)}


def _proc_figures(pids: dict[str, int]) -> dict[str, dict[str, float]]:
    """CPU seconds and resident memory (MB) of each process now."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for name, pid in pids.items():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            status = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:  # it exited during the step: the step's counts say what that cost
            continue
        rss = next((int(line.split()[1]) for line in status if line.startswith("VmRSS:")), 0)
        out[name] = {"cpu_s": (int(stat[11]) + int(stat[12])) / tick, "rss_mb": rss / 1024}
    return out


async def _stage_status(cluster: Any, pb: Any, stub: Any) -> dict[str, Any]:
    """Each stage service's counters (a co-located renderer's include the refiner's)."""
    import grpc

    out: dict[str, Any] = {}
    for s, replica, key in _replicas(cluster, STAGES):
        if s not in STAGES:
            continue
        try:
            async with grpc.aio.insecure_channel(cluster.target(s, replica)) as ch:
                st = await stub(ch).Status(pb.StatusRequest(), timeout=10)
            out[key] = {"frames": st.frames, "dropped": st.dropped, "degraded": st.degraded}
        except grpc.aio.AioRpcError as exc:
            out[key] = {"error": f"{exc.code().name}: {exc.details()}"}
    return out


async def _hold(api: Any, target: str, avatar_id: str, pcm: np.ndarray, rate: int,
                n: int, size: tuple[int, int]) -> list[Any]:
    """``n`` sessions at once, each through the whole of ``pcm`` in real time: a record
    each, or the error that ended it (a refused or failed session fails the step)."""
    cfg = api.pb.SessionConfig(avatar_id=avatar_id, sample_rate=rate,
                               output=api.pb.OutputFormat(width=size[0], height=size[1]))
    async with api.AvatarClient(target) as c:
        return list(await asyncio.gather(*[api.run_session(c, cfg, pcm, rate, keep_data=False)
                                           for _ in range(n)], return_exceptions=True))


def soak(a: argparse.Namespace) -> dict[str, Any]:
    """One step on a fresh cluster of this tree: its figures, or why it was skipped."""
    import compare_probe as cp  # beside this file, in bench/ or in the caller's copy

    inputs = cp._first("avatarflow.cli.inputs")
    local = cp._first("avatarflow.dev.cluster", "avatarflow.cluster")
    internal = cp._first("avatarflow.contracts.v1.internal_pb2", "avatarflow.v1.internal_pb2")
    internal_grpc = cp._first("avatarflow.contracts.v1.internal_pb2_grpc",
                              "avatarflow.v1.internal_pb2_grpc")
    # What the machine holds, not what the gateway admits: its session limit (derived from
    # a measured capacity) must not end a step early.
    options: dict[str, Any] = {"env": {"AVATARFLOW_GATEWAY_MAX_SESSIONS": "1000"}}
    if a.layout == "fused-2":
        options["replicas"] = {"renderer": 2}
    if a.layout in ("colocated", "fused", "fused-2"):
        if "colocate" not in inspect.signature(local.LocalCluster).parameters:
            return {"skipped": "this tree's LocalCluster has no colocate parameter",
                    "modules": cp._loaded_modules()}
        options["colocate"] = True
    if a.layout in ("fused", "fused-2"):
        if "motion-gen" not in getattr(local, "COLOCATE_HOSTS", {}):
            return {"skipped": "this tree's LocalCluster cannot co-locate motion-gen",
                    "modules": cp._loaded_modules()}
        options["colocate"] = ("motion-gen", "refiner")
    api = cp._Api()
    w, h = (int(v) for v in a.size.split("x"))
    speech, rate = inputs.speech_with_pauses()
    n = int(a.minutes * 60 * rate)
    pcm = np.tile(speech, -(-n // speech.size))[:n]
    with tempfile.TemporaryDirectory() as tmp:
        inputs.astronaut_png(Path(tmp) / "p.png")
        image = (Path(tmp) / "p.png").read_bytes()
    with local.LocalCluster(**options) as cluster:
        target = cluster.gateway_target
        pids = _processes(cluster, tuple(cp.SERVICE_PACKAGES))
        checked = cp._service_modules(cluster) if len(pids) == len(cp.SERVICE_PACKAGES) else {}
        avatar_id = asyncio.run(api.register(target, image, w, h))
        before, t0 = _proc_figures(pids), time.monotonic()
        records = asyncio.run(_hold(api, target, avatar_id, pcm, rate, a.sessions, (w, h)))
        after, held_s = _proc_figures(pids), time.monotonic() - t0
        status = asyncio.run(_stage_status(cluster, internal, internal_grpc.StageStub))
    errors = [f"{type(r).__name__}: {r}"[:300] for r in records if isinstance(r, BaseException)]
    records = [r for r in records if not isinstance(r, BaseException)]
    figs = [session_figures([(f.index, f.received_at, getattr(f, "refined", None))
                             for f in r.frames], r.first_audio_sent_at or t0, n / rate,
                            a.budget_ms / 1e3) for r in records]
    # A session that failed delivered nothing: all its frames count as dropped.
    figs += [session_figures([], t0, n / rate, a.budget_ms / 1e3) for _ in errors]
    ended = [r.ended for r in records]
    result = step_figures(figs)
    result["passed"] = result["passed"] and not errors
    result.update(errors=errors,
        layout=a.layout, size=a.size, minutes=a.minutes, budget_ms=a.budget_ms,
        per_session=[{k: v for k, v in f.items() if k != "latency_ms"} for f in figs],
        server=[{"dropped": e.dropped, "stale": getattr(e.latency, "stale", 0),
                 "p50_ms": e.latency.p50_ms, "p99_ms": e.latency.p99_ms} if e else None
                for e in ended],
        stages=status,
        processes={s: {"cpu_cores": (after[s]["cpu_s"] - before[s]["cpu_s"]) / held_s,
                       "rss_mb_start": before[s]["rss_mb"], "rss_mb_end": after[s]["rss_mb"]}
                   for s in pids if s in before and s in after},
        modules={**cp._loaded_modules(), **checked})
    return result


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through LocalCluster.__exit__: services stopped


def main() -> None:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layout", choices=("separate", "colocated", "fused", "fused-2"),
                    default="separate")
    ap.add_argument("--sessions", type=int, default=2)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--size", default="512x768", help="upper-body WxH")
    ap.add_argument("--budget-ms", type=float, default=500.0, help="a frame later is late")
    ap.add_argument("--json-out", required=True)
    a = ap.parse_args()
    started = time.monotonic()
    result = soak(a)
    result["wall_s"] = time.monotonic() - started
    Path(a.json_out).write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
