"""One pipeline stage as a service process: a Redis-streams worker plus a gRPC server with
health, reflection and a ``Stage.Status`` call. ``serve`` runs any stage; a stage with gRPC
servicers of its own has a ``server`` module (registry) that calls ``serve_stage`` with them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import numpy as np

from avatarflow.avatars.store import AvatarStore
from avatarflow.bus.avatars import RedisAvatarRegistry
from avatarflow.bus.streams import RedisBus
from avatarflow.contracts.v1 import internal_pb2 as ipb
from avatarflow.contracts.v1 import internal_pb2_grpc
from avatarflow.runtime import registry
from avatarflow.runtime.build import build_stage
from avatarflow.runtime.runner import StageRunner
from avatarflow.runtime.service import ServiceRuntime
from avatarflow.runtime.settings import Settings
from avatarflow.runtime.stage import Stage
from avatarflow.telemetry import metrics

log = logging.getLogger(__name__)

REDIS_WAIT_S = 30.0
BATCH = 8  # messages handled per thread hand-off and bus round trip, when waiting


class StageServicer(internal_pb2_grpc.StageServicer):
    def __init__(self, runner: StageRunner, bus: RedisBus) -> None:
        self.runner, self.bus = runner, bus

    async def Status(self, request: ipb.StatusRequest, context: object) -> ipb.StageStatus:
        r, st = self.runner, self.runner.stats
        hop = st.hop
        lat = np.asarray(hop.latency_s[-5000:] or [0.0]) * 1e3
        proc = st.process.summary()
        return ipb.StageStatus(
            service=r.spec.name, consumer=self.bus.consumer,
            sessions=self.bus.session_count(r.spec.input, r.spec.group),
            frames=st.process.frames, dropped=st.dropped,
            degraded=r.stage.degraded, recovered=st.recovered,
            input=ipb.HopStats(topic=r.spec.input, messages=hop.messages,
                               bytes_per_frame=hop.frame_bytes / max(1, hop.frames),
                               p50_ms=float(np.median(lat)), p99_ms=float(np.percentile(lat, 99))),
            process_p50_ms=proc["median_ms"], process_p99_ms=proc["p99_ms"])


def _limit_threads(threads: int) -> None:
    """OpenCV keeps its own thread pool (the BLAS ones are capped before numpy loads, in
    ``avatarflow.cli.main``): one replica, ``threads`` cores; scale out with replicas."""
    try:
        import cv2
    except ModuleNotFoundError:
        return
    cv2.setNumThreads(threads)


def build(settings: Settings) -> tuple[Stage, RedisAvatarRegistry | None]:
    """The service's stage; one that works on portraits gets an avatar store backed by Redis
    (returned too), so every replica sees the portraits the gateway registered."""
    spec = registry.stage(settings.service)
    _limit_threads(settings.threads)
    backing = RedisAvatarRegistry(settings) if spec.avatars else None
    store = AvatarStore(backing=backing) if backing is not None else None
    return build_stage(spec.name, settings.engine, store=store,
                       **settings.engine_kwargs()), backing


async def serve_stage(settings: Settings,
                      extend: Callable[[ServiceRuntime, Stage, RedisAvatarRegistry | None], None]
                      | None = None) -> None:
    """Runs the stage named by ``settings.service`` until SIGTERM."""
    spec = registry.stage(settings.service)
    stage, backing = build(settings)
    bus = RedisBus(settings)
    runner = StageRunner(spec, stage, bus, offload=spec.offload, batch=BATCH,
                         budget_s=settings.frame_budget_ms / 1000,
                         shed_after_s=settings.shed_after_ms / 1000)
    metrics.track_sessions(spec.name, lambda: stage.session_count)
    runtime = ServiceRuntime(settings)
    runtime.add(internal_pb2_grpc.add_StageServicer_to_server, StageServicer(runner, bus),
                "avatarflow.v1.Stage")
    if extend is not None:
        extend(runtime, stage, backing)

    async def warm_up() -> None:
        await bus.wait_ready(REDIS_WAIT_S)

    async def drain() -> None:
        await bus.release()  # other replicas take our sessions over at once
        while runner.busy:
            await asyncio.sleep(0.01)

    try:
        await runtime.run(warm_up, [runner.run()], drain)
    finally:
        await bus.close()
        stage.close()
        if backing is not None:
            backing.close()


async def serve(settings: Settings) -> None:
    """The entry point of a stage that adds nothing to the generic stage service."""
    await serve_stage(settings)
