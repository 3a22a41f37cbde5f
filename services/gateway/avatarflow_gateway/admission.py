"""Admission control: what a gateway lets in before any work starts.

- Gateway-wide: at most ``max_sessions`` sessions on this gateway (its measured capacity); at
  the limit it reports NOT_SERVING so Kubernetes routes new sessions to another gateway.
- Per tenant, cluster-wide through the tenants' ledger: concurrent sessions and registered
  avatars (quotas from the keys file, defaults from the settings).
- Per tenant and per gateway: RegisterAvatar calls, a token bucket (with N gateways a tenant
  may register up to N times its rate; the avatar quota still holds cluster-wide).

Over a limit: ResourceExhausted naming the limit with a retry hint. Sessions already running
are never touched. The tenant "" of a gateway without keys has no per-tenant limits.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from avatarflow.bus.tenants import TenantLedger
from avatarflow.contracts.errors import AvatarflowError, ResourceExhausted
from avatarflow.runtime.tasks import TaskGroup
from avatarflow_gateway.keys import Tenant

log = logging.getLogger(__name__)

REJECTED = Counter("avatarflow_gateway_rejected_calls",
                   "Calls the gateway refused, by reason: unauthenticated, permission_denied, "
                   "gateway_full, tenant_sessions, tenant_avatars, register_rate.", ["reason"])
LEASE_S = 15.0  # a crashed gateway's sessions stop counting against their tenant after this
FULL_RETRY_S = 1.0  # a full gateway: another one (or this one, soon) may have room
SESSIONS_RETRY_S = 5.0  # a tenant at its session quota: until one of its sessions ends


@dataclass(frozen=True)
class Ticket:
    """An admitted session, until ``Admission.release``."""

    tenant: Tenant
    lease: str


class TokenBucket:
    """``per_minute`` calls a minute, a minute's worth at once."""

    def __init__(self, per_minute: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.clock = per_minute / 60.0, clock
        self.capacity = max(1.0, per_minute)
        self.tokens, self.at = self.capacity, clock()

    def take(self) -> float:
        """Takes a token: 0.0, or the seconds until one is there (nothing taken)."""
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class Admission:
    """Admits sessions and avatars; ``on_full(True/False)`` when this gateway fills up and
    has room again. Run ``renew()`` while the gateway serves."""

    def __init__(self, ledger: TenantLedger, max_sessions: int, avatar_ttl_s: float,
                 on_full: Callable[[bool], Coroutine[Any, Any, None]] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ledger, self.max_sessions, self.avatar_ttl_s = ledger, max_sessions, avatar_ttl_s
        self.on_full, self.clock = on_full, clock
        self.tickets: set[Ticket] = set()  # this gateway's sessions, being opened or running
        self._full = False
        self._buckets: dict[str, TokenBucket] = {}
        self.background = TaskGroup("admission")

    async def open_session(self, tenant: Tenant) -> Ticket:
        """A ticket for one more session; ResourceExhausted when a limit is reached."""
        if len(self.tickets) >= self.max_sessions:
            REJECTED.labels("gateway_full").inc()
            raise ResourceExhausted(
                f"this gateway is at its limit of {self.max_sessions} concurrent sessions "
                "(AVATARFLOW_MAX_SESSIONS): retry shortly, another gateway may have room",
                retry_after_s=FULL_RETRY_S)
        ticket = Ticket(tenant, uuid.uuid4().hex)
        self.tickets.add(ticket)  # counted from now: opens in flight cannot overshoot
        self._check_full()
        try:
            q = tenant.quotas
            if q is not None and not await self.ledger.open_session(
                    tenant.name, ticket.lease, q.max_sessions, LEASE_S):
                REJECTED.labels("tenant_sessions").inc()
                raise ResourceExhausted(
                    f"tenant {tenant.name!r} has {q.max_sessions} sessions open, its quota "
                    "(max_sessions): end one, or retry later", retry_after_s=SESSIONS_RETRY_S)
        except BaseException:
            self.tickets.discard(ticket)
            self._check_full()
            raise
        return ticket

    def release(self, ticket: Ticket) -> None:
        """The session ended; its lease is given back in the background (the caller's task
        may be ending)."""
        if ticket not in self.tickets:
            return
        self.tickets.discard(ticket)
        self._check_full()
        if ticket.tenant.quotas is not None:
            self.background.spawn(self._close(ticket), f"release-{ticket.lease}")

    async def _close(self, ticket: Ticket) -> None:
        try:
            await self.ledger.close_session(ticket.tenant.name, ticket.lease)
        except AvatarflowError as exc:  # the lease lapses by itself
            log.warning("could not release a session lease: %s", exc.message)

    def _check_full(self) -> None:
        full = len(self.tickets) >= self.max_sessions
        if full != self._full:
            self._full = full
            if self.on_full is not None:
                self.background.spawn(self.on_full(full), "readiness")

    def register(self, tenant: Tenant) -> None:
        """Takes one of the tenant's RegisterAvatar tokens; ResourceExhausted when none."""
        q = tenant.quotas
        if q is None:
            return
        bucket = self._buckets.get(tenant.name)
        if bucket is None or bucket.rate != q.register_per_minute / 60.0:  # new or reloaded
            bucket = self._buckets[tenant.name] = TokenBucket(q.register_per_minute, self.clock)
        wait = bucket.take()
        if wait > 0:
            REJECTED.labels("register_rate").inc()
            raise ResourceExhausted(
                f"tenant {tenant.name!r} registers avatars faster than its "
                f"{q.register_per_minute:g} per minute (register_per_minute)",
                retry_after_s=wait)

    async def add_avatar(self, tenant: Tenant, avatar_id: str) -> bool:
        """Counts the avatar for its tenant; True when it was not counted before.
        ResourceExhausted when the tenant holds its quota of avatars."""
        q = tenant.quotas
        if q is None:
            return False
        slot = await self.ledger.add_avatar(tenant.name, avatar_id, q.max_avatars,
                                            self.avatar_ttl_s)
        if not slot.admitted:
            REJECTED.labels("tenant_avatars").inc()
            raise ResourceExhausted(
                f"tenant {tenant.name!r} holds {q.max_avatars} avatars, its quota "
                f"(max_avatars); an avatar counts until it is unused for "
                f"{self.avatar_ttl_s:g} s", retry_after_s=max(slot.retry_after_s, 0.001))
        return slot.new

    async def forget_avatar(self, tenant: Tenant, avatar_id: str) -> None:
        """Uncounts an avatar whose registration failed."""
        if tenant.quotas is not None:
            await self.ledger.forget_avatar(tenant.name, avatar_id)

    async def used_avatar(self, tenant: Tenant, avatar_id: str) -> None:
        """A session uses the avatar: it counts from now."""
        if tenant.quotas is not None:
            await self.ledger.touch_avatar(tenant.name, avatar_id, self.avatar_ttl_s)

    async def renew(self) -> None:
        """Renews this gateway's session leases, for as long as the gateway serves."""
        while True:
            await asyncio.sleep(LEASE_S / 3)
            leases = [(t.tenant.name, t.lease) for t in self.tickets
                      if t.tenant.quotas is not None]
            try:
                await self.ledger.renew_sessions(leases, LEASE_S)
            except AvatarflowError as exc:  # next time; the sessions themselves go on
                log.warning("could not renew %d session lease(s): %s", len(leases),
                            exc.message)

    async def aclose(self) -> None:
        await self.background.__aexit__(None, None, None)
