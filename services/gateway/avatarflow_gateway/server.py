"""The gateway process: the public API over gRPC, feeding the pipeline on the Redis bus."""

from __future__ import annotations

import asyncio

import grpc

from avatarflow.bus.avatars import RedisAvatarRegistry
from avatarflow.bus.streams import RedisBus
from avatarflow.bus.tenants import RedisTenantLedger
from avatarflow.contracts.v1 import internal_pb2_grpc
from avatarflow.runtime.service import ServiceRuntime
from avatarflow.runtime.settings import Settings
from avatarflow.runtime.stage_service import REDIS_WAIT_S
from avatarflow.session import AvatarPath, FrontSettings, SessionFront
from avatarflow.telemetry import metrics
from avatarflow_gateway.admission import Admission
from avatarflow_gateway.auth import AuthInterceptor, load_keys
from avatarflow_gateway.capacity import session_limit
from avatarflow_gateway.portraits import RendererPortraits
from avatarflow_gateway.servicer import AvatarsServicer
from avatarflow_gateway.wire import add_avatars_to_server


def renderer_channel_target(target: str) -> str:
    """The renderer address as a DNS target, so that a name resolving to several renderer
    pods (the chart's headless Service) gets one subchannel per pod, used in turn."""
    return target if "://" in target or target.startswith(("dns:", "unix:", "ipv4:", "ipv6:")) \
        else f"dns:///{target}"


async def serve(settings: Settings) -> None:
    keys = load_keys(settings)  # first: without its keys the gateway does not start
    # next, before any connection: TLS files that do not load stop the gateway here
    runtime = ServiceRuntime(settings, [] if keys is None else [AuthInterceptor(keys)])
    bus = RedisBus(settings, block_ms=20)
    registry = RedisAvatarRegistry(settings)
    limit = int(settings.max_message_mb * 1024 * 1024)
    channel = grpc.aio.insecure_channel(renderer_channel_target(settings.renderer_target),
                                        options=[("grpc.max_send_message_length", limit),
                                                 ("grpc.max_receive_message_length", limit),
                                                 ("grpc.lb_policy_name", "round_robin")])
    avatars = AvatarPath(registry, RendererPortraits(internal_pb2_grpc.PortraitsStub(channel)))
    front = SessionFront(bus, avatars, FrontSettings.live(settings))
    metrics.track_sessions("gateway", lambda: len(front.sessions))
    metrics.GATEWAY_FPS.set_function(front.mean_fps)
    admission = Admission(RedisTenantLedger(bus.redis), session_limit(settings),
                          settings.avatar_ttl_s, on_full=runtime.set_full)
    runtime.add(add_avatars_to_server, AvatarsServicer(front, admission),
                "avatarflow.v1.Avatars")
    work = [front.dispatch(), admission.renew()]
    if keys is not None:
        work.append(keys.watch(settings.keys_reload_s))

    async def warm_up() -> None:
        await bus.wait_ready(REDIS_WAIT_S)

    async def drain() -> None:
        # Sessions in flight run to their end within the grace period; new ones are refused
        # by the health status (NOT_SERVING) and then by the server stopping.
        while front.sessions:
            await asyncio.sleep(0.05)

    try:
        await runtime.run(warm_up, work, drain)
    finally:
        await front.aclose()
        await admission.aclose()
        await channel.close()
        await bus.close()
        registry.close()
