"""`avatarflow serve` picks its event loop from AVATARFLOW_EVENT_LOOP: uvloop by default, the
standard library's loop on request, and the standard loop with one warning when uvloop is not
installed. grpc.aio serves health checks and streaming calls on uvloop."""

from __future__ import annotations

import asyncio
import logging
import sys

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from avatarflow.cli import serve
from avatarflow.contracts.errors import InvalidInput
from avatarflow.runtime.service import loop_name
from avatarflow.runtime.settings import Settings

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _loop() -> str:
    return loop_name(asyncio.get_running_loop())


def _run(event_loop: str) -> str:
    """The name of the loop ``run_loop`` ran a coroutine on."""
    names: list[str] = []

    async def main() -> None:
        names.append(await _loop())

    serve.run_loop(main(), event_loop)
    return names[0]


def test_uvloop_is_the_default_and_asyncio_can_be_asked_for() -> None:
    assert Settings.load("motion-gen", {}).event_loop == "uvloop"
    assert Settings.load("motion-gen", {"AVATARFLOW_EVENT_LOOP": "asyncio"}).event_loop \
        == "asyncio"
    assert _run("uvloop") == "uvloop"
    assert _run("asyncio") == "asyncio"


def test_a_missing_uvloop_falls_back_with_one_warning(monkeypatch, caplog) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now fails
    with caplog.at_level(logging.WARNING, logger=serve.__name__):
        assert _run("uvloop") == "asyncio"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "uvloop is not installed" in warnings[0].getMessage()


def test_grpc_aio_serves_health_and_streams_on_uvloop() -> None:
    async def main() -> list[int]:
        assert await _loop() == "uvloop"
        server = grpc.aio.server()
        servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        await servicer.set("svc", NOT_SERVING)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                watch = stub.Watch(health_pb2.HealthCheckRequest(service="svc"))
                seen = [(await watch.read()).status]
                await servicer.set("svc", SERVING)  # a server-streaming call sees the change
                seen.append((await watch.read()).status)
                watch.cancel()
                check = await stub.Check(health_pb2.HealthCheckRequest(service="svc"),
                                         timeout=10)
                seen.append(check.status)
        finally:
            await server.stop(0)
        return seen

    seen: list[list[int]] = []

    async def wrapped() -> None:
        seen.append(await asyncio.wait_for(main(), 30))

    serve.run_loop(wrapped(), "uvloop")
    assert seen == [[NOT_SERVING, SERVING, SERVING]]


@pytest.mark.parametrize("value", ["libuv", ""])
def test_an_unknown_loop_is_refused_at_start(value: str) -> None:
    with pytest.raises(InvalidInput, match="invalid setting.*event_loop"):
        Settings.load("gateway", {"AVATARFLOW_EVENT_LOOP": value})
