"""The bus's own connections (avatarflow.bus.streams.lane) on a real redis-server: replies in
order, error replies in their place without breaking the connection, calls made while the
lane is busy grouped into one write, and a lane that recovers after the server closed it."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from avatarflow.bus import connect
from avatarflow.bus.streams.lane import Lane, entries, pack
from avatarflow.dev.redis_server import RedisServer
from avatarflow.runtime.settings import Settings


@pytest.fixture(scope="module")
def redis_url():
    with RedisServer() as server:
        yield server.url


def _lane(url: str) -> Lane:
    client = connect.async_client(Settings.load("gateway", environ={}, redis_url=url))
    assert not connect.is_cluster(url)
    return Lane(client)  # type: ignore[arg-type]


def test_pack_writes_resp_bulk_strings() -> None:
    assert b"".join(pack(["SET", b"k", 5, 0.5])) == (
        b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n5\r\n$3\r\n0.5\r\n")


def test_replies_come_in_order_and_an_error_reply_keeps_the_lane_working(redis_url) -> None:
    async def main() -> list:
        lane = _lane(redis_url)
        got = await lane.run([["SET", "lane:a", "1"], ["INCR", "lane:a"],
                              ["HSET", "lane:a", "f", "v"], ["GET", "lane:a"]])
        after = await lane.call("INCR", "lane:a")
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await lane.call("LPUSH", "lane:a", "x")
        await lane.close()
        return [*got, after]

    ok, incr, wrong, value, after = asyncio.run(main())
    assert ok == b"OK" and incr == 2 and value == b"2" and after == 3
    assert isinstance(wrong, ResponseError) and "WRONGTYPE" in str(wrong)


def test_concurrent_calls_each_get_their_own_replies(redis_url) -> None:
    async def main() -> list[int]:
        lane = _lane(redis_url)
        replies = await asyncio.gather(*[lane.call("INCRBY", "lane:n", 1) for _ in range(200)])
        await lane.close()
        return replies

    assert sorted(asyncio.run(main())) == list(range(1, 201))


def test_stream_entries_come_back_as_redis_py_shapes_them(redis_url) -> None:
    async def main():
        lane = _lane(redis_url)
        await lane.run([["XGROUP", "CREATE", "lane:s", "g", "0", "MKSTREAM"],
                        ["XADD", "lane:s", "1-1", "k", "D", "m", b"\x00\xff"]])
        reply = await lane.call("XREADGROUP", "GROUP", "g", "c", "COUNT", 5, "BLOCK", 10,
                                "STREAMS", "lane:s", ">")
        empty = await lane.call("XREADGROUP", "GROUP", "g", "c", "COUNT", 5, "BLOCK", 10,
                                "STREAMS", "lane:s", ">")
        await lane.close()
        return entries(reply), empty

    got, empty = asyncio.run(main())
    assert got == [(b"lane:s", [(b"1-1", {b"k": b"D", b"m": b"\x00\xff"})])]
    assert empty is None and entries(empty) == []


def test_a_lane_reconnects_after_the_server_dropped_it(redis_url) -> None:
    async def main() -> int:
        lane = _lane(redis_url)
        await lane.call("SET", "lane:r", 1)
        await lane.call("CLIENT", "KILL", "TYPE", "normal")  # drops every client, ours too
        for _ in range(3):  # the first call may find the socket closed, the next reconnects
            try:
                return int(await lane.call("INCR", "lane:r"))
            except RedisConnectionError:
                await asyncio.sleep(0.05)
        raise AssertionError("the lane did not reconnect")

    assert asyncio.run(main()) >= 2
