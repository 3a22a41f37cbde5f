"""Neural engines on CPU: milliseconds per module, small and full configs, random weights.

Sections (``--only``): audio (hubert), motion (diffusion), renderer (the neural renderer's
networks module by module: LivePortrait, and the upper-body network at 512 x 768 with its
full preset) and refiner (the face refine network). Weights are random (none can be
downloaded here), which changes nothing about the arithmetic.

Every figure is the median and p99 over runs in this one process, on the CPU with
``--threads`` torch threads (1 by default, as a service replica runs), after warm-up runs.
Small configs get 2 warm-up + 10 timed runs, full configs 1 warm-up + 3 timed runs per module
(one LivePortrait SPADE pass alone takes about 15 s on one thread here), so every section is
bounded; the p99 of 3 runs is close to their maximum. Per-avatar modules (appearance,
motion extractor) run once when a session starts, the others on every frame. Progress goes
to stderr. Writes ``neural.json`` and ``neural.md``; a run of some sections or configs keeps
the other figures of an earlier run on the same machine and thread count.

    python -m bench.run_neural --out bench/results
    python -m bench.run_neural --only renderer --config small
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

FPS = 30.0
RUNS = {"small": (2, 10), "full": (1, 3)}  # config -> (warm-up runs, timed runs)
CONFIGS = tuple(RUNS)
SMALL_INPUT = (64, 64)  # (height, width) of the small LivePortrait config's source
Entry = dict[str, Any]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Recorder:
    """Times modules of one section, tells the operator what it is doing, keeps the figures."""

    def __init__(self, section: str) -> None:
        self.section = section
        self.entries: list[Entry] = []

    def time(self, network: str, module: str, config: str, size: str,
             fn: Callable[[], Any], *, per: str = "frame", batch: int = 1,
             frames: int | None = 1) -> Entry:
        """ms per frame (per avatar when ``per`` is "avatar") of ``fn``: one call makes
        ``frames`` frames, or as many as it returns when ``frames`` is None."""
        warm, runs = RUNS[config]
        log(f"  {self.section}: {network} {module}, {config} ({warm} warm-up + {runs} runs)")
        start = time.perf_counter()
        for _ in range(warm):
            fn()
        samples = []
        for _ in range(runs):
            t = time.perf_counter()
            out = fn()
            n = int(out) if frames is None else frames
            samples.append((time.perf_counter() - t) * 1e3 / n)
        entry = {"section": self.section, "network": network, "module": module,
                 "config": config, "size": size, "per": per, "batch": batch,
                 "median_ms": float(np.median(samples)),
                 "p99_ms": float(np.percentile(samples, 99)), "warmup": warm, "runs": runs,
                 "date": time.strftime("%Y-%m-%d %H:%M:%S")}
        log(f"    {entry['median_ms']:.1f} ms per {per} (median), "
            f"{time.perf_counter() - start:.0f} s")
        self.entries.append(entry)
        return entry

    def total(self, parts: list[Entry], module: str = "frame total (per-frame modules)") -> None:
        """A derived row: the sum of ``parts`` (medians and p99s summed)."""
        first = parts[0]
        self.entries.append({**first, "module": module, "derived": True,
                             "median_ms": sum(p["median_ms"] for p in parts),
                             "p99_ms": sum(p["p99_ms"] for p in parts)})


# -- sections -------------------------------------------------------------------------------

def audio(tmp: Path, configs: list[str], rec: Recorder) -> None:
    """hubert: a tiny config and hubert-base's (12 layers, width 768); 2 s of audio pushed in
    20 ms chunks, as a session does."""
    from transformers import HubertConfig, HubertModel

    from avatarflow_audio_encoder.engines import create

    kwargs = {
        "small": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, conv_dim=(32,) * 7, num_conv_pos_embeddings=16,
                      num_conv_pos_embedding_groups=2),
        "full": {},  # HubertConfig's defaults are hubert-base's
    }
    pcm = (np.random.default_rng(0).standard_normal(32000) * 3000).astype(np.int16)
    for config in configs:
        path = tmp / f"hubert-{config}"
        HubertModel(HubertConfig(**kwargs[config])).save_pretrained(path)
        engine = create("hubert", weights=str(path))

        def run(engine: Any = engine) -> int:
            s = engine.open_session(16000, FPS)
            n = sum(len(s.push(pcm[i:i + 320])) for i in range(0, pcm.size, 320))
            return n + len(s.flush())

        rec.time("hubert", "2 s of audio in 20 ms chunks", config, "16 kHz", run,
                 frames=None)


def motion(tmp: Path, configs: list[str], rec: Recorder) -> None:
    """diffusion: 3 s of 44-dim features, default steps and audio guidance; a window of
    frames is generated at once, so a figure is the windows' cost / frames."""
    import torch

    from avatarflow.contracts.controls import Controls
    from avatarflow_motion_gen.engines import create
    from avatarflow_motion_gen.engines.diffusion import build_model, preset, save

    layout = "mel40+energy_db+voicing+zcr+flux"
    feats = list(np.random.default_rng(1).standard_normal((90, 44)).astype(np.float32))
    for config in configs:
        path = tmp / f"diffusion-{config}"
        torch.manual_seed(0)
        save(build_model(preset(config)), preset(config), path)
        engine = create("diffusion", weights=str(path))

        def run(engine: Any = engine) -> int:
            s = engine.open_session(FPS, Controls(), layout)
            return len(s.push(feats)) + len(s.flush())

        rec.time("diffusion", f"3 s of features, {preset(config).steps} steps", config,
                 "90 frames", run, frames=None)


def small_liveportrait_params() -> dict[str, Any]:
    """LivePortrait's published hyper-parameters with narrow appearance, warping and SPADE
    networks (8 base channels, 64 at most); the motion extractor and MLPs keep their size."""
    from avatarflow_renderer.engines.neural_net import LIVEPORTRAIT_PARAMS

    p = copy.deepcopy(LIVEPORTRAIT_PARAMS)
    narrow = {"block_expansion": 8, "max_features": 64}
    p["appearance_feature_extractor_params"].update(narrow, reshape_channel=8, reshape_depth=8,
                                                    num_resblocks=1)
    p["warping_module_params"].update(narrow, reshape_channel=8)
    p["warping_module_params"]["dense_motion_params"].update(
        block_expansion=8, max_features=32, num_blocks=2, reshape_depth=8, compress=1)
    p["spade_generator_params"].update(narrow)
    return p


def liveportrait(config: str, rec: Recorder) -> None:
    """LivePortrait (the published config, 256 x 256 -> 512 x 512, or the small one), one
    module at a time, batch 1; the small config also renders whole frames at batch 1 and 4."""
    import torch

    from avatarflow_renderer.engines import neural_kp as kpm
    from avatarflow_renderer.engines.neural_net import LIVEPORTRAIT_INPUT, LivePortraitNetwork

    params, shape = ((small_liveportrait_params(), SMALL_INPUT) if config == "small"
                     else (None, LIVEPORTRAIT_INPUT))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = LivePortraitNetwork(LivePortraitNetwork.build(params), shape,
                                  torch.device("cpu"), torch.float32)
    (w, h), (ow, oh) = net.source_size, net.output_size
    size, name = f"{w}x{h} -> {ow}x{oh}", "LivePortrait"
    log(f"  renderer: preparing LivePortrait {config} inputs (one pass of F, M and W)")
    src = torch.rand(1, 3, h, w)
    warper, generator = net.parts["warper"], net.parts["generator"]
    with torch.inference_mode():
        feats = net.features(src)
        kp_s = kpm.source_keypoints(net.motion_info(src))
        kp_d = kp_s + 0.02 * torch.randn(kp_s.shape)
        warped = warper(feats, kp_driving=kp_d, kp_source=kp_s)["out"]
        lips, eyes = torch.tensor([[0.1, 0.3]]), torch.tensor([[0.3, 0.3, 0.2]])
        rec.time(name, "appearance feature extractor", config, size,
                 lambda: net.features(src), per="avatar")
        rec.time(name, "motion extractor", config, size, lambda: net.motion_info(src),
                 per="avatar")
        per_frame = [
            rec.time(name, "warping module", config, size,
                     lambda: warper(feats, kp_driving=kp_d, kp_source=kp_s)),
            rec.time(name, "SPADE generator", config, size, lambda: generator(warped)),
            rec.time(name, "retargeting MLPs (lip, eye, stitching)", config, size,
                     lambda: (net.retarget_lip(kp_s, lips), net.retarget_eye(kp_s, eyes),
                              net.stitch(kp_s, kp_d)))]
        rec.total(per_frame)
        if config == "small":
            for b in (1, 4):
                rec.time(name, f"whole frame (warping + SPADE), batch {b}", config, size,
                         lambda b=b: net.decode(feats.expand(b, -1, -1, -1, -1),
                                                kp_s.expand(b, -1, -1), kp_d.expand(b, -1, -1)),
                         batch=b, frames=b)


def upper_body(config: str, rec: Recorder) -> None:
    """The upper-body network (preset small, or full: 256 x 384 -> 512 x 768), one module at a
    time, batch 1; the small preset also renders whole frames at batch 1 and 4."""
    import torch

    from avatarflow_renderer.models.upperbody import UpperBodyConfig, UpperBodyRenderer

    cfg = UpperBodyConfig.preset(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = UpperBodyRenderer(cfg).eval()
    w, h = cfg.source_width, cfg.source_height
    size, name = f"{w}x{h} -> {cfg.output_size[0]}x{cfg.output_size[1]}", "upper-body"
    log(f"  renderer: preparing upper-body {config} inputs (one pass of the encoder and warper)")
    src, hand = torch.rand(1, 3, h, w), torch.rand(1, 3, h, w)
    kp_s = torch.rand(1, cfg.num_kp, 3) * 1.6 - 0.8
    kp_d = kp_s + 0.02 * torch.randn(kp_s.shape)
    with torch.inference_mode():
        volume = model.appearance(src)
        warped = model.warper(volume, kp_driving=kp_d, kp_source=kp_s)["out"]
        rec.time(name, "appearance encoder", config, size, lambda: model.appearance(src),
                 per="avatar")
        per_frame = [
            rec.time(name, "warping module", config, size,
                     lambda: model.warper(volume, kp_driving=kp_d, kp_source=kp_s)),
            rec.time(name, "SPADE generator with hand injection", config, size,
                     lambda: model.generator(warped, hand))]
        rec.total(per_frame)
        if config == "small":
            for b in (1, 4):
                rec.time(name, f"whole frame (warping + generator), batch {b}", config, size,
                         lambda b=b: model.decode(volume.expand(b, -1, -1, -1, -1),
                                                  kp_s.expand(b, -1, -1),
                                                  kp_d.expand(b, -1, -1),
                                                  hand.expand(b, -1, -1, -1)),
                         batch=b, frames=b)


def renderer(tmp: Path, configs: list[str], rec: Recorder) -> None:
    """The neural renderer's networks, module by module."""
    for config in configs:
        liveportrait(config, rec)
    for config in configs:
        upper_body(config, rec)


def refiner(tmp: Path, configs: list[str], rec: Recorder) -> None:
    """The face refine network (small: batch 1 and 4; full: batch 1), per frame."""
    import torch

    from avatarflow_refiner.engines.neural import RefinerNetwork
    from avatarflow_refiner.models import preset

    for config in configs:
        net = RefinerNetwork.create(preset(config), seed=2)
        s, k, o = net.config.image_size, net.config.num_kp, net.config.out_size
        for b in (1, 4) if config == "small" else (1,):
            x = (torch.rand(b, 3, s, s), torch.rand(b, k, 3), torch.rand(b, k, 3),
                 torch.rand(b, 3, s, s))
            rec.time("face refine", f"batch {b}", config, f"{s} -> {o} px crops",
                     lambda x=x, net=net: net.forward_batch(*x), batch=b, frames=b)


SECTIONS: dict[str, tuple[str, Callable[[Path, list[str], Recorder], None]]] = {
    "audio": ("audio-encoder hubert", audio), "motion": ("motion-gen diffusion", motion),
    "renderer": ("renderer neural", renderer), "refiner": ("refiner neural", refiner)}


# -- report ---------------------------------------------------------------------------------

def merge(previous: dict[str, Any] | None, results: dict[str, Any],
          ran: set[tuple[str, str]]) -> dict[str, Any]:
    """``results`` plus the entries of ``previous`` (same machine and threads) of the
    (section, config) pairs that did not run now."""
    if not previous or any(previous.get(k) != results[k] for k in ("machine", "threads")):
        return results
    kept = [e for e in previous.get("entries", [])
            if (e.get("section"), e.get("config")) not in ran]
    titles = [title for title, _ in SECTIONS.values()]
    entries = sorted(kept + results["entries"], key=lambda e: (
        titles.index(e["section"]) if e["section"] in titles else len(titles)))
    return {**results, "entries": entries}


def table(results: dict[str, Any]) -> str:
    entries = results["entries"]
    dates = sorted(e["date"] for e in entries) or [results["date"]]
    span = dates[0] if dates[0][:10] == dates[-1][:10] else f"{dates[0]} to {dates[-1]}"
    runs = ", ".join(f"{c} configs {w} warm-up + {n} timed runs" for c, (w, n) in RUNS.items())
    lines = [
        f"# Neural engines on CPU ({results['machine']}, {results['threads']} torch "
        f"thread(s)), {span}", "",
        f"Random weights, device cpu. Per module: {runs} (the p99 of 3 runs is close to their "
        "maximum). Figures are ms per frame (batch b: one call / b), or per avatar for the "
        "modules that run once when a session starts. A frame total is the sum of the "
        "per-frame modules' figures.", "",
        "| engine | network | module | config | size | once per | ms median | ms p99 |",
        "|---|---|---|---|---|---|---|---|"]
    for e in entries:
        module = f"**{e['module']}**" if e.get("derived") else e["module"]
        lines.append(f"| {e['section']} | {e['network']} | {module} | {e['config']} | "
                     f"{e['size']} | {e['per']} | {e['median_ms']:.2f} | {e['p99_ms']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--only", action="append", choices=list(SECTIONS),
                    help="run this section only (repeatable); default: all")
    ap.add_argument("--config", action="append", choices=CONFIGS,
                    help="run this config only (repeatable); default: small and full")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    sections = a.only or list(SECTIONS)
    configs = [c for c in CONFIGS if c in (a.config or CONFIGS)]
    results: dict[str, Any] = {"machine": platform.processor() or platform.machine(),
                               "threads": a.threads, "device": "cpu",
                               "date": time.strftime("%Y-%m-%d %H:%M:%S"), "entries": []}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for key in sections:
            title, section = SECTIONS[key]
            log(f"{title} ({', '.join(configs)})...")
            t = time.perf_counter()
            rec = Recorder(title)
            section(Path(tmp), configs, rec)
            results["entries"] += rec.entries
            log(f"{title}: done in {time.perf_counter() - t:.0f} s")
    log(f"all sections done in {time.perf_counter() - started:.0f} s")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "neural.json"
    previous = json.loads(path.read_text()) if path.exists() else None
    ran = {(SECTIONS[k][0], c) for k in sections for c in configs}
    results = merge(previous, results, ran)
    path.write_text(json.dumps(results, indent=2) + "\n")
    (out / "neural.md").write_text(table(results))
    print(table(results))


if __name__ == "__main__":
    main()
