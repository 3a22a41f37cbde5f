"""``avatarflow demo``: portrait + speech -> talking MP4, all four stages in one process."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from avatarflow.cli.media import Mp4Writer, load_audio
from avatarflow.cli.sheet import contact_sheet
from avatarflow.contracts.controls import EMOTIONS, Controls
from avatarflow.contracts.errors import InvalidInput
from avatarflow.contracts.images import decode_image
from avatarflow.contracts.output import DEFAULT_SIZE, MODES, validate_output
from avatarflow.contracts.style import load as load_style
from avatarflow.contracts.v1 import api_pb2
from avatarflow.runtime.build import build_stages
from avatarflow.runtime.pipeline import EmbeddedPipeline
from avatarflow.runtime.profiles import PROFILES, profile
from avatarflow.runtime.registry import DEFAULT_ENGINES
from avatarflow.runtime.settings import Settings
from avatarflow.session import Frame, FrontSettings, SessionSpec


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", required=True, help="portrait (PNG, JPEG, WebP, ...)")
    p.add_argument("--audio", required=True, help="speech (any format PyAV decodes)")
    p.add_argument("--out", required=True, help="output .mp4 (directories are created)")
    p.add_argument("--mode", choices=MODES,
                   help="default: the profile's mode (head for liveportrait-joyvasa), else "
                        "upper-body")
    p.add_argument("--size", help="WxH, default 512x768 upper-body, 512x512 head")
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--expression-intensity", type=float, default=1.0, help="0..2")
    p.add_argument("--pose-amplitude", type=float, default=1.0, help="0..2")
    p.add_argument("--emotion", choices=EMOTIONS, default="neutral")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--style", help="speaking-style reference .npz (avatarflow style-reference)")
    for stage, engine in DEFAULT_ENGINES.items():
        p.add_argument(f"--{stage}-engine", default=None,
                       help=f"default: AVATARFLOW_{stage.upper().replace('-', '_')}_ENGINE "
                            f"or {engine}")
    p.add_argument("--profile", choices=sorted(PROFILES),
                   help="engines and weights of every stage from one weights root (--weights); "
                        "default: AVATARFLOW_PROFILE")
    p.add_argument("--weights", help="the profile's weights root (default: "
                                     "AVATARFLOW_WEIGHTS_ROOT)")
    p.add_argument("--preset", default="ultrafast", help="x264 preset")
    p.add_argument("--contact-sheet", help="also write a PNG of 12 evenly spaced frames")
    p.add_argument("--no-progress", action="store_true")


def parse_size(mode: str, size: str | None) -> tuple[int, int]:
    if not size:
        return DEFAULT_SIZE[mode]
    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise InvalidInput(f"--size must look like 512x768, got {size!r}") from None
    return w, h


def run(args: argparse.Namespace) -> dict:
    """Runs the demo; returns the summary it printed."""
    # The same settings the services read (AVATARFLOW_<STAGE>_ENGINE, _WEIGHTS, _PROFILE ...):
    # a neural engine is a configuration change, embedded or distributed.
    settings = {stage: Settings.load(
        stage, engine=getattr(args, f"{stage.replace('-', '_')}_engine"),
        profile=getattr(args, "profile", None), weights_root=getattr(args, "weights", None))
        for stage in DEFAULT_ENGINES}
    chosen = next(iter(settings.values())).profile
    if getattr(args, "weights", None) and not chosen:
        raise InvalidInput("--weights is the root of a profile: name it with --profile")
    if not args.mode:
        args.mode = (profile(chosen).mode if chosen else "") or "upper-body"
    width, height = parse_size(args.mode, args.size)
    validate_output(args.mode, width, height, args.fps)
    out = Path(args.out)
    if out.suffix.lower() != ".mp4":
        raise InvalidInput(f"--out must end in .mp4, got {out.name}")
    controls = Controls(expression_intensity=args.expression_intensity,
                        pose_amplitude=args.pose_amplitude, emotion=args.emotion, seed=args.seed)
    image_path = Path(args.image)
    if not image_path.is_file():
        raise InvalidInput(f"image file {image_path} does not exist")
    style = load_style(args.style) if args.style else None
    image = image_path.read_bytes()
    decode_image(image)  # fail fast, before loading any model
    pcm, rate = load_audio(args.audio)
    engines = {stage: settings[stage].engine or DEFAULT_ENGINES[stage]
               for stage in DEFAULT_ENGINES}
    options = {stage: settings[stage].engine_kwargs() for stage in DEFAULT_ENGINES}
    # A file, not a live stream: as fast as the pipeline goes, every frame, no filling in.
    pipeline = EmbeddedPipeline(build_stages(engines, options), FrontSettings.offline())
    spec = SessionSpec(sample_rate=rate, mode=args.mode, width=width, height=height,
                       fps=args.fps, encoding=api_pb2.FRAME_ENCODING_RAW_RGB,
                       controls=controls, avatar_id="", image=image, style=style)
    expected = int(np.ceil(pcm.size / rate * args.fps))
    writer = Mp4Writer(out, width, height, args.fps, sample_rate=rate, preset=args.preset)
    encode_s: list[float] = []
    keep_every = max(1, expected // 12)
    kept: list[np.ndarray] = []
    progress = None if args.no_progress else _progress(expected)

    arrivals: list[float] = []

    def on_frame(frame: Frame) -> None:
        t = time.perf_counter()
        arrivals.append(t)
        writer.write(frame.image.rgb())
        encode_s.append(time.perf_counter() - t)
        if frame.index % keep_every == 0 and len(kept) < 12:
            kept.append(frame.image.rgb())
        if progress is not None:
            progress.update(1)

    t0 = time.perf_counter()
    try:
        frames = asyncio.run(_stream(pipeline, spec, pcm, on_frame))
    except BaseException:
        writer.abort()
        raise
    finally:
        if progress is not None:
            progress.close()
        pipeline.close()
    wall = time.perf_counter() - t0
    writer.close(pcm)
    if args.contact_sheet:
        contact_sheet(kept, Path(args.contact_sheet))
    steady = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) if len(arrivals) > 2 else 0.0
    summary = {"frames": frames, "seconds_of_video": frames / args.fps, "wall_s": wall,
               "fps": frames / wall if wall else 0.0, "steady_fps": steady,
               "first_frame_s": arrivals[0] - t0 if arrivals else 0.0,
               "stages": {n: s.summary() for n, s in pipeline.stats.items()},
               "encode_median_ms": float(np.median(encode_s) * 1e3) if encode_s else 0.0,
               "encode_p99_ms": float(np.percentile(encode_s, 99) * 1e3) if encode_s else 0.0}
    _print_summary(out, summary)
    return summary


async def _stream(pipeline: EmbeddedPipeline, spec: SessionSpec, pcm: np.ndarray,
                  on_frame: Callable[[Frame], None]) -> int:
    async with pipeline:
        return await pipeline.run(spec, pcm, on_frame)


def _progress(total: int):
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", desc="rendering", leave=False)


def _print_summary(out: Path, s: dict) -> None:
    print(f"wrote {out}: {s['frames']} frames, {s['seconds_of_video']:.2f} s of video")
    print(f"achieved {s['fps']:.1f} fps overall ({s['fps'] / 30:.2f}x real time at 30 fps); "
          f"first frame after {s['first_frame_s']:.2f} s (portrait analysis), "
          f"then {s['steady_fps']:.1f} fps")
    parts = [f"{name} {st['median_ms']:.2f}" for name, st in s["stages"].items()]
    parts.append(f"encode {s['encode_median_ms']:.2f}")
    print("per-stage median ms/frame: " + ", ".join(parts))
