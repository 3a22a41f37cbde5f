"""Neural engines on CPU: milliseconds per video frame per module, small and full configs.

Weights are random (none can be downloaded here), which changes nothing about the arithmetic.
Every figure is the median and p99 over repeated runs in this one process, one torch thread
(as a service replica runs), after a warm-up. Writes ``neural.json`` and ``neural.md``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

FPS = 30.0


def timed(fn: Callable[[], object], repeat: int, warm: int = 1) -> dict:
    for _ in range(warm):
        fn()
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1e3)
    return {"median_ms": float(np.median(samples)), "p99_ms": float(np.percentile(samples, 99)),
            "runs": repeat}


def per_frame(result: dict, frames: int) -> dict:
    return {k: (v / frames if k.endswith("_ms") else v) for k, v in result.items()}


def audio(tmp: Path) -> dict:
    """hubert: a tiny config and hubert-base's (12 layers, width 768); 2 s of audio pushed in
    20 ms chunks, as a session does."""
    from transformers import HubertConfig, HubertModel

    from avatarflow_audio_encoder.engines import create

    configs = {
        "small": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, conv_dim=(32,) * 7, num_conv_pos_embeddings=16,
                      num_conv_pos_embedding_groups=2),
        "full": {},  # HubertConfig's defaults are hubert-base's
    }
    pcm = (np.random.default_rng(0).standard_normal(32000) * 3000).astype(np.int16)
    out = {}
    for name, kw in configs.items():
        path = tmp / f"hubert-{name}"
        HubertModel(HubertConfig(**kw)).save_pretrained(path)
        engine = create("hubert", weights=str(path))

        def run(engine=engine) -> int:
            s = engine.open_session(16000, FPS)
            n = sum(len(s.push(pcm[i:i + 320])) for i in range(0, pcm.size, 320))
            return n + len(s.flush())

        frames = run()
        out[name] = per_frame(timed(run, 3), frames)
    return out


def motion(tmp: Path) -> dict:
    """diffusion: the small and full presets, 3 s of 44-dim features, default steps and audio
    guidance; a window of frames is generated at once, so this is the window's cost / frames."""
    import torch

    from avatarflow.controls import Controls
    from avatarflow_motion_gen.engines import create
    from avatarflow_motion_gen.engines.diffusion import build_model, preset, save

    layout = "mel40+energy_db+voicing+zcr+flux"
    feats = list(np.random.default_rng(1).standard_normal((90, 44)).astype(np.float32))
    out = {}
    for name in ("small", "full"):
        path = tmp / f"diffusion-{name}"
        torch.manual_seed(0)
        save(build_model(preset(name)), preset(name), path)
        engine = create("diffusion", weights=str(path))

        def run(engine=engine) -> int:
            s = engine.open_session(FPS, Controls(), layout)
            return len(s.push(feats)) + len(s.flush())

        frames = run()
        out[name] = per_frame(timed(run, 2 if name == "full" else 5), frames)
        out[name]["steps"] = preset(name).steps
    return out


def renderer(tmp: Path) -> dict:
    """LivePortrait at its published size, module by module (one 256x256 source -> 512x512
    frame); the upper-body network (small and full presets), per frame at batch 1 and 4."""
    import torch

    from avatarflow_renderer.engines.neural import RendererNetwork
    from avatarflow_renderer.engines.neural_net import LivePortraitNetwork, UpperBodyNetwork
    from avatarflow_renderer.models.upperbody import UpperBodyConfig, UpperBodyRenderer

    torch.manual_seed(0)
    net = LivePortraitNetwork(LivePortraitNetwork.build(), (256, 256), torch.device("cpu"),
                              torch.float32)
    src = torch.rand(1, 3, 256, 256)
    feats = net.features(src)
    kp = net.motion_info(src)["kp"] if "kp" in net.motion_info(src) else torch.rand(1, 21, 3)
    kp = kp.reshape(1, 21, 3)
    out = {"appearance feature extractor, full": timed(lambda: net.features(src), 3),
           "motion extractor, full": timed(lambda: net.motion_info(src), 3),
           "warping + SPADE generator, full": timed(lambda: net.decode(feats, kp, kp * 1.01),
                                                     2),
           "stitching MLP, full": timed(
               lambda: net.parts["stitching"](torch.rand(1, 126)), 50)}
    for name in ("small", "full"):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            model = UpperBodyRenderer(UpperBodyConfig.preset(name))
        up = RendererNetwork.load(UpperBodyNetwork.save(model, tmp / f"upper-{name}"),
                                  "upperbody")
        (w, h), k = up.source_size, up.num_kp
        for b in (1, 4):
            x = (torch.rand(b, 3, h, w), torch.rand(b, k, 3), torch.rand(b, k, 3),
                 torch.rand(b, 3, h, w))
            out[f"upper-body frame (batch {b}), {name}"] = per_frame(
                timed(lambda x=x, up=up: up.forward_batch(*x), 2 if name == "full" else 10), b)
    return out


def refiner(tmp: Path) -> dict:
    """The face refine network (small and full presets), per frame at batch 1 and 4."""
    import torch

    from avatarflow_refiner.engines.neural import RefinerNetwork
    from avatarflow_refiner.models import preset

    out = {}
    for name in ("small", "full"):
        net = RefinerNetwork.create(preset(name), seed=2)
        s, k = net.config.image_size, net.config.num_kp
        for b in (1, 4):
            x = (torch.rand(b, 3, s, s), torch.rand(b, k, 3), torch.rand(b, k, 3),
                 torch.rand(b, 3, s, s))
            out[f"face refine (batch {b}), {name}"] = per_frame(
                timed(lambda x=x, net=net: net.forward_batch(*x), 3 if name == "full" else 10),
                b)
    return out


SECTIONS: dict[str, Callable[[Path], dict]] = {"audio-encoder hubert": audio,
                                              "motion-gen diffusion": motion,
                                              "renderer neural": renderer,
                                              "refiner neural": refiner}


def table(results: dict) -> str:
    lines = [f"# Neural engines on CPU ({results['machine']}, 1 torch thread), "
             f"{results['date']}", "", "Random weights; ms per video frame, median / p99.", "",
             "| engine | module | config | ms per frame p50 / p99 |", "|---|---|---|---|"]
    for section, modules in results["sections"].items():
        for label, figures in modules.items():
            module, _, config = label.rpartition(", ") if ", " in label else ("", "", label)
            lines.append(f"| {section} | {module or '-'} | {config} | "
                         f"{figures['median_ms']:.2f} / {figures['p99_ms']:.2f} |")
    for line in results.get("notes", []):
        lines += ["", line]
    return "\n".join(lines) + "\n"


def main() -> None:
    import platform

    import torch

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--only", help="run one section (substring of its name)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    results: dict = {"machine": platform.processor() or platform.machine(),
                     "date": time.strftime("%Y-%m-%d %H:%M:%S"), "sections": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, section in SECTIONS.items():
            if a.only and a.only not in name:
                continue
            print(f"{name}...", flush=True)
            results["sections"][name] = section(Path(tmp))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "neural.json").write_text(json.dumps(results, indent=2))
    (out / "neural.md").write_text(table(results))
    print(table(results))


if __name__ == "__main__":
    main()
