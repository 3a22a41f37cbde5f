"""The ``avatarflow`` command."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path
from types import ModuleType

from avatarflow.contracts.errors import EXIT_CODES, AvatarflowError


def _cluster_commands() -> list[tuple[str, ModuleType, str]]:
    from avatarflow.cli import client, up

    return [("up", up, "start a local cluster: redis-server and every service as a process"),
            ("client", client, "stream speech through the public API and record the video")]


def _parser() -> argparse.ArgumentParser:
    from avatarflow.cli import (
        dataset,
        demo,
        evaluate,
        keys,
        motion,
        render_frame,
        serve,
        style_reference,
        train,
        weights,
    )

    p = argparse.ArgumentParser(prog="avatarflow", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="portrait + speech -> talking video (embedded, CPU)")
    demo.add_arguments(d)
    i = sub.add_parser("make-inputs", help="write the bundled demo portrait and speech")
    i.add_argument("--dir", default="out/inputs")
    serve.add_arguments(sub.add_parser(
        "serve", help="run one service of the distributed pipeline (what a container runs)"))
    for name, module, text in _cluster_commands():
        module.add_arguments(sub.add_parser(name, help=text))
    style_reference.add_arguments(sub.add_parser(
        "style-reference", help="extract a speaking-style reference from a video"))
    render_frame.add_arguments(sub.add_parser(
        "render-frame", help="render one frame from LivePortrait weights (debugging)"))
    weights.add_arguments(sub.add_parser(
        "weights", help="check a weights root: every file an engine profile needs"))
    motion.add_arguments(sub.add_parser(
        "motion", help="a clip's motion from a neural motion engine, offline (.npz)"))
    keys.add_arguments(sub.add_parser(
        "keys", help="API keys for the gateway's tenants: make one, or hash one"))
    dataset.add_arguments(sub.add_parser(
        "dataset", help="build a motion training dataset from talking videos"))
    train.add_arguments(sub.add_parser(
        "train", help="train a motion model on a dataset (writes the engine's weights)"))
    evaluate.add_arguments(sub.add_parser(
        "eval", help="evaluate a motion model on held-out clips"))
    return p


# Command -> the module of avatarflow.cli whose ``run(args)`` carries it out (imported only
# when chosen: a command's heavy dependencies load with it).
RUNNERS = {"demo": "demo", "serve": "serve", "style-reference": "style_reference",
           "render-frame": "render_frame", "weights": "weights", "motion": "motion",
           "keys": "keys", "dataset": "dataset", "train": "train", "eval": "evaluate",
           "up": "up", "client": "client"}


def _one_thread_per_service() -> None:
    """A service runs one engine thread per replica (scale out with replicas): numerical
    libraries must not start thread pools that spin on the cores the other services need.
    Set before numpy is first imported; AVATARFLOW_THREADS raises it."""
    threads = os.environ.get("AVATARFLOW_THREADS", "1")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, threads)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GLOG_minloglevel", "2")  # mediapipe's native logging
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if argv is None and sys.argv[1:2] == ["serve"]:
        _one_thread_per_service()
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command in RUNNERS:
            module = importlib.import_module(f"avatarflow.cli.{RUNNERS[args.command]}")
            code = module.run(args)  # an exit code (demo's: its report, a dict)
            return code if isinstance(code, int) else 0
        if args.command == "make-inputs":
            from avatarflow.cli.inputs import make_inputs

            for path in make_inputs(Path(args.dir)):
                print("wrote", path)
    except AvatarflowError as exc:
        print(f"avatarflow: error: {exc.message}", file=sys.stderr)
        return EXIT_CODES.get(exc.category, 1)
    except KeyboardInterrupt:
        print("avatarflow: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
