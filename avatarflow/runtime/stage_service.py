"""One pipeline stage as a service process: a Redis-streams worker plus a gRPC server with
health, reflection and a ``Stage.Status`` call. ``serve`` runs any stage; a stage with gRPC
servicers of its own has a ``server`` module (registry) that calls ``serve_stage`` with them.

With ``colocate`` (the renderer's ``AVATARFLOW_RENDERER_COLOCATE=refiner``, the
audio-encoder's ``AVATARFLOW_AUDIO_ENCODER_COLOCATE=motion-gen``) the process also runs the
next stage: one Chain, one consumer of this stage's group that writes the next stage's output,
the messages between the two passed in memory (avatarflow.runtime.chain).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable

import numpy as np

from avatarflow.avatars.store import AvatarStore
from avatarflow.bus.avatars import RedisAvatarRegistry
from avatarflow.bus.streams import RedisBus
from avatarflow.contracts.errors import InvalidInput
from avatarflow.contracts.v1 import internal_pb2 as ipb
from avatarflow.contracts.v1 import internal_pb2_grpc
from avatarflow.runtime import registry
from avatarflow.runtime.build import build_stage
from avatarflow.runtime.chain import Chain
from avatarflow.runtime.registry import StageSpec
from avatarflow.runtime.runner import StageRunner
from avatarflow.runtime.service import ServiceRuntime
from avatarflow.runtime.settings import Settings
from avatarflow.runtime.stage import Stage
from avatarflow.telemetry import metrics, tracing
from avatarflow.telemetry.metrics import StageMeter

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
            frames=st.process.frames,
            dropped=st.dropped + (r.stage.dropped if isinstance(r.stage, Chain) else 0),
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


def colocated(settings: Settings) -> StageSpec | None:
    """The stage ``settings.colocate`` names, which this process runs too; it must read
    what this stage writes (the renderer can run the refiner, the audio-encoder motion-gen)."""
    if not settings.colocate:
        return None
    spec, other = registry.stage(settings.service), registry.stage(settings.colocate)
    if other.input != spec.output:
        host = next((s.name for s in registry.PIPELINE if s.output == other.input), "")
        if not host:
            raise InvalidInput(f"{settings.service}: colocate={settings.colocate!r}: the "
                               f"{other.name} reads from the gateway, no stage can run it")
        env = f"AVATARFLOW_{host.upper().replace('-', '_')}_COLOCATE={other.name}"
        raise InvalidInput(
            f"{settings.service}: colocate={settings.colocate!r} is not possible: the "
            f"{other.name} reads what the {host} writes, so only the {host} can run it in its "
            f"process; set {env} on the {host} alone (not AVATARFLOW_COLOCATE for every "
            "service) and leave colocate empty here")
    return other


def build(settings: Settings) -> tuple[Stage, RedisAvatarRegistry | None]:
    """The service's stage; one that works on portraits gets an avatar store backed by Redis
    (returned too), so every replica sees the portraits the gateway registered. With
    ``colocate``, a Chain of it and the co-located stage, which shares that store (the
    refiner finds the renderer's analysis in memory) and takes its engine and options from
    its own settings (AVATARFLOW_REFINER_*, AVATARFLOW_MOTION_GEN_*)."""
    spec, other = registry.stage(settings.service), colocated(settings)
    _limit_threads(settings.threads)
    avatars = spec.avatars or (other is not None and other.avatars)
    backing = RedisAvatarRegistry(settings) if avatars else None
    store = AvatarStore(backing=backing) if backing is not None else None
    stage = build_stage(spec.name, settings.engine, store=store, **settings.engine_kwargs())
    if other is None:
        return stage, backing
    own = Settings.load(other.name)
    second = build_stage(other.name, own.engine, store=store, **own.engine_kwargs())
    # Past twice the shedding threshold, rendering a shed frame (to pass it on unrefined) no
    # longer catches up: skip it, as a separate renderer would. (A first part that never
    # drops late frames, the audio-encoder, is never shed.)
    return Chain(stage, second, budget_s=settings.frame_budget_ms / 1000,
                 drop_behind_s=2 * settings.shed_after_ms / 1000), backing


def _report_per_part(chain: Chain, runner: StageRunner) -> None:
    """Metrics, spans and session gauges of a co-located process, per part, as separate
    processes report them (dashboards keep their per-stage series)."""
    for part, stats in chain.stats.items():
        stats.meter = StageMeter(part)
    # The parts time themselves: the runner's timing of the whole chain would count every
    # frame twice under the first part's label.
    runner.stats.process.meter = None
    # The parts' spans ("render" and "refine", "features" and "motion") are the stages' own;
    # the runner's span around both gets a name of its own.
    runner.span_name = "+".join(tracing.SPAN_NAMES.get(p, p) for p in chain.stats)
    for stage in chain.parts:  # each labelled as its own process would be
        metrics.track_sessions(stage.name, _counter(stage))


def _counter(stage: Stage) -> Callable[[], int]:
    return lambda: stage.session_count


async def serve_stage(settings: Settings,
                      extend: Callable[[ServiceRuntime, Stage, RedisAvatarRegistry | None], None]
                      | None = None) -> None:
    """Runs the stage named by ``settings.service`` until SIGTERM."""
    spec = registry.stage(settings.service)
    stage, backing = build(settings)
    own = stage  # the service's own stage
    if isinstance(stage, Chain):  # one consumer of this stage's group, writing the last output
        own, guest = stage.first, registry.stage(stage.second.name)
        spec = dataclasses.replace(spec, output=guest.output,
                                   offload=spec.offload or guest.offload)
    bus = RedisBus(settings)
    runner = StageRunner(spec, stage, bus, offload=spec.offload, batch=BATCH,
                         budget_s=settings.frame_budget_ms / 1000,
                         shed_after_s=settings.shed_after_ms / 1000)
    if isinstance(stage, Chain):
        _report_per_part(stage, runner)
    else:
        metrics.track_sessions(spec.name, _counter(stage))
    runtime = ServiceRuntime(settings)
    runtime.add(internal_pb2_grpc.add_StageServicer_to_server, StageServicer(runner, bus),
                "avatarflow.v1.Stage")
    if extend is not None:
        extend(runtime, own, backing)

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
