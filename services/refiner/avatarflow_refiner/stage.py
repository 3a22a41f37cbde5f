"""The refiner stage: RenderedFrame (body pass) -> FinalFrame with a refined face."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from avatarflow import messages as m
from avatarflow.avatar import Avatar, AvatarStore
from avatarflow.errors import NotFound
from avatarflow.stage import Stage
from avatarflow_refiner import engines


class RefinerStage(Stage):
    """Looks the session's avatar up in the shared store and refines every frame's face."""

    name = "refiner"

    def __init__(self, engine: str = "blend", store: AvatarStore | None = None,
                 **options: Any) -> None:
        self.engine = engines.create(engine, **options)
        self.store = store if store is not None else AvatarStore()
        self._sessions: dict[str, Avatar] = {}

    def process(self, msg: m.Message) -> Iterable[m.Message]:
        if isinstance(msg, m.SessionStart):
            self._sessions[msg.session_id] = self.store.get(msg.avatar_id or msg.session_id)
            return (msg,)
        if isinstance(msg, m.RenderedFrame):
            avatar = self._sessions.get(msg.session_id)
            if avatar is None:
                raise NotFound(f"unknown session {msg.session_id!r}: no SessionStart seen")
            image = self.engine.refine(avatar, msg.image, msg.motion)
            return (m.FinalFrame(session_id=msg.session_id, index=msg.index, pts=msg.pts,
                                 traceparent=msg.traceparent, deadline=msg.deadline,
                                 image=image),)
        if isinstance(msg, m.EndOfAudio):
            self._sessions.pop(msg.session_id, None)
        return (msg,)

    def close(self) -> None:
        self._sessions.clear()
        self.engine.close()
