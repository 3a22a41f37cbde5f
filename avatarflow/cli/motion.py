"""``avatarflow motion --engine joyvasa --weights ROOT --audio WAV --seed S --out MOTION.npz``:
a whole clip's motion, offline, at the engine's native fps.

For joyvasa this is JoyVASA's own ``gen_motion_sequence`` (before its optional smoothing) at
25 fps: ``torch.manual_seed(S)`` once, then windows as JoyVASA samples them, de-normalised with
its motion template. The file holds float32 arrays ``exp`` (T x 21 x 3), ``scale`` (T x 1),
``t`` (T x 3), ``pitch``, ``yaw``, ``roll`` (T, degrees). Audio is decoded to mono and, when it
is not 16 kHz already, resampled to 16 kHz (JoyVASA uses librosa there, so only 16 kHz input is
bit-for-bit its input).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from avatarflow.cli.media import load_audio
from avatarflow.contracts.errors import InvalidInput, MissingExtra

RATE = 16000


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=["joyvasa"], default="joyvasa")
    p.add_argument("--weights", required=True, help="weights root (JoyVASA's pretrained_weights "
                                                    "layout)")
    p.add_argument("--audio", required=True, help="speech, any format PyAV decodes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cfg-scale", type=float, default=None,
                   help="classifier-free guidance on audio (JoyVASA's default: 2.8)")
    p.add_argument("--out", required=True, help="the .npz to write")


def audio_16k(path: str) -> np.ndarray:
    """Mono float32 in [-1, 1) at 16 kHz, as librosa.load(sr=16000) reads a 16-bit file."""
    pcm, rate = load_audio(path)
    x = pcm.astype(np.float32) / 32768.0
    if rate != RATE:
        from scipy.signal import resample_poly

        g = math.gcd(RATE, rate)
        x = resample_poly(x, RATE // g, rate // g).astype(np.float32)
    return x


def run(args: argparse.Namespace) -> int:
    root = Path(args.weights)
    if not root.is_dir():
        raise InvalidInput(f"weights root {root} is not a directory")
    if args.seed < 0:
        raise InvalidInput(f"--seed must be non-negative, got {args.seed}")
    audio = audio_16k(args.audio)
    try:
        import torch

        from avatarflow_motion_gen.engines.joyvasa import layout, sampler
    except ModuleNotFoundError as exc:
        raise MissingExtra(exc.name or "torch", "neural") from exc
    cfg = sampler.CFG_SCALE if args.cfg_scale is None else float(args.cfg_scale)
    if not math.isfinite(cfg):
        raise InvalidInput(f"--cfg-scale must be finite, got {args.cfg_scale}")
    loaded = layout.load(root)
    torch.manual_seed(args.seed)
    pad = str(loaded.args.get("pad_mode") or "zero")
    motion = sampler.denormalise(sampler.generate(loaded.model, audio, cfg, pad),
                                 loaded.template)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as f:
        np.savez(f, **motion)
    frames = len(motion["exp"])
    print(f"wrote {out}: {frames} frames at {loaded.model.fps:g} fps "
          f"({frames / loaded.model.fps:.2f} s) from {loaded.checkpoint}")
    return 0
