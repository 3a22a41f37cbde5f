"""The renderer stage: analyses the portrait on SessionStart, turns MotionFrames into
RenderedFrames (the body pass).

An avatar is analysed once per output format (here, not by the engines: they get the analysed
avatar) and stored under ``avatar_key``; a SessionStart without an image reuses the analysis
for its format, which ``prepare_avatar`` (the Prepare call) or an earlier session with the
image made.

Motion frames that carry a LivePortrait motion block (``MotionFrame.liveportrait``) are relative
to the session's first such block, its *anchor* (JoyVASA's first frame): the stage keeps it per
session beside the avatar, through barge-ins, and saves it in the session's snapshot so another
replica continues from the same anchor.
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
from avatarflow.runtime import state
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
        # Per session, the first LivePortrait motion block: what later blocks are relative to
        # (JoyVASA's first frame). It outlives barge-ins and travels with the snapshot.
        self._anchors: dict[str, m.LivePortraitMotion] = {}
        self._fresh: set[str] = set()  # sessions whose anchor is not in a snapshot yet

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
        self._anchors.pop(msg.session_id, None)  # a new session starts from its own first frame
        validate_output(msg.mode, msg.width, msg.height, msg.fps)
        if msg.image:
            return self.prepare_avatar(msg.image, msg.avatar_id or msg.session_id, msg.mode,
                                       msg.width, msg.height)
        avatar = self.stored_avatar(msg, "send the image or register it for that format")
        self.engine.warm(avatar)
        return avatar

    def frame(self, session: Avatar, msg: m.MotionFrame) -> list[m.Message]:
        return [self._rendered(msg, self.engine.render(session, msg, self._anchor(msg)))]

    def frames(self, items: Sequence[tuple[Avatar, m.MotionFrame]]) -> list[list[m.Message]]:
        """Frames of several sessions in one render call (one forward for a network)."""
        images = self.engine.render_batch(items, [self._anchor(msg) for _, msg in items])
        return [[self._rendered(msg, image)] for (_, msg), image in zip(items, images,
                                                                       strict=True)]

    def shed(self, msg: m.Message) -> list[m.Message]:
        """Skips a frame it is behind on, but a session's first LivePortrait block still
        becomes its anchor."""
        if isinstance(msg, m.MotionFrame) and msg.session_id in self._sessions:
            self._anchor(msg)
        return []

    # -- the anchors of LivePortrait motion: session state beside the avatar ----------------

    def _anchor(self, msg: m.MotionFrame) -> m.LivePortraitMotion | None:
        """The session's anchor, set from ``msg`` when it is the session's first block."""
        block = msg.liveportrait
        if block is None:
            return None
        anchor = self._anchors.setdefault(msg.session_id, block)
        if anchor is block:
            self._fresh.add(msg.session_id)
        return anchor

    def state_changed_by(self, msg: m.Message) -> bool:
        if msg.session_id in self._fresh:
            self._fresh.discard(msg.session_id)
            return True
        return super().state_changed_by(msg)

    def snapshot(self, session_id: str) -> bytes | None:
        data = super().snapshot(session_id)
        anchor = self._anchors.get(session_id)
        return data if data is None or anchor is None else state.dumps((data, anchor))

    def restore(self, session_id: str, data: bytes) -> None:
        saved = state.loads(data)
        if not isinstance(saved, tuple):  # no anchor yet: the avatar's key alone
            super().restore(session_id, data)
            return
        if (len(saved) != 2 or not isinstance(saved[0], bytes)
                or not isinstance(saved[1], m.LivePortraitMotion)):
            raise state.StateError("renderer session state is not (avatar, anchor)")
        super().restore(session_id, saved[0])
        self._anchors[session_id] = saved[1]

    def end(self, session_id: str) -> None:
        super().end(session_id)
        self._anchors.pop(session_id, None)
        self._fresh.discard(session_id)

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
        self._anchors.clear()
        self.engine.close()
        with self._analyser_lock:
            if self._analyser is not None:
                self._analyser.close()
                self._analyser = None
