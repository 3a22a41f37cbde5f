"""TLS on a service's port (avatarflow.runtime.tls, ServiceRuntime): files checked at start,
replaced files served from the next handshake on, a bad replacement ignored, plaintext health
beside a TLS port for probes that cannot do TLS."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from avatarflow.contracts.errors import InvalidInput
from avatarflow.dev import certs
from avatarflow.dev.net import free_port
from avatarflow.runtime.service import ServiceRuntime
from avatarflow.runtime.settings import Settings
from avatarflow.runtime.tls import CertificateFiles


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> certs.Certs:
    return certs.write(tmp_path_factory.mktemp("pki"))


def _live(tmp_path: Path, pair: certs.Pair) -> tuple[Path, Path]:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    shutil.copy(pair.cert, cert)
    shutil.copy(pair.key, key)
    return cert, key


def test_missing_or_mismatched_files_stop_the_start(pki: certs.Certs, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="tls_cert: cannot read .*missing.pem"):
        CertificateFiles(str(tmp_path / "missing.pem"), str(pki.server.key))
    with pytest.raises(InvalidInput, match="not a PEM certificate chain and its private key"):
        CertificateFiles(str(pki.server.cert), str(pki.client.key))  # another key
    with pytest.raises(InvalidInput, match="tls_client_ca: .* holds no PEM CA"):
        CertificateFiles(str(pki.server.cert), str(pki.server.key), str(pki.server.key))
    settings = Settings.load("gateway", environ={}, tls_cert=str(tmp_path / "missing.pem"),
                             tls_key=str(pki.server.key))
    with pytest.raises(InvalidInput, match="tls_cert"):
        ServiceRuntime(settings)


def test_changed_files_are_fetched_once_per_check(pki: certs.Certs, tmp_path: Path) -> None:
    now = [0.0]
    cert, key = _live(tmp_path, pki.server)
    files = CertificateFiles(str(cert), str(key), check_every_s=5.0, clock=lambda: now[0])
    assert files.fetch() is None  # unchanged
    other = certs.write(tmp_path / "other")
    _live(tmp_path, other.server)
    now[0] = 1.0
    assert files.fetch() is None  # not checked again before check_every_s
    now[0] = 5.5
    assert files.fetch() is not None and files.reloads == 1
    now[0] = 11.0
    assert files.fetch() is None  # served already


def test_a_bad_replacement_keeps_the_files_in_force(pki: certs.Certs, tmp_path: Path) -> None:
    now = [0.0]
    cert, key = _live(tmp_path, pki.server)
    files = CertificateFiles(str(cert), str(key), check_every_s=1.0, clock=lambda: now[0])
    config = files.config
    key.write_bytes(pki.client.key.read_bytes())  # half-way through a rotation: wrong key
    now[0] = 2.0
    assert files.fetch() is None and files.config is config and files.reloads == 0
    key.write_bytes(pki.server.key.read_bytes())
    now[0] = 4.0
    assert files.fetch() is None  # back to the files in force: nothing to reload


async def _health(target: str, credentials: grpc.ChannelCredentials | None) -> str:
    channel = (grpc.aio.insecure_channel(target) if credentials is None
               else grpc.aio.secure_channel(target, credentials))
    async with channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def test_tls_port_with_plaintext_health_beside_it(pki: certs.Certs) -> None:
    port, health_port = free_port(), free_port()
    settings = Settings.load("gateway", environ={}, port=port, health_port=health_port,
                             metrics_port=-1, listen_host="127.0.0.1", grace_s=0.5,
                             tls_cert=str(pki.server.cert), tls_key=str(pki.server.key))
    trusted = grpc.ssl_channel_credentials(pki.ca.read_bytes())
    seen: dict[str, str] = {}

    async def main() -> None:
        runtime = ServiceRuntime(settings)
        gate = asyncio.Event()

        async def work() -> None:
            seen["tls"] = await _health(f"127.0.0.1:{port}", trusted)
            seen["plain on the TLS port"] = await _health(f"127.0.0.1:{port}", None)
            seen["plain health port"] = await _health(f"127.0.0.1:{health_port}", None)
            gate.set()

        async def idle() -> None:
            return None

        await runtime.run(idle, [work()], idle)
        assert gate.is_set()

    asyncio.run(main())
    assert seen == {"tls": "SERVING", "plain on the TLS port": "UNAVAILABLE",
                    "plain health port": "SERVING"}
