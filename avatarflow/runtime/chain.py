"""Two stages as one: the in-memory hop of a co-located deployment.

``Chain(first, second)`` is a Stage that hands every output of ``first`` to ``second`` within
the same call, so a process that runs both passes messages on in memory instead of over a
Redis stream: the renderer with the refiner (``AVATARFLOW_RENDERER_COLOCATE=refiner``: frames
as pixels instead of JPEG), the audio-encoder with motion-gen
(``AVATARFLOW_AUDIO_ENCODER_COLOCATE=motion-gen``: features without a bus hop). The runner and
the bus see one stage that reads ``first``'s input and writes ``second``'s output; inside the
call each part is treated as its own runner would treat it: any number of outputs of ``first``
(none, one or several per input) reach ``second`` in order, control messages (interrupts,
control changes, the end of audio) and session errors reach both parts in order, a frame
already past its deadline is dropped before ``second`` when ``second`` drops late frames (a
part that keeps history, like motion-gen, sees every frame), a failure becomes a SessionError
naming the part, and each part keeps its own timings (``stats``, which feed its metrics) and
trace spans.

A session's state is both parts' snapshots in one blob, restored together or not at all, so
a takeover moves the co-located session exactly as it would move two separate ones.

Load shedding (only where ``first`` drops late frames: the renderer): the runner sheds on
``first``'s input. A shed frame is still rendered by ``first`` and passed on by
``second.shed`` (the refiner: unrefined), so a process behind on its combined work catches up
without losing the frame; once it is more than ``drop_behind_s`` behind even that is too
slow, and the frame goes as ``first`` sheds it (the renderer: skipped), which is how a
separate renderer keeps its latency bounded.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from avatarflow.contracts import messages as m
from avatarflow.runtime import state
from avatarflow.runtime.stage import FRAME_TYPES, Stage, StageStats, run_batch
from avatarflow.telemetry import tracing

Outputs = list[list[m.Message]]


class Chain(Stage[Any, Any]):
    """``first`` then ``second`` in one call: the outputs of ``first`` never leave memory.

    Args:
        budget_s: a frame's deadline is its due time plus this (the runner's ``budget_s``).
        drop_behind_s: a shed frame more than this past its due time is skipped by ``first``
            instead of being processed and passed on cheaply; 0 = never.
    """

    def __init__(self, first: Stage[Any, Any], second: Stage[Any, Any], *,
                 budget_s: float = 0.5, drop_behind_s: float = 0.0) -> None:
        super().__init__()
        self.first, self.second = first, second
        self.name = f"{first.name}+{second.name}"
        self.accepts = first.accepts
        self.drops_late = first.drops_late
        self.batches = first.batches or second.batches
        self.budget_s, self.drop_behind_s = budget_s, drop_behind_s
        # Per part, as its own runner would keep them; a service attaches each part's
        # StageMeter, so metrics stay labelled per stage.
        self.stats = {first.name: StageStats(), second.name: StageStats()}
        self.dropped = 0  # frames past their deadline between the parts, never given to second
        self._spans = tuple(tracing.SPAN_NAMES.get(p.name, p.name) for p in (first, second))
        self._changed: set[str] = set()  # sessions whose state in ``second`` changed
        # ``second``'s last snapshot of each session while its state is unchanged: the runner
        # saves the session after most messages because ``first`` changed (the audio-encoder
        # on every chunk), and ``second``'s part of it need not be pickled again each time.
        self._saved: dict[str, bytes] = {}

    # -- what the runner calls -------------------------------------------------------------

    def process(self, msg: m.Message) -> list[m.Message]:
        return self._through([msg])[0]

    def process_many(self, msgs: Sequence[Any]) -> Outputs:
        return self._through(msgs)

    def shed(self, msg: m.Message) -> list[m.Message]:
        """The runner is behind on ``msg``: ``first`` processes it and ``second`` passes it on
        its cheap way, unless the frame is so far behind that ``first`` must skip it."""
        due = msg.deadline - self.budget_s
        if self.drop_behind_s and msg.deadline and time.time() - due > self.drop_behind_s:
            return self.first.shed(msg)
        mids = self._part(0, [msg])[0]
        return [o for outs in self._into_second(mids, shed=True) for o in outs]

    def state_changed_by(self, msg: m.Message) -> bool:
        changed = self.first.state_changed_by(msg)  # asked once: the renderer clears a flag
        if msg.session_id in self._changed:
            self._changed.discard(msg.session_id)
            changed = True
        return changed

    def snapshot(self, session_id: str) -> bytes | None:
        second = self._saved.get(session_id)
        if second is None:
            second = self.second.snapshot(session_id)
            if second is not None:  # nothing kept for a session ``second`` does not hold
                self._saved[session_id] = second
        parts = (self.first.snapshot(session_id), second)
        return None if parts == (None, None) else state.dumps(parts)

    def restore(self, session_id: str, data: bytes) -> None:
        """Both parts continue the session, or neither does (the error goes to the caller)."""
        self._saved.pop(session_id, None)
        saved = state.loads(data)
        if not (isinstance(saved, tuple) and len(saved) == 2
                and all(p is None or isinstance(p, bytes) for p in saved)):
            raise state.StateError(f"{self.name}: session state is not one blob per part")
        try:
            for part, blob in zip((self.first, self.second), saved, strict=True):
                if blob is not None:
                    part.restore(session_id, blob)
        except BaseException:
            self.end(session_id)
            raise

    def end(self, session_id: str) -> None:
        self.first.end(session_id)
        self.second.end(session_id)
        self._changed.discard(session_id)
        self._saved.pop(session_id, None)

    def close(self) -> None:
        try:
            self.first.close()
        finally:
            self.second.close()

    @property
    def parts(self) -> tuple[Stage[Any, Any], Stage[Any, Any]]:
        return self.first, self.second

    @property
    def session_count(self) -> int:
        return max(self.first.session_count, self.second.session_count)

    @property
    def degraded(self) -> int:  # type: ignore[override]  # a sum, never set
        """Frames passed on in a cheaper form by either part (the refiner: unrefined)."""
        return self.first.degraded + self.second.degraded

    # -- the in-memory hop -----------------------------------------------------------------

    def _through(self, msgs: Sequence[m.Message]) -> Outputs:
        """The outputs of ``second`` for each message given to ``first``."""
        firsts = self._part(0, msgs)
        owners = [i for i, outs in enumerate(firsts) for _ in outs]
        seconds = self._into_second([o for outs in firsts for o in outs])
        out: Outputs = [[] for _ in msgs]
        for i, outs in zip(owners, seconds, strict=True):
            out[i].extend(outs)
        return out

    def _into_second(self, mids: list[m.Message], shed: bool = False) -> Outputs:
        """What ``second`` makes of ``first``'s outputs, admitted as its runner would."""
        admitted = [None if self._late(o) else o for o in mids]
        if shed:
            results = [[] if o is None else self._shed_one(o) for o in admitted]
        else:
            results = self._part(1, admitted)
        meter = self.stats[self.second.name].meter
        now = time.time()
        for o, outs in zip(admitted, results, strict=True):
            if o is not None and self.second.state_changed_by(o):
                self._changed.add(o.session_id)
                self._saved.pop(o.session_id, None)
            if meter is not None:
                for f in outs:
                    if f.deadline and isinstance(f, FRAME_TYPES):
                        meter.left(max(0.0, now - (f.deadline - self.budget_s)))
        return results

    def _part(self, k: int, msgs: Sequence[m.Message | None]) -> Outputs:
        """Part ``k`` on ``msgs`` (None: skipped), timed and traced as its runner would."""
        part = (self.first, self.second)[k]
        spans = [None if msg is None else tracing.start(self._spans[k], msg) for msg in msgs]
        outs = run_batch(part, msgs, self.stats[part.name])
        for span, o in zip(spans, outs, strict=True):
            tracing.finish(span, o)
        return outs

    def _shed_one(self, msg: m.Message) -> list[m.Message]:
        if not isinstance(msg, self.second.accepts):
            return self._part(1, [msg])[0]
        span = tracing.start(self._spans[1], msg)
        outs = self.second.shed(msg)
        tracing.finish(span, outs)
        meter = self.stats[self.second.name].meter
        if meter is not None:
            meter.was_shed()
        return outs

    def _late(self, msg: m.Message) -> bool:
        """Whether ``second``'s runner would drop ``msg``: a frame already past its deadline."""
        if not (self.second.drops_late and isinstance(msg, FRAME_TYPES) and msg.deadline
                and msg.deadline < time.time()):
            return False
        self.dropped += 1
        meter = self.stats[self.second.name].meter
        if meter is not None:
            meter.was_dropped()
        return True
