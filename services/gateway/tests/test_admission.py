"""Admission: the gateway-wide session limit with its readiness signal, the per-tenant quotas
(over the in-memory ledger), and the RegisterAvatar token bucket."""

from __future__ import annotations

import asyncio

import pytest

from avatarflow.bus.tenants import MemoryTenantLedger
from avatarflow.contracts.errors import ResourceExhausted
from avatarflow_gateway.admission import Admission, TokenBucket
from avatarflow_gateway.keys import NO_TENANT, Quotas, Tenant

ACME = Tenant("acme", Quotas(max_sessions=2, max_avatars=2, register_per_minute=2))
BETA = Tenant("beta", Quotas(max_sessions=2, max_avatars=2, register_per_minute=2))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_bucket_allows_a_minutes_worth_then_its_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(2, clock)
    assert bucket.take() == 0 and bucket.take() == 0
    assert bucket.take() == pytest.approx(30.0)  # 2 a minute: the next token in 30 s
    clock.now += 15
    assert bucket.take() == pytest.approx(15.0)
    clock.now += 15
    assert bucket.take() == 0
    clock.now += 3600  # idle for long: still only a minute's worth at once
    assert [bucket.take() == 0 for _ in range(3)] == [True, True, False]
    assert TokenBucket(0.5, clock).take() == 0  # under one a minute: one at a time


def test_a_full_gateway_refuses_and_reports_it_until_a_session_ends() -> None:
    async def main() -> list[bool]:
        reports: list[bool] = []

        async def on_full(full: bool) -> None:
            reports.append(full)

        admission = Admission(MemoryTenantLedger(), 2, 3600, on_full=on_full)
        first = await admission.open_session(NO_TENANT)
        second = await admission.open_session(ACME)
        with pytest.raises(ResourceExhausted, match="limit of 2 concurrent sessions") as info:
            await admission.open_session(BETA)
        assert info.value.retry_after_s is not None and info.value.retry_after_s > 0
        admission.release(second)
        admission.release(second)  # twice: no effect
        third = await admission.open_session(BETA)
        admission.release(first)
        admission.release(third)
        await asyncio.sleep(0)
        await admission.aclose()
        return reports

    assert asyncio.run(main()) == [True, False, True, False]


def test_a_tenant_at_its_session_quota_is_refused_and_others_are_not() -> None:
    async def main() -> None:
        ledger = MemoryTenantLedger()
        admission = Admission(ledger, 100, 3600)
        tickets = [await admission.open_session(ACME) for _ in range(2)]
        with pytest.raises(ResourceExhausted, match="'acme' has 2 sessions open") as info:
            await admission.open_session(ACME)
        assert info.value.retry_after_s is not None
        assert len(admission.tickets) == 2  # the refused one is not counted
        await admission.open_session(BETA)
        for _ in range(5):  # no per-tenant limit without keys
            await admission.open_session(NO_TENANT)
        admission.release(tickets[0])
        await asyncio.sleep(0.01)  # the lease is given back in the background
        await admission.open_session(ACME)
        await admission.aclose()

    asyncio.run(main())


def test_avatars_count_against_the_quota_and_a_failed_upload_does_not() -> None:
    async def main() -> None:
        admission = Admission(MemoryTenantLedger(), 100, 3600)
        assert await admission.add_avatar(ACME, "av-a") is True
        assert await admission.add_avatar(ACME, "av-a") is False  # counted already
        assert await admission.add_avatar(ACME, "av-b") is True
        with pytest.raises(ResourceExhausted, match="'acme' holds 2 avatars") as info:
            await admission.add_avatar(ACME, "av-c")
        assert info.value.retry_after_s is not None and 0 < info.value.retry_after_s <= 3600
        await admission.forget_avatar(ACME, "av-b")
        assert await admission.add_avatar(ACME, "av-c") is True
        assert await admission.add_avatar(NO_TENANT, "av-x") is False  # never counted

    asyncio.run(main())


def test_registration_is_rate_limited_per_tenant() -> None:
    clock = Clock()
    admission = Admission(MemoryTenantLedger(), 100, 3600, clock=clock)
    admission.register(ACME)
    admission.register(ACME)
    with pytest.raises(ResourceExhausted, match="faster than its 2 per minute") as info:
        admission.register(ACME)
    assert info.value.retry_after_s == pytest.approx(30.0)
    admission.register(BETA)
    for _ in range(100):
        admission.register(NO_TENANT)
    clock.now += 30
    admission.register(ACME)
