"""Which replica owns a session, and taking over the sessions of a dead one.

A replica owns a session once the TAKE script (``avatarflow.bus.keys``) records it in the
session's owner hash, which also moves the session's join entry and every entry a previous
owner had read and not committed to it. Every heartbeat the replica renews its liveness key,
its lease: TAKE refuses a session whose owner's lease is alive, so a session changes hands only
once its owner's lease lapsed, and the claim loop of each replica takes the sessions of owners
whose lease lapsed. The heartbeat also records how many sessions the replica holds, and the
claim loop reads the others' counts, so new sessions go to the least busy replicas
(``queues.JoinShare``). A process restarted under the same consumer name resumes its own sessions
before its first read.

The owner reads its sessions' streams only while its lease surely holds (``Lease``): a replica
that froze longer than the takeover time (a GC pause, CPU starvation, a network blip) may have
lost its sessions, and an entry it read afterwards would be read by nobody else. So after a
lapse it reads again only once its lease is renewed and it has checked which sessions are still
its own; the others are handed to the runner as lost. Commits are fenced by the owner check of
the COMMIT script, so a replica presumed dead never publishes twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from redis.exceptions import RedisError

from avatarflow.bus import connect, keys
from avatarflow.bus.streams.queues import SessionQueue, TopicQueue
from avatarflow.bus.streams.replica import Replica
from avatarflow.bus.streams.wire import Entry
from avatarflow.runtime.tasks import TaskGroup

log = logging.getLogger(__name__)

FORGET_LOAD_S = 60.0  # a replica's session count this long out of date is deleted


class Ownership:
    """Joins the consumer groups, owns sessions, heartbeats, claims and hands sessions back."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self._take_script = connect.script(replica.redis, keys.TAKE)
        self._pass_script = connect.script(replica.redis, keys.PASS)
        self._tasks = TaskGroup(f"bus-{replica.consumer}")

    def watch(self, q: TopicQueue) -> None:
        """Starts heartbeating and claiming for a topic this replica now reads."""
        self._tasks.spawn(self._heartbeat(q), f"heartbeat-{q.topic}")
        self._tasks.spawn(self._claim_loop(q), f"claim-{q.topic}")

    async def join(self, q: TopicQueue) -> None:
        """Creates the join streams' group (one per shard) if needed and resumes the sessions
        a previous process with our consumer name left pending; done before the first read."""
        r = self.replica
        for shard in range(r.shards):
            join = keys.join(q.topic, shard)
            try:
                await r.redis.xgroup_create(join, q.group, id="0", mkstream=True)
            except RedisError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            pending = await r.redis.xpending_range(join, q.group, min="-", max="+",
                                                   count=1000, consumername=r.consumer)
            for entry_id, fields in await self._entries(join, [p["message_id"]
                                                              for p in pending]):
                await self.own(q, join, entry_id, fields)
        if q.sessions:
            log.info("%s: resumed %d session(s) a previous process named %s left", q.group,
                     len(q.sessions), r.consumer)
        q.ready = True

    async def own(self, q: TopicQueue, join: str, join_id: bytes,
                  fields: dict[bytes, bytes] | None) -> bool:
        """Takes the session an entry of join stream ``join`` announces, with its saved
        state, its turn and what its previous owner had read and not committed; False when it
        is not ours to take."""
        r = self.replica
        if fields is None:  # trimmed while pending: it announces nothing any more
            await r.redis.xack(join, q.group, join_id)
            return False
        sid = fields[b"s"].decode()
        if sid in q.sessions:
            return True
        data, ctl = r.stream(sid, q.topic), r.stream(sid, keys.CTL)
        shard = keys.shard_of(sid, r.shards)
        got = await self._take_script(
            keys=[r.own(q.group, sid), data, join, ctl],
            args=[r.consumer, join_id, q.group, r.ttl_ms, keys.alive(q.group, "", shard)])
        if got in (b"gone", b"held"):
            log.debug("%s: session %s is %s", q.group, sid, got.decode())
            return False
        state, turn, ctl_entries, data_entries = got
        s = SessionQueue(sid, data, ctl, turn=int(turn), restore=state or None,
                         started=bool(state))
        s.ctl.extend(_entries(ctl_entries))
        s.data.extend(_entries(data_entries))
        q.add(s)
        return True

    async def pass_on(self, q: TopicQueue, join: str, join_id: bytes) -> None:
        """Leaves the session an entry of join stream ``join`` announces to the next replica
        that reads the stream (this one holds more sessions than another)."""
        await self._pass_script(keys=[join], args=[q.group, join_id])
        log.debug("%s: passed a new session on (%d held here, %s at the least busy peer)",
                  q.group, len(q.sessions), q.share.peers)

    async def release(self, queues: Iterable[TopicQueue]) -> None:
        """Stops heartbeating, so the other replicas take this one's sessions at once."""
        r = self.replica
        r.draining = True
        async with r.redis.pipeline(transaction=False) as p:
            for q in queues:
                if q.join:
                    for shard in range(r.shards):  # one key per slot: one DEL each
                        p.delete(keys.alive(q.group, r.consumer, shard))
                    p.hdel(keys.load(q.group), r.consumer)
            await p.execute()

    async def close(self) -> None:
        await self._tasks.__aexit__(None, None, None)

    async def _entries(self, stream: str, ids: list[bytes]) -> list[Entry]:
        """The entries ``ids`` of ``stream`` (None fields for one deleted meanwhile)."""
        if not ids:
            return []
        async with self.replica.redis.pipeline(transaction=False) as p:
            for entry_id in ids:
                p.xrange(stream, entry_id, entry_id)
            replies = await p.execute()
        return [(entry_id, found[0][1] if found else None)
                for entry_id, found in zip(ids, replies, strict=True)]

    async def _heartbeat(self, q: TopicQueue) -> None:
        """Renews the lease every heartbeat. After a lapse, reads resume only once the
        sessions still ours are known (``_recheck``)."""
        r = self.replica
        names = [keys.alive(q.group, r.consumer, shard) for shard in range(r.shards)]
        loop = asyncio.get_running_loop()
        while not r.draining:
            sent = loop.time()
            try:
                await self._renew(q, names)
                if sent > q.lease.until:  # it lapsed (or never held): others may have taken
                    await self._recheck(q)
                q.lease.renewed(sent + r.settings.claim_idle_ms / 1000)
            except (RedisError, OSError) as exc:  # the lease lapses; retried next beat
                log.warning("%s: heartbeat failed: %s", q.group, exc)
            await q.lease.until_next_beat(r.settings.heartbeat_ms / 1000)

    async def _renew(self, q: TopicQueue, names: list[str]) -> None:
        """Sets this replica's lease in every shard (each shard's TAKE checks its own) and
        records the sessions it holds, valid as long as the lease."""
        r = self.replica
        valid_ms = int((time.time() + r.settings.claim_idle_ms / 1000) * 1000)
        async with r.redis.pipeline(transaction=False) as p:
            for name in names:
                p.set(name, b"1", px=r.settings.claim_idle_ms)
            p.hset(keys.load(q.group), r.consumer, f"{len(q.sessions)} {valid_ms}")
            await p.execute()

    async def _recheck(self, q: TopicQueue) -> None:
        """Drops the sessions another replica took while our lease had lapsed."""
        sids = list(q.sessions)
        if not sids:
            return
        async with self.replica.redis.pipeline(transaction=False) as p:
            for sid in sids:
                p.hget(self.replica.own(q.group, sid), "owner")
            owners = await p.execute()
        for sid, owner in zip(sids, owners, strict=True):
            if owner is not None and owner.decode() != self.replica.consumer:
                log.warning("%s: session %s was taken over by %s while this replica's lease "
                            "had lapsed", q.group, sid, owner.decode())
                q.remove(sid)
                q.lost.append(sid)

    async def _claim_loop(self, q: TopicQueue) -> None:
        r = self.replica
        # Twice the takeover time: a session left unread that long by the replicas holding
        # fewer is taken by a busier one.
        q.share.patience_s = 2 * r.settings.claim_idle_ms / 1000
        while not q.ready:
            await asyncio.sleep(r.settings.heartbeat_ms / 1000)
        while not r.draining:
            try:
                # Who has sessions pending in each shard, how many sessions wait unread
                # (a join entry is pending from its reading to its session's end, then
                # deleted), and how many each live replica holds: one pipelined round trip.
                async with r.redis.pipeline(transaction=False) as p:
                    for shard in range(r.shards):
                        p.xpending(keys.join(q.topic, shard), q.group)
                        p.xlen(keys.join(q.topic, shard))
                    p.hgetall(keys.load(q.group))
                    *replies, loads = await p.execute()
                summaries = replies[::2]
                waiting = any(n > s["pending"] for s, n in zip(summaries, replies[1::2],
                                                                strict=True))
                q.share.seen(waiting, asyncio.get_running_loop().time())
                await self._share(q, loads)
                for shard, summary in enumerate(summaries):
                    await self._claim_dead(q, shard, summary)
            except (RedisError, OSError) as exc:  # tried again next beat
                log.warning("%s: claim pass failed: %s", q.group, exc)
            await asyncio.sleep(r.settings.heartbeat_ms / 1000)

    async def _share(self, q: TopicQueue, loads: dict[bytes, bytes]) -> None:
        """Sets the fewest sessions another live replica holds (``JoinShare.peers``) from the
        group's load hash, deleting the entries of replicas long gone."""
        now_ms = time.time() * 1000
        counts, gone = [], []
        for name, value in loads.items():
            if name.decode() == self.replica.consumer:
                continue
            try:
                held, valid_ms = (int(v) for v in value.split())
            except ValueError:  # not one of ours: ignored
                continue
            if valid_ms >= now_ms:
                counts.append(held)
            elif valid_ms < now_ms - FORGET_LOAD_S * 1000:
                gone.append(name)
        q.share.peers = min(counts, default=None)
        if gone:
            await self.replica.redis.execute_command("HDEL", keys.load(q.group), *gone)

    async def _claim_dead(self, q: TopicQueue, shard: int, summary: dict[str, Any]) -> None:
        """Takes the sessions in ``shard`` of every replica of the group whose lease lapsed
        (``summary``: the XPENDING summary of the shard's join stream)."""
        r = self.replica
        join = keys.join(q.topic, shard)
        for row in summary.get("consumers") or ():
            name = row["name"].decode() if isinstance(row["name"], bytes) else row["name"]
            if name == r.consumer or await r.redis.exists(keys.alive(q.group, name, shard)):
                continue
            pending = await r.redis.xpending_range(join, q.group, min="-", max="+",
                                                   count=1000, consumername=name)
            for entry_id, fields in await self._entries(join, [p["message_id"]
                                                              for p in pending]):
                if r.draining:
                    return
                if await self.own(q, join, entry_id, fields):
                    log.info("%s: took over session %s from %s", q.group,
                             fields[b"s"].decode() if fields else "?", name)


def _entries(raw: list[list[object]]) -> list[Entry]:
    """Entries as the TAKE script returns them ([id, [field, value, ...]]) as read entries."""
    out: list[Entry] = []
    for entry_id, flat in raw:
        assert isinstance(entry_id, bytes) and isinstance(flat, list)
        out.append((entry_id, dict(zip(flat[::2], flat[1::2], strict=True))))
    return out
