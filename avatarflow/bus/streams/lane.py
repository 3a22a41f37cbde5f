"""A lane: a connection of its own for one hot path of the bus (a topic's reads, the commits,
a source's appends), speaking RESP directly.

redis-py's general path costs about 100 us of client CPU per command beside the round trip:
a connection taken from the pool and checked for stray data (a non-blocking read every
time), the retry wrapper, a generic encoder per argument, response callbacks. The bus sends
a handful of command shapes many times per frame, so its hot paths skip all that: the
arguments are packed in one pass, the replies come back as the server sent them (hiredis).

Calls made while a lane is busy are grouped: its sender writes every call queued meanwhile in
one write and reads all the replies, so many sessions publishing at once cost one round trip
per turn instead of one each, and a lone caller waits for nothing. A lane is for one Redis
server (a cluster goes through redis-py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

Arg = bytes | str | int | float
Command = Sequence[Arg]


def pack(command: Command) -> list[bytes]:
    """One command in RESP: an array of bulk strings."""
    out = [b"*%d\r\n" % len(command)]
    for a in command:
        if isinstance(a, bytes):
            data = a
        elif isinstance(a, str):
            data = a.encode()
        elif isinstance(a, int):
            data = b"%d" % a
        elif isinstance(a, float):
            data = repr(a).encode()
        else:
            data = bytes(a)
        out += (b"$%d\r\n" % len(data), data, b"\r\n")
    return out


class Lane:
    """One connection; ``await lane.run(commands)`` -> one reply per command (a
    ResponseError in its place for an error reply)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._conn = client.connection_pool.make_connection()
        self._waiting: list[tuple[Sequence[Command], asyncio.Future[list[Any]]]] = []
        self._sender: asyncio.Future[None] | None = None

    async def call(self, *command: Arg) -> Any:
        """One command's reply; an error reply raises."""
        (reply,) = await self.run([command])
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def run(self, commands: Sequence[Command]) -> list[Any]:
        return await self.submit(commands)

    def submit(self, commands: Sequence[Command]) -> asyncio.Future[list[Any]]:
        """Queues ``commands`` and returns the future of their replies: calls submitted
        before the event loop next runs go out in one write, in order (a commit and the
        read after it, say), each future resolved as soon as its own replies are in."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._waiting.append((commands, future))
        if self._sender is None or self._sender.done():
            # Sent by a task of its own: a caller cancelled mid-call cannot leave the others'
            # calls unsent, nor the connection between a request and its reply.
            self._sender = asyncio.ensure_future(self._drain())
        return future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    await self._send(batch)
                except Exception:  # noqa: S112 - each caller got the error; the rest go on
                    continue
        except BaseException as exc:  # the lane is closing: nobody will send what waits
            for _, future in self._waiting:
                if not future.done():
                    future.set_exception(RedisConnectionError(f"redis lane closed: {exc!r}"))
            self._waiting = []
            raise

    async def _send(self, batch: list[tuple[Sequence[Command], asyncio.Future[list[Any]]]]
                    ) -> None:
        conn = self._conn
        chunks: list[bytes] = []
        for commands, _ in batch:
            for c in commands:
                chunks += pack(c)
        try:
            await conn.send_packed_command(chunks, check_health=False)
            for commands, future in batch:
                replies: list[Any] = []
                for _ in commands:
                    try:
                        replies.append(await conn.read_response())
                    except ResponseError as exc:  # an error reply: read, the lane stays in step
                        replies.append(exc)
                if not future.done():
                    future.set_result(replies)
        except BaseException as exc:
            await conn.disconnect(nowait=True)  # replies may be left unread: start afresh
            for _, future in batch:
                if not future.done():
                    if isinstance(exc, Exception):
                        future.set_exception(exc)
                    else:
                        future.set_exception(RedisConnectionError(f"redis call cut: {exc!r}"))
            raise

    async def close(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
        await self._conn.disconnect()


def entries(reply: Any) -> list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes] | None]]]]:
    """An XREADGROUP reply as redis-py's callback shapes it: per stream, its entries as
    (id, fields) with the fields as a dict (None for an entry deleted while pending)."""
    out = []
    for stream, raw in reply or ():
        items = []
        for entry_id, flat in raw:
            fields = None if flat is None else dict(zip(flat[::2], flat[1::2], strict=True))
            items.append((entry_id, fields))
        out.append((stream, items))
    return out
