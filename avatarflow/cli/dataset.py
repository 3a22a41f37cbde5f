"""``avatarflow dataset build``: a motion dataset from talking videos (``avatarflow_training``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from avatarflow.contracts.errors import InvalidInput, MissingExtra


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="dataset_command", required=True)
    b = sub.add_parser("build", help="label videos and write shards and a manifest")
    b.add_argument("--videos", required=True,
                   help="a directory of videos (searched recursively) or a file listing them")
    b.add_argument("--out", required=True, help="the dataset directory (resumed if it exists)")
    b.add_argument("--audio-engine", default="mel",
                   help="audio features: mel (no weights), hubert or wav2vec2 (--weights)")
    b.add_argument("--weights", help="the audio engine's local weights directory")
    b.add_argument("--workers", type=int, default=0, help="processes; 0 = every core")
    b.add_argument("--clips-per-shard", type=int, default=8)
    b.add_argument("--min-seconds", type=float, default=2.0,
                   help="shorter clips are skipped")
    b.add_argument("--min-face", type=float, default=0.9,
                   help="clips with a face in fewer of their frames are skipped")
    b.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    try:
        from avatarflow_training.dataset.build import BuildOptions, build, find_videos
    except ModuleNotFoundError as exc:  # pragma: no cover - train extra
        raise MissingExtra(exc.name or "avatarflow_training", "train") from exc
    if args.workers < 0 or args.clips_per_shard < 1 or args.min_seconds <= 0 \
            or not 0.0 <= args.min_face <= 1.0:
        raise InvalidInput("--workers must be >= 0, --clips-per-shard >= 1, --min-seconds > 0 "
                           "and --min-face within 0..1")
    videos = find_videos(args.videos)
    options = {"weights": args.weights} if args.weights else {}
    opts = BuildOptions(out=Path(args.out), audio_engine=args.audio_engine,
                        engine_options=options, workers=args.workers,
                        clips_per_shard=args.clips_per_shard, min_seconds=args.min_seconds,
                        min_face=args.min_face)
    from avatarflow_audio_encoder.engines import create

    create(args.audio_engine, **options)  # a wrong engine or weights fails here, not per clip
    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=len(videos), unit="clip", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.n = done
            bar.refresh()

    try:
        manifest = build(videos, opts, progress)
    finally:
        if bar is not None:
            bar.close()
    t = manifest["totals"]
    print(f"wrote {opts.out}: {t['clips']} clips, {t['frames']} frames "
          f"({t['hours'] * 60:.1f} min), {t['skipped']} skipped")
    for s in manifest["skipped"]:
        print(f"skipped {s['source']}: {s['reason']}")
    return 0
