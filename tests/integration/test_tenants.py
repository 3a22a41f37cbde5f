"""Tenants at the public API of a real local cluster with API keys required: keys checked
(and rotated without a restart), avatars kept apart by tenant, per-tenant quotas, and a
gateway that refuses sessions and reports NOT_SERVING when full."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from avatarflow.contracts.v1 import api_pb2, api_pb2_grpc
from avatarflow.dev.cluster import LocalCluster
from avatarflow.dev.net import free_port
from avatarflow_gateway.keys import hash_key, new_key

RATE = 16000
SMALL = api_pb2.OutputFormat(width=256, height=384)  # light on a shared CPU
MAX_SESSIONS = 3  # the gateway's
KEYS = {name: new_key() for name in ("acme", "beta", "few", "slow", "rot", "rot2")}
TENANTS = {
    "acme": {"max_sessions": 2},
    "beta": {},
    "few": {"max_avatars": 1},
    "slow": {"register_per_minute": 2},
}


def _write_keys(path: Path, rotation: list[str]) -> None:
    """The keys file, replaced at once as a Secret volume is; ``rotation``: rot's keys."""
    tenants: dict[str, Any] = {n: {"keys": [hash_key(KEYS[n])], **q} for n, q in TENANTS.items()}
    tenants["rot"] = {"keys": [hash_key(KEYS[k]) for k in rotation]}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump({"tenants": tenants}))
    os.replace(tmp, path)


@pytest.fixture(scope="module")
def keys_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tenants") / "keys.yaml"
    _write_keys(path, ["rot"])
    return path


@pytest.fixture(scope="module")
def keyed(keys_path: Path):
    """A local cluster whose gateway requires keys (LocalCluster's default is auth off)."""
    env = {"AVATARFLOW_GATEWAY_AUTH": "required",
           "AVATARFLOW_GATEWAY_API_KEYS_FILE": str(keys_path),
           "AVATARFLOW_GATEWAY_KEYS_RELOAD_S": "0.2",
           "AVATARFLOW_GATEWAY_MAX_SESSIONS": str(MAX_SESSIONS)}
    with LocalCluster(env=env, log_dir=keys_path.parent / "logs") as cluster:
        yield cluster


def _md(tenant: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {KEYS[tenant]}"),)


def _run(cluster: LocalCluster, fn: Callable[[api_pb2_grpc.AvatarsStub], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with grpc.aio.insecure_channel(cluster.gateway_target) as channel:
            return await asyncio.wait_for(fn(api_pb2_grpc.AvatarsStub(channel)), 180)

    return asyncio.run(main())


async def _register(stub: api_pb2_grpc.AvatarsStub, image: bytes,
                    md: tuple[tuple[str, str], ...]) -> str | grpc.aio.AioRpcError:
    try:
        reply = await stub.RegisterAvatar(api_pb2.RegisterAvatarRequest(image=image,
                                                                        output=SMALL),
                                          metadata=md)
    except grpc.aio.AioRpcError as exc:
        return exc
    return str(reply.avatar_id)


class Held:
    """A session kept open (frames keep coming: the front fills silence), counting frames."""

    def __init__(self, stub: api_pb2_grpc.AvatarsStub, avatar_id: str, tenant: str) -> None:
        self.call = stub.Session(metadata=_md(tenant))
        self.avatar_id = avatar_id
        self.indexes: list[int] = []
        self.error: grpc.aio.AioRpcError | None = None
        self._reader: asyncio.Task[None] | None = None

    async def open(self) -> Held:
        """Sends the config; returns once started (raises the call's error otherwise)."""
        await self.call.write(api_pb2.SessionRequest(config=api_pb2.SessionConfig(
            avatar_id=self.avatar_id, sample_rate=RATE, output=SMALL)))
        first = await self.call.read()
        assert first.WhichOneof("kind") == "started"
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        try:
            while (r := await self.call.read()) is not grpc.aio.EOF:
                if r.HasField("frame"):
                    self.indexes.append(r.frame.index)
        except grpc.aio.AioRpcError as exc:
            self.error = exc

    async def frames(self, more: int, timeout: float = 60) -> None:
        """Waits until ``more`` further frames came."""
        goal = len(self.indexes) + more
        async with asyncio.timeout(timeout):
            while len(self.indexes) < goal:
                assert self.error is None, self.error
                await asyncio.sleep(0.05)

    async def end(self) -> None:
        await self.call.done_writing()
        assert self._reader is not None
        await self._reader
        assert self.error is None, self.error
        assert all(a < b for a, b in zip(self.indexes, self.indexes[1:], strict=False))


async def _refused(stub: api_pb2_grpc.AvatarsStub, avatar_id: str,
                   tenant: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await Held(stub, avatar_id, tenant).open()
    return info.value


def _retry_after_ms(err: grpc.aio.AioRpcError) -> int:
    hints = [v for k, v in err.trailing_metadata() or () if k == "retry-after-ms"]
    assert len(hints) == 1, err.trailing_metadata()
    return int(hints[0])


@pytest.fixture(scope="module")
def image(inputs: dict) -> bytes:
    return bytes(inputs["portrait"].read_bytes())


@pytest.fixture(scope="module")
def ids(keyed: LocalCluster, image: bytes) -> dict[str, str]:
    """The test portrait, registered by acme and by beta."""
    async def both(stub: api_pb2_grpc.AvatarsStub) -> dict[str, str]:
        return {t: await _register(stub, image, _md(t)) for t in ("acme", "beta")}

    return _run(keyed, both)


@pytest.mark.parametrize("md,words", [
    ((), "missing API key"),
    ((("authorization", "Bearer " + new_key()),), "invalid API key"),
])
def test_no_key_or_a_wrong_key_is_unauthenticated(keyed: LocalCluster, image: bytes,
                                                  md: tuple, words: str) -> None:
    async def both(stub: api_pb2_grpc.AvatarsStub) -> list[tuple[grpc.StatusCode, str]]:
        call = stub.Session(metadata=md)
        # Refused on its metadata, before any request is read. (A request written meanwhile
        # may meet the refusal, and grpc's client then reports its own INTERNAL for the call
        # instead of the server's status: the call is read, not written.)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call.read()
        err = await _register(stub, image, md)
        assert isinstance(err, grpc.aio.AioRpcError)
        return [(err.code(), err.details() or ""),
                (info.value.code(), info.value.details() or "")]

    for code, details in _run(keyed, both):
        assert code == grpc.StatusCode.UNAUTHENTICATED and words in details


def test_tenants_get_their_own_ids_and_cannot_use_anothers(keyed: LocalCluster,
                                                           ids: dict[str, str]) -> None:
    assert ids["acme"] != ids["beta"]
    assert all(i.startswith("av-") and len(i) == 35 for i in ids.values())

    async def probe(stub: api_pb2_grpc.AvatarsStub) -> tuple[Any, Any]:
        theirs = await _refused(stub, ids["acme"], "beta")
        made_up = await _refused(stub, ids["beta"][:11] + "0" * 24, "beta")
        return theirs, made_up

    theirs, made_up = _run(keyed, probe)
    assert theirs.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "not issued to this tenant" in theirs.details()
    assert made_up.code() == grpc.StatusCode.NOT_FOUND  # beta's own tag: looked up


def test_over_the_tenant_session_quota_is_refused_while_its_sessions_run_on(
        keyed: LocalCluster, ids: dict[str, str]) -> None:
    async def main(stub: api_pb2_grpc.AvatarsStub) -> grpc.aio.AioRpcError:
        held = [await Held(stub, ids["acme"], "acme").open() for _ in range(2)]
        err = await _refused(stub, ids["acme"], "acme")
        for h in held:  # the running sessions keep their frames coming
            await h.frames(15)
        await held[0].end()
        async with asyncio.timeout(30):  # its lease is given back at once
            while True:
                try:
                    again = await Held(stub, ids["acme"], "acme").open()
                    break
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    await asyncio.sleep(0.2)
        await again.frames(3)
        for h in (held[1], again):
            await h.end()
        return err

    err = _run(keyed, main)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "'acme' has 2 sessions open" in err.details() and "max_sessions" in err.details()
    assert _retry_after_ms(err) > 0


def test_a_full_gateway_refuses_sessions_and_is_not_serving_until_one_ends(
        keyed: LocalCluster, ids: dict[str, str]) -> None:
    async def health(service: str) -> int:
        async with grpc.aio.insecure_channel(keyed.gateway_target) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service))
            return int(reply.status)

    async def until(status: int) -> None:
        async with asyncio.timeout(30):
            while {await health(""), await health("avatarflow.v1.Avatars")} != {status}:
                await asyncio.sleep(0.1)

    async def main(stub: api_pb2_grpc.AvatarsStub) -> grpc.aio.AioRpcError:
        await until(health_pb2.HealthCheckResponse.SERVING)
        held = [await Held(stub, ids[t], t).open() for t in ("acme", "acme", "beta")]
        await until(health_pb2.HealthCheckResponse.NOT_SERVING)
        err = await _refused(stub, ids["beta"], "beta")
        await held[2].frames(10)
        await held[0].end()
        await until(health_pb2.HealthCheckResponse.SERVING)
        for h in held[1:]:
            await h.end()
        return err

    err = _run(keyed, main)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"limit of {MAX_SESSIONS} concurrent sessions" in err.details()
    assert _retry_after_ms(err) > 0


def test_the_avatar_quota_counts_distinct_portraits(keyed: LocalCluster, image: bytes) -> None:
    async def main(stub: api_pb2_grpc.AvatarsStub) -> list[Any]:
        md = _md("few")
        return [await _register(stub, image, md), await _register(stub, image, md),
                await _register(stub, image + b"\0", md)]  # another upload

    first, again, other = _run(keyed, main)
    assert isinstance(first, str) and again == first
    assert isinstance(other, grpc.aio.AioRpcError)
    assert other.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "holds 1 avatars" in other.details() and "max_avatars" in other.details()
    assert _retry_after_ms(other) > 0


def test_registration_is_rate_limited(keyed: LocalCluster, image: bytes) -> None:
    async def main(stub: api_pb2_grpc.AvatarsStub) -> list[Any]:
        return [await _register(stub, image, _md("slow")) for _ in range(3)]

    first, second, third = _run(keyed, main)
    assert isinstance(first, str) and second == first
    assert isinstance(third, grpc.aio.AioRpcError)
    assert third.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "2 per minute" in third.details()
    assert 1000 <= _retry_after_ms(third) <= 60_000


def test_a_key_is_rotated_without_a_restart(keyed: LocalCluster, keys_path: Path) -> None:
    path = keys_path

    async def works(stub: api_pb2_grpc.AvatarsStub, key: str) -> bool:
        err = await _register(stub, b"", _md(key))  # an empty image: no work, but authenticated
        assert isinstance(err, grpc.aio.AioRpcError)
        return err.code() != grpc.StatusCode.UNAUTHENTICATED

    async def until(stub: api_pb2_grpc.AvatarsStub, want: dict[str, bool]) -> None:
        async with asyncio.timeout(30):
            while {k: await works(stub, k) for k in want} != want:
                await asyncio.sleep(0.1)

    async def main(stub: api_pb2_grpc.AvatarsStub) -> None:
        await until(stub, {"rot": True, "rot2": False})
        _write_keys(path, ["rot", "rot2"])  # the new key added: both work
        await until(stub, {"rot": True, "rot2": True})
        _write_keys(path, ["rot2"])  # the old one removed
        await until(stub, {"rot": False, "rot2": True})
        path.write_text("tenants: {broken")  # a bad file: the keys in force stay
        await asyncio.sleep(1.0)
        await until(stub, {"rot": False, "rot2": True})

    pid = keyed.pid("gateway")
    _run(keyed, main)
    assert keyed.pid("gateway") == pid and keyed.alive("gateway")  # no restart
    assert "the keys loaded before stay in force" in keyed.log_path("gateway").read_text()
    _write_keys(path, ["rot"])


def test_serve_gateway_without_keys_refuses_to_start() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AVATARFLOW_")}
    command = [str(Path(sys.executable).parent / "avatarflow"), "serve", "gateway", "--port",
               str(free_port()), "--metrics-port", "-1", "--redis", "redis://127.0.0.1:1/0"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120,
                          env={**env, "AVATARFLOW_AUTH": "required"})
    assert proc.returncode != 0
    assert "AVATARFLOW_API_KEYS_FILE" in proc.stderr and "AVATARFLOW_AUTH=off" in proc.stderr
