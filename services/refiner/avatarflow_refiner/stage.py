"""The refiner stage: RenderedFrame (body pass) -> FinalFrame with a refined face.

A frame that would miss its deadline if refined goes out as the body pass (``refined=False``):
a slightly softer face on time beats a sharp one too late.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from avatarflow.avatars.store import Avatar, AvatarSessions, AvatarStore, avatar_key
from avatarflow.contracts import messages as m
from avatarflow.contracts.errors import NotFound
from avatarflow.contracts.picture import Picture
from avatarflow.runtime.stage import Stage
from avatarflow_refiner import engines


class RefinerStage(AvatarSessions, Stage):
    """Looks the session's avatar up in the shared store and refines every frame's face."""

    name = "refiner"
    drops_late = True
    _sessions: dict[str, Avatar]

    def __init__(self, engine: str = "blend", store: AvatarStore | None = None,
                 refine_margin_s: float = 0.010, **options: Any) -> None:
        super().__init__()
        self.engine = engines.create(engine, **options)
        self.store = store if store is not None else AvatarStore()
        self.refine_margin_s = refine_margin_s  # refining takes about this long
        self.degraded = 0  # frames passed on unrefined because they were late

    def process(self, msg: m.Message) -> Iterable[m.Message]:
        if isinstance(msg, m.SessionStart):
            self._sessions[msg.session_id] = avatar = self._avatar(msg)
            self.engine.warm(avatar)
            return (msg,)
        if isinstance(msg, m.RenderedFrame):
            avatar = self._sessions.get(msg.session_id)
            if avatar is None:
                raise NotFound(f"unknown session {msg.session_id!r}: no SessionStart seen")
            if not self._in_time(msg):
                return (self._final(msg, msg.image, refined=False),)
            image = self.engine.refine(avatar, msg.image.rgb(), msg.motion)
            return (self._final(msg, Picture(image), refined=True),)
        if isinstance(msg, m.EndOfAudio):
            self._sessions.pop(msg.session_id, None)
        return (msg,)

    def process_frames(self, msgs: list[m.Message]) -> list[Iterable[m.Message]] | None:
        """Frames of several sessions refined in one batch, when the engine batches; frames
        too late to refine pass on as they are."""
        refine_batch = getattr(self.engine, "refine_batch", None)
        if refine_batch is None or not all(
                isinstance(x, m.RenderedFrame) and x.session_id in self._sessions for x in msgs):
            return None
        in_time = [self._in_time(x) for x in msgs]
        todo = [x for x, ok in zip(msgs, in_time, strict=True) if ok]
        images = iter(refine_batch([(self._sessions[x.session_id], x.image.rgb(), x.motion)
                                    for x in todo]) if todo else ())
        return [(self._final(x, Picture(next(images)), refined=True) if ok
                 else self._final(x, x.image, refined=False),)
                for x, ok in zip(msgs, in_time, strict=True)]

    def shed(self, msg: m.Message) -> list[m.Message]:
        """Behind on this session: the frame goes on unrefined (it costs nothing: the body
        pass is forwarded without being decoded), so no frame is lost."""
        if not isinstance(msg, m.RenderedFrame):
            return []
        self.degraded += 1
        return [self._final(msg, msg.image, refined=False)]

    def _in_time(self, msg: m.RenderedFrame) -> bool:
        """Whether refining can still finish before the frame's deadline."""
        if not msg.deadline or time.time() <= msg.deadline - self.refine_margin_s:
            return True
        self.degraded += 1
        return False

    @staticmethod
    def _final(msg: m.RenderedFrame, image: Picture, *, refined: bool) -> m.FinalFrame:
        return m.FinalFrame(session_id=msg.session_id, index=msg.index, pts=msg.pts,
                            traceparent=msg.traceparent, deadline=msg.deadline, image=image,
                            refined=refined)

    def _avatar(self, msg: m.SessionStart) -> Avatar:
        avatar_id = msg.avatar_id or msg.session_id
        try:
            return self.store.get(avatar_key(avatar_id, msg.mode, msg.width, msg.height))
        except NotFound:
            raise NotFound(f"avatar {avatar_id!r} has not been analysed for {msg.mode} "
                           f"{msg.width}x{msg.height}: the renderer stores it on SessionStart"
                           ) from None

    def close(self) -> None:
        self._sessions.clear()
        self.engine.close()

