"""The refiner stage: RenderedFrame (body pass) -> FinalFrame with a refined face.

A frame that would miss its deadline if refined goes out as the body pass (``refined=False``):
a slightly softer face on time beats a sharp one too late.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from avatarflow import messages as m
from avatarflow.avatar import Avatar, AvatarSessions, AvatarStore, avatar_key
from avatarflow.errors import NotFound
from avatarflow.picture import Picture
from avatarflow.stage import Stage
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
            refined = not msg.deadline or time.time() <= msg.deadline - self.refine_margin_s
            if refined:
                image = Picture(self.engine.refine(avatar, msg.image.rgb(), msg.motion))
            else:
                image = msg.image
                self.degraded += 1
            return (m.FinalFrame(session_id=msg.session_id, index=msg.index, pts=msg.pts,
                                 traceparent=msg.traceparent, deadline=msg.deadline,
                                 image=image, refined=refined),)
        if isinstance(msg, m.EndOfAudio):
            self._sessions.pop(msg.session_id, None)
        return (msg,)

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

