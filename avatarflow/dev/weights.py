"""Whole weights roots of small random weights in the publishers' layouts, for tests and
benchmarks: what ``avatarflow weights check`` accepts and a profile runs on (the pictures are
noise, the shapes, files and keys are the real ones).

    python -m avatarflow.dev.weights ROOT [--profile liveportrait-joyvasa] [--full]
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

from avatarflow.runtime import profiles

TINY_INPUT = (32, 32)  # input_shape (h, w) for the tiny networks: the smallest M takes


def write_random_root(root: str | Path, profile: str = "liveportrait-joyvasa", *,
                      seed: int = 0, full: bool = False) -> Path:
    """Writes every file ``profile`` needs under ``root`` and returns it. Tiny networks
    (fast, a models.yaml beside LivePortrait's files) unless ``full``: the published sizes,
    as the GPU benchmark measures them."""
    profiles.profile(profile)
    if profile != "liveportrait-joyvasa":  # pragma: no cover - one profile so far
        raise NotImplementedError(profile)
    import torch
    import transformers

    from avatarflow_motion_gen.engines.joyvasa.layout import (
        PUBLISHED_SIZES,
        write_random_weights,
    )
    from avatarflow_renderer.engines.neural_layout import TINY_PARAMS
    from avatarflow_renderer.engines.neural_layout import write_random_weights as write_lp

    transformers.utils.logging.disable_progress_bar()
    base = Path(root)
    base.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):  # the writers seed torch: keep the caller's state
        if full:
            write_random_weights(base, seed=seed, audio_model="hubert_zh", audio_config={},
                                 **PUBLISHED_SIZES)
        else:
            write_random_weights(base, seed=seed, audio_model="hubert_zh")
    if full:
        write_lp(base / "liveportrait", seed=seed)
    else:
        write_lp(base / "liveportrait", params=copy.deepcopy(TINY_PARAMS),
                 input_shape=TINY_INPUT, seed=seed)
    return base


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m avatarflow.dev.weights", description=__doc__)
    p.add_argument("root")
    p.add_argument("--profile", default="liveportrait-joyvasa", choices=sorted(profiles.PROFILES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--full", action="store_true", help="the published network sizes")
    args = p.parse_args(argv)
    print("wrote", write_random_root(args.root, args.profile, seed=args.seed, full=args.full))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
