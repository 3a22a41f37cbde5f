"""The session front: opens sessions on the pipeline, routes the final frames back to them and
closes them on every stage. The same front serves the gateway (Redis bus, the renderer's
gRPC analysis) and the embedded pipeline (in-memory bus, the renderer stage in-process)."""

from __future__ import annotations

import asyncio
import logging
import uuid

from avatarflow.bus.base import Bus, Commit
from avatarflow.bus.keys import GATEWAY_GROUP
from avatarflow.contracts import messages as m
from avatarflow.runtime.registry import FRAMES
from avatarflow.runtime.tasks import TaskGroup
from avatarflow.session.live import LiveSession
from avatarflow.session.portraits import AvatarPath
from avatarflow.session.spec import FrontSettings, SessionSpec

log = logging.getLogger(__name__)

ABANDON_WAIT_S = 10.0
DISPATCH_BATCH = 16


class SessionFront:
    """Live sessions over a bus. Run ``dispatch()`` for as long as sessions are served."""

    def __init__(self, bus: Bus, avatars: AvatarPath, settings: FrontSettings) -> None:
        self.bus, self.avatars, self.settings = bus, avatars, settings
        self.sessions: dict[str, LiveSession] = {}
        self.background = TaskGroup("session-front")
        self._clocks: dict[str, asyncio.Task[None]] = {}
        self._releasing: set[str] = set()

    def mean_fps(self) -> float:
        """Mean achieved frame rate of the sessions over their last summary period."""
        rates = [s.fps_now for s in self.sessions.values() if s.fps_now > 0]
        return sum(rates) / len(rates) if rates else 0.0

    async def open(self, spec: SessionSpec, traceparent: str = "") -> LiveSession:
        """Makes sure the avatar is analysed, then starts the session on every stage. Raises
        AvatarflowError (unknown avatar, a portrait the renderer rejects ...)."""
        avatar_id = await self.avatars.ensure(spec.image, spec.avatar_id, spec.output(),
                                               spec.tenant)
        s = LiveSession(uuid.uuid4().hex, spec, avatar_id, self.bus, self.settings, traceparent)
        self.sessions[s.sid] = s
        try:
            await s.start()
        except BaseException:  # cancelled or failed half-way: the stages may have it open
            self.release(s)
            raise
        live = self.settings
        if live.stall_s is not None or live.summary_s is not None or live.idle_s is not None:
            self._clocks[s.sid] = self.background.spawn(s.keep_time(), f"clock-{s.sid}")
        return s

    def release(self, s: LiveSession) -> None:
        """``close`` in the background (the caller's task may be ending); once per session,
        however often it is asked."""
        if s.sid in self._releasing:
            return
        self._releasing.add(s.sid)
        task = self.background.spawn(self.close(s), f"close-{s.sid}")
        task.add_done_callback(lambda _: self._releasing.discard(s.sid))

    async def close(self, s: LiveSession) -> None:
        """After the caller is done with ``s``: if it did not end, abandon it and wait
        (bounded) until every stage has released it; then forget it."""
        clock = self._clocks.pop(s.sid, None)
        if clock is not None:
            clock.cancel()
        try:
            if not s.finished.is_set():
                await s.abandon()
                try:
                    await asyncio.wait_for(s.finished.wait(), ABANDON_WAIT_S)
                except TimeoutError:
                    log.warning("session %s: the pipeline did not confirm its end within "
                                "%.0f s", s.sid, ABANDON_WAIT_S)
        finally:
            self.sessions.pop(s.sid, None)
            self.bus.detach(s.sid, FRAMES)
            await self.bus.end_session(s.sid)

    async def dispatch(self) -> None:
        """Routes final frames from the bus to their sessions and acknowledges them."""
        while True:
            batch = await self.bus.receive_batch(FRAMES, GATEWAY_GROUP, DISPATCH_BATCH)
            for d in batch:
                s = self.sessions.get(d.msg.session_id)
                if s is not None:
                    s.deliver(d.turn, d.msg)
            await self.bus.commit_many(None, [
                Commit(d, (), ended=isinstance(d.msg, m.EndOfAudio | m.SessionError))
                for d in batch])

    async def aclose(self) -> None:
        """Cancels what still runs in the background (closes, clocks)."""
        await self.background.__aexit__(None, None, None)
