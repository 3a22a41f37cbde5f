"""The renderer stage: analyses the portrait on SessionStart, turns MotionFrames into
RenderedFrames (the body pass)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from avatarflow import messages as m
from avatarflow.avatar import Avatar, AvatarStore
from avatarflow.errors import InvalidInput, NotFound
from avatarflow.images import decode_image
from avatarflow.output import validate_output
from avatarflow.stage import Stage
from avatarflow_renderer import engines


class RendererStage(Stage):
    """Motion -> body-pass frames, one analysed avatar per session."""

    name = "renderer"

    def __init__(self, engine: str = "warp", store: AvatarStore | None = None,
                 **options: Any) -> None:
        self.engine = engines.create(engine, **options)
        self.store = store if store is not None else AvatarStore()
        self._sessions: dict[str, Avatar] = {}

    def _avatar(self, msg: m.SessionStart) -> Avatar:
        validate_output(msg.mode, msg.width, msg.height, msg.fps)
        key = msg.avatar_id or msg.session_id
        if not msg.image and key in self.store:
            avatar = self.store.get(key)
            if (avatar.mode, avatar.width, avatar.height) == (msg.mode, msg.width, msg.height):
                return avatar
            raise InvalidInput(
                f"avatar {key!r} was analysed for {avatar.mode} {avatar.width}x{avatar.height};"
                f" send the image again to use {msg.mode} {msg.width}x{msg.height}")
        if not msg.image:
            raise NotFound(f"unknown avatar id {key!r} and no image to analyse")
        avatar = self.engine.prepare(decode_image(msg.image), key, msg.mode, msg.width,
                                     msg.height)
        self.store.put(avatar)
        return avatar

    def process(self, msg: m.Message) -> Iterable[m.Message]:
        if isinstance(msg, m.SessionStart):
            self._sessions[msg.session_id] = self._avatar(msg)
            return (msg,)
        if isinstance(msg, m.MotionFrame):
            avatar = self._sessions.get(msg.session_id)
            if avatar is None:
                raise NotFound(f"unknown session {msg.session_id!r}: no SessionStart seen")
            image = self.engine.render(avatar, msg)
            return (m.RenderedFrame(session_id=msg.session_id, index=msg.index, pts=msg.pts,
                                    traceparent=msg.traceparent, deadline=msg.deadline,
                                    image=image, motion=msg),)
        if isinstance(msg, m.EndOfAudio):
            self._sessions.pop(msg.session_id, None)
        return (msg,)

    def close(self) -> None:
        self._sessions.clear()
        self.engine.close()
