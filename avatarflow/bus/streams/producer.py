"""The source side of a session (the gateway): opens it, appends its messages, and deletes
what is left of it once it is over.

Every key a source writes carries a lifetime, so an abandoned session's streams expire. The
lifetime is renewed with the message only now and then (a quarter of it at most), so most
messages cost one XADD."""

from __future__ import annotations

import time

from redis.exceptions import ResponseError

from avatarflow.bus import connect, keys
from avatarflow.bus.streams.lane import Arg
from avatarflow.bus.streams.replica import Replica
from avatarflow.bus.streams.wire import fields
from avatarflow.contracts import messages as m
from avatarflow.runtime.registry import AUDIO, FRAMES


class Producer:
    """Publishes a session's messages into the pipeline."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self._open_script = connect.script(replica.redis, keys.OPEN)
        self._expiry_set: dict[str, float] = {}  # stream -> when its lifetime was renewed

    async def publish(self, topic: str, msg: m.Message, turn: int) -> None:
        """Appends ``msg`` to the session's stream on ``topic`` (urgent control to its control
        stream); a SessionStart first opens the session with the OPEN script."""
        r = self.replica
        sid = msg.session_id
        entry = fields(msg, turn, raw_pictures=r.raw_pictures)
        if isinstance(msg, m.SessionStart):
            await self._open_script(
                keys=[r.stream(sid, topic), r.stream(sid, keys.CTL), r.stream(sid, FRAMES),
                      r.join_of(sid, topic), r.own(keys.GATEWAY_GROUP, sid)],
                args=[keys.GROUP_OF[topic], r.ttl_ms, sid, r.consumer, *keys.STAGE_GROUPS])
        key = r.stream(sid, keys.CTL if msg.tier is m.Tier.URGENT else topic)
        now = time.monotonic()
        # The key's lifetime was renewed moments ago: one command. Otherwise renew it too,
        # and the control stream's: it lives while the session does, control sent or not
        # (every stage reads it; one that lapsed would end the session on every stage).
        renew = now - self._expiry_set.get(key, -1e9) >= r.ttl_ms / 4000
        lane = r.lane("publish")
        if lane is not None:
            xadd: list[Arg] = ["XADD", key, "MAXLEN", "~", r.settings.stream_maxlen, "*"]
            for name, value in entry.items():
                xadd += (name, value)  # type: ignore[arg-type]
            commands: list[list[Arg]] = [xadd]
            if renew:
                commands += [["PEXPIRE", key, r.ttl_ms],
                             ["PEXPIRE", r.stream(sid, keys.CTL), r.ttl_ms]]
            for reply in await lane.run(commands):
                if isinstance(reply, ResponseError):
                    raise reply
        elif not renew:
            await r.redis.xadd(key, entry, maxlen=r.settings.stream_maxlen, approximate=True)
        else:
            async with r.redis.pipeline(transaction=False) as p:
                p.xadd(key, entry, maxlen=r.settings.stream_maxlen, approximate=True)
                p.pexpire(key, r.ttl_ms)
                p.pexpire(r.stream(sid, keys.CTL), r.ttl_ms)
                await p.execute()
        if renew:
            self._expiry_set[key] = now

    async def end_session(self, sid: str) -> None:
        """Deletes what is left of a session at its source (control and frames streams)."""
        r = self.replica
        for topic in (keys.CTL, AUDIO):
            self._expiry_set.pop(r.stream(sid, topic), None)
        # One slot (the session's shard): one DEL, on a cluster too.
        await r.redis.delete(r.stream(sid, keys.CTL), r.stream(sid, FRAMES),
                             r.stream(sid, AUDIO), r.own(keys.GATEWAY_GROUP, sid))

    async def session_keys(self, sid: str) -> list[str]:
        """Names of the keys in Redis that still hold the session id: what is left of it."""
        pattern = f"*{_glob_escape(sid)}*"
        found = self.replica.redis.scan_iter(match=pattern)  # every master's, on a cluster
        return sorted({k.decode() if isinstance(k, bytes) else k async for k in found})


def _glob_escape(text: str) -> str:
    """``text`` as a literal inside a Redis glob pattern."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)
