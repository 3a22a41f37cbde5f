"""The stage base: subclasses only transform messages; the runner owns the rest.

A stage's ``process`` takes one message and returns the messages it produces, in order. The
runner moves messages between the bus and the stage, passes control messages on, keeps
per-stage timings and isolates sessions: a message that fails is reported as an error event for
its session and the stage goes on with every other session.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avatarflow.contracts import messages as m
from avatarflow.contracts.errors import AvatarflowError
from avatarflow.runtime import state

log = logging.getLogger(__name__)


class Stage:
    """Transforms messages. Override ``process``; the default passes everything through.

    Per-session state lives in ``self._sessions`` (session id -> a picklable object that does
    not hold the engine). The runner saves it after every message it commits and restores it
    on another replica when a session's owner stops, so a subclass only has to keep that
    object self-contained; stages whose sessions need more override the three hooks.
    """

    name = "stage"
    # Frames past their deadline are dropped by the runner before ``process`` (a stage that
    # keeps history, like motion-gen, must see every frame and leaves this False).
    drops_late = False

    def __init__(self) -> None:
        self._sessions: dict[str, Any] = {}

    def process(self, msg: m.Message) -> Iterable[m.Message]:
        return (msg,)

    def shed(self, msg: m.Message) -> list[m.Message]:
        """What a ``drops_late`` stage emits instead of processing a frame it is too far
        behind on (a newer frame of the session is already waiting): by default nothing, so
        the stage catches up instead of building a queue. A stage with a cheaper way to pass
        the frame on (the refiner: unrefined) overrides this."""
        return []

    @property
    def batches(self) -> bool:
        """Whether this stage overrides ``process_frames``."""
        return type(self).process_frames is not Stage.process_frames

    def process_frames(self, msgs: list[m.Message]) -> list[Iterable[m.Message]] | None:
        """Processes several consecutive frame messages (of several sessions) at once, for
        engines that batch (one forward pass for frames of many sessions); returns one output
        list per message, in order. The default, None, means "one at a time". When a batch
        fails, the runner processes its messages one by one, so an error is pinned on the
        session that caused it."""
        return None

    def snapshot(self, session_id: str) -> bytes | None:
        """The session's state as bytes, or None when the stage holds nothing for it."""
        s = self._sessions.get(session_id)
        return None if s is None else state.dumps(s)

    def state_changed_by(self, msg: m.Message) -> bool:
        """Whether handling ``msg`` may have changed the session's state (the runner saves a
        snapshot only then)."""
        return True

    def restore(self, session_id: str, data: bytes) -> None:
        """Continues a session from a ``snapshot`` taken on another replica."""
        self._sessions[session_id] = state.loads(data)

    def drop(self, session_id: str) -> None:
        """Forgets a session (it ended elsewhere, or another replica owns it now)."""
        self._sessions.pop(session_id, None)

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    def close(self) -> None:
        """Releases engines and caches."""


@dataclass
class StageStats:
    """Wall time spent per produced frame, for medians and p99s."""

    per_frame_s: list[float] = field(default_factory=list)
    frames: int = 0
    busy_s: float = 0.0
    meter: Any = None  # a telemetry StageMeter that sees the same figures, when set

    def add(self, elapsed: float, frames_out: int) -> None:
        self.busy_s += elapsed
        if frames_out:
            self.frames += frames_out
            self.per_frame_s.extend([elapsed / frames_out] * frames_out)
            if len(self.per_frame_s) > 100_000:  # a long-running service keeps the recent half
                del self.per_frame_s[:50_000]
            if self.meter is not None:
                self.meter.processed(elapsed / frames_out, frames_out)

    def summary(self) -> dict[str, float]:
        if not self.per_frame_s:
            return {"frames": 0, "median_ms": 0.0, "p99_ms": 0.0, "busy_s": self.busy_s}
        a = np.asarray(self.per_frame_s) * 1e3
        return {"frames": self.frames, "median_ms": float(np.median(a)),
                "p99_ms": float(np.percentile(a, 99)), "busy_s": self.busy_s}


FRAME_TYPES = (m.AudioFeatures, m.MotionFrame, m.RenderedFrame, m.FinalFrame)


def run_batch(stage: Stage, msgs: list[m.Message | None],
              stats: StageStats | None = None) -> list[list[m.Message]]:
    """Runs messages in order (None: skipped, no output); runs of two or more consecutive
    frames go through ``stage.process_frames`` when the stage batches."""
    out: list[list[m.Message]] = [[] for _ in msgs]
    run: list[int] = []

    def flush() -> None:
        if len(run) > 1 and _batched(stage, [msgs[i] for i in run], [out[i] for i in run],
                                     stats):
            run.clear()
            return
        for i in run:
            out[i] = run_stage(stage, msgs[i], stats)
        run.clear()

    for i, msg in enumerate(msgs):
        if msg is None:
            continue
        if isinstance(msg, FRAME_TYPES):
            run.append(i)
            continue
        flush()
        out[i] = run_stage(stage, msg, stats)
    flush()
    return out


def _batched(stage: Stage, msgs: list[m.Message], slots: list[list[m.Message]],
             stats: StageStats | None) -> bool:
    start = time.perf_counter()
    try:
        outs = stage.process_frames(msgs)
    except Exception as exc:  # retried one by one, which reports it against its session
        log.info("%s: a batch of %d failed (%s); processing one by one", stage.name,
                 len(msgs), exc)
        return False
    if outs is None:
        return False
    elapsed = time.perf_counter() - start
    for slot, o in zip(slots, outs, strict=True):
        slot.extend(o)
        if stats is not None:
            stats.add(elapsed / len(msgs), sum(isinstance(x, FRAME_TYPES) for x in o))
    return True


def run_stage(stage: Stage, msg: m.Message, stats: StageStats | None = None) -> list[m.Message]:
    """Runs one message through a stage, timing it and turning failures into SessionError."""
    if isinstance(msg, m.SessionError):
        return [msg]  # an upstream failure travels to the sink untouched
    start = time.perf_counter()
    try:
        out = list(stage.process(msg))
    except AvatarflowError as exc:
        log.warning("%s: session %s: %s", stage.name, msg.session_id, exc.message)
        return [m.SessionError(session_id=msg.session_id, index=msg.index, pts=msg.pts,
                             stage=stage.name, category=exc.category, message=exc.message)]
    except Exception as exc:  # a bug must not take the stage down for every other session
        log.exception("%s: session %s failed", stage.name, msg.session_id)
        return [m.SessionError(session_id=msg.session_id, index=msg.index, pts=msg.pts,
                             stage=stage.name, category="internal",
                             message=f"internal error in {stage.name}: {type(exc).__name__}")]
    if stats is not None:
        stats.add(time.perf_counter() - start, sum(isinstance(o, FRAME_TYPES) for o in out))
    return out
