"""The Redis bus on a real redis-server: order per session, barge-in purge, sessions shared
between replicas, and takeover of a dead replica's session with its state, without the dead
replica ever publishing again."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from avatarflow.bus import connect, keys
from avatarflow.bus.streams import RedisBus
from avatarflow.contracts import messages as m
from avatarflow.runtime.registry import AUDIO, FEATURES
from avatarflow.runtime.settings import Settings

GROUP = "audio-encoder-workers"


def _bus(url: str, service: str, consumer: str) -> RedisBus:
    settings = Settings.load(service, environ={}, redis_url=url, consumer=consumer,
                             heartbeat_ms=50, claim_idle_ms=200)
    return RedisBus(settings, block_ms=20)


def _sync(url: str):
    """A blocking client of ``url`` (a cluster's too)."""
    return connect.sync_client(Settings.load("gateway", environ={}, redis_url=url))


def _chunk(sid: str, i: int) -> m.AudioChunk:
    return m.AudioChunk(session_id=sid, index=i, sample_rate=16000,
                        pcm=np.full(320, i, np.int16))


async def _open(source: RedisBus, sid: str, chunks: int, turn: int = 0) -> None:
    await source.publish(AUDIO, m.SessionStart(session_id=sid, avatar_id="x"))
    for i in range(chunks):
        await source.publish(AUDIO, _chunk(sid, i), turn=turn)


def test_messages_arrive_in_order_and_outputs_reach_the_next_stage(redis_url: str) -> None:
    async def main() -> None:
        source = _bus(redis_url, "gateway", "gw")
        stage = _bus(redis_url, "audio-encoder", "enc-1")
        down = _bus(redis_url, "motion-gen", "mg-1")
        await _open(source, "s1", 5)
        got = []
        for _ in range(6):
            d = await asyncio.wait_for(stage.receive(AUDIO, GROUP), 5)
            got.append(d.msg)
            feats = [m.AudioFeatures(session_id="s1", index=d.msg.index,
                                     features=np.zeros(4, np.float32))]
            out = [d.msg] if isinstance(d.msg, m.SessionStart) else feats
            assert await stage.commit(d, FEATURES, out, state=b"st")
        assert isinstance(got[0], m.SessionStart)
        assert [c.index for c in got[1:]] == list(range(5))
        assert all(int(c.pcm[0]) == c.index for c in got[1:])
        first = await asyncio.wait_for(down.receive(FEATURES, "motion-gen-workers"), 5)
        assert isinstance(first.msg, m.SessionStart)
        assert first.size > 0 and first.published_at > 0
        for bus in (source, stage, down):
            await bus.close()

    asyncio.run(main())


def test_interrupt_overtakes_and_drops_the_old_turn(redis_url: str) -> None:
    async def main() -> None:
        source = _bus(redis_url, "gateway", "gw")
        stage = _bus(redis_url, "audio-encoder", "enc-2")
        await _open(source, "s2", 5, turn=0)
        await source.publish(AUDIO, m.Interrupt(session_id="s2", index=3), turn=1)
        await source.publish(AUDIO, _chunk("s2", 100), turn=1)
        got = []
        for _ in range(3):
            d = await asyncio.wait_for(stage.receive(AUDIO, GROUP), 5)
            got.append(d.msg)
            assert await stage.commit(d, FEATURES, [])
        assert isinstance(got[0], m.SessionStart)
        assert isinstance(got[1], m.Interrupt) and got[1].index == 3
        assert isinstance(got[2], m.AudioChunk) and got[2].index == 100
        await source.close()
        await stage.close()

    asyncio.run(main())


def test_a_dead_replicas_session_is_taken_over_with_its_state(redis_url: str) -> None:
    async def main() -> None:
        source = _bus(redis_url, "gateway", "gw")
        a = _bus(redis_url, "audio-encoder", "enc-a")
        await _open(source, "s3", 3)
        start = await asyncio.wait_for(a.receive(AUDIO, GROUP), 5)
        assert await a.commit(start, FEATURES, [start.msg], state=b"after-start")
        c0 = await asyncio.wait_for(a.receive(AUDIO, GROUP), 5)
        assert c0.msg.index == 0
        a._replica.draining = True  # replica a stops heartbeating (killed) before committing
        await asyncio.sleep(0.3)

        b = _bus(redis_url, "audio-encoder", "enc-b")
        d = await asyncio.wait_for(b.receive(AUDIO, GROUP), 5)
        assert d.msg.index == 0  # the uncommitted chunk is handed over, first
        assert d.restore == b"after-start"
        assert await b.commit(d, FEATURES, [], state=b"after-0")
        assert not await a.commit(c0, FEATURES, [])  # the old owner can no longer publish
        rest = [await asyncio.wait_for(b.receive(AUDIO, GROUP), 5) for _ in range(2)]
        assert [r.msg.index for r in rest] == [1, 2]
        assert all(r.restore is None for r in rest)
        for bus in (source, a, b):
            await bus.close()

    asyncio.run(main())


def test_commits_go_on_after_the_server_forgets_its_scripts(redis_url: str) -> None:
    """A Redis that restarted (or was flushed) has lost the bus's scripts: the commit that
    meets NOSCRIPT loads them again and runs, exactly once, with nothing lost."""
    async def main() -> None:
        source = _bus(redis_url, "gateway", "gw-f")
        stage = _bus(redis_url, "audio-encoder", "enc-f")
        down = _bus(redis_url, "motion-gen", "mg-f")
        await _open(source, "s-flush", 3)
        for i in range(4):
            d = await asyncio.wait_for(stage.receive(AUDIO, GROUP), 5)
            if i == 2:
                _sync(redis_url).script_flush()  # every master's, on a cluster
            out = [d.msg] if isinstance(d.msg, m.SessionStart) else [
                m.AudioFeatures(session_id="s-flush", index=d.msg.index,
                                features=np.zeros(4, np.float32))]
            assert await stage.commit(d, FEATURES, out, state=b"st")
        got = []  # (earlier tests left other sessions' features on this topic)
        while len(got) < 4:
            d = await asyncio.wait_for(down.receive(FEATURES, "motion-gen-workers"), 5)
            if d.msg.session_id == "s-flush":
                got.append(d)
        assert isinstance(got[0].msg, m.SessionStart)
        assert [g.msg.index for g in got[1:]] == [0, 1, 2]
        pending = await stage.redis.xpending(keys.stream("s-flush", AUDIO, stage.shards), GROUP)
        assert pending["pending"] == 0
        for b in (source, stage, down):
            await b.close()

    asyncio.run(main())


def test_a_stage_that_fell_behind_sheds_to_the_newest_frame(redis_url: str) -> None:
    """Twelve frames queue up at once for a stage that needs 40 ms each: with shedding it
    skips the stale ones that have a newer frame waiting behind them and reaches the newest
    frame in a fraction of the 480 ms it would take to work through the queue."""
    import time as _time

    from avatarflow.runtime.registry import StageSpec
    from avatarflow.runtime.runner import StageRunner
    from avatarflow.runtime.stage import Stage

    class Slow(Stage):
        name = "audio-encoder"
        drops_late = True

        def __init__(self, sid: str) -> None:
            super().__init__()
            self.sid = sid
            self.ran: list[int] = []

        def process(self, msg: m.Message):
            # Only this run's session: the second run's replica takes over what the first
            # run's left uncommitted (the same group), and must not count it.
            if isinstance(msg, m.AudioFeatures) and msg.session_id == self.sid:
                _time.sleep(0.04)
                self.ran.append(msg.index)
            return (msg,)

    async def main(shed_after_s: float, sid: str) -> tuple[list[int], float]:
        source = _bus(redis_url, "gateway", f"gw-{sid}")
        stage_bus = _bus(redis_url, "audio-encoder", f"enc-{sid}")
        stage = Slow(sid)
        runner = StageRunner(StageSpec("audio-encoder", "none", AUDIO, FEATURES), stage,
                             stage_bus, batch=4, budget_s=1.0, shed_after_s=shed_after_s)
        await source.publish(AUDIO, m.SessionStart(session_id=sid))
        t0 = _time.monotonic()
        for i in range(12):
            await source.publish(AUDIO, m.AudioFeatures(
                session_id=sid, index=i, features=np.zeros(4, np.float32),
                deadline=_time.time() + 1.0))  # due now (deadline = due + budget)
        task = asyncio.create_task(runner.run())
        while 11 not in stage.ran:
            await asyncio.sleep(0.005)
        took = _time.monotonic() - t0
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for b in (source, stage_bus):
            await b.close()
        return stage.ran, took

    ran, took = asyncio.run(main(0.1, "s-shed"))
    everything, slow = asyncio.run(main(0.0, "s-noshed"))
    print(f"shedding: ran {ran} in {took * 1e3:.0f} ms; without: {len(everything)} frames in "
          f"{slow * 1e3:.0f} ms")
    assert everything == list(range(12))
    assert ran[-1] == 11 and len(ran) <= 6 and ran == sorted(ran)


def test_source_streams_always_carry_a_lifetime(redis_url: str) -> None:
    """Publishing renews a stream's TTL only now and then (one command per message instead
    of two), yet every stream a source writes expires if the session is abandoned."""
    async def main() -> None:
        source = _bus(redis_url, "gateway", "gw-ttl")
        await _open(source, "s-ttl", 20)
        await source.publish(AUDIO, m.Interrupt(session_id="s-ttl", index=1), turn=1)
        await source.close()

    asyncio.run(main())
    r = _sync(redis_url)
    for topic in (AUDIO, keys.CTL):
        ttl = r.pttl(keys.stream("s-ttl", topic, _bus(redis_url, "gateway", "x").shards))
        assert 0 < ttl <= 60_000, (topic, ttl)


def test_a_finished_session_leaves_no_key(redis_url: str) -> None:
    """While a session runs the bus shows its keys; once the stage has ended it and the source
    has let it go, none is left (what a disconnected client relies on)."""
    async def main() -> tuple[list[str], list[str]]:
        source = _bus(redis_url, "gateway", "gw-end")
        stage = _bus(redis_url, "audio-encoder", "enc-end")
        await _open(source, "s-end", 2)
        start = await asyncio.wait_for(stage.receive(AUDIO, GROUP), 5)
        while start.msg.session_id != "s-end":  # (sessions earlier tests left unread)
            assert await stage.commit(start, FEATURES, [], ended=True)
            start = await asyncio.wait_for(stage.receive(AUDIO, GROUP), 5)
        running = await source.session_keys("s-end")
        assert await stage.commit(start, FEATURES, [], ended=True)
        await source.end_session("s-end")
        left = await source.session_keys("s-end")
        for b in (source, stage):
            await b.close()
        return running, left

    running, left = asyncio.run(main())
    shards = _bus(redis_url, "gateway", "x").shards
    assert keys.stream("s-end", AUDIO, shards) in running
    assert keys.own(GROUP, "s-end", shards) in running
    assert left == []


def test_a_commit_and_the_next_read_share_one_write(redis_url: str) -> None:
    """On a single Redis a stage's commit goes out together with its next read (one round
    trip per message); what arrives afterwards is still received, in order, and a session
    that ended in the commit is left out of that read (its streams are gone)."""
    if redis_url.startswith("redis+cluster"):
        pytest.skip("a cluster routes each command to its slot's node: no shared write")
    from avatarflow.bus.streams import lane as lane_module

    writes: list[list[str]] = []
    reads: list[list[str]] = []  # the session streams each read asked for
    real_send = lane_module.Lane._send

    async def counting_send(self, batch):  # noqa: ANN001 - the lane's own signature
        writes.append([str(c[0]) for commands, _ in batch for c in commands])
        reads.extend([str(a) for a in c if ":s:" in str(a)] for commands, _ in batch
                     for c in commands if c[0] == "XREADGROUP")
        await real_send(self, batch)

    async def main() -> list[int]:
        source = _bus(redis_url, "gateway", "gw-pf")
        stage = _bus(redis_url, "audio-encoder", "enc-pf")
        await _open(source, "s-pf", 0)
        got: list[int] = []
        d = await asyncio.wait_for(stage.receive(AUDIO, GROUP), 5)
        while d.msg.session_id != "s-pf":  # (sessions earlier tests left unread)
            assert await stage.commit(d, FEATURES, [], ended=True)
            d = await asyncio.wait_for(stage.receive(AUDIO, GROUP), 5)
        assert await stage.commit(d, FEATURES, [d.msg], state=b"st")
        lane_module.Lane._send = counting_send  # type: ignore[method-assign]
        try:
            for i in range(5):
                await source.publish(AUDIO, _chunk("s-pf", i))
                d = await asyncio.wait_for(stage.receive(AUDIO, GROUP), 5)
                got.append(d.msg.index)
                assert await stage.commit(d, FEATURES, [m.AudioFeatures(
                    session_id="s-pf", index=d.msg.index, features=np.zeros(4, np.float32))],
                    state=b"st", ended=i == 4)
        finally:
            lane_module.Lane._send = real_send  # type: ignore[method-assign]
        for b in (source, stage):
            await b.close()
        return got

    assert asyncio.run(main()) == [0, 1, 2, 3, 4]
    shared = [w for w in writes if w[:1] == ["EVALSHA"] and "XREADGROUP" in w]
    assert len(shared) >= 4, writes  # every commit carried the next read
    # The read sent with the session's last commit no longer names its streams.
    assert any("s-pf" in name for name in reads[-2]), reads
    assert not any("s-pf" in name for name in reads[-1]), reads
