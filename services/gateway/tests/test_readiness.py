"""Readiness under admission control: a service reports NOT_SERVING while full and SERVING
again below its limit, but never before it is warm nor once it drains."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from avatarflow.dev.net import free_port
from avatarflow.runtime.service import ServiceRuntime
from avatarflow.runtime.settings import Settings

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Stop(Exception):
    pass


def test_readiness_follows_fullness_and_never_serves_before_warm_up_or_while_draining() -> None:
    settings = Settings.load("gateway", environ={}, port=free_port(), metrics_port=-1,
                             listen_host="127.0.0.1", grace_s=2)
    runtime: ServiceRuntime
    seen: list[tuple[str, int]] = []

    async def status() -> int:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=10)
            return int(reply.status)

    async def warm_up() -> None:
        await runtime.set_full(False)  # room, but not warm yet
        seen.append(("warming", await status()))
        await runtime.set_full(True)  # full before it is even serving

    async def work() -> None:
        await asyncio.sleep(0.05)
        seen.append(("warm, full", await status()))
        for full, label in ((False, "room"), (True, "full"), (False, "room again")):
            await runtime.set_full(full)
            seen.append((label, await status()))
        raise Stop  # the service stops: it drains

    async def drain() -> None:
        await runtime.set_full(False)  # a session ends during the drain
        seen.append(("draining", await status()))

    async def main() -> None:
        nonlocal runtime
        runtime = ServiceRuntime(settings)  # in the loop it serves on
        await runtime.run(warm_up, [work()], drain)

    with pytest.raises(Stop):
        asyncio.run(main())
    assert seen == [("warming", NOT_SERVING), ("warm, full", NOT_SERVING), ("room", SERVING),
                    ("full", NOT_SERVING), ("room again", SERVING),
                    ("draining", NOT_SERVING)]
