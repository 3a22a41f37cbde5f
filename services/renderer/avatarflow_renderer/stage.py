"""The renderer stage: analyses the portrait on SessionStart, turns MotionFrames into
RenderedFrames (the body pass).

An avatar is analysed once per output format and stored under ``avatar_key``; a SessionStart
without an image reuses the analysis for its format, which ``prepare_avatar`` (the Prepare call)
or an earlier session with the image made.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from avatarflow.avatars.store import Avatar, AvatarSessions, AvatarStore, avatar_key
from avatarflow.contracts import messages as m
from avatarflow.contracts.errors import InvalidInput, NotFound
from avatarflow.contracts.images import decode_image
from avatarflow.contracts.output import MIN_FPS, validate_output
from avatarflow.contracts.picture import Picture
from avatarflow.runtime.stage import Stage
from avatarflow_renderer import engines


class RendererStage(AvatarSessions, Stage):
    """Motion -> body-pass frames, one analysed avatar per session."""

    name = "renderer"
    drops_late = True
    _sessions: dict[str, Avatar]

    def __init__(self, engine: str = "warp", store: AvatarStore | None = None,
                 **options: Any) -> None:
        super().__init__()
        self.engine = engines.create(engine, **options)
        self.store = store if store is not None else AvatarStore()

    def prepare_avatar(self, image: bytes, avatar_id: str, mode: str, width: int,
                       height: int) -> Avatar:
        """Analyses an encoded portrait for one output format and stores it."""
        validate_output(mode, width, height, MIN_FPS)  # any fps: an avatar does not depend on it
        if not avatar_id:
            raise InvalidInput("an avatar needs a non-empty id")
        avatar = self.engine.prepare(decode_image(image), avatar_id, mode, width, height)
        self.store.put(avatar)
        return avatar

    def _avatar(self, msg: m.SessionStart) -> Avatar:
        validate_output(msg.mode, msg.width, msg.height, msg.fps)
        avatar_id = msg.avatar_id or msg.session_id
        if msg.image:
            return self.prepare_avatar(msg.image, avatar_id, msg.mode, msg.width, msg.height)
        try:
            return self.store.get(avatar_key(avatar_id, msg.mode, msg.width, msg.height))
        except NotFound:
            raise NotFound(f"avatar {avatar_id!r} has not been analysed for {msg.mode} "
                           f"{msg.width}x{msg.height}: send the image or register it for that "
                           "format") from None

    def process(self, msg: m.Message) -> Iterable[m.Message]:
        if isinstance(msg, m.SessionStart):
            self._sessions[msg.session_id] = avatar = self._avatar(msg)
            self.engine.warm(avatar)
            return (msg,)
        if isinstance(msg, m.MotionFrame):
            avatar = self._sessions.get(msg.session_id)
            if avatar is None:
                raise NotFound(f"unknown session {msg.session_id!r}: no SessionStart seen")
            return (self._rendered(msg, self.engine.render(avatar, msg)),)
        if isinstance(msg, m.EndOfAudio):
            self._sessions.pop(msg.session_id, None)
        return (msg,)

    def process_frames(self, msgs: list[m.Message]) -> list[Iterable[m.Message]] | None:
        """Frames of several sessions in one batched render, when the engine batches."""
        render_batch = getattr(self.engine, "render_batch", None)
        if render_batch is None or not all(
                isinstance(x, m.MotionFrame) and x.session_id in self._sessions for x in msgs):
            return None
        images = render_batch([(self._sessions[x.session_id], x) for x in msgs])
        return [(self._rendered(x, image),) for x, image in zip(msgs, images, strict=True)]

    @staticmethod
    def _rendered(msg: m.MotionFrame, image) -> m.RenderedFrame:
        return m.RenderedFrame(session_id=msg.session_id, index=msg.index, pts=msg.pts,
                               traceparent=msg.traceparent, deadline=msg.deadline,
                               image=Picture(image), motion=msg)

    def close(self) -> None:
        self._sessions.clear()
        self.engine.close()
