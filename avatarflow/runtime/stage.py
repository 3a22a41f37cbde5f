"""The stage base: subclasses only transform messages; the runner owns the rest.

A stage implements typed hooks: ``start`` opens a session's state from its SessionStart,
``frame`` turns one data message of a known session into outputs (``frames`` many at once),
``control`` / ``interrupt`` / ``finish`` react to control messages. The session's state lives
in the base, which passes it to every hook; ``process`` (what the runner calls for each
message) dispatches on the message type and passes control messages on. The runner ends a
session (``end``) on EndOfAudio, on a SessionError and when another replica took it over, keeps
per-stage timings and isolates sessions: a message that fails is reported as an error event
for its session and the stage goes on with every other session.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

import numpy as np

from avatarflow.contracts import messages as m
from avatarflow.contracts.errors import AvatarflowError, NotFound
from avatarflow.runtime import state

log = logging.getLogger(__name__)

S = TypeVar("S")  # one session's state: picklable, holding no engine
F = TypeVar("F", bound=m.Message)  # the data message the stage transforms

FRAME_TYPES = (m.AudioFeatures, m.MotionFrame, m.RenderedFrame, m.FinalFrame)
ENDS_SESSION = (m.EndOfAudio, m.SessionError)


class _NoData(m.Message):
    """Never instantiated: what the base stage accepts, so it passes every message on."""


class Stage(Generic[S, F]):
    """Transforms the ``accepts`` messages of each session; passes everything else on.

    Per-session state (``S``) is what ``start`` returns. The runner saves it after every
    message that may change it (``snapshot``) and restores it on another replica when a
    session's owner stops, so it must be self-contained: engines stay on the stage. The base
    class itself passes every message through unchanged.
    """

    name = "stage"
    accepts: type[F] = cast("type[F]", _NoData)  # the data message type ``frame`` takes
    # Frames past their deadline are dropped by the runner before ``frame`` (a stage that
    # keeps history, like motion-gen, must see every frame and leaves this False).
    drops_late = False
    # Whether ``frames`` does better than one ``frame`` per message (one forward pass for
    # frames of many sessions); the runner then hands it runs of consecutive frames.
    batches = False
    degraded: int = 0  # frames passed on in a cheaper form than usual (refiner: unrefined)

    def __init__(self) -> None:
        self._sessions: dict[str, S] = {}

    # -- hooks a stage implements ----------------------------------------------------------

    def start(self, msg: m.SessionStart) -> S:
        """Opens a session; raising rejects it (the error goes to the client)."""
        return cast(S, None)

    def frame(self, session: S, msg: F) -> list[m.Message]:
        """The outputs of one data message of a known session."""
        return [msg]

    def frames(self, items: Sequence[tuple[S, F]]) -> list[list[m.Message]]:
        """``frame`` for several messages (of several sessions) at once, one output list per
        message. When a batch fails, the runner processes its messages one by one, so an error
        is pinned on the session that caused it."""
        return [self.frame(s, msg) for s, msg in items]

    def control(self, session: S, msg: m.ControlUpdate) -> None:
        """New controls from the next frame on."""

    def interrupt(self, session: S, msg: m.Interrupt) -> None:
        """Barge-in: forget the audio and frames held for the session."""

    def finish(self, session: S, msg: m.EndOfAudio) -> list[m.Message]:
        """What the session still holds when its audio ends; sent before the EndOfAudio."""
        return []

    def forward(self, session: S, msg: m.Message) -> m.Message:
        """The control message this stage passes on for ``msg`` (by default ``msg``)."""
        return msg

    def shed(self, msg: m.Message) -> list[m.Message]:
        """What a ``drops_late`` stage emits instead of processing a frame it is too far
        behind on (a newer frame of the session is already waiting): by default nothing, so
        the stage catches up instead of building a queue. A stage with a cheaper way to pass
        the frame on (the refiner: unrefined) overrides this."""
        return []

    def state_changed_by(self, msg: m.Message) -> bool:
        """Whether handling ``msg`` may have changed the session's state (the runner saves a
        snapshot only then)."""
        return True

    def dump_session(self, session: S) -> bytes:
        """A session's state as bytes (``load_session`` reads them on another replica)."""
        return state.dumps(session)

    def load_session(self, data: bytes) -> S:
        return cast(S, state.loads(data))

    def close(self) -> None:
        """Releases engines and caches."""

    # -- what the runner calls -------------------------------------------------------------

    def process(self, msg: m.Message) -> list[m.Message]:
        """Runs one message: a data message through ``frame``, a control message through its
        hook and then on. Messages of a session this stage does not know pass on, except
        data and SessionStart: NotFound, or what ``start`` raises."""
        if isinstance(msg, m.SessionStart):
            self._sessions[msg.session_id] = self.start(msg)
            return [msg]
        if isinstance(msg, (m.ControlUpdate, m.Interrupt, m.EndOfAudio)):
            if msg.session_id not in self._sessions:
                return [msg]
            s = self._sessions[msg.session_id]
            out: list[m.Message] = []
            if isinstance(msg, m.ControlUpdate):
                self.control(s, msg)
            elif isinstance(msg, m.Interrupt):
                self.interrupt(s, msg)
            elif isinstance(msg, m.EndOfAudio):
                out = self.finish(s, msg)
            return [*out, self.forward(s, msg)]
        if isinstance(msg, self.accepts):
            return self.frame(self.session(msg.session_id), msg)
        return [msg]

    def process_many(self, msgs: Sequence[F]) -> list[list[m.Message]]:
        """Runs data messages of known sessions through ``frames``."""
        return self.frames([(self.session(x.session_id), x) for x in msgs])

    def session(self, session_id: str) -> S:
        """The state of a session this stage knows; NotFound otherwise."""
        try:
            return self._sessions[session_id]
        except KeyError:
            raise NotFound(f"{self.name}: unknown session {session_id!r}: no SessionStart "
                           "seen (or the session has ended)") from None

    def end(self, session_id: str) -> None:
        """Forgets a session (its audio ended, it failed, or another replica owns it now)."""
        self._sessions.pop(session_id, None)

    def snapshot(self, session_id: str) -> bytes | None:
        """The session's state as bytes, or None when the stage holds nothing for it."""
        s = self._sessions.get(session_id)
        return None if s is None else self.dump_session(s)

    def restore(self, session_id: str, data: bytes) -> None:
        """Continues a session from a ``snapshot`` taken on another replica."""
        self._sessions[session_id] = self.load_session(data)

    @property
    def session_count(self) -> int:
        return len(self._sessions)


def session_ended(msg: m.Message, outs: Sequence[m.Message]) -> bool:
    """Whether handling ``msg`` ended its session (EndOfAudio or an error, in or out)."""
    return isinstance(msg, ENDS_SESSION) or any(isinstance(o, ENDS_SESSION) for o in outs)


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


def _frames_out(outs: Sequence[m.Message]) -> int:
    return sum(isinstance(o, FRAME_TYPES) for o in outs)


def run_batch(stage: Stage[Any, Any], msgs: Sequence[m.Message | None],
              stats: StageStats | None = None) -> list[list[m.Message]]:
    """Runs messages in order (None: skipped, no output); when the stage batches, runs of two
    or more consecutive data messages it accepts go through ``Stage.frames`` in one call."""
    out: list[list[m.Message]] = [[] for _ in msgs]
    run: list[int] = []

    def flush() -> None:
        if not (len(run) > 1 and _batched(stage, [msgs[i] for i in run], [out[i] for i in run],
                                          stats)):
            for i in run:
                out[i] = run_stage(stage, cast(m.Message, msgs[i]), stats)
        run.clear()

    for i, msg in enumerate(msgs):
        if msg is None:
            continue
        if stage.batches and isinstance(msg, stage.accepts):
            run.append(i)
            continue
        flush()
        out[i] = run_stage(stage, msg, stats)
    flush()
    return out


def _batched(stage: Stage[Any, Any], msgs: list[Any], slots: list[list[m.Message]],
             stats: StageStats | None) -> bool:
    start = time.perf_counter()
    try:
        outs = stage.process_many(msgs)
    except Exception as exc:  # retried one by one, which reports it against its session
        log.info("%s: a batch of %d failed (%s); processing one by one", stage.name,
                 len(msgs), exc)
        return False
    elapsed = time.perf_counter() - start
    for slot, o in zip(slots, outs, strict=True):
        slot.extend(o)
        if stats is not None:
            stats.add(elapsed / len(msgs), _frames_out(o))
    return True


def run_stage(stage: Stage[Any, Any], msg: m.Message,
              stats: StageStats | None = None) -> list[m.Message]:
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
        stats.add(time.perf_counter() - start, _frames_out(out))
    return out
