"""New sessions spread over a stage's replicas on a real redis-server (and a Redis Cluster):
a burst of sessions splits evenly, a new session goes to the replica holding the fewest, and a
peer that does not take its share holds no session up for long."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import numpy as np

from avatarflow.bus import keys
from avatarflow.bus.streams import RedisBus
from avatarflow.contracts import messages as m
from avatarflow.runtime.registry import AUDIO, FEATURES
from avatarflow.runtime.settings import Settings

GROUP = "audio-encoder-workers"
CHUNKS = 10
END = -2  # handled: the session's end
WAIT_S = 10.0  # generous: only a stall waits this long


def _bus(url: str, service: str, consumer: str) -> RedisBus:
    settings = Settings.load(service, environ={}, redis_url=url, consumer=consumer,
                             heartbeat_ms=50, claim_idle_ms=200)
    return RedisBus(settings, block_ms=20)


class Replica:
    """A stage replica that processes its sessions' messages, noting who handled what."""

    def __init__(self, url: str, name: str, handled: dict[str, list[tuple[str, int]]]) -> None:
        self.name, self.bus = name, _bus(url, "audio-encoder", name)
        self.handled = handled.setdefault(name, [])
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            d = await self.bus.receive(AUDIO, GROUP)
            await asyncio.sleep(0.002)  # some work
            ended = isinstance(d.msg, m.EndOfAudio)
            assert await self.bus.commit(d, FEATURES, [], state=b"s", ended=ended)
            chunk = d.msg.index if isinstance(d.msg, m.AudioChunk) else -1
            self.handled.append((d.msg.session_id, END if ended else chunk))

    def sessions(self) -> set[str]:
        return {sid for sid, _ in self.handled}

    async def stop(self) -> None:
        """Stops as a replica shutting down does: its lease and its count go at once."""
        await self.bus.release()
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.bus.close()


async def _sessions(source: RedisBus, sids: list[str]) -> None:
    """Starts ``sids`` at once and sends each CHUNKS chunks of audio."""
    for sid in sids:
        await source.publish(AUDIO, m.SessionStart(session_id=sid, avatar_id="x"))
    for i in range(CHUNKS):
        for sid in sids:
            await source.publish(AUDIO, m.AudioChunk(session_id=sid, index=i, sample_rate=16000,
                                                     pcm=np.zeros(320, np.int16)))
        await asyncio.sleep(0.01)


async def _all_handled(handled: dict[str, list[tuple[str, int]]], sids: list[str]) -> None:
    async def done() -> None:
        while True:
            got = Counter(sid for h in handled.values() for sid, i in h if i >= 0)
            if all(got[sid] == CHUNKS for sid in sids):
                return
            await asyncio.sleep(0.02)

    await asyncio.wait_for(done(), WAIT_S)


async def _end(source: RedisBus, handled: dict[str, list[tuple[str, int]]]) -> None:
    """Ends every session (their join entries go): the next test starts from none."""
    sids = {sid for h in handled.values() for sid, _ in h}
    for sid in sids:
        await source.publish(AUDIO, m.EndOfAudio(session_id=sid, index=CHUNKS))

    async def done() -> None:
        while {sid for h in handled.values() for sid, i in h if i == END} != sids:
            await asyncio.sleep(0.02)

    await asyncio.wait_for(done(), WAIT_S)
    await source.close()


def test_a_burst_of_sessions_splits_evenly_over_the_replicas(redis_url: str) -> None:
    async def main() -> list[set[str]]:
        handled: dict[str, list[tuple[str, int]]] = {}
        source = _bus(redis_url, "gateway", "gw-burst")
        replicas = [Replica(redis_url, f"burst-{k}", handled) for k in range(2)]
        for r in replicas:
            r.start()
        await asyncio.sleep(0.3)  # both beat: each knows the other holds nothing
        sids = [f"burst-s{i}" for i in range(6)]
        await _sessions(source, sids)
        await _all_handled(handled, sids)
        owners = [r.sessions() for r in replicas]
        await _end(source, handled)
        for r in replicas:
            await r.stop()
        return owners

    owners = asyncio.run(main())
    assert sorted(len(o) for o in owners) == [3, 3]
    assert not owners[0] & owners[1]  # each session on one replica, every chunk handled once


def test_a_new_session_goes_to_the_replica_holding_the_fewest(redis_url: str) -> None:
    async def main() -> tuple[set[str], set[str]]:
        handled: dict[str, list[tuple[str, int]]] = {}
        source = _bus(redis_url, "gateway", "gw-few")
        busy = Replica(redis_url, "few-busy", handled)
        busy.start()
        first = ["few-s0", "few-s1", "few-s2"]
        await _sessions(source, first)  # the only replica: it takes all three
        await _all_handled(handled, first)
        fresh = Replica(redis_url, "few-fresh", handled)  # scaled out
        fresh.start()
        await asyncio.sleep(0.3)
        later = ["few-s3", "few-s4"]
        for sid in later:  # one at a time, as sessions come
            await _sessions(source, [sid])
            await _all_handled(handled, [sid])
        out = busy.sessions(), fresh.sessions()
        await _end(source, handled)
        for r in (busy, fresh):
            await r.stop()
        return out

    busy, fresh = asyncio.run(main())
    assert busy == {"few-s0", "few-s1", "few-s2"}
    assert fresh == {"few-s3", "few-s4"}


def test_a_peer_that_never_takes_its_share_holds_no_session_up(redis_url: str) -> None:
    """The group's record says another replica holds fewer sessions, but it takes none (its
    record out of date, say): the busier replica still takes the new session, after a short
    patience."""
    async def main() -> set[str]:
        handled: dict[str, list[tuple[str, int]]] = {}
        source = _bus(redis_url, "gateway", "gw-ghost")
        busy = Replica(redis_url, "ghost-busy", handled)
        busy.start()
        await _sessions(source, ["ghost-s0"])
        await _all_handled(handled, ["ghost-s0"])
        valid_ms = int((time.time() + 3600) * 1000)
        await source.redis.hset(keys.load(GROUP), "ghost", f"0 {valid_ms}")
        await source.redis.hset(keys.load(GROUP), "junk", "not a count")  # ignored
        await asyncio.sleep(0.3)  # the busy replica has read it: a peer with no session
        await _sessions(source, ["ghost-s1"])
        await _all_handled(handled, ["ghost-s1"])
        out = busy.sessions()
        await source.redis.hdel(keys.load(GROUP), "ghost", "junk")
        await _end(source, handled)
        await busy.stop()
        return out

    assert asyncio.run(main()) == {"ghost-s0", "ghost-s1"}
