"""Motion engines on CPU: the joyvasa engine's cost per frame beside the signal engine's.

Each engine runs on the same speech (the bundled sentences), its audio encoder's features
made beforehand (``pcm`` for joyvasa, ``mel`` for signal), so only the motion engine is timed:

* offline: the whole clip at once. For joyvasa this is ``avatarflow motion``'s path (JoyVASA's
  ``gen_motion_sequence``: windows of ``n_motions`` frames at 25 fps), a figure per frame it
  writes (25 fps); for signal, push every frame then flush, per 30 fps frame;
* streaming: the stage's live path, features pushed as 20 ms chunks of audio make them, per
  30 fps frame out; ``worst push`` is the longest single call (a JoyVASA window runs inside
  the push that completes its audio: the stall a session sees).

joyvasa runs on random weights in its published layout: the tiny test network and, when
``--sizes`` includes it, the published sizes (HuBERT base; 100-frame windows, width 512).
Median and p99 are over the timed runs (after a warm-up run), each run's figure being its
total time / its frames. Writes ``motion.json`` and ``motion.md``.

    python -m bench.run_motion --out bench/results
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

FPS = 30.0
CHUNK_S = 0.02
RUNS = {"tiny": (1, 10), "published": (1, 2)}  # (warm-up runs, timed runs)
# Of speech per run; published: one JoyVASA window (3.8 s + its 0.12 s of padding < 4 s).
SECONDS = {"tiny": 8.0, "published": 3.8}
Entry = dict[str, Any]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def speech(seconds: float) -> tuple[np.ndarray, int]:
    """The bundled speech's first ``seconds``, int16 mono at its own rate."""
    from avatarflow.cli.inputs import speech_with_pauses

    pcm, rate = speech_with_pauses()
    return pcm[: int(seconds * rate)], rate


def chunked_features(engine: str, pcm: np.ndarray, rate: int) -> list[list[np.ndarray]]:
    """The audio encoder's feature frames, per 20 ms chunk of audio (the last list: flush)."""
    from avatarflow_audio_encoder.engines import create

    s = create(engine).open_session(rate, FPS)
    step = int(round(CHUNK_S * rate))
    out = [s.push(pcm[i:i + step]) for i in range(0, pcm.size, step)]
    return out + [s.flush()]


def timed(fn: Callable[[], tuple[int, float]], warm: int, runs: int) -> Entry:
    """``fn`` returns (frames, worst single call in s); figures in ms per frame."""
    for _ in range(warm):
        fn()
    per_frame, worst = [], []
    for _ in range(runs):
        t = time.perf_counter()
        frames, w = fn()
        per_frame.append((time.perf_counter() - t) * 1e3 / max(frames, 1))
        worst.append(w * 1e3)
    return {"median_ms": float(np.median(per_frame)), "p99_ms": float(np.percentile(per_frame, 99)),
            "worst_push_ms": float(max(worst)), "frames": frames, "warmup": warm, "runs": runs}


def streaming(engine: Any, layout: str, feats: list[list[np.ndarray]]) -> Callable[[], Any]:
    """The live path: one session, features pushed chunk by chunk, then flushed."""
    from avatarflow.contracts.controls import Controls

    def run() -> tuple[int, float]:
        s = engine.open_session(FPS, Controls(seed=0), layout)
        frames, worst = 0, 0.0
        for chunk in feats:
            t = time.perf_counter()
            frames += len(s.push(chunk))
            worst = max(worst, time.perf_counter() - t)
        t = time.perf_counter()
        frames += len(s.flush())
        return frames, max(worst, time.perf_counter() - t)

    return run


def signal(seconds: float, rec: list[Entry]) -> None:
    from avatarflow.contracts.controls import Controls
    from avatarflow_audio_encoder.engines import create as audio
    from avatarflow_motion_gen.engines import create

    pcm, rate = speech(seconds)
    feats = chunked_features("mel", pcm, rate)
    layout = audio("mel").layout
    engine = create("signal")
    flat = [f for chunk in feats for f in chunk]

    def offline() -> tuple[int, float]:
        s = engine.open_session(FPS, Controls(seed=0), layout)
        n = len(s.push(flat)) + len(s.flush())
        return n, 0.0

    warm, runs = RUNS["tiny"]
    base = {"engine": "signal", "weights": "none (signal processing)", "audio_s": seconds}
    rec.append({**base, "path": "offline (whole clip)", "per": "30 fps frame",
                **timed(offline, warm, runs)})
    rec.append({**base, "path": "streaming (20 ms chunks)", "per": "30 fps frame",
                **timed(streaming(engine, layout, feats), warm, runs)})


def joyvasa(size: str, tmp: Path, rec: list[Entry]) -> None:
    import torch

    from avatarflow_motion_gen.engines import create
    from avatarflow_motion_gen.engines.joyvasa import layout, sampler
    from avatarflow_motion_gen.engines.joyvasa.layout import write_random_weights
    from bench.gpu import PUBLISHED

    root = tmp / f"joyvasa-{size}"
    root.mkdir()
    with torch.random.fork_rng(devices=[]):
        if size == "published":
            write_random_weights(root, seed=0, audio_config={}, **PUBLISHED)
        else:
            write_random_weights(root, seed=0)
    seconds = SECONDS[size]
    pcm, rate = speech(seconds)
    feats = chunked_features("pcm", pcm, rate)
    loaded = layout.load(root)
    m = loaded.model
    clip = sum((list(c) for c in feats), [])
    audio16 = np.concatenate(clip).astype(np.float32)  # the pcm engine's 16 kHz samples

    def offline() -> tuple[int, float]:
        torch.manual_seed(0)
        coef = sampler.generate(m, audio16, sampler.CFG_SCALE,
                                str(loaded.args.get("pad_mode") or "zero"))
        return len(sampler.denormalise(coef, loaded.template)["exp"]), 0.0

    warm, runs = RUNS[size]
    sched = m.diffusion_sched.steps
    base = {"engine": "joyvasa", "audio_s": seconds,
            "weights": f"{size} random (window {m.n_motions}, history {m.n_prev}, width "
                       f"{m.start_audio_feat.shape[-1]}, {sched} steps, HuBERT "
                       f"{'base' if size == 'published' else 'tiny'})"}
    log(f"  joyvasa {size}: offline ({warm} warm-up + {runs} runs)")
    rec.append({**base, "path": "offline (whole clip, `avatarflow motion`)",
                "per": "25 fps frame", **timed(offline, warm, runs)})
    log(f"    {rec[-1]['median_ms']:.2f} ms per frame")
    engine: Any = create("joyvasa", weights=str(root))
    path = f"streaming (20 ms chunks, stride {engine.stride})"
    if size == "published":
        # A live window is an offline window (same audio length, steps and guidance) that
        # commits ``stride`` frames: a clip's worth of them takes too long on one thread.
        frames = rec[-1]["frames"]
        per = frames / (math.ceil(frames / m.n_motions) * engine.stride * FPS / m.fps)
        rec.append({**rec[-1], "path": path + ", derived from the offline window",
                    "per": "30 fps frame", "derived": True, "worst_push_ms": None,
                    "median_ms": rec[-1]["median_ms"] * per, "p99_ms": rec[-1]["p99_ms"] * per})
        return
    log(f"  joyvasa {size}: streaming ({warm} warm-up + {runs} runs)")
    rec.append({**base, "path": path, "per": "30 fps frame",
                **timed(streaming(engine, "pcm16k", feats), warm, runs)})
    log(f"    {rec[-1]['median_ms']:.2f} ms per frame")


def table(r: dict[str, Any]) -> str:
    lines = [f"# Motion engines on CPU ({r['machine']}, {r['threads']} torch thread(s)), "
             f"{r['date']}", "",
             "Only the motion engine is timed (its audio encoder's features made beforehand). "
             "ms per frame: a run's total / its frames, median and p99 over the timed runs "
             "after a warm-up run; worst push: the longest single call of the streaming "
             "path (a live window's stall). Published sizes: the streaming figure is derived "
             "from the offline window's (a live window does the same work and commits its "
             "stride), as a clip's worth of live windows takes minutes on one thread.", "",
             "| engine | weights | path | audio s | per | runs | ms median | ms p99 | "
             "worst push ms |", "|---|---|---|---|---|---|---|---|---|"]
    for e in r["entries"]:
        worst = (f"{e['worst_push_ms']:.1f}" if e["path"].startswith("streaming")
                 and not e.get("derived") else "-")
        lines.append(f"| {e['engine']} | {e['weights']} | {e['path']} | {e['audio_s']:g} | "
                     f"{e['per']} | {e['warmup']} + {e['runs']} | {e['median_ms']:.2f} | "
                     f"{e['p99_ms']:.2f} | {worst} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser(prog="python -m bench.run_motion", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--sizes", action="append", choices=list(RUNS),
                    help="joyvasa weights sizes (repeatable); default: tiny and published")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    entries: list[Entry] = []
    started = time.perf_counter()
    log("signal...")
    signal(SECONDS["tiny"], entries)
    with tempfile.TemporaryDirectory() as tmp:
        for size in a.sizes or list(RUNS):
            joyvasa(size, Path(tmp), entries)
    results = {"machine": platform.processor() or platform.machine(), "threads": a.threads,
               "device": "cpu", "date": time.strftime("%Y-%m-%d %H:%M:%S"),
               "wall_s": time.perf_counter() - started, "entries": entries}
    log(f"done in {results['wall_s']:.0f} s")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "motion.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "motion.md").write_text(table(results))
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
