"""One trace follows a frame through every service.

Every service runs its real server code (gateway, audio-encoder, motion-gen, renderer, refiner)
over a real redis-server, all in this process so that one in-memory span exporter sees every
span; between services the trace context travels only where it does in production: in the
stream envelope (and in gRPC metadata from the client to the gateway).
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from avatarflow.cli.serve import entry_point
from avatarflow.client.api import AvatarClient, run_session
from avatarflow.dev.net import free_port, serving
from avatarflow.dev.redis_server import RedisServer
from avatarflow.runtime.settings import SERVICES, Settings
from avatarflow.telemetry import tracing
from tests.integration.cluster_support import config

CLIENT_TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture()
def spans():
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider)
    yield exporter
    tracing.disable()


async def _services(redis_url: str) -> tuple[list[asyncio.Task], str]:
    ports = {s: free_port() for s in SERVICES}
    tasks = []
    for s in SERVICES:
        # Five services share this process and its GIL: a generous frame budget and no load
        # shedding keep a slow moment from dropping frames, which is not what this test is about.
        settings = Settings.load(s, environ={}, port=ports[s], metrics_port=-1,
                                 frame_budget_ms=10_000, shed_after_ms=0,
                                 redis_url=redis_url, consumer=f"{s}-traced", auth="off",
                                 renderer_target=f"127.0.0.1:{ports['renderer']}")
        serve = entry_point(s)
        tasks.append(asyncio.create_task(serve(settings), name=s))
    for s in SERVICES:
        for _ in range(600):
            if await asyncio.to_thread(serving, f"127.0.0.1:{ports[s]}", 0.2):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"{s} did not become SERVING")
    return tasks, f"127.0.0.1:{ports['gateway']}"


def test_one_frame_has_a_span_in_every_service_under_one_trace(spans, inputs: dict) -> None:
    rate = inputs["rate"]
    pcm = inputs["pcm"][int(0.3 * rate):int(1.3 * rate)]

    async def main():
        with RedisServer() as redis:
            tasks, target = await _services(redis.url)
            try:
                async with AvatarClient(target) as c:
                    avatar = (await c.register(inputs["portrait"].read_bytes())).avatar_id
                    return await run_session(c, config(avatar, rate), pcm, rate,
                                             metadata=(("traceparent", CLIENT_TRACE),))
            finally:
                for t in tasks:
                    t.cancel()
                for t in tasks:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await t

    rec = asyncio.run(main())
    assert len(rec.frames) >= 28 and rec.dropped == 0
    finished = spans.get_finished_spans()
    sends = [s for s in finished if s.name == tracing.SEND]
    assert len(sends) == len(rec.frames)
    by_id = {s.context.span_id: s for s in finished}
    frame = len(rec.frames) // 2
    send = next(s for s in sends if s.attributes["avatarflow.frame"] == frame)
    chain = [send]
    while chain[-1].parent is not None and chain[-1].parent.span_id in by_id:
        chain.append(by_id[chain[-1].parent.span_id])
    names = [s.name for s in reversed(chain)]
    assert names == ["audio chunk", "features", "motion", "render", "refine", "send"], names
    assert len({s.context.trace_id for s in chain}) == 1
    # The client's own trace context (gRPC metadata) is the root of the frame's trace.
    assert f"{chain[0].context.trace_id:032x}" == CLIENT_TRACE.split("-")[1]
    assert all(s.attributes["avatarflow.session_id"] == send.attributes["avatarflow.session_id"]
               for s in chain)
    # send, refine, render and motion took the frame in; features made it from the audio
    # chunk that completed it, the trace's root (chunk indexes count 20 ms chunks).
    assert [s.attributes["avatarflow.frame"] for s in chain[:4]] == [frame] * 4
    assert frame in chain[4].attributes["avatarflow.output_frames"]
    assert chain[5].attributes["avatarflow.message"] == "AudioChunk"
