"""Triton round-trip overhead: the renderer and refiner networks served by a local Triton
(CPU) against the same networks called in-process, on small configs, so the difference is
what Triton costs: gRPC, the dynamic batcher, the python backend's shared memory and stub.
Warms up, then reports median and p99 per call, both sides in one run on one server.

- renderer: the ``neural`` engine's ``render_batch`` (arch liveportrait, a small random
  config with 64 px sources; two analysed 256 x 256 head avatars) in-process, against the
  same engine with ``triton_url``. Both run the keypoint part here (retargeting and
  stitching MLPs per frame); the generator (warping, SPADE) runs in-process or on Triton,
  where each avatar's appearance volume is cached, so a frame's request carries only avatar
  keys and keypoints. Batch b = b sessions' frames in one call.
- refiner: ``RefinerNetwork.forward_batch`` (small preset, 64 px crops) against the Triton
  model called with the same tensors.

A lone batch of 1 also waits out the dynamic batcher's queue delay (2 ms in the repository:
it hopes for company); a batch of 2 is a preferred size and leaves at once.

    python -m bench.triton_overhead --out bench/results
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.run_neural import SMALL_INPUT, small_liveportrait_params

BATCHES = (1, 2)
CANVAS = 256  # head avatars, 256 x 256 px


def _summary(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {"median": float(np.median(ms)), "p99": float(np.percentile(ms, 99)),
            "mean": float(ms.mean())}


def _compare(calls: dict[str, Callable[[int], object]], repeats: int,
             warmup: int) -> dict[str, Any]:
    """Times each of ``calls`` ("in_process", "triton"; called with the iteration number)
    ``repeats`` times after ``warmup`` calls: summaries and Triton's overhead."""
    times: dict[str, list[float]] = {}
    for name, call in calls.items():
        for i in range(warmup):
            call(i)
        times[name] = []
        for i in range(repeats):
            t = time.perf_counter()
            call(i)
            times[name].append(time.perf_counter() - t)
    result: dict[str, Any] = {f"{name}_ms": _summary(t) for name, t in times.items()}
    local, remote = result["in_process_ms"], result["triton_ms"]
    result["overhead_ms"] = {"median": remote["median"] - local["median"],
                             "p99": remote["p99"] - local["p99"]}
    return result


def measure(url: str, net: Any, repeats: int = 200, warmup: int = 10,
            batch: int = 1) -> dict[str, Any]:
    """Times ``repeats`` calls of ``net`` (a RefinerNetwork) in-process and through the
    Triton model "refiner" at ``url`` (which must serve the same weights)."""
    import torch

    from avatarflow.triton.client import TritonNetwork

    cfg = net.config
    rng = np.random.default_rng(0)
    s, k = cfg.image_size, cfg.num_kp
    kp = rng.uniform(-0.8, 0.8, (batch, k, 3)).astype(np.float32)
    x = [rng.random((batch, 3, s, s), np.float32), kp, kp + np.float32(0.01),
         rng.random((batch, 3, s, s), np.float32)]
    client = TritonNetwork(url, "refiner", timeout_s=60)
    try:
        result = _compare(
            {"in_process": lambda i: net.forward_batch(*(torch.from_numpy(a) for a in x)),
             "triton": lambda i: client.forward_batch(*x)}, repeats, warmup)
    finally:
        client.close()
    return {"model": "refiner", "batch": batch, "size": f"{s} px crops", "repeats": repeats,
            **result}


# -- renderer ------------------------------------------------------------------------------

def write_small_liveportrait(root: Path, seed: int = 0) -> Path:
    """Freshly initialised weights of the small config in LivePortrait's published layout
    (base_models/, retargeting_models/ with DataParallel's key prefix, models.yaml)."""
    from avatarflow_renderer.engines.neural_layout import write_random_weights

    return write_random_weights(root, params=small_liveportrait_params(),
                                input_shape=SMALL_INPUT, seed=seed)


def head_avatars() -> list[Any]:
    """Two analysed head avatars (mediapipe): the astronaut portrait and its mirror image."""
    from skimage import data

    from avatarflow_renderer.analysis import PortraitAnalyser

    image = data.astronaut()
    analyser = PortraitAnalyser()
    try:
        return [analyser.analyse(np.ascontiguousarray(img), name, "head", CANVAS, CANVAS)
                for name, img in (("astronaut", image), ("mirrored", image[:, ::-1]))]
    finally:
        analyser.close()


def talking(n: int = 30) -> list[Any]:
    """``n`` motion frames: the jaw opening and closing, the head turning a little."""
    from avatarflow.contracts import motion as mo
    from avatarflow.contracts.messages import MotionFrame

    wrists = mo.BODY_CANONICAL[[mo.BODY["wrist_l"], mo.BODY["wrist_r"]]]
    frames = []
    for i in range(n):
        e = np.zeros(len(mo.EXPRESSIONS), np.float32)
        e[mo.EXPR["jaw_open"]] = 0.5 + 0.5 * np.sin(i / 3)
        frames.append(MotionFrame(
            session_id="bench", index=i, rotation=np.array([0, 0.1 * np.sin(i / 7), 0],
                                                           np.float32),
            translation=np.zeros(3, np.float32), scale=1.0, expression=e,
            head_template=mo.head_template(e), head_offset=np.zeros((mo.K, 3), np.float32),
            body=mo.BODY_CANONICAL.copy(), hands=(mo.HAND_REST + wrists[:, None]).astype(
                np.float32)))
    return frames


def measure_renderer(url: str, weights: str | Path, avatars: list[Any], repeats: int = 200,
                     warmup: int = 10, batch: int = 1) -> dict[str, Any]:
    """Times ``repeats`` ``render_batch`` calls of ``batch`` sessions' frames (one avatar
    each) with the neural engine in-process and with ``triton_url=url`` (the Triton model
    "renderer" serving ``weights``, arch liveportrait)."""
    from avatarflow_renderer.engines import create

    motions = talking()
    engines = {"in_process": create("neural", weights=str(weights)),
               "triton": create("neural", weights=str(weights), triton_url=url)}

    def call(engine: Any) -> Callable[[int], object]:
        return lambda i: engine.render_batch(
            [(avatars[j], motions[(i + j) % len(motions)]) for j in range(batch)])

    out_w, out_h = engines["in_process"].network.output_size
    try:
        for engine in engines.values():
            for avatar in avatars[:batch]:
                engine.warm(avatar)
        result = _compare({name: call(e) for name, e in engines.items()}, repeats, warmup)
    finally:
        for engine in engines.values():
            engine.close()
    size = (f"{SMALL_INPUT[1]} px sources, {out_w}x{out_h} float32 network output, "
            f"{CANVAS}x{CANVAS} frames")
    return {"model": "renderer", "batch": batch, "size": size, "repeats": repeats, **result}


# -- report --------------------------------------------------------------------------------

def _markdown(results: list[dict[str, Any]], machine: str) -> str:
    rows = []
    for r in results:
        local, remote, extra = r["in_process_ms"], r["triton_ms"], r["overhead_ms"]
        rows.append(f"| {r['model']} | {r['batch']} | {r['repeats']} | "
                    f"{local['median']:.2f} | {local['p99']:.2f} | "
                    f"{remote['median']:.2f} | {remote['p99']:.2f} | "
                    f"{extra['median']:+.2f} | {extra['p99']:+.2f} |")
    sizes = "; ".join(dict.fromkeys(f"{r['model']}: {r['size']}" for r in results))
    return "\n".join([
        "# Triton round trip (renderer and refiner, small configs, CPU)", "",
        f"{sizes}. Timed calls after a warm-up; {machine}.",
        "Renderer: the neural engine's render_batch (keypoint part here on both sides; the "
        "generator in-process or on Triton, appearance cached there per avatar). Refiner: the "
        "network's forward_batch. Overhead: Triton minus in-process, at the median and at "
        "the p99.", "",
        "| model | batch | calls | in-process median ms | in-process p99 ms | "
        "Triton median ms | Triton p99 ms | overhead median ms | overhead p99 ms |",
        "|---|---|---|---|---|---|---|---|---|", *rows, ""])


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--repeats", type=int, default=200, help="timed refiner calls per cell")
    ap.add_argument("--renderer-repeats", type=int, default=100,
                    help="timed renderer calls per cell (a frame costs ~10x a refiner call)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads on each side")
    a = ap.parse_args()
    import torch

    from avatarflow.dev.triton_server import TritonServer
    from avatarflow_refiner.engines.neural import RefinerNetwork
    from avatarflow_refiner.models import preset

    torch.set_num_threads(a.threads)  # the same threads in-process and in the stub
    start = time.perf_counter()
    refiner = RefinerNetwork.create(preset("small"))
    _log("analysing two portraits (mediapipe)...")
    avatars = head_avatars()
    results = []
    with tempfile.TemporaryDirectory() as d:
        refiner_dir = refiner.save(Path(d) / "refiner")
        renderer_dir = write_small_liveportrait(Path(d) / "renderer")
        _log("starting tritonserver (renderer, refiner)...")
        with TritonServer(models=["renderer", "refiner"],
                          weights={"renderer": renderer_dir, "refiner": refiner_dir},
                          parameters={"renderer": {"arch": "liveportrait"}},
                          env={"OMP_NUM_THREADS": str(a.threads)}) as server:
            for b in BATCHES:
                _log(f"renderer, batch {b}...")
                results.append(measure_renderer(server.url, renderer_dir, avatars,
                                                a.renderer_repeats, batch=b))
            for b in BATCHES:
                _log(f"refiner, batch {b}...")
                results.append(measure(server.url, refiner, a.repeats, batch=b))
    _log(f"done in {time.perf_counter() - start:.0f} s")
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
               f"{a.threads} torch thread(s) on each side")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "triton_overhead.json").write_text(
        json.dumps({"machine": machine, "results": results}, indent=2) + "\n")
    (out / "triton_overhead.md").write_text(_markdown(results, machine))
    print(_markdown(results, machine))


if __name__ == "__main__":
    main()
