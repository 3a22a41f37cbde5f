"""Drives one stage from a bus: the same loop runs embedded and distributed.

For every delivery: restore the session if the bus says it was taken over, drop a frame that is
already past its deadline (stages that keep no history only), run the stage, then commit the
outputs, the acknowledgement and the session state together. The runner owns each session's
lifetime on the stage: it ends it (``Stage.end``) on EndOfAudio, on a SessionError and when
the bus says another replica owns it now.

Load shedding: a stage that keeps no history and is more than ``shed_after_s`` past a frame's
due time (its deadline minus the budget) while a newer frame of the same session is already
waiting sheds it (``Stage.shed``: the renderer skips it, the refiner passes it on unrefined)
instead of working through a queue; it catches up at once and the latency stays near one
frame's work, not the deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from avatarflow.bus.base import Bus, Commit, Delivery
from avatarflow.contracts import messages as m
from avatarflow.contracts.errors import AvatarflowError
from avatarflow.runtime.registry import StageSpec
from avatarflow.runtime.stage import (
    FRAME_TYPES,
    Stage,
    StageStats,
    run_batch,
    run_stage,
    session_ended,
)
from avatarflow.telemetry import tracing
from avatarflow.telemetry.metrics import StageMeter

log = logging.getLogger(__name__)

RUN, DROP, SHED = "run", "drop", "shed"


@dataclass
class HopStats:
    """What arrives on a stage's input: count, bytes per frame and publish -> decode latency."""

    messages: int = 0
    frames: int = 0
    frame_bytes: int = 0
    latency_s: list[float] = field(default_factory=list)

    def add(self, d: Delivery, now: float) -> None:
        self.messages += 1
        if isinstance(d.msg, (*FRAME_TYPES, m.AudioChunk)):
            self.frames += 1
            self.frame_bytes += d.size
        if d.published_at:
            self.latency_s.append(now - d.published_at)
            if len(self.latency_s) > 20000:
                del self.latency_s[:10000]


@dataclass
class RunnerStats:
    process: StageStats = field(default_factory=StageStats)
    hop: HopStats = field(default_factory=HopStats)
    dropped: int = 0  # late frames not processed
    shed: int = 0  # frames shed because the stage was behind and a newer one was waiting
    recovered: int = 0  # sessions taken over from another replica
    lost: int = 0  # sessions another replica took from us


class StageRunner:
    """Moves one stage's messages: ``await runner.run()`` until cancelled.

    ``offload`` runs the stage in a worker thread so the event loop stays free for health
    checks and heartbeats while a frame renders (the distributed services do this). Messages
    already waiting are taken ``batch`` at a time: one thread hand-off and one bus round trip
    serve them all, which is what keeps a busy stage from falling behind on overheads.
    """

    def __init__(self, spec: StageSpec, stage: Stage[Any, Any], bus: Bus, *, offload: bool = False,
                 batch: int = 1, budget_s: float = 0.5, shed_after_s: float = 0.0) -> None:
        self.spec, self.stage, self.bus, self.offload = spec, stage, bus, offload
        self.batch = batch
        self.budget_s = budget_s  # a frame's deadline is its audio's arrival + this
        self.shed_after_s = shed_after_s  # 0: never shed
        self.meter = StageMeter(spec.name)
        self.stats = RunnerStats()
        self.stats.process.meter = self.meter
        self.span_name = tracing.SPAN_NAMES.get(spec.name, spec.name)
        self.busy = False  # between receiving messages and committing their outputs

    async def run(self) -> None:
        while True:
            batch = await self.bus.receive_batch(self.spec.input, self.spec.group, self.batch)
            self.busy = True
            try:
                await self.handle(batch)
            finally:
                self.busy = False
            if not self.offload:
                await asyncio.sleep(0)  # let the stages downstream take their turn

    async def handle(self, batch: list[Delivery]) -> None:
        now = time.time()
        for d in batch:
            self.stats.hop.add(d, now)
            if d.published_at:
                self.meter.received(max(0.0, now - d.published_at))
        if self.offload:
            commits = await asyncio.to_thread(self._process_all, batch)
        else:
            commits = self._process_all(batch)
        oks = await self.bus.commit_many(self.spec.output, commits)
        self.meter.waiting(lambda: self.bus.backlog(self.spec.input, self.spec.group))
        lost = [c.delivery.msg.session_id for c, ok in zip(commits, oks, strict=True) if not ok]
        for sid in dict.fromkeys([*lost, *self.bus.lost_sessions()]):
            self.stage.end(sid)
            self.stats.lost += 1
            log.warning("%s: session %s is now owned by another replica", self.spec.name, sid)

    def _process_all(self, batch: list[Delivery]) -> list[Commit]:
        superseded = self._superseded(batch)
        if not self.stage.batches:  # one at a time: each snapshot is taken right after its message
            commits: list[Commit] = []
            for i, d in enumerate(batch):
                msg, action = self._admit(d, i in superseded)
                span = tracing.start(self.span_name, msg)
                outs = (run_stage(self.stage, msg, self.stats.process) if action is RUN
                        else self._skip(msg, action))
                tracing.finish(span, outs)
                commits.append(self._commit(d, msg, outs))
            return commits
        # A batching stage keeps no per-frame state (its frames change no snapshot), so the
        # frames of many sessions can run as one batch before anything is committed.
        msgs = [self._admit(d, i in superseded) for i, d in enumerate(batch)]
        spans = [tracing.start(self.span_name, msg) for msg, _ in msgs]
        ran = run_batch(self.stage, [msg if action is RUN else None for msg, action in msgs],
                        self.stats.process)
        results = [o if action is RUN else self._skip(msg, action)
                   for o, (msg, action) in zip(ran, msgs, strict=True)]
        for span, o in zip(spans, results, strict=True):
            tracing.finish(span, o)
        return [self._commit(d, msg, o) for d, (msg, _), o in zip(batch, msgs, results,
                                                                  strict=True)]

    @staticmethod
    def _superseded(batch: list[Delivery]) -> set[int]:
        """Positions of frames followed, in the same batch, by a frame of their session."""
        out: set[int] = set()
        seen: set[str] = set()
        for i in range(len(batch) - 1, -1, -1):
            msg = batch[i].msg
            if isinstance(msg, FRAME_TYPES):
                if msg.session_id in seen:
                    out.add(i)
                seen.add(msg.session_id)
        return out

    def _admit(self, d: Delivery, superseded: bool = False) -> tuple[m.Message, str]:
        """The message to process (restoring a taken-over session first) and what to do with
        it: RUN it, DROP it (a frame past its deadline) or SHED it (see the module doc)."""
        msg = d.msg if d.restore is None else self._restore(d.msg, d.restore)
        if not (self.stage.drops_late and isinstance(msg, FRAME_TYPES) and msg.deadline):
            return msg, RUN
        now = time.time()
        if msg.deadline < now:
            self._dropped()
            return msg, DROP
        # Behind: past the frame's due time (its audio's arrival, or its place on the real-time
        # clock when audio came early) by more than shed_after_s. Frames of audio sent ahead
        # of time are not behind, however long they queue.
        due = msg.deadline - self.budget_s
        if (self.shed_after_s and now - due > self.shed_after_s
                and (superseded or self.bus.newer_waiting(d))):
            self.stats.shed += 1
            self.meter.was_shed()
            return msg, SHED
        return msg, RUN

    def _skip(self, msg: m.Message, action: str) -> list[m.Message]:
        if action is DROP:
            return []
        outs = self.stage.shed(msg)
        if not any(isinstance(o, FRAME_TYPES) for o in outs):  # the frame is gone
            self._dropped()
        return outs

    def _dropped(self) -> None:
        self.stats.dropped += 1
        self.meter.was_dropped()

    def _commit(self, d: Delivery, msg: m.Message, outs: list[m.Message]) -> Commit:
        sid = msg.session_id
        now = time.time()
        for o in outs:
            if o.deadline and isinstance(o, FRAME_TYPES):
                self.meter.left(max(0.0, now - (o.deadline - self.budget_s)))
        ended = session_ended(msg, outs)
        if ended:
            self.stage.end(sid)
        keep = self.bus.keeps_state and not ended and self.stage.state_changed_by(msg)
        state = self.stage.snapshot(sid) if keep else None
        return Commit(d, outs, state, ended, self.bus.prepare(outs))

    def _restore(self, msg: m.Message, data: bytes) -> m.Message:
        """Continues a session taken over from another replica; if that is impossible, the
        message becomes the session's error."""
        sid = msg.session_id
        try:
            self.stage.restore(sid, data)
        except AvatarflowError as exc:  # e.g. the avatar expired meanwhile
            log.warning("%s: session %s cannot be continued: %s", self.spec.name, sid,
                        exc.message)
            return m.SessionError(session_id=sid, index=msg.index, pts=msg.pts,
                                  stage=self.spec.name, category=exc.category,
                                  message=f"cannot continue the session: {exc.message}")
        self.stats.recovered += 1
        log.info("%s: continuing session %s taken over from another replica", self.spec.name,
                 sid)
        return msg
