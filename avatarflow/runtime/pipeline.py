"""The embedded pipeline: every stage in one process over the in-memory bus.

The stage code is the same the distributed services run; only the bus differs.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from avatarflow.avatars.store import AvatarStore
from avatarflow.bus.memory import MemoryBus
from avatarflow.contracts import messages as m
from avatarflow.contracts.errors import AvatarflowError, InvalidInput
from avatarflow.runtime.registry import AUDIO, DEFAULT_ENGINES, FRAMES, PIPELINE
from avatarflow.runtime.runner import StageRunner
from avatarflow.runtime.stage import Stage, StageStats
from avatarflow.runtime.tasks import TaskGroup

log = logging.getLogger(__name__)

SINK_GROUP = "sink"


class SessionFailed(AvatarflowError):
    """A stage rejected the session; carries the stage's category and message."""

    def __init__(self, err: m.SessionError) -> None:
        super().__init__(f"{err.stage}: {err.message}")
        self.category = err.category
        self.stage = err.stage


def build_stages(engines: dict[str, str] | None = None,
                 options: dict[str, dict[str, Any]] | None = None) -> list[Stage]:
    """Instantiates every stage with its chosen engine; renderer and refiner share avatars."""
    engines = {**DEFAULT_ENGINES, **(engines or {})}
    unknown = set(engines) - set(DEFAULT_ENGINES)
    if unknown:
        raise InvalidInput(f"unknown stage(s) {sorted(unknown)}; stages: {list(DEFAULT_ENGINES)}")
    store = AvatarStore()
    stages = []
    for spec in PIPELINE:
        opts = dict((options or {}).get(spec.name, {}))
        if spec.name in ("renderer", "refiner"):
            opts["store"] = store
        module = importlib.import_module(spec.module)
        stages.append(module.build_stage(engines[spec.name], **opts))
    return stages


@dataclass
class EmbeddedPipeline:
    """Runs sessions through the four stages on one asyncio loop."""

    stages: list[Stage]
    # A few frames of slack per topic: enough to keep every stage busy, little enough that
    # frames (about 1 MB each) do not pile up in memory and latency stays low.
    bus: MemoryBus = field(default_factory=lambda: MemoryBus(maxsize=8))
    stats: dict[str, StageStats] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.runners = [StageRunner(spec, stage, self.bus)
                        for spec, stage in zip(PIPELINE, self.stages, strict=True)]
        self.stats = {r.spec.name: r.stats.process for r in self.runners}
        for spec in PIPELINE:
            self.bus.subscribe(spec.input, spec.group)
        self.bus.subscribe(FRAMES, SINK_GROUP)

    async def run(self, start: m.SessionStart, chunks: Iterable[m.AudioChunk] | AsyncIterator,
                  on_frame: Callable[[m.FinalFrame], None]) -> int:
        """Streams one session: ``start``, the audio chunks, end of audio. Calls ``on_frame``
        for each final frame in order and returns the frame count. Raises SessionFailed if a
        stage rejects the session."""
        sid = start.session_id
        async with TaskGroup("embedded") as tasks:
            for runner in self.runners:
                tasks.spawn(runner.run(), f"stage-{runner.spec.name}")
            tasks.spawn(self._feed(start, chunks), "feed")
            frames = 0
            while True:
                try:
                    msg = (await asyncio.wait_for(self.bus.receive(FRAMES, SINK_GROUP), 0.5)).msg
                except TimeoutError:
                    tasks.check()  # a stage or the feeder died: surface its error
                    continue
                if msg.session_id != sid:
                    continue
                if isinstance(msg, m.FinalFrame):
                    on_frame(msg)
                    frames += 1
                elif isinstance(msg, m.SessionError):
                    raise SessionFailed(msg)
                elif isinstance(msg, m.EndOfAudio):
                    return frames

    async def _feed(self, start: m.SessionStart, chunks: Any) -> None:
        await self.bus.publish(AUDIO, start)
        index = 0
        async for chunk in _aiter(chunks):
            await self.bus.publish(AUDIO, chunk)
            index += 1
        await self.bus.publish(AUDIO, m.EndOfAudio(session_id=start.session_id, index=index))

    def close(self) -> None:
        for stage in self.stages:
            stage.close()


async def _aiter(chunks: Iterable[m.AudioChunk] | AsyncIterator[m.AudioChunk]
                 ) -> AsyncIterator[m.AudioChunk]:
    """Audio from a list (a file) or an async source (a live stream), one way."""
    if hasattr(chunks, "__aiter__"):
        async for chunk in chunks:
            yield chunk
    else:
        for chunk in chunks:
            yield chunk
