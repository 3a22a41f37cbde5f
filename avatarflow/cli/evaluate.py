"""``avatarflow eval motion``: a motion model's lip sync and motion on held-out clips."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from avatarflow.contracts.errors import MissingExtra


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="eval_command", required=True)
    m = sub.add_parser("motion", help="lip sync, closure in silence, diversity and jitter")
    m.add_argument("--data", required=True, help="a held-out dataset (`avatarflow dataset "
                                                 "build`), never trained on")
    m.add_argument("--weights", help="a training run directory or a diffusion weights "
                                     "directory (engine diffusion)")
    m.add_argument("--engine", default="diffusion", help="motion engine: diffusion or signal")
    m.add_argument("--out", help="write the results as JSON here")


def run(args: argparse.Namespace) -> int:
    try:
        from avatarflow_motion_gen.engines import create
        from avatarflow_training.evaluate import MEASURES, engine_weights, evaluate
    except ModuleNotFoundError as exc:  # pragma: no cover - train extra
        raise MissingExtra(exc.name or "avatarflow_training", "train") from exc
    options = {"weights": str(engine_weights(args.weights))} if args.weights else {}
    engine = create(args.engine, **options)
    try:
        results = evaluate(engine, args.data)
    finally:
        engine.close()
    results["engine"] = args.engine
    results["weights"] = options.get("weights", "")

    def cells(row: dict[str, float]) -> str:
        return " | ".join("-" if math.isnan(row[k]) else f"{row[k]:.3f}" for k in MEASURES)

    print(f"| clips: {len(results['clips'])} | " + " | ".join(MEASURES) + " |")
    print("|---|" + "---|" * len(MEASURES))
    print(f"| {args.engine} | {cells(results['model'])} |")
    print(f"| real labels | {cells(results['real'])} |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2))
        print(f"wrote {args.out}")
    return 0
