"""The renderer stage: analyses the portrait on SessionStart, turns MotionFrames into
RenderedFrames (the body pass).

An avatar is analysed once per output format (here, not by the engines: they get the analysed
avatar) and stored under ``avatar_key``; a SessionStart without an image reuses the analysis
for its format, which ``prepare_avatar`` (the Prepare call) or an earlier session with the
image made.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from avatarflow.avatars.sessions import AvatarStage
from avatarflow.avatars.store import Avatar, AvatarStore
from avatarflow.contracts import messages as m
from avatarflow.contracts.errors import InvalidInput
from avatarflow.contracts.images import decode_image
from avatarflow.contracts.output import MIN_FPS, validate_output
from avatarflow.contracts.picture import Picture
from avatarflow_renderer import engines
from avatarflow_renderer.analysis import PortraitAnalyser


class RendererStage(AvatarStage[m.MotionFrame]):
    """Motion -> body-pass frames, one analysed avatar per session."""

    name = "renderer"
    accepts = m.MotionFrame

    def __init__(self, engine: str = "warp", store: AvatarStore | None = None,
                 **options: Any) -> None:
        super().__init__(store)
        self.engine: engines.RenderEngine = engines.create(engine, **options)
        self.batches = self.engine.batches
        self._analyser: PortraitAnalyser | None = None  # mediapipe graphs, built when needed
        self._analyser_lock = threading.Lock()

    def prepare_avatar(self, image: bytes, avatar_id: str, mode: str, width: int,
                       height: int) -> Avatar:
        """Analyses an encoded portrait for one output format, stores it and warms the
        engine for it."""
        validate_output(mode, width, height, MIN_FPS)  # any fps: an avatar does not depend on it
        if not avatar_id:
            raise InvalidInput("an avatar needs a non-empty id")
        avatar = self._portraits().analyse(decode_image(image), avatar_id, mode, width, height)
        self.engine.warm(avatar)
        self.store.put(avatar)
        return avatar

    def start(self, msg: m.SessionStart) -> Avatar:
        validate_output(msg.mode, msg.width, msg.height, msg.fps)
        if msg.image:
            return self.prepare_avatar(msg.image, msg.avatar_id or msg.session_id, msg.mode,
                                       msg.width, msg.height)
        avatar = self.stored_avatar(msg, "send the image or register it for that format")
        self.engine.warm(avatar)
        return avatar

    def frame(self, session: Avatar, msg: m.MotionFrame) -> list[m.Message]:
        return [self._rendered(msg, self.engine.render(session, msg))]

    def frames(self, items: Sequence[tuple[Avatar, m.MotionFrame]]) -> list[list[m.Message]]:
        """Frames of several sessions in one render call (one forward for a network)."""
        images = self.engine.render_batch(items)
        return [[self._rendered(msg, image)] for (_, msg), image in zip(items, images,
                                                                       strict=True)]

    def _portraits(self) -> PortraitAnalyser:
        with self._analyser_lock:
            if self._analyser is None:
                self._analyser = PortraitAnalyser()
            return self._analyser

    @staticmethod
    def _rendered(msg: m.MotionFrame, image: np.ndarray) -> m.RenderedFrame:
        return m.RenderedFrame(session_id=msg.session_id, index=msg.index, pts=msg.pts,
                               traceparent=msg.traceparent, deadline=msg.deadline,
                               image=Picture(image), motion=msg)

    def close(self) -> None:
        self._sessions.clear()
        self.engine.close()
        with self._analyser_lock:
            if self._analyser is not None:
                self._analyser.close()
                self._analyser = None
