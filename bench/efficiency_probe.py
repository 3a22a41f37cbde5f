"""One efficiency measurement in a fresh process, for ``bench.run_efficiency``.

``python bench/efficiency_probe.py embedded|cluster|colocated|fused --sessions N --mode M --size WxH
--json-out F`` runs N sessions of the same speech at the same output size, paced in real time
in 20 ms chunks, and meters CPU (utime + stime, all threads) over a steady window after a
warm-up:

- embedded: the four stages on one event loop behind the session front (``EmbeddedPipeline``,
  the gateway's live front settings), every frame JPEG-encoded as the gateway does for a JPEG
  client; the whole process is counted (its feeding of audio included: it is tiny).
- cluster: ``LocalCluster`` (redis-server + every service process), sessions through the
  public gRPC API; each service process, redis-server, and this process (the client: shown,
  not counted) separately.
- colocated: the same with ``LocalCluster(colocate=True)`` (the refiner inside the renderer
  process); reported as skipped when this tree's LocalCluster has no such parameter.
- fused: the same with ``LocalCluster(colocate=("motion-gen", "refiner"))`` (motion-gen
  inside the audio-encoder process too); skipped where this tree cannot co-locate motion-gen.

CPU per frame = CPU seconds in the window / frames delivered in it. Every process should run
one engine thread, as the services do: ``bench.run_efficiency`` sets OMP_NUM_THREADS and the
like to 1 for it (they must be set before numpy loads) and OpenCV's pool is set to one here.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

FPS = 30.0
CHUNK_S = 0.02
TAIL_S = 1.5  # speech after the window, so no session ends inside it
TICK = os.sysconf("SC_CLK_TCK")
FUSED_GUEST = "motion-gen"  # co-located in the fused layout besides the refiner


def cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def redis_pids(root: int | None = None) -> list[int]:
    """The redis-server processes among this process's descendants (one, or a cluster's)."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, _, rest = stat.read_text().rpartition(")")
        except OSError:  # gone meanwhile
            continue
        pid = int(stat.parent.name)
        names[pid] = head.partition("(")[2]
        parents[pid] = int(rest.split()[1])
    root = os.getpid() if root is None else root

    def descends(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == root:
                return True
        return False

    return sorted(p for p, n in names.items() if n.startswith("redis-server") and descends(p))


def looped(pcm: np.ndarray, rate: int, seconds: float) -> np.ndarray:
    """``pcm`` repeated to exactly ``seconds`` long."""
    n = int(seconds * rate)
    reps = -(-n // max(pcm.size, 1))
    return np.tile(pcm, reps)[:n]


def modules() -> dict[str, str]:
    """The file of every avatarflow module imported (``bench.compare.run_probe`` checks that
    they are this tree's)."""
    return {name: str(m.__file__) for name, m in sorted(sys.modules.items())
            if name.split(".")[0].startswith("avatarflow") and getattr(m, "__file__", None)}


class Window:
    """CPU of named process groups and frames delivered between ``open`` and ``close``."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self.arrivals: list[tuple[float, bool]] = []  # (monotonic time, refined)
        self.t0 = self.t1 = 0.0
        self._cpu0: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def frame(self, refined: bool) -> None:
        self.arrivals.append((time.monotonic(), refined))

    def _read(self) -> dict[str, float]:
        return {g: sum(cpu_s(p) for p in pids) for g, pids in self.groups.items()}

    def open(self) -> None:
        self._cpu0, self.t0 = self._read(), time.monotonic()

    def close(self) -> None:
        self.t1 = time.monotonic()
        self.cpu = {g: v - self._cpu0[g] for g, v in self._read().items()}

    def result(self, sessions: int) -> dict[str, Any]:
        inside = [r for t, r in self.arrivals if self.t0 <= t <= self.t1]
        seconds = self.t1 - self.t0
        frames = len(inside)
        return {"window_s": seconds, "frames": frames, "expected": sessions * FPS * seconds,
                "delivered_ratio": frames / max(sessions * FPS * seconds, 1e-9),
                "unrefined": sum(not r for r in inside), "cpu_s": self.cpu,
                "cpu_ms_per_frame": {g: v * 1e3 / max(frames, 1) for g, v in self.cpu.items()},
                "cores_used": sum(self.cpu.values()) / max(seconds, 1e-9)}


async def _metered(window: Window, runs: list[asyncio.Task[Any]], warmup: float,
                   seconds: float) -> list[Any]:
    """Waits out the warm-up, meters the window, then lets the sessions finish."""
    await asyncio.sleep(warmup)
    window.open()
    await asyncio.sleep(seconds)
    window.close()
    return list(await asyncio.gather(*runs))


# -- embedded --------------------------------------------------------------------------------

async def _paced(s: Any, pcm: np.ndarray, rate: int) -> None:
    """20 ms chunks on an absolute real-time schedule, then the end of the audio."""
    step, t0 = int(CHUNK_S * rate), time.monotonic()
    for k, i in enumerate(range(0, pcm.size, step)):
        await asyncio.sleep(max(0.0, t0 + k * CHUNK_S - time.monotonic()))
        await s.send_audio(pcm[i:i + step])
    await s.end()


async def _embedded_session(pipeline: Any, spec: Any, pcm: np.ndarray, rate: int,
                            on_frame: Any) -> None:
    from avatarflow.session import Frame

    async def receive() -> None:
        async for event in s.events():
            if isinstance(event, Frame):
                event.image.jpeg()  # what the gateway sends a JPEG client
                on_frame(event.refined)

    async with pipeline.session(spec) as s:
        rx = asyncio.create_task(receive())
        await _paced(s, pcm, rate)
        await rx


async def _embedded(args: argparse.Namespace, image: bytes, pcm: np.ndarray,
                    rate: int) -> dict[str, Any]:
    from avatarflow.contracts.controls import Controls
    from avatarflow.contracts.v1 import api_pb2
    from avatarflow.runtime.build import build_stages
    from avatarflow.runtime.pipeline import EmbeddedPipeline
    from avatarflow.runtime.registry import DEFAULT_ENGINES
    from avatarflow.runtime.settings import Settings
    from avatarflow.session import FrontSettings, SessionSpec

    settings = {stage: Settings.load(stage) for stage in DEFAULT_ENGINES}
    stages = build_stages({s: c.engine or DEFAULT_ENGINES[s] for s, c in settings.items()},
                          {s: c.engine_kwargs() for s, c in settings.items()})
    pipeline = EmbeddedPipeline(stages, FrontSettings.live(Settings.load("gateway")))
    spec = SessionSpec(sample_rate=rate, mode=args.mode, width=args.width, height=args.height,
                       fps=FPS, encoding=api_pb2.FRAME_ENCODING_JPEG, controls=Controls(),
                       avatar_id="", image=image)
    window = Window({"embedded": [os.getpid()]})
    try:
        async with pipeline:
            # The portrait analysed and every stage warm before the sessions, as a cluster's
            # RegisterAvatar does.
            await _embedded_session(pipeline, spec, pcm[:rate], rate, lambda _r: None)
            runs = [asyncio.create_task(_embedded_session(pipeline, spec, pcm, rate,
                                                          window.frame))
                    for _ in range(args.sessions)]
            await _metered(window, runs, args.warmup, args.window)
    finally:
        pipeline.close()
    out = window.result(args.sessions)
    out["stages_median_ms"] = {n: s.summary()["median_ms"] for n, s in pipeline.stats.items()}
    return out


# -- cluster ---------------------------------------------------------------------------------

async def _cluster_load(target: str, args: argparse.Namespace, image: bytes, pcm: np.ndarray,
                        rate: int, window: Window) -> list[Any]:
    from avatarflow.client.api import AvatarClient, run_session
    from avatarflow.contracts.v1 import api_pb2

    output = api_pb2.OutputFormat(mode=args.mode, width=args.width, height=args.height)
    async with AvatarClient(target) as c:
        reg = await c.register(image, mode=args.mode, width=args.width, height=args.height)
        cfg = api_pb2.SessionConfig(avatar_id=reg.avatar_id, sample_rate=rate, output=output)
        runs = [asyncio.create_task(run_session(c, cfg, pcm, rate, keep_data=False,
                                                on_frame=lambda f: window.frame(f.refined)))
                for _ in range(args.sessions)]
        return await _metered(window, runs, args.warmup, args.window)


def _cluster(args: argparse.Namespace, image: bytes, pcm: np.ndarray,
             rate: int) -> dict[str, Any]:
    from avatarflow.dev import cluster as local
    from avatarflow.dev.cluster import SERVICES, LocalCluster

    options: dict[str, Any] = {}
    if args.what in ("colocated", "fused"):
        if "colocate" not in inspect.signature(LocalCluster).parameters:
            return {"skipped": "this tree's LocalCluster has no colocate parameter yet"}
        options["colocate"] = True
    if args.what == "fused":
        if FUSED_GUEST not in getattr(local, "COLOCATE_HOSTS", {}):
            return {"skipped": "this tree's LocalCluster cannot co-locate motion-gen yet"}
        options["colocate"] = (FUSED_GUEST, "refiner")
    with LocalCluster(**options) as cluster:
        # A co-located refiner has no process of its own (``services`` leaves it out).
        groups = {s: [pid] for s in getattr(cluster, "services", SERVICES)
                  if (pid := cluster.pid(s)) is not None}
        groups["redis-server"] = redis_pids()
        groups["client"] = [os.getpid()]
        window = Window(groups)
        records = asyncio.run(_cluster_load(cluster.gateway_target, args, image, pcm, rate,
                                            window))
    out = window.result(args.sessions)
    out["sessions_dropped"] = [r.dropped for r in records]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("embedded", "cluster", "colocated", "fused"))
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--mode", default="head")
    ap.add_argument("--size", default="256x256")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds before the window")
    ap.add_argument("--window", type=float, default=20.0, help="seconds metered")
    ap.add_argument("--json-out", required=True)
    a = ap.parse_args()
    a.width, a.height = (int(v) for v in a.size.split("x"))
    import cv2

    cv2.setNumThreads(1)  # as every service (Settings.threads = 1)
    from avatarflow.cli.inputs import astronaut_png, speech_with_pauses

    speech, rate = speech_with_pauses()
    pcm = looped(speech, rate, a.warmup + a.window + TAIL_S)
    with tempfile.TemporaryDirectory() as tmp:
        astronaut_png(Path(tmp) / "portrait.png")
        image = (Path(tmp) / "portrait.png").read_bytes()
    started = time.monotonic()
    if a.what == "embedded":
        result = asyncio.run(_embedded(a, image, pcm, rate))
    else:
        result = _cluster(a, image, pcm, rate)
    result.update(what=a.what, sessions=a.sessions, mode=a.mode, size=a.size,
                  wall_s=time.monotonic() - started, modules=modules())
    Path(a.json_out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
