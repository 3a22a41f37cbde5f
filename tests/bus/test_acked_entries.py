"""Redis memory per session on a real redis-server: an entry a stage (or the gateway) has
acknowledged is deleted from the session's data stream at once, so a session that keeps up
holds almost nothing in Redis, however long it runs; the control stream, which every stage's
group reads, keeps its entries; a backlog is bounded by ``stream_maxlen``."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from avatarflow.bus import keys
from avatarflow.bus.base import Commit
from avatarflow.bus.streams import RedisBus
from avatarflow.contracts import messages as m
from avatarflow.contracts.controls import Controls
from avatarflow.contracts.picture import Picture
from avatarflow.dev.redis_server import RedisServer
from avatarflow.runtime.registry import AUDIO, FEATURES, FRAMES
from avatarflow.runtime.settings import Settings

GROUP = "audio-encoder-workers"


@pytest.fixture(scope="module")
def redis_url():
    with RedisServer() as server:
        yield server.url


def _bus(url: str, service: str, consumer: str, **kw: int) -> RedisBus:
    settings = Settings.load(service, environ={}, redis_url=url, consumer=consumer,
                             heartbeat_ms=50, claim_idle_ms=200, **kw)
    return RedisBus(settings, block_ms=20)


def _chunk(sid: str, i: int) -> m.AudioChunk:
    return m.AudioChunk(session_id=sid, index=i, sample_rate=16000,
                        pcm=np.full(320, i, np.int16))


def test_acknowledged_entries_leave_the_data_stream_not_the_control_stream(
        redis_url: str) -> None:
    async def main() -> None:
        source = _bus(redis_url, "gateway", "gw")
        stage = _bus(redis_url, "audio-encoder", "enc-a")
        await source.publish(AUDIO, m.SessionStart(session_id="a1", avatar_id="x"))
        await source.publish(AUDIO, m.ControlUpdate(session_id="a1", controls=Controls()))
        for i in range(40):
            await source.publish(AUDIO, _chunk("a1", i))
        for _ in range(42):
            d = await asyncio.wait_for(stage.receive(AUDIO, GROUP), 5)
            out = [] if isinstance(d.msg, m.ControlUpdate) else [m.AudioFeatures(
                session_id="a1", index=0, features=np.zeros(4, np.float32))]
            assert await stage.commit(d, FEATURES, out)
        r = source.redis
        assert await r.xlen(keys.stream("a1", AUDIO)) == 0  # all acknowledged: all gone
        assert await r.xlen(keys.stream("a1", FEATURES)) == 41  # not read yet: all kept
        assert await r.xlen(keys.stream("a1", keys.CTL)) == 1  # other stages still read it
        for bus in (source, stage):
            await bus.close()

    asyncio.run(main())


def test_the_gateways_acknowledged_frames_leave_redis(redis_url: str) -> None:
    """The final frames (the biggest entries) are deleted once the gateway has taken them."""
    async def main() -> None:
        source = _bus(redis_url, "gateway", "gw-f")
        await source.publish(AUDIO, m.SessionStart(session_id="f1", avatar_id="x"))
        source.attach("f1", FRAMES)
        # A stage standing in for the refiner: the frames come from a commit, as they do.
        stage = _bus(redis_url, "audio-encoder", "enc-f")
        d = await asyncio.wait_for(stage.receive(AUDIO, GROUP), 5)
        picture = Picture(np.zeros((64, 64, 3), np.uint8))
        frames = [m.FinalFrame(session_id="f1", index=i, pts=i / 30, image=picture)
                  for i in range(20)]
        assert await stage.commit(d, FRAMES, frames)
        got = []
        while len(got) < 20:
            batch = await asyncio.wait_for(source.receive_batch(FRAMES, keys.GATEWAY_GROUP, 16),
                                           5)
            got += batch
            await source.commit_many(None, [Commit(x, ()) for x in batch])
        assert [x.msg.index for x in got] == list(range(20))
        assert await source.redis.xlen(keys.stream("f1", FRAMES)) == 0
        for bus in (source, stage):
            await bus.close()

    asyncio.run(main())


def test_a_backlog_is_bounded_by_stream_maxlen(redis_url: str) -> None:
    """A stage that is down: its input stream keeps about ``stream_maxlen`` entries."""
    async def main() -> None:
        source = _bus(redis_url, "gateway", "gw-b", stream_maxlen=64)
        await source.publish(AUDIO, m.SessionStart(session_id="b1", avatar_id="x"))
        for i in range(1000):
            await source.publish(AUDIO, _chunk("b1", i))
        # Approximate trimming drops whole nodes of the stream (100 entries at most).
        assert 64 <= await source.redis.xlen(keys.stream("b1", AUDIO)) <= 64 + 100
        await source.close()

    asyncio.run(main())
