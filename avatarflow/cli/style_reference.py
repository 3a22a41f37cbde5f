"""``avatarflow style-reference``: a speaking-style reference (.npz) from a video clip."""

from __future__ import annotations

import argparse
import sys

from avatarflow.contracts import style
from avatarflow.contracts.errors import InvalidInput


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--video", required=True, help="a clip of the person speaking")
    p.add_argument("--out", required=True,
                   help="output .npz holding expressions (T x 8 float32) and fps")
    p.add_argument("--fps", type=float, default=None,
                   help="frame rate of the clip; default: the rate the file states")


def run(args: argparse.Namespace) -> int:
    from avatarflow.cli.style_extract import extract

    if args.fps is not None and not 0.0 < args.fps <= style.MAX_FPS:
        raise InvalidInput(f"--fps must be within (0, {style.MAX_FPS:g}], got {args.fps}")
    result = extract(args.video, args.fps)
    if result.dropped:
        print(f"note: dropped {result.dropped} of {result.frames} frames without a face",
              file=sys.stderr)
    path = style.save(result.reference, args.out)
    ref = result.reference
    print(f"wrote {path}: {len(ref.expressions)} frames at {ref.fps:g} fps")
    return 0
