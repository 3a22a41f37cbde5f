"""The tenants' ledger: what each tenant holds across every gateway of a cluster, so its
quotas hold cluster-wide.

- Sessions are leases: a gateway adds one per session it runs and renews it while the session
  runs; a crashed gateway stops renewing, so its sessions stop counting when their leases lapse.
- Avatars are counted by last use: an avatar registered or used within ``ttl_s`` (the avatar
  registry's lease) counts; one unused for longer has lapsed from the registry too.

Redis keys, per tenant (the tenant names a key, as everywhere a key is made):
  af:tenant:{<tenant>}:sessions   sorted set: lease id -> expiry (ms, Redis clock)
  af:tenant:{<tenant>}:avatars    sorted set: avatar id -> last use (ms, Redis clock)
Scripts read Redis's own clock, so gateways with skewed clocks agree.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import NamedTuple, Protocol

import redis

from avatarflow.bus import connect
from avatarflow.contracts.errors import Unavailable

log = logging.getLogger(__name__)


class AvatarSlot(NamedTuple):
    """The ledger's answer for an avatar: admitted (``new``: it was not counted before), or
    not, with the seconds until the tenant's oldest avatar lapses."""

    admitted: bool
    new: bool = False
    retry_after_s: float = 0.0


class TenantLedger(Protocol):
    async def open_session(self, tenant: str, lease: str, limit: int, lease_s: float) -> bool:
        """Adds the lease unless the tenant holds ``limit`` live ones; False when full."""
        ...

    async def renew_sessions(self, leases: Sequence[tuple[str, str]], lease_s: float) -> None:
        """Extends (tenant, lease) pairs by ``lease_s``; a lapsed one counts again."""
        ...

    async def close_session(self, tenant: str, lease: str) -> None: ...

    async def add_avatar(self, tenant: str, avatar_id: str, limit: int,
                         ttl_s: float) -> AvatarSlot: ...

    async def touch_avatar(self, tenant: str, avatar_id: str, ttl_s: float) -> None:
        """Renews the last use of a counted avatar (not adding one that is not)."""
        ...

    async def forget_avatar(self, tenant: str, avatar_id: str) -> None: ...

    async def close(self) -> None: ...


def sessions_key(tenant: str) -> str:
    return f"af:tenant:{{{tenant}}}:sessions"


def avatars_key(tenant: str) -> str:
    return f"af:tenant:{{{tenant}}}:avatars"


_NOW = """local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
# KEYS: sessions   ARGV: lease ms, limit, lease id
OPEN = _NOW + """
local lease = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[3])
    and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + lease, ARGV[3])
if redis.call('PTTL', KEYS[1]) < lease then redis.call('PEXPIRE', KEYS[1], lease) end
return 1
"""
# KEYS: the sessions key of each lease   ARGV: lease ms, then the lease ids
RENEW = _NOW + """
local lease = tonumber(ARGV[1])
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], now + lease, ARGV[i + 1])
  if redis.call('PTTL', KEYS[i]) < lease then redis.call('PEXPIRE', KEYS[i], lease) end
end
return 1
"""
# KEYS: avatars   ARGV: ttl ms, limit, avatar id -> {1 admitted | 0 full, 1 new, retry ms}
AVATAR = _NOW + """
local ttl = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
local known = redis.call('ZSCORE', KEYS[1], ARGV[3])
if not known and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, 0, tonumber(oldest[2]) + ttl - now}
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], ttl)
if known then return {1, 0, 0} end
return {1, 1, 0}
"""
# KEYS: avatars   ARGV: ttl ms, avatar id
TOUCH = _NOW + """
local last = redis.call('ZSCORE', KEYS[1], ARGV[2])
if last and tonumber(last) > now - tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now, ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return 1
"""


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisTenantLedger:
    """The ledger in Redis, shared by every gateway. Raises Unavailable when Redis is."""

    def __init__(self, client: connect.AsyncClient) -> None:
        self.redis = client  # the caller's (the bus's) client: it closes it
        self._open = connect.script(client, OPEN)
        self._renew = connect.script(client, RENEW)
        self._avatar = connect.script(client, AVATAR)
        self._touch = connect.script(client, TOUCH)

    async def open_session(self, tenant: str, lease: str, limit: int, lease_s: float) -> bool:
        with _unavailable():
            return bool(await self._open(keys=[sessions_key(tenant)],
                                         args=[_ms(lease_s), limit, lease]))

    async def renew_sessions(self, leases: Sequence[tuple[str, str]], lease_s: float) -> None:
        by_tenant: dict[str, list[str]] = {}
        for tenant, lease in leases:
            by_tenant.setdefault(tenant, []).append(lease)
        with _unavailable():
            # One script run per tenant: each touches one key (one Redis Cluster slot).
            for tenant, ids in by_tenant.items():
                await self._renew(keys=[sessions_key(tenant)] * len(ids),
                                  args=[_ms(lease_s), *ids])

    async def close_session(self, tenant: str, lease: str) -> None:
        with _unavailable():
            await self.redis.zrem(sessions_key(tenant), lease)

    async def add_avatar(self, tenant: str, avatar_id: str, limit: int,
                         ttl_s: float) -> AvatarSlot:
        with _unavailable():
            admitted, new, retry_ms = await self._avatar(keys=[avatars_key(tenant)],
                                                         args=[_ms(ttl_s), limit, avatar_id])
        return AvatarSlot(bool(admitted), bool(new), int(retry_ms) / 1000)

    async def touch_avatar(self, tenant: str, avatar_id: str, ttl_s: float) -> None:
        with _unavailable():
            await self._touch(keys=[avatars_key(tenant)], args=[_ms(ttl_s), avatar_id])

    async def forget_avatar(self, tenant: str, avatar_id: str) -> None:
        with _unavailable():
            await self.redis.zrem(avatars_key(tenant), avatar_id)

    async def close(self) -> None:
        pass  # the client is the caller's


@contextmanager
def _unavailable() -> Iterator[None]:
    """Redis errors as Unavailable: the client sees UNAVAILABLE, not Redis's address."""
    try:
        yield
    except redis.RedisError as exc:
        log.warning("tenants' ledger: %s", exc)
        raise Unavailable("the tenants' ledger (Redis) is unavailable: try again shortly",
                          retryable=True) from None


class MemoryTenantLedger:
    """The ledger of one process (unit tests, one gateway without Redis): the same rules."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._sessions: dict[str, dict[str, float]] = {}  # tenant -> lease -> expiry
        self._avatars: dict[str, dict[str, float]] = {}  # tenant -> avatar id -> last use

    def _live_sessions(self, tenant: str) -> dict[str, float]:
        now = self.clock()
        leases = self._sessions.setdefault(tenant, {})
        for lease in [k for k, expiry in leases.items() if expiry <= now]:
            del leases[lease]
        return leases

    async def open_session(self, tenant: str, lease: str, limit: int, lease_s: float) -> bool:
        leases = self._live_sessions(tenant)
        if lease not in leases and len(leases) >= limit:
            return False
        leases[lease] = self.clock() + lease_s
        return True

    async def renew_sessions(self, leases: Sequence[tuple[str, str]], lease_s: float) -> None:
        for tenant, lease in leases:
            self._sessions.setdefault(tenant, {})[lease] = self.clock() + lease_s

    async def close_session(self, tenant: str, lease: str) -> None:
        self._sessions.get(tenant, {}).pop(lease, None)

    async def add_avatar(self, tenant: str, avatar_id: str, limit: int,
                         ttl_s: float) -> AvatarSlot:
        now = self.clock()
        used = self._avatars.setdefault(tenant, {})
        for lapsed in [k for k, last in used.items() if last <= now - ttl_s]:
            del used[lapsed]
        if avatar_id not in used and len(used) >= limit:
            return AvatarSlot(False, retry_after_s=min(used.values()) + ttl_s - now)
        new = avatar_id not in used
        used[avatar_id] = now
        return AvatarSlot(True, new)

    async def touch_avatar(self, tenant: str, avatar_id: str, ttl_s: float) -> None:
        used = self._avatars.get(tenant, {})
        if avatar_id in used and used[avatar_id] > self.clock() - ttl_s:
            used[avatar_id] = self.clock()

    async def forget_avatar(self, tenant: str, avatar_id: str) -> None:
        self._avatars.get(tenant, {}).pop(avatar_id, None)

    async def close(self) -> None:
        self._sessions.clear()
        self._avatars.clear()
