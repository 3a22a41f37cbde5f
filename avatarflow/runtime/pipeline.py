"""The embedded pipeline: every stage in one process over the in-memory bus, with sessions
opened through the same session front the gateway uses.

The stage code is the same the distributed services run; only the bus differs. Sessions get
the live features of the cluster (audio clock, silence on stalls, barge-in, frames with their
audio) unless the pipeline runs with ``FrontSettings.offline()``, as ``avatarflow demo`` does
for a whole file.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from avatarflow.avatars.registry import MemoryAvatarRegistry
from avatarflow.bus.keys import GATEWAY_GROUP
from avatarflow.bus.memory import MemoryBus
from avatarflow.runtime.registry import FRAMES, PIPELINE
from avatarflow.runtime.runner import StageRunner
from avatarflow.runtime.stage import Stage, StageStats
from avatarflow.runtime.tasks import TaskGroup
from avatarflow.session import (
    AvatarPath,
    Frame,
    FrontSettings,
    LiveSession,
    LocalPortraits,
    SessionFront,
    SessionSpec,
)
from avatarflow.session.portraits import Analyser

CHUNK_S = 0.02


@dataclass
class EmbeddedPipeline:
    """The four stages on one asyncio loop behind a session front.

    ``async with pipeline:`` runs the stages; inside, ``pipeline.session(spec)`` opens a live
    session, or ``run`` streams a whole recording::

        async with EmbeddedPipeline(build_stages()) as pipeline:  # runtime.build
            async with pipeline.session(spec) as s:
                await s.send_audio(pcm_20ms)  # and set_controls, interrupt, end
                async for event in s.events():  # Frame (picture + its audio), Gap, Latency
                    ...
    """

    stages: list[Stage[Any, Any]]
    settings: FrontSettings = field(default_factory=FrontSettings)
    # A few frames of slack per topic: enough to keep every stage busy, little enough that
    # frames (about 1 MB each) do not pile up in memory and latency stays low.
    bus: MemoryBus = field(default_factory=lambda: MemoryBus(maxsize=8))
    registry: MemoryAvatarRegistry = field(default_factory=MemoryAvatarRegistry)
    stats: dict[str, StageStats] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.runners = [StageRunner(spec, stage, self.bus)
                        for spec, stage in zip(PIPELINE, self.stages, strict=True)]
        self.stats = {r.spec.name: r.stats.process for r in self.runners}
        for spec in PIPELINE:
            self.bus.subscribe(spec.input, spec.group)
        self.bus.subscribe(FRAMES, GATEWAY_GROUP)
        renderer = cast(Analyser, self.stages[[s.name for s in PIPELINE].index("renderer")])
        self.front = SessionFront(
            self.bus, AvatarPath(self.registry, LocalPortraits(renderer, self.registry)),
            self.settings)
        self._tasks: TaskGroup | None = None

    async def __aenter__(self) -> EmbeddedPipeline:
        self._tasks = TaskGroup("embedded")
        for runner in self.runners:
            self._tasks.spawn(runner.run(), f"stage-{runner.spec.name}").add_done_callback(
                self._stage_stopped)
        self._tasks.spawn(self.front.dispatch(), "dispatch")
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.front.aclose()
        finally:
            if self._tasks is not None:
                tasks, self._tasks = self._tasks, None
                await tasks.__aexit__(*exc)

    def _stage_stopped(self, task: asyncio.Task[Any]) -> None:
        """A stage died: its sessions would wait forever, so they end with its error."""
        if task.cancelled() or task.exception() is None:
            return
        for s in list(self.front.sessions.values()):
            s.fail(cast(BaseException, task.exception()))

    @asynccontextmanager
    async def session(self, spec: SessionSpec) -> AsyncIterator[LiveSession]:
        """A live session, closed on every stage when the block ends (abandoned if its audio
        did not end and come through)."""
        if self._tasks is None:
            raise RuntimeError("the stages are not running: open sessions inside "
                               "`async with pipeline:`")
        s = await self.front.open(spec)
        try:
            yield s
        finally:
            await self.front.close(s)

    async def run(self, spec: SessionSpec, pcm: np.ndarray,
                  on_frame: Callable[[Frame], None]) -> int:
        """Streams one recording (int16 mono at ``spec.sample_rate``) in 20 ms chunks as fast
        as the pipeline takes them, calls ``on_frame`` for each frame in order and returns
        the frame count. Raises AvatarflowError if a stage rejects the session."""
        async with self.session(spec) as s, TaskGroup(f"feed-{s.sid}") as tasks:
            tasks.spawn(_feed(s, pcm), "feed")
            frames = 0
            async for event in s.events():
                if isinstance(event, Frame):
                    on_frame(event)
                    frames += 1
            return frames

    def close(self) -> None:
        for stage in self.stages:
            stage.close()


async def _feed(s: LiveSession, pcm: np.ndarray) -> None:
    """The recording in 20 ms chunks, then its end; a failure ends the session's events."""
    step = max(1, int(round(CHUNK_S * s.rate)))
    try:
        for start in range(0, pcm.size, step):
            await s.send_audio(pcm[start:start + step])
        await s.end()
    except Exception as exc:  # the caller is waiting on the events: it gets the error there
        s.fail(exc)
