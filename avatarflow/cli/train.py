"""``avatarflow train motion``: train the diffusion motion network on a built dataset."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from avatarflow.contracts.errors import MissingExtra


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="train_command", required=True)
    m = sub.add_parser("motion", help="the face diffusion and body networks")
    m.add_argument("--data", required=True, help="a dataset `avatarflow dataset build` wrote")
    m.add_argument("--config", help="training config (YAML: TrainConfig's fields)")
    m.add_argument("--out", required=True,
                   help="run directory: checkpoint (resumed), metrics.csv, export/")
    m.add_argument("--steps", type=int, help="train until this step (overrides the config)")
    m.add_argument("--holdout", help="a held-out dataset evaluated every eval_every steps "
                                     "(evals.csv)")


def run(args: argparse.Namespace) -> int:
    try:
        from avatarflow_training.train.loop import EXPORT, TrainConfig
        from avatarflow_training.train.loop import run as train
    except ModuleNotFoundError as exc:  # pragma: no cover - train extra
        raise MissingExtra(exc.name or "torch", "train") from exc
    cfg = TrainConfig.load(args.config, steps=args.steps)

    def log(step: int, row: dict[str, float]) -> None:
        print(f"step {step}: loss {row['total']:.4f} (face {row['face']:.4f}, "
              f"body {row['body']:.4f})", file=sys.stderr)

    trainer = train(args.data, cfg, args.out, on_log=log, holdout=args.holdout)
    if trainer.rank == 0:  # under torchrun the others stay quiet
        print(f"trained to step {trainer.steps_done}; weights for the diffusion engine: "
              f"{Path(args.out) / EXPORT}")
    return 0
