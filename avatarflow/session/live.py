"""One live session at its front: feeds the pipeline on the session's audio clock and turns
the final frames into what the client sees.

The clock runs from the session start in real time. When the client's audio falls
``stall_s`` behind it, silence is fed so frames keep coming with idle motion. Audio goes on
the bus in pieces that let the audio encoder make a new frame (``packing``), not chunk by
chunk. A barge-in cuts the clock after the last delivered frame, so the new audio follows on
at once. Each frame goes out with its own span of the clock's audio. What waits for the client
is bounded and kept current (``outbox``); a client that sends nothing for ``idle_s`` is ended.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import numpy as np

from avatarflow.bus.base import Bus
from avatarflow.contracts import messages as m
from avatarflow.contracts.controls import Controls
from avatarflow.contracts.errors import AvatarflowError, DeadlineExceeded, InvalidInput
from avatarflow.contracts.limits import MAX_CHUNK_S
from avatarflow.runtime.registry import AUDIO, FRAMES
from avatarflow.session.events import Ended, Event, Frame, Gap, Started
from avatarflow.session.latency import LatencyMeter
from avatarflow.session.outbox import Outbox
from avatarflow.session.packing import AudioPacker, parse_lead
from avatarflow.session.spec import FrontSettings, SessionSpec
from avatarflow.session.timeline import Timeline
from avatarflow.telemetry import metrics, tracing

TICK_S = 0.02


class LiveSession:
    """Send audio, controls, interrupt and end; iterate ``events()`` for frames and the rest.

    Opened by a ``SessionFront``, which routes the pipeline's output here (``deliver``) and
    closes the session on every stage when the caller is done.
    """

    def __init__(self, sid: str, spec: SessionSpec, avatar_id: str, bus: Bus,
                 settings: FrontSettings, traceparent: str = "") -> None:
        self.sid, self.spec, self.avatar_id, self.bus = sid, spec, avatar_id, bus
        self.settings = settings
        self.traceparent = traceparent  # the client's trace context, if any
        self.started = Started(sid, avatar_id, spec)
        self.rate, self.fps = spec.sample_rate, spec.fps
        self.timeline = Timeline(self.rate, self.fps)
        self.latency = LatencyMeter()
        self.turn = 0  # barge-in generation: frames of an older one are stale
        self.t0 = 0.0  # wall time of sample 0 on the clock
        self.chunks = 0
        self.last_index = -1  # last frame delivered
        self.audio_ended = False
        self.finished = asyncio.Event()  # EndOfAudio (or an error) came back through
        self.gap: Gap | None = None  # silence being filled in
        self.heard = time.monotonic()  # when the client last sent something
        self._packer = AudioPacker(self.rate, self.fps, parse_lead(settings.audio_lead))
        self._held: list[np.ndarray] = []  # fed, not yet on the bus (too short for a frame)
        self._held_since = 0.0  # when the oldest of it was fed (monotonic)
        self._out = Outbox(max_frames=settings.out_frames, max_bytes=settings.out_bytes,
                           max_lag_s=settings.max_lag_s, on_stale=self.latency.went_stale)
        self._lock = asyncio.Lock()  # feeding: client audio, silence and barge-in in order

    async def start(self) -> None:
        await self.bus.publish(AUDIO, self.spec.start(self.sid, self.avatar_id))
        self.bus.attach(self.sid, FRAMES)
        self.t0 = time.time()

    # -- the client's side -----------------------------------------------------------------

    async def send_audio(self, pcm: np.ndarray) -> None:
        """Feeds int16 mono samples at the session's rate."""
        if self.audio_ended:
            raise InvalidInput("audio after EndAudio: the session's audio has ended")
        self.heard = time.monotonic()
        async with self._lock:
            self._close_gap()
            await self._feed(pcm)

    async def set_controls(self, controls: Controls) -> None:
        """New controls from the next frame on."""
        self.heard = time.monotonic()
        await self.bus.publish(AUDIO, m.ControlUpdate(session_id=self.sid, controls=controls),
                               turn=self.turn)

    async def interrupt(self) -> None:
        """Barge-in: everything queued is dropped; the clock continues after the last frame
        the client has, from now."""
        self.heard = time.monotonic()
        async with self._lock:
            self.turn += 1
            # Index 0 on an Interrupt means "keep counting": a barge-in before the first frame
            # resumes at 1 (frame 0's span is silence).
            resume = max(1, self.last_index + 1)
            self.timeline.cut(resume)
            self._held = []  # stale with the turn, as it would be on the bus
            self._packer.restart(resume)
            self.t0 = time.time() - resume / self.fps
            self.latency.restart()
            self.gap = None
            await self.bus.publish(AUDIO, m.Interrupt(session_id=self.sid, index=resume),
                                   turn=self.turn)

    async def end(self) -> None:
        """No more audio: the pipeline finishes what it holds, then ``events()`` ends."""
        if self.audio_ended:
            return
        async with self._lock:
            self._close_gap()
            self.audio_ended = True
            await self._send_held()
            await self.bus.publish(AUDIO, m.EndOfAudio(session_id=self.sid, index=self.chunks),
                                   turn=self.turn)

    async def events(self) -> AsyncIterator[Event]:
        """Frames, gaps and summaries until ``Ended``; raises the error that ended the
        session otherwise (a stage's verdict, or bad input passed to ``fail``)."""
        while True:
            item = (await self._out.get()).item
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, Frame):
                self.latency.sent()
                metrics.GATEWAY_FRAMES.inc()
            elif isinstance(item, Ended):
                yield self._ended()  # with the frames that went out while it waited
                return
            yield item

    def fail(self, exc: BaseException) -> None:
        """Ends ``events()`` with ``exc`` (e.g. the client sent something invalid)."""
        self._out.put(exc)

    @property
    def fps_now(self) -> float:
        return self.latency.fps_now

    # -- feeding the pipeline --------------------------------------------------------------

    async def _feed(self, pcm: np.ndarray) -> None:
        if not len(pcm):
            return
        if self._held and sum(map(len, self._held)) + len(pcm) > MAX_CHUNK_S * self.rate:
            await self._send_held()  # a message holds at most what a client's may
        end = self.timeline.append(pcm)[1]
        self.latency.fed(end, time.time())
        if not self._held:
            self._held_since = time.monotonic()
        self._held.append(pcm)
        if self._packer.due(end):
            await self._send_held()

    async def _send_held(self) -> None:
        """Puts the audio held so far on the bus, as one chunk."""
        if not self._held:
            return
        pcm = self._held[0] if len(self._held) == 1 else np.concatenate(self._held)
        self._held = []
        end = self.timeline.end
        now = time.time()
        budget = self.settings.budget_s
        deadline = 0.0 if budget is None else max(now, self.t0 + end / self.rate) + budget
        chunk = m.AudioChunk(session_id=self.sid, index=self.chunks,
                             pts=(end - len(pcm)) / self.rate, sample_rate=self.rate, pcm=pcm,
                             deadline=deadline)
        self.chunks += 1
        self._packer.sent(end)
        tracing.finish(tracing.start(tracing.SPAN_NAMES["gateway"], chunk, self.traceparent),
                       [chunk])
        await self.bus.publish(AUDIO, chunk, turn=self.turn)

    async def send_overdue(self) -> None:
        """Sends held audio fed more than two frames ago: the client paused mid-frame, or
        the lead does not match the encoder's engine."""
        if self._held and time.monotonic() - self._held_since >= 2 / self.fps:
            async with self._lock:
                if self._held and time.monotonic() - self._held_since >= 2 / self.fps:
                    await self._send_held()

    async def fill_stall(self, stall_s: float) -> None:
        """Feeds silence when the client's audio is more than ``stall_s`` behind the clock."""
        if self.audio_ended:
            return
        async with self._lock:
            behind = int((time.time() - self.t0 - stall_s) * self.rate) - self.timeline.end
            if behind < int(TICK_S * self.rate):
                return
            pts = self.timeline.end / self.rate if self.gap is None else self.gap.pts
            seconds = behind / self.rate + (0.0 if self.gap is None else self.gap.duration)
            self.gap = Gap(pts, seconds)
            await self._feed(np.zeros(behind, np.int16))

    def _close_gap(self) -> None:
        if self.gap is not None:
            self._out.put(self.gap)
            self.gap = None

    async def keep_time(self) -> None:
        """Silence on stalls, latency summaries and the idle limit, every tick until the
        session ends."""
        stall_s, summary_s = self.settings.stall_s, self.settings.summary_s
        next_summary = time.monotonic() + (summary_s or 0.0)
        try:
            while not self.finished.is_set():
                if self._idle():
                    return
                await self.send_overdue()
                if stall_s is not None:
                    await self.fill_stall(stall_s)
                if summary_s is not None and time.monotonic() >= next_summary:
                    next_summary += summary_s
                    self._out.put(self.latency.period(summary_s))
                await asyncio.sleep(TICK_S)
        except Exception as exc:  # e.g. the bus went away: the client learns it at once
            self.fail(exc)

    def _idle(self) -> bool:
        """Ends the session (DEADLINE_EXCEEDED) when its client has sent nothing for
        ``idle_s``. Any message counts (audio, controls, an interrupt): a client that sends
        anything is there; one that sends nothing is gone or stuck while the front keeps
        rendering idle frames for it. After EndAudio the session ends by itself."""
        idle_s = self.settings.idle_s
        if idle_s is None or self.audio_ended or time.monotonic() - self.heard < idle_s:
            return False
        metrics.GATEWAY_ENDED.labels(reason="idle").inc()
        self.fail(DeadlineExceeded(
            f"no message from the client for {idle_s:.1f} s: send audio (silence counts) "
            "while the session should go on, or EndAudio to finish it"))
        return True

    async def abandon(self) -> None:
        """The client left: drop the queued work and close the session on every stage."""
        self.audio_ended = True
        await self.interrupt()
        await self.bus.publish(AUDIO, m.EndOfAudio(session_id=self.sid, index=self.chunks),
                               turn=self.turn)

    # -- frames back to the client ---------------------------------------------------------

    def deliver(self, turn: int, msg: m.Message) -> None:
        """The pipeline's output for this session, in order (from the frames dispatcher)."""
        if self.finished.is_set():
            return
        if isinstance(msg, m.FinalFrame):
            if turn == self.turn and msg.index > self.last_index:
                # Due when its place on the clock comes round (t0 moves with a barge-in).
                due = self.t0 + msg.index / self.fps
                self._out.put(self._frame(msg), due)
        elif isinstance(msg, m.SessionError):
            self.finished.set()
            self.fail(error_for_session(msg))
        elif isinstance(msg, m.EndOfAudio):
            self.finished.set()
            self._out.put(self._ended())

    def _ended(self) -> Ended:
        return Ended(frames=self.latency.frames, dropped=self.latency.dropped,
                     duration_s=(self.last_index + 1) / self.fps,
                     latency=self.latency.session())

    def _frame(self, msg: m.FinalFrame) -> Frame:
        span = tracing.start(tracing.SEND, msg)
        first = self.last_index + 1  # the audio of frames dropped on the way comes along
        dropped = msg.index - first if self.last_index >= 0 else 0
        if dropped:
            metrics.GATEWAY_DROPPED.inc(dropped)
        self.last_index = msg.index
        if msg.deadline and time.time() > msg.deadline:
            metrics.GATEWAY_LATE.inc()
        self.latency.arrived(self.timeline.span(msg.index)[1], dropped)
        frame = Frame(index=msg.index, pts=msg.pts, image=msg.image, refined=msg.refined,
                      audio=self.timeline.frame_audio(msg.index, first))
        tracing.finish(span)
        return frame


def error_for_session(err: m.SessionError) -> AvatarflowError:
    """A stage's verdict on the session, as an error with the stage's category."""
    exc = AvatarflowError(f"{err.stage}: {err.message}")
    exc.category = err.category
    return exc
