"""One measurement inside one source tree, for ``bench.compare``.

Run as a script (``python bench/compare_probe.py embedded|cluster --json-out F``) with the
working directory at a tree's root and that tree first on PYTHONPATH, so every import, and every
service process a LocalCluster spawns (they inherit the environment and the working directory),
resolves to that tree. It imports either package layout: the role layout (avatarflow.runtime,
avatarflow.dev, avatarflow.contracts ...) and the flat one before it (avatarflow.cluster,
avatarflow.client, avatarflow.v1 ...). It reports which files it imported, so the caller can
check that each side measured its own code.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

import numpy as np

FPS = 30.0
STAGE_PACKAGES = ("avatarflow_audio_encoder", "avatarflow_motion_gen", "avatarflow_renderer",
                  "avatarflow_refiner")
SERVICE_PACKAGES = {"audio-encoder": "avatarflow_audio_encoder",
                    "motion-gen": "avatarflow_motion_gen", "renderer": "avatarflow_renderer",
                    "refiner": "avatarflow_refiner", "gateway": "avatarflow_gateway"}


def _first(*names: str) -> ModuleType:
    """Imports the first of ``names`` that this tree has (new layout first, the old one after).

    Decided from the tree's files, not by trying the import: the editable install would
    otherwise supply a module this tree lacks from the other tree.
    """
    for name in names:
        stem = Path(*name.split("."))
        if stem.with_suffix(".py").is_file() or (stem / "__init__.py").is_file():
            return importlib.import_module(name)
    raise ModuleNotFoundError(f"this tree has none of {names}")


def _loaded_modules() -> dict[str, str]:
    """The file of every avatarflow module this process imported, to prove where from."""
    return {name: str(m.__file__) for name, m in sorted(sys.modules.items())
            if name.split(".")[0].startswith("avatarflow") and getattr(m, "__file__", None)}


# -- embedded ------------------------------------------------------------------------------------

def _trimmed(src: Path, dst: Path, seconds: float) -> Path:
    """The first ``seconds`` of a WAV file (the quick run's short speech)."""
    with wave.open(str(src), "rb") as r:
        params = r.getparams()
        frames = r.readframes(int(seconds * r.getframerate()))
    with wave.open(str(dst), "wb") as w:
        w.setparams(params)
        w.writeframes(frames)
    return dst


def _demo(image: Path, audio: Path, out: Path, mode: str, size: str) -> dict[str, Any]:
    demo = importlib.import_module("avatarflow.cli.demo")
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    args = parser.parse_args(["--image", str(image), "--audio", str(audio), "--out", str(out),
                              "--mode", mode, "--size", size, "--no-progress"])
    summary: dict[str, Any] = demo.run(args)
    return summary


def embedded(seconds: float | None) -> dict[str, Any]:
    """The demo job pinned to one core, after a warm-up: both modes' summaries."""
    os.sched_setaffinity(0, {0})
    import cv2

    cv2.setNumThreads(1)
    inputs = importlib.import_module("avatarflow.cli.inputs")
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        image, audio = inputs.make_inputs(Path(tmp))
        if seconds:
            audio = _trimmed(audio, Path(tmp) / "short.wav", seconds)
        _demo(image, audio, Path(tmp) / "warmup.mp4", "upper-body", "512x768")
        for mode, size in (("upper-body", "512x768"), ("head", "512x512")):
            runs[f"{mode} {size}"] = _demo(image, audio, Path(tmp) / "b.mp4", mode, size)
    missing = [p for p in STAGE_PACKAGES if p not in sys.modules]
    if missing:
        raise RuntimeError(f"the demo did not import {missing}: nothing to prove it ran them")
    return {"runs": runs, "modules": _loaded_modules()}


# -- cluster -------------------------------------------------------------------------------------

def _session_figures(rec: Any, seconds: float) -> dict[str, float]:
    expected = int(round(seconds * FPS))
    t = np.array([f.received_at for f in rec.frames], np.float64)
    steady = t[t >= t[0] + 1.0] if len(t) else t
    ended = rec.ended
    return {"frames": len(rec.frames), "expected": expected,
            "fps": (len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) > 2 else 0.0,
            "first_frame_ms": (rec.first_frame_latency_s or 0.0) * 1e3,
            "latency_p50_ms": ended.latency.p50_ms if ended else 0.0,
            "latency_p99_ms": ended.latency.p99_ms if ended else 0.0}


class _Api:
    """The client API of whichever layout the tree has."""

    def __init__(self) -> None:
        client = _first("avatarflow.client.api", "avatarflow.client")
        self.AvatarClient = client.AvatarClient
        self.run_session = client.run_session
        self.pb = _first("avatarflow.contracts.v1.api_pb2", "avatarflow.v1.api_pb2")

    async def register(self, target: str, image: bytes, w: int, h: int) -> str:
        async with self.AvatarClient(target) as c:
            return str((await c.register(image, width=w, height=h)).avatar_id)

    async def sessions(self, target: str, avatar_id: str, pcm: np.ndarray, rate: int, n: int,
                       w: int, h: int) -> list[dict[str, float]]:
        cfg = self.pb.SessionConfig(avatar_id=avatar_id, sample_rate=rate,
                                    output=self.pb.OutputFormat(width=w, height=h))
        async with self.AvatarClient(target) as c:
            recs = await asyncio.gather(*[self.run_session(c, cfg, pcm, rate, keep_data=False)
                                          for _ in range(n)])
        return [_session_figures(r, pcm.size / rate) for r in recs]


def _trial(figs: list[dict[str, float]]) -> dict[str, Any]:
    late = sum(f["expected"] - f["frames"] for f in figs) / sum(f["expected"] for f in figs)
    min_fps = min(f["fps"] for f in figs)
    return {"sessions": len(figs), "late_fraction": late, "min_fps": min_fps,
            "median_fps": float(np.median([f["fps"] for f in figs])),
            "latency_p50_ms": float(np.median([f["latency_p50_ms"] for f in figs])),
            "latency_p99_ms": max(f["latency_p99_ms"] for f in figs),
            "first_frame_ms": float(np.median([f["first_frame_ms"] for f in figs])),
            "held": bool(late < 0.01 and min_fps >= FPS * 0.97)}


def _service_modules(cluster: Any) -> dict[str, str]:
    """Where each running service process imports its package from: resolved with that
    process's own working directory and environment (read from /proc), without importing."""
    out = {}
    for service, package in SERVICE_PACKAGES.items():
        pid = cluster.pid(service)
        cwd = os.readlink(f"/proc/{pid}/cwd")
        raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        env = dict(e.decode().split("=", 1) for e in raw if b"=" in e)
        code = (f"import importlib.util as u; print(u.find_spec('{package}').origin); "
                "print(u.find_spec('avatarflow').origin)")
        lines = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, check=True,
                               capture_output=True, text=True).stdout.split()
        out[service], out[f"{service}:avatarflow"] = lines[0], lines[1]
    return out


def cluster(max_sessions: int, seconds: float, fixed: int) -> dict[str, Any]:
    """Capacity at 256x384 and 512x768, then ``fixed`` sessions at 512x768, on this tree's
    own LocalCluster."""
    inputs = importlib.import_module("avatarflow.cli.inputs")
    local = _first("avatarflow.dev.cluster", "avatarflow.cluster")
    api = _Api()
    pcm, rate = inputs.speech_with_pauses()
    pcm = pcm[:int(seconds * rate)]
    with tempfile.TemporaryDirectory() as tmp:
        inputs.astronaut_png(Path(tmp) / "p.png")
        image = (Path(tmp) / "p.png").read_bytes()
    result: dict[str, Any] = {"capacity": {}}
    with local.LocalCluster() as c:
        target = c.gateway_target
        services = _service_modules(c)
        avatars = {(w, h): asyncio.run(api.register(target, image, w, h))
                   for w, h in ((256, 384), (512, 768))}
        for (w, h), avatar_id in avatars.items():
            trials, best = [], 0
            for n in range(1, max_sessions + 1):
                t = _trial(asyncio.run(api.sessions(target, avatar_id, pcm, rate, n, w, h)))
                trials.append(t)
                print(f"    {w}x{h} x{n}: late {t['late_fraction']:.2%}, min fps "
                      f"{t['min_fps']:.1f}, held={t['held']}", flush=True)
                if not t["held"]:
                    break
                best = n
            result["capacity"][f"{w}x{h}"] = {"max_sessions": best, "trials": trials}
        figs = asyncio.run(api.sessions(target, avatars[512, 768], pcm, rate, fixed, 512, 768))
        result["fixed"] = {"size": "512x768", **_trial(figs)}
    result["modules"] = {**_loaded_modules(), **services}
    return result


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through LocalCluster.__exit__: services stopped


def main() -> None:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("what", choices=("embedded", "cluster"))
    ap.add_argument("--json-out", required=True)
    ap.add_argument("--seconds", type=float, default=0.0,
                    help="speech length (0: the whole bundled speech for embedded, 6 s cluster)")
    ap.add_argument("--max-sessions", type=int, default=6)
    ap.add_argument("--fixed", type=int, default=2, help="sessions in the fixed-count run")
    a = ap.parse_args()
    started = time.monotonic()
    if a.what == "embedded":
        result = embedded(a.seconds or None)
    else:
        result = cluster(a.max_sessions, a.seconds or 6.0, a.fixed)
    result.update(root=os.getcwd(), python=sys.version.split()[0],
                  machine=platform.processor() or platform.machine(),
                  wall_s=time.monotonic() - started)
    Path(a.json_out).write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
