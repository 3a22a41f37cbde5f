"""The Redis streams bus for distributed mode. Key layout and scripts: ``avatarflow.bus.keys``.

Each session has its own stream per topic, so one replica handles a session's messages in
order while the replicas of a stage (the consumer group ``<stage>-workers``) share sessions:
the replica that reads a session's entry on the topic's join stream owns the session. It keeps
that entry pending until the session ends and refreshes a liveness key every heartbeat; when
the key lapses, another replica claims the entry, the session's unacknowledged messages and
its saved state, and continues where the dead one stopped. Outputs, acknowledgement and state
are written by one script that first checks ownership, so a replica presumed dead can never
publish twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, ResponseError

from avatarflow.bus import keys
from avatarflow.bus.base import Bus, Commit, Delivery
from avatarflow.contracts import codec
from avatarflow.contracts import messages as m
from avatarflow.contracts.errors import AvatarflowError, Unavailable
from avatarflow.runtime.registry import AUDIO, FRAMES
from avatarflow.runtime.settings import Settings
from avatarflow.runtime.tasks import TaskGroup

log = logging.getLogger(__name__)

Entry = tuple[bytes, dict[bytes, bytes] | None]
_TIER_CODE = {m.Tier.URGENT: b"U", m.Tier.ORDERED: b"O", m.Tier.DATA: b"D"}


def tier_code(msg: m.Message) -> bytes:
    return b"S" if isinstance(msg, m.SessionStart) else _TIER_CODE[msg.tier]


@dataclass
class _Session:
    sid: str
    turn: int = 0
    started: bool = False  # its SessionStart was delivered (control waits until then)
    restore: bytes | None = None  # state to hand to the runner with the next delivery
    ctl: deque[Entry] = field(default_factory=deque)
    data: deque[Entry] = field(default_factory=deque)


class _Consumer:
    """This replica's sessions on one topic."""

    def __init__(self, topic: str, group: str, join: bool) -> None:
        self.topic, self.group, self.join = topic, group, join
        self.sessions: dict[str, _Session] = {}
        self.order: deque[str] = deque()  # round robin between sessions
        self.skipped: list[tuple[str, bytes]] = []  # stale entries to acknowledge
        self.ready = False  # the join stream's consumer group exists

    def add(self, s: _Session) -> None:
        self.sessions[s.sid] = s
        self.order.append(s.sid)

    def remove(self, sid: str) -> None:
        if self.sessions.pop(sid, None) is not None:
            self.order.remove(sid)


class RedisBus(Bus):
    keeps_state = True

    def __init__(self, settings: Settings, *, client: aioredis.Redis | None = None,
                 raw_pictures: bool = False, read_count: int = 8, block_ms: int = 50) -> None:
        self.settings = settings
        self.consumer = settings.consumer_name
        self.redis = client or aioredis.Redis.from_url(settings.redis_url)
        self.raw_pictures = raw_pictures
        self.read_count, self.block_ms = read_count, block_ms
        self.ttl_ms = int(settings.session_ttl_s * 1000)
        self._consumers: dict[tuple[str, str], _Consumer] = {}
        self._scripts = {name: self.redis.register_script(getattr(keys, name))
                         for name in ("OPEN", "OWN", "COMMIT")}
        self._tasks = TaskGroup(f"bus-{self.consumer}")
        self._draining = False
        self._expiry_set: dict[str, float] = {}  # source stream -> when its TTL was renewed

    # -- the source side (the gateway) ---------------------------------------------------

    async def publish(self, topic: str, msg: m.Message, *, turn: int = 0) -> None:
        sid = msg.session_id
        fields = self._fields(msg, turn)
        if isinstance(msg, m.SessionStart):
            await self._scripts["OPEN"](
                keys=[keys.stream(sid, topic), keys.stream(sid, keys.CTL),
                      keys.stream(sid, FRAMES), keys.join(topic),
                      keys.own(keys.GATEWAY_GROUP, sid)],
                args=[keys.GROUP_OF[topic], self.ttl_ms, sid, self.consumer,
                      *keys.STAGE_GROUPS])
        key = keys.stream(sid, keys.CTL if msg.tier is m.Tier.URGENT else topic)
        now = time.monotonic()
        if now - self._expiry_set.get(key, -1e9) < self.ttl_ms / 4000:
            # The key's lifetime was renewed moments ago: one command, one round trip.
            await self.redis.xadd(key, fields, maxlen=self.settings.stream_maxlen,
                                  approximate=True)
        else:
            async with self.redis.pipeline(transaction=False) as p:
                p.xadd(key, fields, maxlen=self.settings.stream_maxlen, approximate=True)
                p.pexpire(key, self.ttl_ms)
                await p.execute()
            self._expiry_set[key] = now
        if msg.tier is m.Tier.URGENT and isinstance(msg, m.Interrupt):
            for c in self._consumers.values():  # our own readers drop the old turn too
                s = c.sessions.get(sid)
                if s is not None:
                    self._set_turn(c, s, turn)

    def _fields(self, msg: m.Message, turn: int) -> dict[bytes, bytes]:
        data = codec.encode(msg, raw_pictures=self.raw_pictures)
        return {b"k": tier_code(msg), b"t": str(turn).encode(), b"p": repr(time.time()).encode(),
                b"m": data}

    def attach(self, sid: str, topic: str) -> None:
        """Reads ``topic`` of a session this process opened (the gateway's final frames)."""
        c = self._consumer(topic, keys.GROUP_OF[topic], join=False)
        if sid not in c.sessions:
            c.add(_Session(sid, started=True))

    def detach(self, sid: str, topic: str) -> None:
        c = self._consumers.get((topic, keys.GROUP_OF[topic]))
        if c is not None:
            c.remove(sid)

    async def end_session(self, sid: str) -> None:
        """Deletes what is left of a session at its source (control and frames streams)."""
        for topic in (keys.CTL, AUDIO):
            self._expiry_set.pop(keys.stream(sid, topic), None)
        await self.redis.delete(keys.stream(sid, keys.CTL), keys.stream(sid, FRAMES),
                                keys.stream(sid, AUDIO), keys.own(keys.GATEWAY_GROUP, sid))

    # -- the consumer side (a stage, or the gateway for frames) ---------------------------

    async def receive(self, topic: str, group: str) -> Delivery:
        c = self._consumer(topic, group, join=topic != FRAMES)
        if c.join and not c.ready:
            await self._join_group(c)
        while True:
            d = None if self._draining else self._next(c)
            if d is not None:
                return d
            await self._fetch(c)

    async def commit(self, delivery: Delivery, topic: str | None,
                     outputs: Sequence[m.Message], state: bytes | None = None,
                     *, ended: bool = False) -> bool:
        return (await self.commit_many(topic, [Commit(delivery, outputs, state, ended)]))[0]

    def prepare(self, outputs: Sequence[m.Message]) -> list[bytes]:
        return [codec.encode(o, raw_pictures=self.raw_pictures) for o in outputs
                if o.tier is not m.Tier.URGENT]  # every stage reads the control stream itself

    async def commit_many(self, topic: str | None, commits: Sequence[Commit]) -> list[bool]:
        """Publishes, acknowledges and saves state for each delivery, in order, in one round
        trip; each one is atomic and checks that this consumer still owns the session."""
        now = repr(time.time())
        calls = [self._commit_call(topic, c, now) for c in commits]
        oks = await self._run_commits(calls)
        for c, ok in zip(commits, oks, strict=True):
            if c.ended or not ok:
                self._consumers[(c.delivery.topic, c.delivery.group)].remove(
                    c.delivery.msg.session_id)
        return [bool(ok) for ok in oks]

    def _commit_call(self, topic: str | None, c: Commit, now: str) -> list[Any]:
        """The COMMIT script's keys and arguments for one delivery."""
        d = c.delivery
        sid = d.msg.session_id
        s = self._consumers[(d.topic, d.group)].sessions.get(sid)
        turn = s.turn if s is not None else d.turn
        out_topic = topic or d.topic
        encoded = c.encoded if c.encoded is not None else self.prepare(c.outputs)
        codes = [tier_code(o) for o in c.outputs if o.tier is not m.Tier.URGENT]
        args: list[Any] = []
        for code, data in zip(codes, encoded, strict=True):
            args += [code, d.turn, now, data]
        announce = out_topic in keys.GROUP_OF and out_topic != FRAMES
        script_keys = [keys.own(d.group, sid), d.stream, keys.stream(sid, out_topic),
                       keys.join(d.topic), keys.join(out_topic) if announce
                       else keys.stream(sid, out_topic), keys.stream(sid, d.topic)]
        return [len(script_keys), *script_keys,
                self.consumer, d.group, d.entry_id,
                "e" if c.ended else ("s" if c.state is not None else "k"), c.state or b"",
                self.ttl_ms, self.settings.stream_maxlen, keys.GROUP_OF.get(out_topic, ""),
                sid, len(codes), turn, *args]

    async def _run_commits(self, calls: list[list[Any]]) -> list[Any]:
        """Runs the COMMIT script once per call in one pipelined round trip. EVALSHA goes
        straight out (a pipeline holding ``Script`` objects would first ask the server
        whether the script exists: a second round trip per commit); calls the server
        refused with NOSCRIPT (it restarted or was flushed) ran nothing, so they are retried
        once the script is loaded again."""
        script = self._scripts["COMMIT"]
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for attempt in range(2):
            async with self.redis.pipeline(transaction=False) as p:
                for i in todo:
                    p.evalsha(script.sha, *calls[i])
                replies = await p.execute(raise_on_error=False)
            missing = []
            for i, r in zip(todo, replies, strict=True):
                if isinstance(r, NoScriptError) and attempt == 0:
                    missing.append(i)
                elif isinstance(r, Exception):
                    raise r
                else:
                    results[i] = r
            if not missing:
                break
            script.sha = await self.redis.script_load(script.script)
            todo = missing
        return results

    def newer_waiting(self, delivery: Delivery) -> bool:
        c = self._consumers.get((delivery.topic, delivery.group))
        s = None if c is None else c.sessions.get(delivery.msg.session_id)
        return s is not None and any(
            f is not None and f.get(b"k") == b"D" and int(f[b"t"]) >= s.turn for _, f in s.data)

    def backlog(self, topic: str, group: str) -> int:
        c = self._consumers.get((topic, group))
        return 0 if c is None else sum(len(s.data) + len(s.ctl) for s in c.sessions.values())

    async def receive_batch(self, topic: str, group: str, limit: int) -> list[Delivery]:
        batch = [await self.receive(topic, group)]
        c = self._consumers[(topic, group)]
        while len(batch) < limit and not self._draining:
            d = self._next(c)
            if d is None:
                break
            batch.append(d)
        return batch

    # -- reading ---------------------------------------------------------------------------

    def _consumer(self, topic: str, group: str, join: bool) -> _Consumer:
        c = self._consumers.get((topic, group))
        if c is None:
            c = self._consumers[(topic, group)] = _Consumer(topic, group, join)
            if join:
                self._tasks.spawn(self._heartbeat(c), f"heartbeat-{topic}")
                self._tasks.spawn(self._claim_loop(c), f"claim-{topic}")
        return c

    def _next(self, c: _Consumer) -> Delivery | None:
        """The next message in round robin between sessions, control before data."""
        for _ in range(len(c.order)):
            sid = c.order[0]
            c.order.rotate(-1)
            s = c.sessions[sid]
            d = self._take(c, s)
            if d is not None:
                return d
        return None

    def _take(self, c: _Consumer, s: _Session) -> Delivery | None:
        while s.started and s.ctl:
            d = self._delivery(c, s, s.ctl.popleft(), keys.CTL)
            if d is not None:
                if isinstance(d.msg, m.Interrupt):
                    self._set_turn(c, s, d.turn)
                return d
        while s.data:
            entry_id, fields = s.data.popleft()
            if fields is not None and fields.get(b"k") == b"D" and int(fields[b"t"]) < s.turn:
                c.skipped.append((keys.stream(s.sid, c.topic), entry_id))  # barge-in purge
                continue
            d = self._delivery(c, s, (entry_id, fields), c.topic)
            if d is not None:
                if isinstance(d.msg, m.SessionStart):
                    s.started = True
                return d
        return None

    def _delivery(self, c: _Consumer, s: _Session, entry: Entry, source: str) -> Delivery | None:
        entry_id, fields = entry
        stream = keys.stream(s.sid, source)
        if fields is None:  # trimmed while pending
            c.skipped.append((stream, entry_id))
            return None
        data = fields[b"m"]
        try:
            msg = codec.decode(data)
        except AvatarflowError as exc:
            log.warning("%s: session %s: undecodable entry %s: %s", c.group, s.sid, entry_id,
                        exc.message)
            msg = m.SessionError(session_id=s.sid, stage=c.group, category=exc.category,
                                 message=f"undecodable message on {c.topic}: {exc.message}")
        d = Delivery(msg, c.topic, c.group, entry_id=entry_id.decode(), stream=stream,
                     turn=int(fields[b"t"]), restore=s.restore, published_at=float(fields[b"p"]),
                     size=len(data))
        s.restore = None
        return d

    def _set_turn(self, c: _Consumer, s: _Session, turn: int) -> None:
        if turn <= s.turn:
            return
        s.turn = turn
        kept = deque()
        for entry in s.data:
            f = entry[1]
            if f is not None and f.get(b"k") == b"D" and int(f[b"t"]) < turn:
                c.skipped.append((keys.stream(s.sid, c.topic), entry[0]))
            else:
                kept.append(entry)
        s.data = kept

    async def _fetch(self, c: _Consumer) -> None:
        if c.skipped:
            skipped, c.skipped = c.skipped, []
            async with self.redis.pipeline(transaction=False) as p:
                for stream, entry_id in skipped:
                    p.xack(stream, c.group, entry_id)
                await p.execute()
        if self._draining:
            await asyncio.sleep(self.block_ms / 1000)
            return
        streams: dict[str, str] = {}
        if c.join:
            streams[keys.join(c.topic)] = ">"
        for sid in c.sessions:
            if c.join:  # stages read control; the gateway is its source
                streams[keys.stream(sid, keys.CTL)] = ">"
            streams[keys.stream(sid, c.topic)] = ">"
        if not streams:
            await asyncio.sleep(self.block_ms / 1000)
            return
        try:
            reply = await self.redis.xreadgroup(c.group, self.consumer, streams,
                                                count=self.read_count, block=self.block_ms)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            log.debug("%s: %s", c.group, exc)
            await self._forget_missing(c, str(exc))
            return
        for stream, entries in reply or ():
            name = stream.decode()
            if name == keys.join(c.topic):
                for entry_id, fields in entries:
                    await self._own(c, entry_id, fields)
                continue
            s = c.sessions.get(keys.sid_of(name))
            if s is not None:
                (s.ctl if name.endswith(":" + keys.CTL) else s.data).extend(entries)

    async def _forget_missing(self, c: _Consumer, error: str) -> None:
        """A session's stream vanished (expired, or ended elsewhere): stop reading it."""
        for sid in list(c.sessions):
            for topic in (c.topic, keys.CTL):
                key = keys.stream(sid, topic)
                if f"'{key}'" in error or not await self.redis.exists(key):
                    log.warning("%s: session %s: %s is gone; forgetting the session",
                                c.group, sid, key)
                    c.remove(sid)
                    break

    # -- ownership -------------------------------------------------------------------------

    async def _own(self, c: _Consumer, join_id: bytes, fields: dict[bytes, bytes] | None,
                   *, takeover: bool = False) -> None:
        if fields is None:
            return
        sid = fields[b"s"].decode()
        if sid in c.sessions:
            return
        got = await self._scripts["OWN"](
            keys=[keys.own(c.group, sid), keys.stream(sid, c.topic), keys.join(c.topic)],
            args=[self.consumer, join_id, c.group, self.ttl_ms])
        if got == b"gone":
            return
        state, turn = got
        s = _Session(sid, turn=int(turn), restore=state or None)
        if takeover:
            # What the dead replica had read but not committed comes first, in order.
            for topic, queue in ((keys.CTL, s.ctl), (c.topic, s.data)):
                queue.extend(await self._claim_pending(keys.stream(sid, topic), c.group))
            s.started = bool(state)
        c.add(s)

    async def _claim_pending(self, stream: str, group: str) -> list[Entry]:
        try:
            pending = await self.redis.xpending_range(stream, group, min="-", max="+",
                                                      count=10000)
        except ResponseError:
            return []
        ids = [p["message_id"] for p in pending]
        if not ids:
            return []
        return await self.redis.xclaim(stream, group, self.consumer, 0, ids)

    async def _heartbeat(self, c: _Consumer) -> None:
        key = keys.alive(c.group, self.consumer)
        while not self._draining:
            await self.redis.set(key, b"1", px=self.settings.claim_idle_ms)
            await asyncio.sleep(self.settings.heartbeat_ms / 1000)

    async def _join_group(self, c: _Consumer) -> None:
        """Creates the join stream's group if needed and resumes the sessions a previous
        process with our consumer name left pending; done before the first read."""
        join = keys.join(c.topic)
        try:
            await self.redis.xgroup_create(join, c.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        pending = await self.redis.xpending_range(join, c.group, min="-", max="+", count=1000,
                                                  consumername=self.consumer)
        ids = [p["message_id"] for p in pending]
        for entry_id, fields in (await self.redis.xclaim(join, c.group, self.consumer, 0, ids)
                                 if ids else []):
            await self._own(c, entry_id, fields, takeover=True)
        c.ready = True

    async def _claim_loop(self, c: _Consumer) -> None:
        join = keys.join(c.topic)
        while not c.ready:
            await asyncio.sleep(self.settings.heartbeat_ms / 1000)
        while not self._draining:
            try:
                await self._claim_dead(c, join)
            except ResponseError as exc:
                log.warning("%s: claim pass failed: %s", c.group, exc)
            await asyncio.sleep(self.settings.heartbeat_ms / 1000)

    async def _claim_dead(self, c: _Consumer, join: str) -> None:
        summary = await self.redis.xpending(join, c.group)
        for row in summary.get("consumers") or ():
            name = row["name"].decode() if isinstance(row["name"], bytes) else row["name"]
            if name == self.consumer or await self.redis.exists(keys.alive(c.group, name)):
                continue
            pending = await self.redis.xpending_range(join, c.group, min="-", max="+",
                                                      count=1000, consumername=name)
            ids = [p["message_id"] for p in pending]
            claimed = await self.redis.xclaim(join, c.group, self.consumer,
                                              self.settings.claim_idle_ms // 2, ids) if ids else []
            for entry_id, fields in claimed:
                log.info("%s: taking over session from %s", c.group, name)
                await self._own(c, entry_id, fields, takeover=True)

    # -- lifecycle -------------------------------------------------------------------------

    async def wait_ready(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            try:
                await self.redis.ping()
                return
            except OSError as exc:  # redis-py's ConnectionError is an OSError
                if loop.time() > end:
                    raise Unavailable(
                        f"cannot reach redis at {self.settings.redis_url}: {exc}") from exc
                await asyncio.sleep(0.2)

    def session_count(self, topic: str, group: str) -> int:
        c = self._consumers.get((topic, group))
        return 0 if c is None else len(c.sessions)

    async def release(self) -> None:
        """Stops taking work and hands this replica's sessions to the others at once."""
        self._draining = True
        for c in self._consumers.values():
            if c.join:
                await self.redis.delete(keys.alive(c.group, self.consumer))

    async def close(self) -> None:
        self._draining = True
        await self._tasks.__aexit__(None, None, None)
        await self.redis.aclose()


