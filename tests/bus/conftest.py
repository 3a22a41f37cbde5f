"""The Redis servers the bus tests run on."""

from __future__ import annotations

import pytest

from avatarflow.dev.redis_cluster import RedisClusterServer
from avatarflow.dev.redis_server import RedisServer


@pytest.fixture(scope="module", params=["redis", "cluster"])
def redis_url(request: pytest.FixtureRequest):
    """A single redis-server, then a 3-master Redis Cluster (16 bus shards over its slots);
    one of each per test module."""
    server = RedisServer() if request.param == "redis" else RedisClusterServer(masters=3)
    with server:
        yield server.url
