"""One-shot GPU benchmark of the ``liveportrait-joyvasa`` profile: JoyVASA motion (its HuBERT
inside), LivePortrait rendering and the default refiner, from one weights root.

A fresh checkout runs it on a GPU machine in a few minutes (well under 8):

    python -m bench.gpu --device cuda:0 --out bench/results
    python -m bench.gpu --smoke          # tiny, CPU, fp32, under a minute (the tests run it)

Random weights in the published layouts, at the published sizes (``--smoke``: the tiny test
networks). For each precision (fp16 and fp32 on CUDA, fp32 on the CPU):

* modules: ms per frame of each network, module by module, after warm-up runs (synchronised
  on CUDA), batched as the renderer batches frames of several sessions: HuBERT and the
  diffusion per window (offline: a window makes ``n_motions`` frames; live: it commits
  ``stride``), LivePortrait's per-avatar modules once, warping, SPADE generator and
  stitching per frame;
* sessions: 1, 4, 8, 16 concurrent sessions (``--smoke``: 1, 2) through the embedded
  pipeline at 512 x 512, 30 fps, each fed its audio in real time in 20 ms chunks with the live
  frame budget (a frame later than it is dropped): fps per session, sessions held at 30 fps
  (every frame delivered), first-frame latency, frame lag behind the audio, per-stage ms per
  frame, and GPU memory (``torch.cuda.max_memory_allocated``; n/a on the CPU).

Writes ``gpu.json`` and ``gpu.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

PROFILE = "liveportrait-joyvasa"
FULL: dict[str, Any] = {"sessions": (1, 4, 8, 16), "seconds": 6.0, "warm": 2, "runs": 10}
SMOKE: dict[str, Any] = {"sessions": (1, 2), "seconds": 1.2, "warm": 1, "runs": 3}
Entry = dict[str, Any]
FPS, SIZE, CHUNK_S = 30.0, 512, 0.02
STRIDE = 5  # JoyVASA frames a live window commits (the engine's default)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def write_root(root: Path, smoke: bool) -> Path:
    """A weights root in the published layouts: the tiny test networks, or published sizes."""
    from avatarflow.dev.weights import write_random_root

    return write_random_root(root, PROFILE, seed=0, full=not smoke)


class Timer:
    """ms per frame of a callable, after warm-up runs, synchronised on CUDA."""

    def __init__(self, device: str, warm: int, runs: int) -> None:
        import torch

        self.sync: Callable[[], None] = (torch.cuda.synchronize if device.startswith("cuda")
                                         else (lambda: None))
        self.warm, self.runs = warm, runs

    def __call__(self, fn: Callable[[], Any], frames: float) -> tuple[float, float]:
        for _ in range(self.warm):
            fn()
        self.sync()
        samples = []
        for _ in range(self.runs):
            t = time.perf_counter()
            fn()
            self.sync()
            samples.append((time.perf_counter() - t) * 1e3 / frames)
        return float(np.median(samples)), float(np.percentile(samples, 99))


def modules(root: Path, device: str, dtype: str, batches: tuple[int, ...],
            timer: Timer) -> list[Entry]:
    """Each network of the profile, module by module, at each batch size."""
    import torch

    from avatarflow_motion_gen.engines.joyvasa import sampler
    from avatarflow_motion_gen.engines.joyvasa.generator import load
    from avatarflow_renderer.engines import neural_kp as kpm
    from avatarflow_renderer.engines.neural_net import RendererNetwork

    out: list[Entry] = []

    def add(module: str, per: str, batch: int, fn: Callable[[], Any], frames: float) -> None:
        med, p99 = timer(fn, frames)
        out.append({"module": module, "per": per, "batch": batch, "median_ms": med,
                    "p99_ms": p99})
        log(f"    {module}, batch {batch}: {med:.2f} ms per {per}")

    gen = load(str(root.resolve()), device, dtype)
    model, dev, dt = gen.model, gen.device, gen.dtype
    n = gen.n_motions
    net: Any = RendererNetwork.load(str(root / "liveportrait"), "liveportrait", device, dtype)
    (w, h) = net.source_size
    with torch.inference_mode():
        src = torch.rand(1, 3, h, w, device=dev, dtype=dt)
        add("LivePortrait appearance feature extractor", "avatar", 1,
            lambda: net.features(src), 1)
        add("LivePortrait motion extractor (keypoints)", "avatar", 1,
            lambda: net.motion_info(src), 1)
        feats = net.features(src)
        kp_s = kpm.source_keypoints(net.motion_info(src))
        for b in batches:
            wav = torch.randn(b, round(gen.unit * n), device=dev, dtype=dt) * 0.1
            feat = model.audio_features(wav)
            noise = torch.randn(b, n, gen.motion_dim, device=dev, dtype=dt)
            add("JoyVASA audio model (HuBERT, window)", "frame", b,
                partial(model.audio_features, wav), b * n)
            add(f"JoyVASA motion diffusion ({model.diffusion_sched.steps} steps x 2, CFG)",
                "frame", b, partial(sampler.sample, model, feat, None, None, noise,
                                    sampler.CFG_SCALE), b * n)
            # Live, a window commits STRIDE JoyVASA frames: STRIDE * 30 / 25 session frames.
            live = n / (STRIDE * FPS / model.fps)
            for e in out[-2:]:
                out.append({**e, "module": e["module"].split(" (")[0] + ", live (per committed "
                            "30 fps frame)", "median_ms": e["median_ms"] * live,
                            "p99_ms": e["p99_ms"] * live, "derived": True})
            fb, sb = feats.expand(b, -1, -1, -1, -1), kp_s.expand(b, -1, -1)
            db = sb + 0.02 * torch.randn(sb.shape, device=dev, dtype=dt)
            warped = net.parts["warper"](fb, kp_driving=db, kp_source=sb)["out"]
            add("LivePortrait warping module", "frame", b,
                partial(net.parts["warper"], fb, kp_driving=db, kp_source=sb), b)
            add("LivePortrait SPADE generator", "frame", b,
                partial(net.parts["generator"], warped), b)
            add("LivePortrait stitching", "frame", b, partial(net.stitch, sb, db), b)
    return out


def speech(seconds: float) -> tuple[np.ndarray, int, bytes]:
    """The bundled speech (its first ``seconds``) and portrait, as the demo makes them."""
    from avatarflow.cli.inputs import make_inputs

    with tempfile.TemporaryDirectory() as tmp:
        from avatarflow.cli.media import load_audio

        image, audio = make_inputs(Path(tmp))
        pcm, rate = load_audio(str(audio))
        return pcm[: int(seconds * rate)], rate, image.read_bytes()


async def _session(s: Any, pcm: np.ndarray, start: float) -> Entry:
    """An open session fed in real time from ``start`` (perf_counter) in 20 ms chunks."""
    from avatarflow.session import Frame, Gap

    step = int(round(CHUNK_S * s.spec.sample_rate))
    arrivals: list[tuple[float, float]] = []  # (arrival, pts)

    async def feed() -> None:
        for i, at in enumerate(range(0, pcm.size, step)):
            await asyncio.sleep(max(0.0, start + i * CHUNK_S - time.perf_counter()))
            await s.send_audio(pcm[at:at + step])
        await s.end()

    task = asyncio.create_task(feed())
    filled = 0.0  # silence the front fed while this feeder was late: frames too
    async for event in s.events():
        if isinstance(event, Frame):
            arrivals.append((time.perf_counter(), event.pts))
        elif isinstance(event, Gap):
            filled += event.duration
    await task
    expected = int(np.ceil((pcm.size / s.spec.sample_rate + filled) * s.spec.fps))
    lags = [(t - start - pts) * 1e3 for t, pts in arrivals] or [float("nan")]
    return {"frames": len(arrivals), "expected": expected,
            "fps": s.spec.fps * len(arrivals) / expected,
            "first_frame_ms": (arrivals[0][0] - start) * 1e3 if arrivals else float("nan"),
            "lag_ms_median": float(np.median(lags)), "lag_ms_p99": float(np.percentile(lags, 99))}


def measure(root: Path, device: str, dtype: str, sessions: int, seconds: float,
            log: Callable[[str], None]) -> Entry:
    """``sessions`` concurrent live sessions through the embedded pipeline on ``root``."""
    import torch

    from avatarflow.contracts.controls import Controls
    from avatarflow.contracts.v1 import api_pb2
    from avatarflow.runtime.build import build_stages
    from avatarflow.runtime.pipeline import EmbeddedPipeline
    from avatarflow.runtime.registry import DEFAULT_ENGINES
    from avatarflow.runtime.settings import Settings
    from avatarflow.session import FrontSettings, SessionSpec

    on_device = {"motion-gen", "renderer"}  # the stages whose engines run the networks
    placed: dict[str, Any] = {"device": device, "dtype": dtype}
    settings = {stage: Settings.load(stage, profile=PROFILE, weights_root=str(root),
                                     **(placed if stage in on_device else {}))
                for stage in DEFAULT_ENGINES}
    engines = {k: v.engine or DEFAULT_ENGINES[k] for k, v in settings.items()}
    options = {k: v.engine_kwargs() for k, v in settings.items()}
    pcm, rate, image = speech(seconds)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    # The live front: frames later than the budget are dropped, no periodic summaries.
    pipeline = EmbeddedPipeline(build_stages(engines, options), FrontSettings(summary_s=None))

    async def all_sessions() -> list[Entry]:
        async with pipeline:
            specs = [SessionSpec(sample_rate=rate, mode="head", width=SIZE, height=SIZE,
                                 fps=FPS, encoding=api_pb2.FRAME_ENCODING_RAW_RGB,
                                 controls=Controls(seed=i), avatar_id="", image=image)
                     for i in range(sessions)]
            async with contextlib.AsyncExitStack() as stack:
                # Every portrait is analysed when its session opens, before any audio.
                opened = [await stack.enter_async_context(pipeline.session(s)) for s in specs]
                start = time.perf_counter() + 0.05
                return list(await asyncio.gather(*(_session(s, pcm, start) for s in opened)))

    try:
        each = asyncio.run(all_sessions())
        stats = {name: s.summary() for name, s in pipeline.stats.items()}
    finally:
        pipeline.close()
    fps = [e["fps"] for e in each]
    first = [e["first_frame_ms"] for e in each]
    out = {"sessions": sessions, "held_at_30fps": sum(e["frames"] >= e["expected"]
                                                      for e in each),
           "fps_min": min(fps), "fps_median": float(np.median(fps)),
           "first_frame_ms_median": float(np.median(first)), "first_frame_ms_max": max(first),
           "lag_ms_median": float(np.median([e["lag_ms_median"] for e in each])),
           "lag_ms_p99": max(e["lag_ms_p99"] for e in each),
           "frames": sum(e["frames"] for e in each),
           "expected": sum(e["expected"] for e in each),
           "gpu_memory_mib": (torch.cuda.max_memory_allocated(device) / 2**20 if cuda
                              else None),
           "stage_ms": {name: s["median_ms"] for name, s in stats.items()},
           "stage_p99_ms": {name: s["p99_ms"] for name, s in stats.items()},
           "per_session": each}
    log(f"    {sessions} session(s): {out['held_at_30fps']} held at 30 fps, "
        f"fps min {out['fps_min']:.1f}, first frame {out['first_frame_ms_median']:.0f} ms")
    return out


def run(a: argparse.Namespace) -> dict[str, Any]:
    import torch

    plan = SMOKE if a.smoke else FULL
    cuda = a.device.startswith("cuda")
    dtypes = ("float16", "float32") if cuda and not a.smoke else ("float32",)
    sessions = tuple(a.sessions or plan["sessions"])
    torch.set_num_threads(a.threads)
    from avatarflow_motion_gen.engines.joyvasa.layout import PUBLISHED_SIZES

    results: dict[str, Any] = {
        "profile": PROFILE, "smoke": a.smoke, "device": a.device,
        "device_name": torch.cuda.get_device_name(a.device) if cuda else
        (platform.processor() or platform.machine()),
        "threads": a.threads, "sizes": "tiny test networks" if a.smoke else
        f"published (JoyVASA {PUBLISHED_SIZES}, HuBERT base, LivePortrait)",
        "output": "512x512 at 30 fps", "audio_s": plan["seconds"], "warm": plan["warm"],
        "runs": plan["runs"], "date": time.strftime("%Y-%m-%d %H:%M:%S"), "runs_by_dtype": {}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        log("writing random weights in the published layouts...")
        root = write_root(Path(tmp) / "pretrained_weights", a.smoke)
        for dtype in dtypes:
            log(f"{dtype}: modules...")
            timer = Timer(a.device, plan["warm"], plan["runs"])
            entry: dict[str, Any] = {"modules": modules(root, a.device, dtype, sessions, timer)}
            log(f"{dtype}: sessions {sessions}...")
            entry["sessions"] = [
                measure(root, a.device, dtype, k, plan["seconds"], log)
                for k in sessions]
            results["runs_by_dtype"][dtype] = entry
    results["wall_s"] = time.perf_counter() - started
    return results


def table(r: dict[str, Any]) -> str:
    lines = [f"# GPU benchmark: profile {r['profile']} on {r['device']} ({r['device_name']}), "
             f"{r['date']}", "",
             f"Random weights, {r['sizes']}. Output {r['output']}; {r['audio_s']:g} s of "
             f"speech per session fed in real time (20 ms chunks). Modules: {r['warm']} "
             f"warm-up + {r['runs']} timed runs; ms per frame (a batch of b: one call / b "
             "frames; JoyVASA: one window / its frames; live: / the 6 session frames a "
             f"window commits, stride {STRIDE} at 25 fps). Whole run: {r['wall_s']:.0f} s."
             + (" SMOKE RUN (tiny, CPU)." if r["smoke"] else ""), ""]
    for dtype, run in r["runs_by_dtype"].items():
        lines += [f"## {dtype}: modules", "", "| module | batch | per | ms median | ms p99 |",
                  "|---|---|---|---|---|"]
        for e in run["modules"]:
            name = f"*{e['module']}*" if e.get("derived") else e["module"]
            lines.append(f"| {name} | {e['batch']} | {e['per']} | {e['median_ms']:.2f} | "
                         f"{e['p99_ms']:.2f} |")
        lines += ["", f"## {dtype}: concurrent sessions (embedded pipeline)", "",
                  "| sessions | held at 30 fps | fps per session (min / median) | first frame "
                  "ms (median / max) | lag ms (median / p99) | frames delivered | GPU memory "
                  "MiB | stage ms per frame (median) |", "|---|---|---|---|---|---|---|---|"]
        for s in run["sessions"]:
            mem = "n/a" if s["gpu_memory_mib"] is None else f"{s['gpu_memory_mib']:.0f}"
            stages = ", ".join(f"{k} {v:.1f}" for k, v in s["stage_ms"].items())
            lines.append(
                f"| {s['sessions']} | {s['held_at_30fps']} | {s['fps_min']:.1f} / "
                f"{s['fps_median']:.1f} | {s['first_frame_ms_median']:.0f} / "
                f"{s['first_frame_ms_max']:.0f} | {s['lag_ms_median']:.0f} / "
                f"{s['lag_ms_p99']:.0f} | {s['frames']} of {s['expected']} | {mem} | "
                f"{stages} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny, CPU, fp32, under a minute")
    ap.add_argument("--device", default=None, help="default: cuda:0 (cpu with --smoke)")
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--sessions", type=int, action="append",
                    help="concurrent sessions (repeatable); default 1, 4, 8, 16")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default 4; 1 with --smoke, as the tests share cores)")
    a = ap.parse_args(argv)
    a.device = a.device or ("cpu" if a.smoke else "cuda:0")
    a.threads = a.threads or (1 if a.smoke else 4)
    results = run(a)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "gpu.md").write_text(table(results))
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
