"""An asyncio client for the public API (``avatarflow.v1.Avatars``), used by ``avatarflow
client``, the integration tests and the benchmarks.

gRPC failures surface as ``grpc.aio.AioRpcError`` (``.code()``, ``.details()``).

A gateway with TLS is reached with ``tls=TlsOptions(ca=...)`` (plus a client certificate for
mutual TLS); an API key goes out as ``authorization: Bearer <key>`` metadata on every call,
with or without TLS (without it only to a gateway on loopback, where nothing listens between).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
import numpy as np

from avatarflow.client.channel import TlsOptions, key_metadata, open_channel, with_metadata
from avatarflow.client.record import ReceivedFrame, SessionRecord
from avatarflow.contracts.errors import AvatarflowError, InvalidInput, MissingExtra, Unavailable
from avatarflow.contracts.v1 import api_pb2, api_pb2_grpc, pipeline_pb2

__all__ = ["AvatarClient", "LiveSession", "ReceivedFrame", "SessionRecord", "TlsOptions",
           "decode_frame", "run_session", "stream_audio"]


class AvatarClient:
    """One channel to a gateway: ``async with AvatarClient("127.0.0.1:50051") as c: ...``."""

    def __init__(self, target: str, *, max_message_mb: float = 16,
                 tls: TlsOptions | None = None, api_key: str = "") -> None:
        self.target = target
        self.tls = tls
        self.metadata = key_metadata(api_key)
        self.channel = open_channel(target, tls, max_message_mb)
        self.stub = with_metadata(api_pb2_grpc.AvatarsStub(self.channel), self.metadata)

    async def wait_ready(self, timeout: float = 5.0) -> None:
        """Raises Unavailable with a hint when no gateway answers within ``timeout``."""
        try:
            await asyncio.wait_for(self.channel.channel_ready(), timeout)
        except TimeoutError:
            hint = ("is `avatarflow up` running?" if self.tls is None else
                    "does it serve TLS, with a certificate that the CA given signed for this "
                    "name (and, for mutual TLS, does it accept the client certificate)?")
            raise Unavailable(f"cannot reach the gateway at {self.target} within {timeout:g} s"
                              f"{' over TLS' if self.tls else ''}: {hint}") from None

    async def register(self, image: bytes, mode: str = "upper-body", width: int = 0,
                       height: int = 0, fps: float = 0, *,
                       timeout: float | None = None) -> api_pb2.RegisterAvatarResponse:
        """Uploads and analyses a portrait once; the reply's ``avatar_id`` opens sessions."""
        request = api_pb2.RegisterAvatarRequest(
            image=image, output=api_pb2.OutputFormat(mode=mode, width=width, height=height,
                                                     fps=fps))
        return await self.stub.RegisterAvatar(request, timeout=timeout)

    def open(self, config: api_pb2.SessionConfig,
             metadata: Sequence[tuple[str, str]] = ()) -> LiveSession:
        """A session that is not started yet: ``await session.start()`` sends the config."""
        return LiveSession(self.stub, config, metadata)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> AvatarClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class LiveSession:
    """One bidirectional ``Session`` call. Writes are serialised, so control messages may be
    sent from another task while audio streams."""

    def __init__(self, stub: api_pb2_grpc.AvatarsStub, config: api_pb2.SessionConfig,
                 metadata: Sequence[tuple[str, str]] = ()) -> None:
        self.config = config
        # metadata: e.g. the caller's W3C ``traceparent``, which roots the session's traces
        self.call = stub.Session(metadata=tuple(metadata) or None)
        self.started: api_pb2.SessionStarted | None = None
        self.first_audio_sent_at: float | None = None  # time.monotonic()
        self._write_lock = asyncio.Lock()

    async def _write(self, request: api_pb2.SessionRequest) -> None:
        async with self._write_lock:
            await self.call.write(request)

    async def start(self) -> api_pb2.SessionStarted:
        """Sends the config and waits for SessionStarted."""
        await self._write(api_pb2.SessionRequest(config=self.config))
        response = await self.call.read()
        if response is grpc.aio.EOF:
            raise AvatarflowError("the gateway closed the session before SessionStarted")
        kind = response.WhichOneof("kind")
        if kind != "started":
            raise AvatarflowError(f"expected SessionStarted first, got {kind}")
        self.started = response.started
        return self.started

    async def send_audio(self, pcm: np.ndarray) -> None:
        """Sends PCM16 mono samples (int16) at the configured sample rate."""
        if pcm.dtype != np.int16:
            raise TypeError(f"audio must be int16 PCM, got {pcm.dtype}")
        data = np.ascontiguousarray(pcm.reshape(-1), dtype="<i2").tobytes()
        if self.first_audio_sent_at is None:
            self.first_audio_sent_at = time.monotonic()
        await self._write(api_pb2.SessionRequest(audio=api_pb2.AudioData(pcm16=data)))

    async def set_controls(self, controls: pipeline_pb2.Controls) -> None:
        await self._write(api_pb2.SessionRequest(
            controls=api_pb2.ControlChange(controls=controls)))

    async def interrupt(self) -> None:
        """Barge-in: the server drops what is queued and continues with new audio."""
        await self._write(api_pb2.SessionRequest(interrupt=api_pb2.InterruptRequest()))

    async def end(self) -> None:
        """No more audio: the server finishes the frames, sends SessionEnded and closes."""
        async with self._write_lock:
            await self.call.write(api_pb2.SessionRequest(end=api_pb2.EndAudio()))
            await self.call.done_writing()

    def cancel(self) -> None:
        self.call.cancel()

    async def responses(self) -> AsyncIterator[api_pb2.SessionResponse]:
        """What the server sends after SessionStarted, until it closes the stream."""
        while True:
            response = await self.call.read()
            if response is grpc.aio.EOF:
                return
            yield response


async def stream_audio(session: LiveSession, pcm: np.ndarray, sample_rate: int, *,
                       chunk_s: float = 0.02, realtime: bool = True) -> None:
    """Sends ``pcm`` in ``chunk_s`` chunks, then EndAudio. In real time each chunk leaves at
    its own moment on an absolute schedule, so slow writes do not accumulate drift."""
    step = max(1, int(round(chunk_s * sample_rate)))
    t0 = time.monotonic()
    for start in range(0, pcm.size, step):
        if realtime:
            delay = t0 + start / sample_rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await session.send_audio(pcm[start:start + step])
    await session.end()


async def run_session(client: AvatarClient, config: api_pb2.SessionConfig, pcm: np.ndarray,
                      sample_rate: int, *, realtime: bool = True, chunk_s: float = 0.02,
                      on_started: Callable[[api_pb2.SessionStarted], Any] | None = None,
                      on_frame: Callable[[api_pb2.VideoFrame], Any] | None = None,
                      keep_data: bool = True,
                      metadata: Sequence[tuple[str, str]] = ()) -> SessionRecord:
    """Runs one whole session: streams ``pcm`` while receiving, until the server ends it.

    ``on_frame`` (plain or async) sees every frame as it arrives; with ``keep_data=False`` the
    record keeps only timing and indexes, not the image and audio bytes.
    """
    session = client.open(config, metadata)
    record = SessionRecord()
    try:
        record.started = await session.start()
        if on_started is not None:
            await _maybe_await(on_started(record.started))
        sender = asyncio.create_task(stream_audio(session, pcm, sample_rate, chunk_s=chunk_s,
                                                  realtime=realtime))
        receiver = asyncio.create_task(_receive(session, record, on_frame, keep_data))
        try:
            done, _ = await asyncio.wait({sender, receiver},
                                         return_when=asyncio.FIRST_COMPLETED)
            failure = sender.exception() if receiver not in done else None
            # A failed write means the call ended: the receiver reports its status instead.
            if failure is not None and not isinstance(
                    failure, grpc.aio.AioRpcError | asyncio.InvalidStateError):
                raise failure
            await receiver
        finally:
            for task in (sender, receiver):
                task.cancel()
            await asyncio.gather(sender, receiver, return_exceptions=True)
    except BaseException:
        session.cancel()
        raise
    record.first_audio_sent_at = session.first_audio_sent_at
    return record


async def _receive(session: LiveSession, record: SessionRecord,
                   on_frame: Callable[[api_pb2.VideoFrame], Any] | None,
                   keep_data: bool) -> None:
    async for response in session.responses():
        record.add(response, time.monotonic(), keep_data=keep_data)
        if on_frame is not None and response.WhichOneof("kind") == "frame":
            await _maybe_await(on_frame(response.frame))


async def _maybe_await(result: Any) -> None:
    if inspect.isawaitable(result):
        await result


def decode_frame(data: bytes, encoding: int, width: int, height: int) -> np.ndarray:
    """A frame's bytes -> H x W x 3 uint8 RGB. JPEG for FRAME_ENCODING_JPEG/UNSPECIFIED,
    row-major RGB for FRAME_ENCODING_RAW_RGB."""
    if encoding == api_pb2.FRAME_ENCODING_RAW_RGB:
        if len(data) != width * height * 3:
            raise InvalidInput(f"raw frame has {len(data)} bytes, expected {width}x{height}x3 = "
                               f"{width * height * 3}")
        return np.frombuffer(data, np.uint8).reshape(height, width, 3)
    try:
        import cv2
    except ModuleNotFoundError as exc:  # pragma: no cover - cli extra
        raise MissingExtra("opencv", "cli") from exc
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InvalidInput(f"frame data ({len(data)} bytes) is not a decodable JPEG")
    if (width and bgr.shape[1] != width) or (height and bgr.shape[0] != height):
        raise InvalidInput(f"frame is {bgr.shape[1]}x{bgr.shape[0]}, expected {width}x{height}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
