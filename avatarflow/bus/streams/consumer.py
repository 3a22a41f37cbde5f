"""The reading side of a replica: a stage reading its input topic, or the gateway reading its
sessions' final frames.

One XREADGROUP per fetch covers the topic's join streams (new sessions to own) and, for every
owned session, its control stream and its data stream on the topic; the entries land in the
session's queues (``queues.TopicQueue``), which hand them out in round robin between
sessions, control first. On a Redis Cluster one command reaches one slot, so there is one
read per shard instead, each blocking on its own connection and kept in flight across fetches:
a fetch returns as soon as any shard has entries.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError
from redis.typing import KeyT, StreamIdT

from avatarflow.bus import keys
from avatarflow.bus.base import Delivery
from avatarflow.bus.streams.lane import Arg, Lane
from avatarflow.bus.streams.lane import entries as lane_entries
from avatarflow.bus.streams.ownership import Ownership
from avatarflow.bus.streams.queues import SessionQueue, TopicQueue
from avatarflow.bus.streams.replica import Replica
from avatarflow.runtime.registry import FRAMES

log = logging.getLogger(__name__)

# A read is sent, and done by Redis, within this of the lease check before it (a margin for
# the network; a quarter of the takeover time at most); while the lease may have lapsed, it
# is checked again this often.
LEASE_SLACK_S = 0.05
LEASE_POLL_S = 0.01


class Consumer:
    """This replica's ``TopicQueue`` per (topic, group) it reads, and the reads that fill them."""

    def __init__(self, replica: Replica, ownership: Ownership, *, read_count: int,
                 block_ms: int) -> None:
        self.replica, self.ownership = replica, ownership
        self.read_count, self.block_ms = read_count, block_ms
        self.queues: dict[tuple[str, str], TopicQueue] = {}
        # Cluster: the read in flight per (topic, group, shard).
        self._reads: dict[tuple[str, str, int], asyncio.Task[Any]] = {}
        # One server: the next read per (topic, group), sent with the last commit.
        self._prefetched: dict[tuple[str, str], asyncio.Future[list[Any]]] = {}

    def queue(self, topic: str, group: str, join: bool) -> TopicQueue:
        """The queue of ``topic`` for ``group``, created (and, for a stage, watched by
        ownership) on first use."""
        q = self.queues.get((topic, group))
        if q is None:
            q = self.queues[(topic, group)] = TopicQueue(topic, group, join)
            if join:
                self.ownership.watch(q)
        return q

    async def receive(self, topic: str, group: str) -> Delivery:
        q = self.queue(topic, group, join=topic != FRAMES)
        if q.join and not q.ready:
            await self.ownership.join(q)
        while True:
            d = None if self.replica.draining else q.next()
            if d is not None:
                return d
            await self._fetch(q)

    async def receive_batch(self, topic: str, group: str, limit: int) -> list[Delivery]:
        batch = [await self.receive(topic, group)]
        q = self.queues[(topic, group)]
        while len(batch) < limit and not self.replica.draining:
            d = q.next()
            if d is None:
                break
            batch.append(d)
        return batch

    def attach(self, sid: str, topic: str) -> None:
        """Reads ``topic`` of a session this process opened (the gateway's final frames)."""
        q = self.queue(topic, keys.GROUP_OF[topic], join=False)
        if sid not in q.sessions:
            r = self.replica
            q.add(SessionQueue(sid, r.stream(sid, topic), r.stream(sid, keys.CTL),
                               started=True))

    def detach(self, sid: str, topic: str) -> None:
        q = self.queues.get((topic, keys.GROUP_OF[topic]))
        if q is not None:
            q.remove(sid)

    def interrupt(self, sid: str, turn: int) -> None:
        """This process interrupted a session it also reads: drop its old turn here too."""
        for q in self.queues.values():
            s = q.sessions.get(sid)
            if s is not None:
                q.set_turn(s, turn)

    def turn_of(self, d: Delivery) -> int:
        """The delivery's session's current turn (the delivery's own once it is forgotten)."""
        s = self.queues[(d.topic, d.group)].sessions.get(d.msg.session_id)
        return s.turn if s is not None else d.turn

    def lost(self) -> list[str]:
        """The sessions other replicas took from this one since the last call."""
        out: list[str] = []
        for q in self.queues.values():
            out += q.lost
            q.lost.clear()
        return out

    def forget(self, d: Delivery) -> None:
        """Stops reading the delivery's session (it ended here, or another replica has it)."""
        self.queues[(d.topic, d.group)].remove(d.msg.session_id)

    async def _fetch(self, q: TopicQueue) -> None:
        r = self.replica
        prefetched = self._prefetched.pop((q.topic, q.group), None)
        if prefetched is not None:  # sent with the last commit: its answer is all we need
            await self._take_prefetched(q, prefetched)
            return
        if q.skipped:
            commands = self._skipped_acks(q)
            lane = self.read_lane(q.topic, q.group)
            if lane is not None:
                await lane.run(commands)
            else:
                async with r.redis.pipeline(transaction=False) as p:
                    for c in commands:
                        p.execute_command(*c)
                    await p.execute()
        if r.draining:
            await asyncio.sleep(self.block_ms / 1000)
            return
        block_ms = self._block_ms(q)
        if block_ms is None:
            q.lease.want()
            await asyncio.sleep(LEASE_POLL_S)
            return
        shards = self._streams(q)
        if not shards:
            await asyncio.sleep(self.block_ms / 1000)
            return
        if not r.cluster:  # one server: one read covers every shard
            merged = {k: v for streams in shards.values() for k, v in streams.items()}
            replies = [await self._read(q, merged, block_ms)]
        else:
            replies = await self._read_shards(q, shards, block_ms)
        for reply in replies:
            if reply is not None:
                await self._take_in(q, reply)

    def read_lane(self, topic: str, group: str) -> Lane | None:
        """The connection this replica reads ``topic`` for ``group`` on (None on a cluster)."""
        return self.replica.lane(f"read:{topic}:{group}")

    def prefetch(self, topic: str, group: str, leaving: set[str]) -> None:
        """Submits the queue's next read to its lane now, so it goes out in the same write as
        the commit just submitted there: one round trip per message instead of two. Only
        when nothing is queued here (the runner would take that first), and within the lease
        as any read; the sessions in ``leaving`` (ending in that commit, their streams
        deleted by it) are left out."""
        r = self.replica
        q = self.queues.get((topic, group))
        lane = self.read_lane(topic, group)
        if (q is None or lane is None or r.draining or q.backlog()
                or (topic, group) in self._prefetched):
            return
        block_ms = self._block_ms(q)
        if block_ms is None:
            return
        streams = {k: v for shard in self._streams(q, leaving).values()
                   for k, v in shard.items()}
        if not streams:
            return
        if q.skipped:
            lane.submit(self._skipped_acks(q))
        self._prefetched[(topic, group)] = lane.submit([self._read_command(q, streams,
                                                                           block_ms)])

    async def _take_prefetched(self, q: TopicQueue, prefetched: asyncio.Future[list[Any]]
                               ) -> None:
        (reply,) = await prefetched
        if isinstance(reply, ResponseError):
            if "NOGROUP" not in str(reply):
                raise reply
            await self._forget_missing(q, str(reply))
            return
        await self._take_in(q, lane_entries(reply))

    def _skipped_acks(self, q: TopicQueue) -> list[list[Arg]]:
        """Acknowledges (and deletes from data streams) what the queue skipped."""
        skipped, q.skipped = q.skipped, []
        commands: list[list[Arg]] = []
        for stream, entry_id in skipped:
            commands.append(["XACK", stream, q.group, entry_id])
            if not stream.endswith(":" + keys.CTL):  # only this group reads it
                commands.append(["XDEL", stream, entry_id])
        return commands

    def _block_ms(self, q: TopicQueue) -> int | None:
        """How long the next read may block; None while the lease may have lapsed. A read is
        sent only while the lease surely holds, until the read's last moment: after a lapse
        another replica may own these sessions, and what we read it would never see."""
        if not q.join:
            return self.block_ms
        r = self.replica
        slack = min(LEASE_SLACK_S, r.settings.claim_idle_ms / 4000)
        left = q.lease.left(asyncio.get_running_loop().time()) - slack
        if left * 1000 < 1:
            return None
        return min(self.block_ms, int(left * 1000))

    def _read_command(self, q: TopicQueue, streams: dict[KeyT, StreamIdT],
                      block_ms: int) -> list[Arg]:
        return ["XREADGROUP", "GROUP", q.group, self.replica.consumer, "COUNT", self.read_count,
                "BLOCK", block_ms, "STREAMS", *map(str, streams), *map(str, streams.values())]

    def _streams(self, q: TopicQueue, leaving: set[str] | None = None
                 ) -> dict[int, dict[KeyT, StreamIdT]]:
        """What to read, per shard: its join stream (stages, while this replica takes new
        sessions: ``JoinShare``), then for each owned session its control stream (stages; the
        gateway is its source) and its data stream; the sessions in ``leaving`` left out."""
        r = self.replica
        shards: dict[int, dict[KeyT, StreamIdT]] = {}
        if q.join and q.share.reads(len(q.sessions), asyncio.get_running_loop().time()):
            for shard in range(r.shards):
                shards[shard] = {keys.join(q.topic, shard): ">"}
        for s in q.sessions.values():
            if leaving and s.sid in leaving:
                continue
            streams = shards.setdefault(keys.shard_of(s.sid, r.shards), {})
            if q.join:
                streams[s.ctl_key] = ">"
            streams[s.data_key] = ">"
        return shards

    async def _read(self, q: TopicQueue, streams: dict[KeyT, StreamIdT],
                    block_ms: int) -> list[Any] | None:
        """One XREADGROUP; None when a stream vanished (its session is then forgotten)."""
        r = self.replica
        command = self._read_command(q, streams, block_ms)
        try:
            lane = self.read_lane(q.topic, q.group)
            if lane is not None:
                return lane_entries(await lane.call(*command))
            # Sent straight to the slot's node: redis-py would otherwise ask the server for
            # the keys of every XREADGROUP (COMMAND GETKEYS), a second round trip each.
            assert isinstance(r.redis, RedisCluster)
            node = r.redis.get_node_from_key(str(next(iter(streams))))
            return await r.redis.execute_command(*command, target_nodes=node)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            log.debug("%s: %s", q.group, exc)
            await self._forget_missing(q, str(exc))
            return None

    async def _read_shards(self, q: TopicQueue, shards: dict[int, dict[KeyT, StreamIdT]],
                           block_ms: int) -> list[Any]:
        """A read in flight for every shard with something to read; waits for the first to
        answer and returns every answer ready (the others stay in flight)."""
        for shard, streams in shards.items():
            key = (q.topic, q.group, shard)
            if key not in self._reads:
                self._reads[key] = asyncio.ensure_future(self._read(q, streams, block_ms))
        mine = {k: t for k, t in self._reads.items() if k[:2] == (q.topic, q.group)}
        await asyncio.wait(mine.values(), return_when=asyncio.FIRST_COMPLETED)
        replies = []
        for k, t in mine.items():
            if t.done():
                del self._reads[k]
                replies.append(t.result())
        return replies

    async def _take_in(self, q: TopicQueue, reply: list[Any]) -> None:
        """Hands what a read returned to the sessions' queues. A join entry: owns its session,
        or passes it on to a less busy replica (``JoinShare``; a read returns several, and
        on a cluster several reads are in flight)."""
        for stream, entries in reply:
            name = stream.decode()
            if ":join:" in name:
                for entry_id, fields in entries:
                    if fields is None or q.share.takes(len(q.sessions)):
                        await self.ownership.own(q, name, entry_id, fields)
                    else:
                        await self.ownership.pass_on(q, name, entry_id)
                continue
            s = q.sessions.get(keys.sid_of(name))
            if s is not None:  # else: no longer ours (ended, or taken over meanwhile)
                (s.ctl if name == s.ctl_key else s.data).extend(entries)

    def close(self) -> None:
        """Cancels the reads in flight."""
        for t in self._reads.values():
            t.cancel()
        self._reads.clear()
        for f in self._prefetched.values():
            f.cancel()
        self._prefetched.clear()

    async def _forget_missing(self, q: TopicQueue, error: str) -> None:
        """A session's stream vanished (expired, or ended elsewhere): stop reading it."""
        for sid, s in list(q.sessions.items()):
            for key in (s.data_key, s.ctl_key):
                if f"'{key}'" in error or not await self.replica.redis.exists(key):
                    log.warning("%s: session %s: %s is gone; forgetting the session",
                                q.group, sid, key)
                    q.remove(sid)
                    break
