"""Every Redis client avatarflow makes, built from Settings in one place.

``redis_url`` is ``redis://`` (plain), ``rediss://`` (TLS) or ``unix://``. A password comes
from ``redis_password`` (AUTH; it wins over one written inside the URL, so a Kubernetes Secret
can supply it). With ``rediss://`` the server's certificate is verified, host name included,
against ``redis_tls_ca`` (the system's CAs when unset), and ``redis_tls_cert``/``redis_tls_key``
present a client certificate (Redis ``tls-auth-clients``). A refused password or a failed TLS
handshake raises Unavailable saying which, wherever the connection is made
(avatarflow.bus.connections): a bare "connection reset" would send an operator looking at the
network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio import connection as aconn

from avatarflow.bus.connections import ASYNC_CLASSES, SYNC_CLASSES
from avatarflow.contracts.errors import InvalidInput
from avatarflow.runtime.settings import Settings

__all__ = ["async_client", "shown_url", "sync_client"]

# A TLS client at a plain port waits for a ServerHello that never comes (the server waits for
# a line end): a rediss:// connection, handshake included, gets this long.
HANDSHAKE_TIMEOUT_S = 10.0


def async_client(settings: Settings) -> aioredis.Redis:
    """The asyncio client of ``settings`` (the stream bus, the tenant ledger)."""
    options = _options(settings, aconn.parse_url(settings.redis_url))
    options["connection_class"] = ASYNC_CLASSES[options.get("connection_class",
                                                            aconn.Connection)]
    return aioredis.Redis.from_pool(aioredis.ConnectionPool(**options))


def sync_client(settings: Settings) -> redis.Redis:
    """The blocking client of ``settings`` (the avatar registry, tools)."""
    options = _options(settings, redis.connection.parse_url(settings.redis_url))
    options["connection_class"] = SYNC_CLASSES[options.get("connection_class",
                                                           redis.Connection)]
    return redis.Redis.from_pool(redis.ConnectionPool(**options))


def shown_url(url: str) -> str:
    """``url`` fit for a log line or an error message: a password inside it is masked."""
    scheme, sep, rest = url.partition("://")
    auth, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in auth:
        return url
    return f"{scheme}://{auth.split(':', 1)[0]}:***@{host}"


def _options(settings: Settings, parsed: Any) -> dict[str, Any]:
    """Connection-pool keyword arguments: the URL's, then the settings' password and TLS."""
    options: dict[str, Any] = dict(parsed)
    if settings.redis_password:
        options["password"] = settings.redis_password
    tls_files = {"redis_tls_ca": settings.redis_tls_ca, "redis_tls_cert": settings.redis_tls_cert,
                 "redis_tls_key": settings.redis_tls_key}
    if not settings.redis_url.startswith("rediss://"):
        given = [name for name, path in tls_files.items() if path]
        if given:  # a CA without TLS would send the password in the clear, unnoticed
            raise InvalidInput(f"{', '.join(given)} set, but redis_url is not rediss:// "
                               f"({settings.redis_url.split('://')[0]}://): use rediss:// "
                               "for TLS")
        return options
    for name, path in tls_files.items():
        if path and not Path(path).is_file():
            raise InvalidInput(f"{name}: no such file {path!r}")
    options.setdefault("socket_connect_timeout", HANDSHAKE_TIMEOUT_S)
    options.update(ssl_cert_reqs="required", ssl_check_hostname=True,
                   ssl_ca_certs=settings.redis_tls_ca or None,
                   ssl_certfile=settings.redis_tls_cert or None,
                   ssl_keyfile=settings.redis_tls_key or None)
    return options
