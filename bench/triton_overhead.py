"""Triton round-trip overhead: the refiner network served by a local Triton (CPU) against the
same network called in-process, on trivial batches (64 px crops, the small preset), so the
difference is what Triton costs: gRPC, the dynamic batcher, the python backend's shared
memory and stub. Warms up, then reports median and p99 per call.

A lone batch of 1 also waits out the dynamic batcher's queue delay (2 ms in the repository:
it hopes for company); a batch of 2 is a preferred size and leaves at once.

    python -m bench.triton_overhead --out bench/results
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _summary(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {"median": float(np.median(ms)), "p99": float(np.percentile(ms, 99)),
            "mean": float(ms.mean())}


def measure(url: str, net: Any, repeats: int = 200, warmup: int = 10,
            batch: int = 1) -> dict[str, Any]:
    """Times ``repeats`` calls of ``net`` (a RefinerNetwork) in-process and through the
    Triton model "refiner" at ``url`` (which must serve the same weights)."""
    import torch

    from avatarflow.triton_client import TritonNetwork

    cfg = net.config
    rng = np.random.default_rng(0)
    s, k = cfg.image_size, cfg.num_kp
    kp = rng.uniform(-0.8, 0.8, (batch, k, 3)).astype(np.float32)
    x = [rng.random((batch, 3, s, s), np.float32), kp, kp + np.float32(0.01),
         rng.random((batch, 3, s, s), np.float32)]
    client = TritonNetwork(url, "refiner", timeout_s=60)
    calls = {"in_process": lambda: net.forward_batch(*(torch.from_numpy(a) for a in x)),
             "triton": lambda: client.forward_batch(*x)}
    times: dict[str, list[float]] = {}
    try:
        for name, call in calls.items():
            for _ in range(warmup):
                call()
            times[name] = []
            for _ in range(repeats):
                t = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - t)
    finally:
        client.close()
    result = {f"{name}_ms": _summary(t) for name, t in times.items()}
    result["overhead_ms"] = {"median": result["triton_ms"]["median"]
                             - result["in_process_ms"]["median"]}
    return {"batch": batch, "image_size": s, "repeats": repeats, **result}


def _markdown(results: list[dict[str, Any]], machine: str) -> str:
    rows = [f"| {r['batch']} | {name} | {r[f'{name}_ms']['median']:.2f} | "
            f"{r[f'{name}_ms']['p99']:.2f} | {r['overhead_ms']['median']:.2f} |"
            for r in results for name in ("in_process", "triton")]
    first = results[0]
    return "\n".join([
        "# Triton round trip (refiner, small preset, CPU)", "",
        f"{first['image_size']} px crops, {first['repeats']} calls after a warm-up; {machine}.",
        "Overhead: Triton's median minus the in-process median.", "",
        "| batch | call | median ms | p99 ms | overhead ms |", "|---|---|---|---|---|", *rows,
        ""])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1, help="torch threads on each side")
    a = ap.parse_args()
    import torch

    from avatarflow.triton_server import TritonServer
    from avatarflow_refiner.engines.neural import RefinerNetwork
    from avatarflow_refiner.models import preset

    torch.set_num_threads(a.threads)  # the same threads in-process and in the stub
    net = RefinerNetwork.create(preset("small"))
    with tempfile.TemporaryDirectory() as d:
        net.save(d)
        with TritonServer(models=["refiner"], weights={"refiner": d},
                          env={"OMP_NUM_THREADS": str(a.threads)}) as server:
            results = [measure(server.url, net, a.repeats, batch=b) for b in (1, 2)]
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
