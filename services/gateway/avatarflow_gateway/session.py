"""One live session at the gateway: feeds the pipeline, keeps the session's audio clock, and
turns final frames into the client's responses.

The clock runs from the session start in real time. When the client's audio falls
``stall_ms`` behind it, silence is fed so frames keep coming with idle motion. A barge-in cuts
the clock after the last delivered frame, so the new audio follows on at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

import numpy as np

from avatarflow.bus.streams import RedisBus
from avatarflow.contracts import messages as m
from avatarflow.contracts.errors import AvatarflowError, InvalidInput
from avatarflow.contracts.v1 import api_pb2
from avatarflow.runtime.registry import AUDIO, FRAMES
from avatarflow.runtime.settings import Settings
from avatarflow.telemetry import metrics, tracing
from avatarflow_gateway.config import SessionSpec
from avatarflow_gateway.timeline import Timeline

log = logging.getLogger(__name__)

TICK_S = 0.02
CLOSED = object()  # ends the response stream


class GatewaySession:
    def __init__(self, sid: str, spec: SessionSpec, avatar_id: str, bus: RedisBus,
                 settings: Settings, traceparent: str = "") -> None:
        self.sid, self.spec, self.avatar_id, self.bus = sid, spec, avatar_id, bus
        self.traceparent = traceparent  # the client's trace context (gRPC metadata), if any
        self.fps_now = 0.0  # achieved rate over the last summary period
        self.budget_s = settings.frame_budget_ms / 1000
        self.stall_s = settings.stall_ms / 1000
        self.summary_s = settings.summary_s
        self.rate, self.fps = spec.sample_rate, spec.fps
        self.timeline = Timeline(self.rate, self.fps)
        self.turn = 0
        self.t0 = 0.0  # wall time of sample 0 on the clock
        self.chunks = 0
        self.arrivals: deque[tuple[int, float]] = deque()  # (end sample, wall time fed)
        self.last_index = -1  # last frame delivered
        self.frames = self.dropped = 0
        self.audio_ended = False
        self.finished = False  # EndOfAudio came back through the pipeline
        self.gap: list[float] | None = None  # [pts, seconds] of silence being filled
        self.latency_ms: list[float] = []
        self._period: list[float] = []
        self._period_frames = 0
        self.inbox: asyncio.Queue[tuple[int, m.Message]] = asyncio.Queue()
        self.out: asyncio.Queue[object] = asyncio.Queue()
        self._lock = asyncio.Lock()  # feeding: client audio, silence and barge-in in order

    # -- feeding the pipeline --------------------------------------------------------------

    async def open(self) -> api_pb2.SessionResponse:
        await self.bus.publish(AUDIO, self.spec.start(self.sid, self.avatar_id))
        self.bus.attach(self.sid, FRAMES)
        self.t0 = time.time()
        return api_pb2.SessionResponse(started=api_pb2.SessionStarted(
            session_id=self.sid, avatar_id=self.avatar_id, output=self.spec.output(),
            encoding=self.spec.encoding, sample_rate=self.rate))

    async def audio(self, pcm: np.ndarray) -> None:
        if self.audio_ended:
            raise InvalidInput("audio after EndAudio: the session's audio has ended")
        async with self._lock:
            self._close_gap()
            await self._feed(pcm)

    async def _feed(self, pcm: np.ndarray) -> None:
        if not len(pcm):
            return
        start, end = self.timeline.append(pcm)
        now = time.time()
        due = self.t0 + end / self.rate
        self.arrivals.append((end, now))
        chunk = m.AudioChunk(session_id=self.sid, index=self.chunks, pts=start / self.rate,
                             sample_rate=self.rate, pcm=pcm, deadline=max(now, due) + self.budget_s)
        self.chunks += 1
        tracing.finish(tracing.start(tracing.SPAN_NAMES["gateway"], chunk, self.traceparent),
                       [chunk])
        await self.bus.publish(AUDIO, chunk, turn=self.turn)

    async def fill_stall(self) -> None:
        """Feeds silence when the client's audio is more than ``stall_s`` behind the clock."""
        if self.audio_ended:
            return
        async with self._lock:
            behind = int((time.time() - self.t0 - self.stall_s) * self.rate) - self.timeline.end
            if behind < int(TICK_S * self.rate):
                return
            if self.gap is None:
                self.gap = [self.timeline.end / self.rate, 0.0]
            self.gap[1] += behind / self.rate
            await self._feed(np.zeros(behind, np.int16))

    def _close_gap(self) -> None:
        if self.gap is not None:
            pts, seconds = self.gap
            self.gap = None
            self.out.put_nowait(api_pb2.SessionResponse(event=api_pb2.SessionEvent(
                gap=api_pb2.AudioGap(pts=pts, duration=seconds))))

    async def controls(self, msg: m.ControlUpdate) -> None:
        await self.bus.publish(AUDIO, msg, turn=self.turn)

    async def interrupt(self) -> None:
        """Barge-in: everything queued is dropped; the clock continues after the last frame
        the client has, from now."""
        async with self._lock:
            self.turn += 1
            # Index 0 on an Interrupt means "keep counting": a barge-in before the first frame
            # resumes at 1 (frame 0's span is silence).
            resume = max(1, self.last_index + 1)
            self.timeline.cut(resume)
            self.t0 = time.time() - resume / self.fps
            self.arrivals.clear()
            self.gap = None
            await self.bus.publish(AUDIO, m.Interrupt(session_id=self.sid, index=resume),
                                   turn=self.turn)

    async def end_audio(self) -> None:
        if self.audio_ended:
            return
        async with self._lock:
            self._close_gap()
            self.audio_ended = True
            await self.bus.publish(AUDIO, m.EndOfAudio(session_id=self.sid, index=self.chunks),
                                   turn=self.turn)

    async def abandon(self) -> None:
        """The client left: drop the queued work and close the session on every stage."""
        self.audio_ended = True
        await self.interrupt()
        await self.bus.publish(AUDIO, m.EndOfAudio(session_id=self.sid, index=self.chunks),
                               turn=self.turn)

    # -- frames back to the client ---------------------------------------------------------

    def deliver(self, turn: int, msg: m.Message) -> None:
        """Called by the frames dispatcher, in order."""
        self.inbox.put_nowait((turn, msg))

    async def send_loop(self) -> None:
        """Turns pipeline output into responses until EndOfAudio or an error arrives."""
        while True:
            turn, msg = await self.inbox.get()
            if isinstance(msg, m.FinalFrame):
                if turn == self.turn and msg.index > self.last_index:
                    self.out.put_nowait(self._frame(msg))
            elif isinstance(msg, m.SessionError):
                self.finished = True
                self.out.put_nowait(error_for_session(msg))
                return
            elif isinstance(msg, m.EndOfAudio):
                self.finished = True
                self.out.put_nowait(api_pb2.SessionResponse(ended=self._ended()))
                self.out.put_nowait(CLOSED)
                return

    def _frame(self, msg: m.FinalFrame) -> api_pb2.SessionResponse:
        span = tracing.start(tracing.SEND, msg)
        if self.last_index >= 0 and msg.index > self.last_index + 1:
            self.dropped += msg.index - self.last_index - 1
            metrics.GATEWAY_DROPPED.inc(msg.index - self.last_index - 1)
        first = self.last_index + 1  # the audio of frames dropped on the way comes along
        self.last_index = msg.index
        metrics.GATEWAY_FRAMES.inc()
        if msg.deadline and time.time() > msg.deadline:
            metrics.GATEWAY_LATE.inc()
        if self.spec.encoding == api_pb2.FRAME_ENCODING_RAW_RGB:
            data = np.ascontiguousarray(msg.image.rgb()).tobytes()
        else:
            data = msg.image.jpeg()
        self._latency(msg.index)
        self.frames += 1
        self._period_frames += 1
        audio = self.timeline.frame_audio(msg.index, first)
        response = api_pb2.SessionResponse(frame=api_pb2.VideoFrame(
            index=msg.index, pts=msg.pts, data=data, audio=audio, refined=msg.refined))
        tracing.finish(span)
        return response

    def _latency(self, index: int) -> None:
        end = self.timeline.span(index)[1]
        while len(self.arrivals) > 1 and self.arrivals[0][0] < end:
            self.arrivals.popleft()
        if self.arrivals and self.arrivals[0][0] >= end:
            ms = (time.time() - self.arrivals[0][1]) * 1e3
            metrics.GATEWAY_LATENCY.observe(ms / 1e3)
            self.latency_ms.append(ms)
            self._period.append(ms)

    def summary(self, period: bool = True) -> api_pb2.LatencySummary:
        values = np.asarray((self._period if period else self.latency_ms) or [0.0])
        s = api_pb2.LatencySummary(frames=self.frames, dropped=self.dropped,
                                   p50_ms=float(np.median(values)),
                                   p99_ms=float(np.percentile(values, 99)),
                                   fps=self._period_frames / self.summary_s if period else 0.0)
        if period:
            self.fps_now = s.fps
            self._period, self._period_frames = [], 0
        return s

    def _ended(self) -> api_pb2.SessionEnded:
        return api_pb2.SessionEnded(frames=self.frames, dropped=self.dropped,
                                    duration_s=(self.last_index + 1) / self.fps,
                                    latency=self.summary(period=False))

    async def tick_loop(self) -> None:
        """Silence on stalls, latency summaries."""
        next_summary = time.monotonic() + self.summary_s
        while not self.finished:
            await self.fill_stall()
            if time.monotonic() >= next_summary:
                next_summary += self.summary_s
                self.out.put_nowait(api_pb2.SessionResponse(event=api_pb2.SessionEvent(
                    latency=self.summary())))
            await asyncio.sleep(TICK_S)


def error_for_session(err: m.SessionError) -> AvatarflowError:
    """A stage's verdict on the session, as an error with the stage's category."""
    exc = AvatarflowError(f"{err.stage}: {err.message}")
    exc.category = err.category
    return exc
