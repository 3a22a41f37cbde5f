"""Every Redis client avatarflow makes, built from Settings in one place.

``redis_url`` is ``redis://`` (plain), ``rediss://`` (TLS) or ``unix://``; a Redis Cluster
(or Valkey cluster) is ``redis+cluster://host:port[,host:port...]`` (``rediss+cluster://``
with TLS): any of its nodes, the client finds the rest and follows the slots. A password comes
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
from typing import Any, TypeAlias, cast
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio as aioredis
import redis.cluster
from redis.asyncio import cluster as acluster
from redis.asyncio import connection as aconn
from redis.commands.core import AsyncScript

from avatarflow.bus.connections import ASYNC_CLASSES, SYNC_CLASSES
from avatarflow.contracts.errors import InvalidInput
from avatarflow.runtime.settings import Settings

__all__ = ["AsyncClient", "SyncClient", "async_client", "is_cluster", "script", "shown_url",
           "sync_client"]

AsyncClient: TypeAlias = aioredis.Redis | acluster.RedisCluster
SyncClient: TypeAlias = redis.Redis | redis.cluster.RedisCluster
CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")

# A TLS client at a plain port waits for a ServerHello that never comes (the server waits for
# a line end): a rediss:// connection, handshake included, gets this long.
HANDSHAKE_TIMEOUT_S = 10.0


def is_cluster(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster."""
    return url.startswith(CLUSTER_SCHEMES)


def async_client(settings: Settings) -> AsyncClient:
    """The asyncio client of ``settings`` (the stream bus, the tenant ledger)."""
    if is_cluster(settings.redis_url):
        nodes, options = _cluster_options(settings)
        return acluster.RedisCluster(
            startup_nodes=[acluster.ClusterNode(h, p) for h, p in nodes], **options)
    options = _options(settings, aconn.parse_url(settings.redis_url))
    options["connection_class"] = ASYNC_CLASSES[options.get("connection_class",
                                                            aconn.Connection)]
    return aioredis.Redis.from_pool(aioredis.ConnectionPool(**options))


def script(client: AsyncClient, source: str) -> AsyncScript:
    """A Lua script registered on ``client``: EVALSHA, loaded again if the server lost it.
    On a cluster the call goes to the node of its keys' slot (every script here touches one
    slot), and SCRIPT LOAD to every master."""
    return AsyncScript(cast(aioredis.Redis, client), source)


def sync_client(settings: Settings) -> SyncClient:
    """The blocking client of ``settings`` (the avatar registry, tools)."""
    if is_cluster(settings.redis_url):
        nodes, options = _cluster_options(settings)
        return redis.cluster.RedisCluster(
            startup_nodes=[redis.cluster.ClusterNode(h, p) for h, p in nodes], **options)
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


def _cluster_options(settings: Settings) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """The startup nodes and client options of a ``redis+cluster://`` URL."""
    url = settings.redis_url
    scheme, _, rest = url.partition("://")
    parts = urlsplit("//" + rest)
    nodes: list[tuple[str, int]] = []
    for item in filter(None, parts.netloc.rpartition("@")[2].split(",")):
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit():
            raise InvalidInput(f"redis_url {shown_url(url)}: node {item!r} is not host:port")
        nodes.append((host.strip("[]"), int(port)))
    if not nodes:
        raise InvalidInput(f"redis_url {shown_url(url)}: name at least one cluster node")
    if parts.path.strip("/") not in ("", "0"):
        raise InvalidInput(f"redis_url {shown_url(url)}: a cluster has only database 0")
    options: dict[str, Any] = {}
    if parts.username:
        options["username"] = unquote(parts.username)
    if parts.password:
        options["password"] = unquote(parts.password)
    tls = scheme == "rediss+cluster"
    options.update(_options(settings, {}, tls=tls))
    if tls:
        options["ssl"] = True
    return nodes, options


def _options(settings: Settings, parsed: Any, *, tls: bool | None = None) -> dict[str, Any]:
    """Connection-pool keyword arguments: the URL's, then the settings' password and TLS
    (``tls``: whether the URL asks for it; by default, whether it is rediss://)."""
    options: dict[str, Any] = dict(parsed)
    if settings.redis_password:
        options["password"] = settings.redis_password
    tls_files = {"redis_tls_ca": settings.redis_tls_ca, "redis_tls_cert": settings.redis_tls_cert,
                 "redis_tls_key": settings.redis_tls_key}
    if tls is None:
        tls = settings.redis_url.startswith("rediss://")
    if not tls:
        given = [name for name, path in tls_files.items() if path]
        if given:  # a CA without TLS would send the password in the clear, unnoticed
            raise InvalidInput(f"{', '.join(given)} set, but redis_url is not rediss:// "
                               f"({settings.redis_url.split('://')[0]}://): use rediss:// "
                               "(rediss+cluster:// for a cluster) for TLS")
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
