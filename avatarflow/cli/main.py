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

# Every command: its module of avatarflow.cli (``add_arguments(parser)`` and ``run(args)``)
# and its help. A module imports its heavy dependencies only when its command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "portrait + speech -> talking video (embedded, CPU)"),
    "serve": ("serve", "run one service of the distributed pipeline (what a container runs)"),
    "up": ("up", "start a local cluster: redis-server and every service as a process"),
    "client": ("client", "stream speech through the public API and record the video"),
    "style-reference": ("style_reference", "extract a speaking-style reference from a video"),
    "render-frame": ("render_frame", "render one frame from LivePortrait weights (debugging)"),
    "weights": ("weights", "check a weights root: every file an engine profile needs"),
    "motion": ("motion", "a clip's motion from a neural motion engine, offline (.npz)"),
    "keys": ("keys", "API keys for the gateway's tenants: make one, or hash one"),
    "dataset": ("dataset", "build a motion training dataset from talking videos"),
    "train": ("train", "train a motion model on a dataset (writes the engine's weights)"),
    "eval": ("evaluate", "evaluate a motion model on held-out clips"),
}


def _module(command: str) -> ModuleType:
    return importlib.import_module(f"avatarflow.cli.{COMMANDS[command][0]}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="avatarflow", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    for name, (_, text) in COMMANDS.items():
        _module(name).add_arguments(sub.add_parser(name, help=text))
    i = sub.add_parser("make-inputs", help="write the bundled demo portrait and speech")
    i.add_argument("--dir", default="out/inputs")
    return p


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
        if args.command in COMMANDS:
            code = _module(args.command).run(args)  # an exit code (demo's: its report, a dict)
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
