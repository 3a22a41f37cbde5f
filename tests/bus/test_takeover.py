"""Crash recovery on a real redis-server, at the level of the bus: a session outlives its keys'
idle lifetime, a replica killed and restarted under its own name (a container restart) resumes
its sessions at once, round after round, and a replica that froze past the takeover time loses
its sessions to a standby without one message going missing or being committed twice."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from avatarflow.bus.streams import RedisBus
from avatarflow.contracts import messages as m
from avatarflow.runtime.registry import AUDIO, FEATURES
from avatarflow.runtime.settings import Settings

GROUP = "audio-encoder-workers"
WAIT_S = 10.0  # generous: only a broken takeover waits this long


def _bus(url: str, service: str, consumer: str, **kw: object) -> RedisBus:
    settings = Settings.load(service, environ={}, redis_url=url, consumer=consumer,
                             heartbeat_ms=50, claim_idle_ms=200, **kw)
    return RedisBus(settings, block_ms=20)


def _chunk(sid: str, i: int) -> m.AudioChunk:
    return m.AudioChunk(session_id=sid, index=i, sample_rate=16000, pcm=np.full(320, i, np.int16))


async def _kill(bus: RedisBus) -> None:
    """Like kill -9: the process stops and its connection closes; its liveness key is left to
    lapse on its own (``release`` would delete it)."""
    await bus.close()


def test_a_session_outlives_its_keys_lifetime_without_control_messages(redis_url: str) -> None:
    """The control stream is written only on a control message; a session that sends none for
    longer than ``session_ttl_s`` must still be read on every stage (it used to lapse, and every
    stage then forgot the session: a stall for good)."""
    n = 160

    async def main() -> list[int]:
        # A lifetime long enough that a loaded machine's pauses (the source renews it every
        # quarter of it) cannot lapse it, short enough that the test outlives three of them.
        source = _bus(redis_url, "gateway", "gw-ttl", session_ttl_s=1.0)
        stage = _bus(redis_url, "audio-encoder", "enc-ttl", session_ttl_s=1.0)
        await source.publish(AUDIO, m.SessionStart(session_id="s-ttl", avatar_id="x"))
        got: list[int] = []

        async def feed() -> None:
            for i in range(n):  # 3.2 s of audio, three lifetimes
                await source.publish(AUDIO, _chunk("s-ttl", i))
                await asyncio.sleep(0.02)

        feeder = asyncio.create_task(feed())
        while len(got) < n:
            d = await asyncio.wait_for(stage.receive(AUDIO, GROUP), WAIT_S)
            assert await stage.commit(d, FEATURES, [], state=b"s")
            if isinstance(d.msg, m.AudioChunk):
                got.append(d.msg.index)
        await feeder
        for b in (source, stage):
            await b.close()
        return got

    assert asyncio.run(main()) == list(range(n))


def test_a_replica_restarted_under_its_own_name_resumes_at_once_round_after_round(
        redis_url: str) -> None:
    """Killed with a message read and not committed, then started again under the same
    consumer name, five times: each time the new process continues the session before any
    other replica could have noticed (well within the takeover time), from the saved state, with
    the message the dead one left first; every message is committed once, in order."""
    async def main() -> None:
        source = _bus(redis_url, "gateway", "gw-re")
        await source.publish(AUDIO, m.SessionStart(session_id="s-re", avatar_id="x"))
        for i in range(10):
            await source.publish(AUDIO, _chunk("s-re", i))
        stage = _bus(redis_url, "audio-encoder", "enc-re")
        start = await asyncio.wait_for(stage.receive(AUDIO, GROUP), WAIT_S)
        assert await stage.commit(start, FEATURES, [start.msg], state=b"after-start")
        committed: list[int] = []
        state = b"after-start"
        for _ in range(5):
            d = await asyncio.wait_for(stage.receive(AUDIO, GROUP), WAIT_S)
            assert await stage.commit(d, FEATURES, [], state=f"after-{d.msg.index}".encode())
            committed.append(d.msg.index)
            state = f"after-{d.msg.index}".encode()
            left = await asyncio.wait_for(stage.receive(AUDIO, GROUP), WAIT_S)  # not committed
            await _kill(stage)
            t0 = time.monotonic()
            stage = _bus(redis_url, "audio-encoder", "enc-re")  # the restarted process
            d = await asyncio.wait_for(stage.receive(AUDIO, GROUP), WAIT_S)
            assert time.monotonic() - t0 < WAIT_S
            assert d.msg.index == left.msg.index and d.restore == state
            assert await stage.commit(d, FEATURES, [], state=f"after-{d.msg.index}".encode())
            committed.append(d.msg.index)
            state = f"after-{d.msg.index}".encode()
        assert committed == list(range(10))
        for b in (source, stage):
            await b.close()

    asyncio.run(main())


def test_a_standby_takes_a_dead_replicas_session_and_its_restart_does_not_take_it_back(
        redis_url: str) -> None:
    async def main() -> None:
        source = _bus(redis_url, "gateway", "gw-sb")
        a = _bus(redis_url, "audio-encoder", "enc-sb-a")
        b = _bus(redis_url, "audio-encoder", "enc-sb-b")
        await source.publish(AUDIO, m.SessionStart(session_id="s-sb", avatar_id="x"))
        await source.publish(AUDIO, _chunk("s-sb", 0))
        start = await asyncio.wait_for(a.receive(AUDIO, GROUP), WAIT_S)
        assert await a.commit(start, FEATURES, [start.msg], state=b"after-start")
        b_first = asyncio.create_task(b.receive(AUDIO, GROUP))  # b stands by
        left = await asyncio.wait_for(a.receive(AUDIO, GROUP), WAIT_S)
        await _kill(a)
        d = await asyncio.wait_for(b_first, WAIT_S)  # once a's lease lapsed
        assert d.msg.index == left.msg.index == 0 and d.restore == b"after-start"
        assert await b.commit(d, FEATURES, [], state=b"after-0")
        a = _bus(redis_url, "audio-encoder", "enc-sb-a")  # a's process is back
        a_read = asyncio.create_task(a.receive(AUDIO, GROUP))
        await source.publish(AUDIO, _chunk("s-sb", 1))
        d = await asyncio.wait_for(b.receive(AUDIO, GROUP), WAIT_S)
        assert d.msg.index == 1 and await b.commit(d, FEATURES, [])
        await asyncio.sleep(0.3)
        assert not a_read.done()  # the session stays with b
        a_read.cancel()
        await asyncio.gather(a_read, return_exceptions=True)
        for bus in (source, a, b):
            await bus.close()

    asyncio.run(main())


def test_a_replica_that_froze_loses_its_session_without_losing_a_message(redis_url: str) -> None:
    """Replica a's event loop freezes (a GC pause, CPU starvation) past the takeover time; the
    standby b takes the session. Once a runs again it must not read the session's messages,
    which b would then never see: b commits every message after the freeze, once and in order,
    and a commits none of them and reports the session lost."""
    b_got: list[int] = []
    b_ready = threading.Event()

    async def standby() -> None:
        b = _bus(redis_url, "audio-encoder", "enc-fz-b")
        first = asyncio.ensure_future(b.receive(AUDIO, GROUP))
        b_ready.set()
        d = await asyncio.wait_for(first, WAIT_S)
        while True:
            await asyncio.sleep(0.1)  # slow work: b is often not waiting on a read
            ended = isinstance(d.msg, m.EndOfAudio)
            assert await b.commit(d, FEATURES, [], state=b"b", ended=ended)
            if ended:
                break
            b_got.append(d.msg.index)
            d = await asyncio.wait_for(b.receive(AUDIO, GROUP), WAIT_S)
        await b.close()

    async def main() -> tuple[list[int], list[str]]:
        source = _bus(redis_url, "gateway", "gw-fz")
        a = _bus(redis_url, "audio-encoder", "enc-fz-a")
        await source.publish(AUDIO, m.SessionStart(session_id="s-fz", avatar_id="x"))
        await source.publish(AUDIO, _chunk("s-fz", 0))
        for _ in range(2):
            d = await asyncio.wait_for(a.receive(AUDIO, GROUP), WAIT_S)
            assert await a.commit(d, FEATURES, [], state=b"a")
        thread = threading.Thread(target=lambda: asyncio.run(standby()), daemon=True)
        thread.start()
        assert b_ready.wait(WAIT_S)
        time.sleep(1.0)  # a freezes: no heartbeat, b takes the session over
        a_committed: list[int] = []

        async def a_reads() -> None:
            while True:
                d = await a.receive(AUDIO, GROUP)
                if await a.commit(d, FEATURES, [], state=b"a"):
                    a_committed.append(d.msg.index)

        reader = asyncio.create_task(a_reads())
        for i in range(1, 16):
            await source.publish(AUDIO, _chunk("s-fz", i))
            await asyncio.sleep(0.03)
        await source.publish(AUDIO, m.EndOfAudio(session_id="s-fz", index=16))
        await asyncio.to_thread(thread.join, WAIT_S)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        lost = a.lost_sessions()
        for bus in (source, a):
            await bus.close()
        return a_committed, lost

    a_committed, lost = asyncio.run(main())
    assert b_got == list(range(1, 16))
    assert a_committed == []
    assert lost == ["s-fz"]
