"""The refiner stage: RenderedFrame (body pass) -> FinalFrame with a refined face.

A frame that would miss its deadline if refined goes out as the body pass (``refined=False``):
a slightly softer face on time beats a sharp one too late.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from avatarflow.avatars.sessions import AvatarStage
from avatarflow.avatars.store import Avatar, AvatarStore
from avatarflow.contracts import messages as m
from avatarflow.contracts.picture import Picture
from avatarflow_refiner import engines


class RefinerStage(AvatarStage[m.RenderedFrame]):
    """Looks the session's avatar up in the shared store and refines every frame's face."""

    name = "refiner"
    accepts = m.RenderedFrame

    def __init__(self, engine: str = "blend", store: AvatarStore | None = None,
                 refine_margin_s: float = 0.010, **options: Any) -> None:
        super().__init__(store)
        self.engine: engines.RefineEngine = engines.create(engine, **options)
        self.batches = self.engine.batches
        self.refine_margin_s = refine_margin_s  # refining takes about this long

    def start(self, msg: m.SessionStart) -> Avatar:
        avatar = self.stored_avatar(msg, "the renderer stores it on SessionStart")
        self.engine.warm(avatar)
        return avatar

    def frame(self, session: Avatar, msg: m.RenderedFrame) -> list[m.Message]:
        if not self._in_time(msg):
            return [self._final(msg, msg.image, refined=False)]
        image = self.engine.refine(session, msg.image.rgb(), msg.motion)
        return [self._final(msg, Picture(image), refined=True)]

    def frames(self, items: Sequence[tuple[Avatar, m.RenderedFrame]]) -> list[list[m.Message]]:
        """Frames of several sessions refined in one batch; frames too late to refine pass on
        as they are."""
        in_time = [self._in_time(msg) for _, msg in items]
        todo = [(a, msg.image.rgb(), msg.motion)
                for (a, msg), ok in zip(items, in_time, strict=True) if ok]
        images = iter(self.engine.refine_batch(todo) if todo else ())
        return [[self._final(msg, Picture(next(images)), refined=True) if ok
                 else self._final(msg, msg.image, refined=False)]
                for (_, msg), ok in zip(items, in_time, strict=True)]

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

    def close(self) -> None:
        self._sessions.clear()
        self.engine.close()
