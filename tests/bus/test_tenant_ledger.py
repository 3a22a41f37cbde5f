"""The tenants' ledger, in Redis (a real redis-server) and its in-memory twin, held to the same
rules: session leases up to a limit that lapse unless renewed, avatars counted by last use."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from avatarflow.bus.connect import async_client
from avatarflow.bus.tenants import MemoryTenantLedger, RedisTenantLedger, TenantLedger
from avatarflow.dev.redis_server import RedisServer
from avatarflow.runtime.settings import Settings

LONG = 60.0  # a lease or ttl that cannot lapse during a test, however loaded the machine
SHORT = 0.2


@pytest.fixture(scope="module")
def redis_url():
    with RedisServer() as server:
        yield server.url


@pytest.fixture(params=["memory", "redis"])
def ledger(request: pytest.FixtureRequest) -> Callable[[], AsyncIterator[TenantLedger]]:
    @asynccontextmanager
    async def make() -> AsyncIterator[TenantLedger]:
        if request.param == "memory":
            yield MemoryTenantLedger()
            return
        url = request.getfixturevalue("redis_url")
        client = async_client(Settings.load("gateway", environ={}, redis_url=url))
        await client.flushdb()
        try:
            yield RedisTenantLedger(client)
        finally:
            await client.aclose()

    return make


def _run(make: Callable[[], AsyncIterator[TenantLedger]],
         body: Callable[[TenantLedger], Awaitable[None]]) -> None:
    async def main() -> None:
        async with make() as ledger:  # type: ignore[attr-defined]
            await body(ledger)

    asyncio.run(main())


def test_sessions_up_to_the_limit_per_tenant(ledger) -> None:
    async def body(led: TenantLedger) -> None:
        assert await led.open_session("acme", "s1", 2, LONG)
        assert await led.open_session("acme", "s2", 2, LONG)
        assert not await led.open_session("acme", "s3", 2, LONG)
        assert await led.open_session("acme", "s2", 2, LONG)  # the same lease again: renewed
        assert await led.open_session("beta", "s3", 2, LONG)  # tenants are apart
        await led.close_session("acme", "s1")
        assert await led.open_session("acme", "s3", 2, LONG)

    _run(ledger, body)


def test_a_lease_not_renewed_lapses_and_a_renewed_one_holds(ledger) -> None:
    async def body(led: TenantLedger) -> None:
        assert await led.open_session("acme", "crashed", 2, SHORT)
        assert await led.open_session("acme", "alive", 2, SHORT)
        await led.renew_sessions([("acme", "alive")], LONG)
        await asyncio.sleep(3 * SHORT)
        assert await led.open_session("acme", "new", 2, LONG)  # "crashed" no longer counts
        assert not await led.open_session("acme", "more", 2, LONG)  # "alive" still does

    _run(ledger, body)


def test_avatars_up_to_the_limit_counted_by_last_use(ledger) -> None:
    async def body(led: TenantLedger) -> None:
        first = await led.add_avatar("acme", "av-1", 2, LONG)
        assert first.admitted and first.new
        again = await led.add_avatar("acme", "av-1", 2, LONG)
        assert again.admitted and not again.new
        assert (await led.add_avatar("acme", "av-2", 2, LONG)).new
        full = await led.add_avatar("acme", "av-3", 2, LONG)
        assert not full.admitted and 0 < full.retry_after_s <= LONG
        assert (await led.add_avatar("beta", "av-3", 2, LONG)).admitted
        await led.forget_avatar("acme", "av-2")
        assert (await led.add_avatar("acme", "av-3", 2, LONG)).new

    _run(ledger, body)


def test_an_unused_avatar_lapses_and_a_used_one_holds(ledger) -> None:
    ttl = 2.0

    async def body(led: TenantLedger) -> None:
        assert (await led.add_avatar("acme", "old", 2, ttl)).admitted
        assert (await led.add_avatar("acme", "used", 2, ttl)).admitted
        await led.touch_avatar("acme", "never-added", ttl)  # does not add
        for _ in range(2):  # sessions use it now and then
            await asyncio.sleep(0.6 * ttl)
            await led.touch_avatar("acme", "used", ttl)
        assert (await led.add_avatar("acme", "new", 2, ttl)).new  # "old" lapsed
        assert not (await led.add_avatar("acme", "more", 2, ttl)).admitted
        assert not (await led.add_avatar("acme", "never-added", 2, ttl)).admitted

    _run(ledger, body)
