"""``avatarflow client``: streams a speech file through the public API in real time and records
the returned frames and audio to an MP4."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

import grpc
import numpy as np

from avatarflow.cli.sink import VideoSink
from avatarflow.client.api import AvatarClient, TlsOptions, run_session
from avatarflow.client.record import SessionRecord
from avatarflow.contracts.controls import EMOTIONS
from avatarflow.contracts.errors import EXIT_CODES, AvatarflowError, InvalidInput
from avatarflow.contracts.grpc_status import RETRY_AFTER_KEY
from avatarflow.contracts.limits import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from avatarflow.contracts.output import MODES
from avatarflow.contracts.v1 import api_pb2, pipeline_pb2

DEFAULT_TARGET = "127.0.0.1:50051"
MIN_RATE, MAX_RATE, FALLBACK_RATE = MIN_SAMPLE_RATE, MAX_SAMPLE_RATE, 16000
ENCODINGS = {"jpeg": api_pb2.FRAME_ENCODING_JPEG, "raw": api_pb2.FRAME_ENCODING_RAW_RGB}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", required=True, help="portrait (PNG, JPEG, WebP, ...)")
    p.add_argument("--audio", required=True, help="speech (any format PyAV decodes)")
    p.add_argument("--out", required=True, help="output .mp4 (directories are created)")
    p.add_argument("--target", default=DEFAULT_TARGET, help=f"gateway, default {DEFAULT_TARGET}")
    p.add_argument("--mode", choices=MODES, default="upper-body")
    p.add_argument("--size", help="WxH; default 512x768 upper-body, 512x512 head")
    p.add_argument("--fps", type=float, default=0.0, help="default 30")
    p.add_argument("--encoding", choices=sorted(ENCODINGS), default="jpeg")
    p.add_argument("--no-register", action="store_true",
                   help="send the portrait inline instead of registering it first")
    p.add_argument("--expression-intensity", type=float, default=1.0, help="0..2")
    p.add_argument("--pose-amplitude", type=float, default=1.0, help="0..2")
    p.add_argument("--emotion", choices=EMOTIONS, default="neutral")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--style", help="speaking-style reference .npz (avatarflow style-reference)")
    p.add_argument("--no-realtime", action="store_true",
                   help="send the audio as fast as the gateway takes it")
    p.add_argument("--connect-timeout", type=float, default=5.0, help="seconds")
    sec = p.add_argument_group("security (a gateway with TLS or API keys)")
    sec.add_argument("--tls", action="store_true",
                     help="connect with TLS (implied by --ca, --cert and --server-name)")
    sec.add_argument("--ca", help="PEM file of the CA that signed the gateway's certificate "
                     "(default: the system's trusted roots)")
    sec.add_argument("--cert", help="client certificate chain (PEM) for mutual TLS, with --key")
    sec.add_argument("--key", help="the client certificate's private key (PEM)")
    sec.add_argument("--server-name",
                     help="the name in the gateway's certificate, when --target's host differs")
    sec.add_argument("--api-key", help="the tenant's API key; better set AVATARFLOW_API_KEY "
                     "(a command line shows in ps)")


def run(args: argparse.Namespace) -> int:
    """Runs one session; returns the exit code (gRPC failures print their status)."""
    from avatarflow.contracts.grpc_status import CATEGORIES

    try:
        summary = _run(args)
    except grpc.aio.AioRpcError as exc:
        print(f"avatarflow: error: {exc.code().name}: {exc.details()}{_hint(exc)}",
              file=sys.stderr)
        return EXIT_CODES.get(CATEGORIES.get(exc.code(), "internal"), 1)
    except AvatarflowError as exc:
        print(f"avatarflow: error: {exc.message}", file=sys.stderr)
        return EXIT_CODES.get(exc.category, 1)
    _print_summary(summary)
    return 0


def security(args: argparse.Namespace) -> tuple[TlsOptions | None, str]:
    """The TLS options and the API key the flags and AVATARFLOW_API_KEY ask for."""
    tls = None
    if args.tls or args.ca or args.cert or args.key or args.server_name:
        tls = TlsOptions(ca=args.ca or "", cert=args.cert or "", key=args.key or "",
                         server_name=args.server_name or "")
    api_key = (args.api_key or os.environ.get("AVATARFLOW_API_KEY", "")).strip()
    host = args.target.rsplit(":", 1)[0].strip("[]")
    if api_key and tls is None and host not in ("127.0.0.1", "::1", "localhost"):
        print(f"warning: sending the API key to {args.target} without TLS: anyone on the "
              "path can read it (use --tls)", file=sys.stderr)
    return tls, api_key


def _hint(exc: grpc.aio.AioRpcError) -> str:
    """What to do about a refusal by the gateway's keys or limits."""
    code = exc.code()
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return ("\nthe gateway wants an API key of one of its tenants: set AVATARFLOW_API_KEY "
                "(or pass --api-key)")
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return ("\nthe key's tenant may not use this (an avatar of another tenant: register the "
                "portrait with this key)")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        retry = next((value for key, value in exc.trailing_metadata() or ()
                      if key == RETRY_AFTER_KEY), None)
        if retry is not None:
            return f"\na limit is reached: try again in {int(retry) / 1000:g} s"
    return ""


def parse_size(size: str | None) -> tuple[int, int]:
    """"WxH" -> (W, H); (0, 0) lets the gateway pick the mode's default."""
    if not size:
        return 0, 0
    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise InvalidInput(f"--size must look like 512x768, got {size!r}") from None
    return w, h


def fit_sample_rate(pcm: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
    """Keeps the file's own rate when the API accepts it, else resamples to 16 kHz."""
    if MIN_RATE <= rate <= MAX_RATE:
        return pcm, rate
    import av

    print(f"note: resampling the audio from {rate} Hz to {FALLBACK_RATE} Hz "
          f"(the API takes {MIN_RATE}..{MAX_RATE} Hz)", file=sys.stderr)
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="s16", layout="mono", rate=FALLBACK_RATE)
    parts = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(parts).astype(np.int16), FALLBACK_RATE


def _run(args: argparse.Namespace) -> dict:
    from avatarflow.cli.media import load_audio

    width, height = parse_size(args.size)
    out = Path(args.out)
    if out.suffix.lower() != ".mp4":
        raise InvalidInput(f"--out must end in .mp4, got {out.name}")
    image_path = Path(args.image)
    if not image_path.is_file():
        raise InvalidInput(f"image file {image_path} does not exist")
    image = image_path.read_bytes()
    pcm, rate = fit_sample_rate(*load_audio(args.audio))
    output = api_pb2.OutputFormat(mode=args.mode, width=width, height=height, fps=args.fps)
    controls = pipeline_pb2.Controls(expression_intensity=args.expression_intensity,
                                     pose_amplitude=args.pose_amplitude, emotion=args.emotion,
                                     seed=args.seed)
    config = api_pb2.SessionConfig(sample_rate=rate, output=output, controls=controls,
                                   encoding=ENCODINGS[args.encoding])
    if args.style:
        from avatarflow.contracts import style

        style.to_pb(style.load(args.style), config.style)
    return asyncio.run(_session(args, image, config, pcm, out))


async def _session(args: argparse.Namespace, image: bytes, config: api_pb2.SessionConfig,
                   pcm: np.ndarray, out: Path) -> dict:
    sinks: list[VideoSink] = []

    def on_started(started: api_pb2.SessionStarted) -> None:
        sinks.append(VideoSink(out, started))

    tls, api_key = security(args)
    async with AvatarClient(args.target, tls=tls, api_key=api_key) as client:
        await client.wait_ready(args.connect_timeout)
        if args.no_register:
            config.image = image
        else:
            o = config.output
            reply = await client.register(image, o.mode, o.width, o.height, o.fps)
            config.avatar_id = reply.avatar_id
        try:
            record = await run_session(client, config, pcm, config.sample_rate,
                                       realtime=not args.no_realtime, on_started=on_started,
                                       on_frame=lambda f: sinks[0].put(f), keep_data=False)
        except BaseException:
            for sink in sinks:
                sink.abort()
            raise
    written = await asyncio.to_thread(sinks[0].close)
    return {"record": record, "out": out, "written": written, "fps": sinks[0].fps,
            "registered": not args.no_register}


def _print_summary(s: dict) -> None:
    record: SessionRecord = s["record"]
    assert record.started is not None
    how = "registered" if s["registered"] else "inline portrait"
    print(f"avatar {record.started.avatar_id} ({how}), session {record.started.session_id}")
    latency = record.first_frame_latency_s
    print("first frame: " + ("none received" if latency is None
                             else f"{latency * 1e3:.0f} ms after the first audio chunk"))
    print(f"frames: {len(record.frames)} received, {record.dropped} dropped")
    print(f"achieved {record.achieved_fps:.1f} fps, p99 frame interval "
          f"{record.p99_interval_ms:.1f} ms")
    print(f"wrote {s['out']}: {s['written']} frames, {s['written'] / s['fps']:.2f} s of video")
