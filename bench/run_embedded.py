"""Embedded pipeline benchmark: per-stage median and p99 ms per frame and end-to-end fps.

Runs the demo job (audio -> features -> motion -> render -> refine -> H.264) on the bundled
inputs, pinned to one CPU core, after a warm-up run. Writes JSON and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

TARGET_FPS = 60.0  # twice real time at 30 fps


def _run(image: Path, audio: Path, out: Path, mode: str, size: str) -> dict:
    from avatarflow.cli import demo

    p = argparse.ArgumentParser()
    demo.add_arguments(p)
    args = p.parse_args(["--image", str(image), "--audio", str(audio), "--out", str(out),
                         "--mode", mode, "--size", size, "--no-progress"])
    return demo.run(args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--cores", type=int, default=1, help="CPU cores to pin to")
    a = ap.parse_args()
    os.sched_setaffinity(0, set(range(a.cores)))
    import cv2

    cv2.setNumThreads(a.cores)
    from avatarflow.cli.inputs import make_inputs

    results: dict = {"machine": platform.processor() or platform.machine(), "cores": a.cores,
                     "date": time.strftime("%Y-%m-%d %H:%M:%S"), "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        image, audio = make_inputs(Path(tmp))
        _run(image, audio, Path(tmp) / "warmup.mp4", "upper-body", "512x768")  # warm-up
        for mode, size in (("upper-body", "512x768"), ("head", "512x512")):
            results["runs"][f"{mode} {size}"] = _run(image, audio, Path(tmp) / "b.mp4", mode,
                                                     size)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "embedded.json").write_text(json.dumps(results, indent=2))
    (out / "embedded.md").write_text(_table(results))
    print(_table(results))


def _table(r: dict) -> str:
    lines = [f"# Embedded pipeline, {r['cores']} core(s), {r['date']}", ""]
    for name, run in r["runs"].items():
        ratio = run["fps"] / TARGET_FPS
        lines += [f"## {name}: {run['fps']:.1f} fps end to end "
                  f"({run['fps'] / 30:.2f}x real time; {ratio:.2f}x the 60 fps target), "
                  f"{run['frames']} frames", "",
                  f"First frame after {run['first_frame_s'] * 1e3:.0f} ms (portrait analysis "
                  f"included); {run['steady_fps']:.1f} fps from the first frame to the last.",
                  "",
                  "| stage | median ms/frame | p99 ms/frame | share of busy time |",
                  "|---|---|---|---|"]
        busy = sum(s["busy_s"] for s in run["stages"].values())
        for stage, s in run["stages"].items():
            lines.append(f"| {stage} | {s['median_ms']:.2f} | {s['p99_ms']:.2f} | "
                         f"{s['busy_s'] / busy:.0%} |")
        lines += [f"| encode (H.264) | {run['encode_median_ms']:.2f} | "
                  f"{run['encode_p99_ms']:.2f} | - |", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
