"""Whole weights roots of small random weights in the publishers' layouts, for tests and
benchmarks: what ``avatarflow weights check`` accepts and a profile runs on (the pictures are
noise, the shapes, files and keys are the real ones).

    python -m avatarflow.dev.weights ROOT [--profile liveportrait-joyvasa] [--full]
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

from avatarflow.runtime import profiles

# LivePortrait hyper-parameters small enough for quick tests (models.yaml ``model_params``):
# narrow F, W and G; M (the motion extractor) and the retargeting MLPs keep their published
# sizes, which the keypoints and JoyVASA's motion depend on.
TINY_LIVEPORTRAIT: dict[str, Any] = {
    "appearance_feature_extractor_params": {
        "image_channel": 3, "block_expansion": 8, "num_down_blocks": 2, "max_features": 64,
        "reshape_channel": 8, "reshape_depth": 8, "num_resblocks": 1},
    "warping_module_params": {
        "num_kp": 21, "block_expansion": 8, "max_features": 64, "num_down_blocks": 2,
        "reshape_channel": 8, "estimate_occlusion_map": True,
        "dense_motion_params": {"block_expansion": 8, "max_features": 32, "num_blocks": 2,
                                "reshape_depth": 8, "compress": 1}},
    "spade_generator_params": {"upscale": 2, "block_expansion": 8, "max_features": 64,
                               "num_down_blocks": 2},
}
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

    from avatarflow_motion_gen.engines.joyvasa.layout import write_random_weights
    from avatarflow_renderer.engines.neural_layout import write_random_weights as write_lp

    transformers.utils.logging.disable_progress_bar()
    base = Path(root)
    base.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):  # the writers seed torch: keep the caller's state
        write_random_weights(base, seed=seed, audio_model="hubert_zh")
    if full:
        write_lp(base / "liveportrait", seed=seed)
    else:
        from avatarflow_renderer.engines.neural_net import LIVEPORTRAIT_PARAMS

        params = {**copy.deepcopy(LIVEPORTRAIT_PARAMS), **copy.deepcopy(TINY_LIVEPORTRAIT)}
        write_lp(base / "liveportrait", params=params, input_shape=TINY_INPUT, seed=seed)
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
