"""An in-process stand-in for the gateway's public API, for client unit tests: one solid
frame per 1/fps of audio received, each carrying its span of the audio."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent import futures

import cv2
import grpc
import numpy as np

from avatarflow.contracts.v1 import api_pb2, api_pb2_grpc

SIZE = 64  # frames are SIZE x SIZE
COLOR = (200, 30, 60)  # RGB


def frame_bytes(encoding: int) -> bytes:
    rgb = np.zeros((SIZE, SIZE, 3), np.uint8)
    rgb[:] = COLOR
    if encoding == api_pb2.FRAME_ENCODING_RAW_RGB:
        return rgb.tobytes()
    return cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()


class FakeAvatars(api_pb2_grpc.AvatarsServicer):
    def __init__(self, drop: frozenset[int] = frozenset()) -> None:
        self.drop = drop  # frame indexes to leave out, as if they were late

    def RegisterAvatar(self, request, context):  # noqa: N802 - gRPC method name
        if not request.image:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "image is empty")
        output = api_pb2.OutputFormat(mode=request.output.mode or "upper-body", width=SIZE,
                                      height=SIZE, fps=request.output.fps or 30)
        return api_pb2.RegisterAvatarResponse(
            avatar_id=hashlib.sha256(request.image).hexdigest()[:12], output=output, ttl_s=60)

    def Session(self, requests, context) -> Iterator[api_pb2.SessionResponse]:  # noqa: N802
        first = next(requests)
        if first.WhichOneof("kind") != "config":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be a config")
        cfg = first.config
        if not 8000 <= cfg.sample_rate <= 48000:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"sample_rate must be within 8000..48000 Hz, got {cfg.sample_rate}")
        if cfg.output.width not in (0, SIZE):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"unsupported output size {cfg.output.width}x{cfg.output.height}")
        fps = cfg.output.fps or 30
        output = api_pb2.OutputFormat(mode=cfg.output.mode or "upper-body", width=SIZE,
                                      height=SIZE, fps=fps)
        yield api_pb2.SessionResponse(started=api_pb2.SessionStarted(
            session_id="s1", avatar_id=cfg.avatar_id or "inline", output=output,
            encoding=cfg.encoding, sample_rate=cfg.sample_rate))
        data = frame_bytes(cfg.encoding)
        audio = bytearray()
        index = sent = 0
        for request in requests:
            kind = request.WhichOneof("kind")
            if kind == "audio":
                audio += request.audio.pcm16
            final = kind == "end"
            while True:
                end = 2 * int(round((index + 1) * cfg.sample_rate / fps))
                start = 2 * int(round(index * cfg.sample_rate / fps))
                if len(audio) < end and not (final and len(audio) > start):
                    break
                if index not in self.drop:
                    sent += 1
                    yield api_pb2.SessionResponse(frame=api_pb2.VideoFrame(
                        index=index, pts=index / fps, data=data,
                        audio=bytes(audio[start:end]).ljust(end - start, b"\0")))
                index += 1
            if final:
                break
        yield api_pb2.SessionResponse(ended=api_pb2.SessionEnded(
            frames=sent, dropped=index - sent, duration_s=index / fps))


def serve(servicer: FakeAvatars) -> tuple[grpc.Server, str]:
    """Starts a threaded server on a free port; returns it and its target."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    api_pb2_grpc.add_AvatarsServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"
