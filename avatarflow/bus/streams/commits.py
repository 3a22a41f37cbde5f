"""Commits: what processing a delivery produced is published, the delivery acknowledged and
the session's state saved by one run of the COMMIT script, which first checks that this
replica still owns the session (a replica presumed dead can never publish again). All the
commits of a batch go out in one pipelined round trip."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from redis.exceptions import NoScriptError

from avatarflow.bus import connect, keys
from avatarflow.bus.base import Commit
from avatarflow.bus.streams.lane import Lane
from avatarflow.bus.streams.replica import Replica
from avatarflow.bus.streams.wire import tier_code
from avatarflow.contracts import codec
from avatarflow.contracts import messages as m
from avatarflow.runtime.registry import FRAMES


class Committer:
    """Runs the COMMIT script for a batch of deliveries."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self._script = connect.script(replica.redis, keys.COMMIT)

    def prepare(self, outputs: Sequence[m.Message]) -> list[bytes]:
        """The outputs that go on the output stream, encoded (urgent control does not: every
        stage reads the control stream itself)."""
        return [codec.encode(o, raw_pictures=self.replica.raw_pictures) for o in outputs
                if o.tier is not m.Tier.URGENT]

    async def commit(self, topic: str | None, commits: Sequence[Commit],
                     turns: Sequence[int], *, lane: Lane | None = None,
                     then: Callable[[], None] | None = None) -> list[bool]:
        """Commits each delivery, in order, in one round trip; ``turns`` holds the current
        turn of each one's session. False where the session is no longer this replica's.
        With ``lane``, the commits go out on it and ``then`` is called right after, before
        anything is sent: what it submits to the lane goes out in the same write."""
        now = repr(time.time())
        calls = [self._call(topic, c, turn, now) for c, turn in zip(commits, turns, strict=True)]
        return [bool(ok) for ok in await self._run(calls, lane, then)]

    def _call(self, topic: str | None, c: Commit, turn: int, now: str) -> list[Any]:
        """The COMMIT script's keys and arguments for one delivery."""
        r = self.replica
        d = c.delivery
        sid = d.msg.session_id
        out_topic = topic or d.topic
        encoded = c.encoded if c.encoded is not None else self.prepare(c.outputs)
        codes = [tier_code(o) for o in c.outputs if o.tier is not m.Tier.URGENT]
        args: list[Any] = []
        for code, data in zip(codes, encoded, strict=True):
            args += [code, d.turn, now, data]
        announce = out_topic in keys.GROUP_OF and out_topic != FRAMES
        out_stream = r.stream(sid, out_topic)
        script_keys = [r.own(d.group, sid), d.stream, out_stream, r.join_of(sid, d.topic),
                       r.join_of(sid, out_topic) if announce else out_stream,
                       r.stream(sid, d.topic)]
        return [len(script_keys), *script_keys,
                r.consumer, d.group, d.entry_id,
                "e" if c.ended else ("s" if c.state is not None else "k"), c.state or b"",
                r.ttl_ms, r.settings.stream_maxlen, keys.GROUP_OF.get(out_topic, ""),
                sid, len(codes), turn, *args]

    async def _run(self, calls: list[list[Any]], lane: Lane | None = None,
                   then: Callable[[], None] | None = None) -> list[Any]:
        """Runs the COMMIT script once per call in one pipelined round trip. EVALSHA goes
        straight out (a pipeline holding ``Script`` objects would first ask the server
        whether the script exists: a second round trip per commit); calls the server
        refused with NOSCRIPT (it restarted or was flushed) ran nothing, so they are retried
        once the script is loaded again."""
        redis, script = self.replica.redis, self._script
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        lane = lane or self.replica.lane("commit")
        for attempt in range(2):
            if lane is not None:
                pending = lane.submit([["EVALSHA", script.sha, *calls[i]] for i in todo])
                if then is not None:
                    then()
                    then = None
                replies = await pending
                # A retry must not queue behind whatever ``then`` sent (a blocking read).
                lane = self.replica.lane("commit")
            else:
                async with redis.pipeline(transaction=False) as p:
                    for i in todo:
                        # (the cluster pipeline refuses its evalsha method, not the command:
                        # the keys of each call are in one slot, so it goes to their node)
                        p.execute_command("EVALSHA", script.sha, *calls[i])
                    replies = await p.execute(raise_on_error=False)
            missing = []
            for i, reply in zip(todo, replies, strict=True):
                if isinstance(reply, NoScriptError) and attempt == 0:
                    missing.append(i)
                elif isinstance(reply, Exception):
                    raise reply
                else:
                    results[i] = reply
            if not missing:
                break
            script.sha = await redis.script_load(script.script)
            todo = missing
        return results
