"""The co-located deployment (issue 13, item 3) on a real local cluster: the refiner runs inside
the renderer processes (LocalCluster(colocate=True), two renderer replicas, no refiner process),
frames passed between them in memory. Sessions through the public API come back refined with
nothing of theirs on a ``rendered`` stream in Redis; both stages still report their own
metrics; and when the renderer that owns a session is killed, the other replica takes the
session over, renderer and refiner state together, without the client noticing more than a
gap. ``avatarflow up --colocate`` starts the same shape."""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import time
import urllib.request

import grpc
import pytest

from avatarflow.bus.streams import RedisBus
from avatarflow.cli import up
from avatarflow.client.api import AvatarClient, run_session
from avatarflow.client.record import SessionRecord
from avatarflow.contracts.errors import InvalidInput
from avatarflow.contracts.v1 import api_pb2, internal_pb2, internal_pb2_grpc
from avatarflow.dev.cluster import ClusterError, LocalCluster
from avatarflow.dev.drill import looped, owner
from avatarflow.dev.net import free_port
from avatarflow.runtime.settings import Settings

OUTPUT = api_pb2.OutputFormat(width=256, height=384)  # light: this is about the plumbing
# Every frame refined, however loaded the machine: no load shedding, and a frame budget no
# frame outlasts (the refiner passes a frame on unrefined only to keep a deadline). Shedding
# in the co-located process is tests/unit/test_chain.py's subject.
ALWAYS_REFINE = {"AVATARFLOW_SHED_AFTER_MS": "0", "AVATARFLOW_FRAME_BUDGET_MS": "20000"}
SECONDS = 6.0
STALL_S = 10.0  # no frame for this long is a stall, whatever the machine's load


@pytest.fixture(scope="module")
def colocated(tmp_path_factory: pytest.TempPathFactory):
    with LocalCluster(log_dir=tmp_path_factory.mktemp("colocated-logs"), colocate=True,
                      replicas={"renderer": 2}, env=ALWAYS_REFINE) as c:
        yield c


def registered(cluster: LocalCluster, inputs: dict) -> str:
    """The test portrait's avatar id on ``cluster``, at the output size of these tests."""
    async def register() -> str:
        async with AvatarClient(cluster.gateway_target) as c:
            return (await c.register(inputs["portrait"].read_bytes(), width=OUTPUT.width,
                                     height=OUTPUT.height)).avatar_id

    return asyncio.run(register())


@pytest.fixture(scope="module")
def avatar(colocated: LocalCluster, inputs: dict) -> str:
    return registered(colocated, inputs)


def _config(avatar: str, rate: int) -> api_pb2.SessionConfig:
    return api_pb2.SessionConfig(avatar_id=avatar, sample_rate=rate, output=OUTPUT)


def _stage_frames(cluster: LocalCluster, replica: int,
                  service: str = "renderer") -> dict[str, float]:
    """avatarflow_stage_frames_total per stage label, from one process's /metrics."""
    with urllib.request.urlopen(cluster.metrics_url(service, replica), timeout=10) as r:
        text = r.read().decode()
    return {m[1]: float(m[2]) for m in re.finditer(
        r'^avatarflow_stage_frames_total\{stage="([^"]+)"\} (\S+)$', text, re.M)}


async def _status(cluster: LocalCluster, replica: int,
                  service: str = "renderer") -> internal_pb2.StageStatus:
    async with grpc.aio.insecure_channel(cluster.target(service, replica)) as ch:
        return await internal_pb2_grpc.StageStub(ch).Status(internal_pb2.StatusRequest(),
                                                            timeout=10)


def test_the_refiner_has_no_process_of_its_own(colocated: LocalCluster) -> None:
    assert colocated.services == ("audio-encoder", "motion-gen", "renderer", "gateway")
    assert colocated.replicas("refiner") == 0
    with pytest.raises(ClusterError, match="co-locates the refiner with the renderer"):
        colocated.target("refiner")
    with pytest.raises(ClusterError):
        colocated.add_replica("refiner")
    with pytest.raises(ValueError, match="scale the renderer instead"):
        LocalCluster(colocate=True, replicas={"refiner": 2})


def sessions_watched(cluster: LocalCluster, avatar: str, inputs: dict, n: int = 2
                     ) -> tuple[list[SessionRecord], list[str], set[str]]:
    """``n`` sessions of SECONDS of speech through the public API, with the session ids and
    every Redis key of those sessions seen while they ran."""
    rate = inputs["rate"]
    pcm = looped(inputs["pcm"], rate, SECONDS)
    sids: list[str] = []
    keys: set[str] = set()

    async def watch_redis(bus: RedisBus, done: asyncio.Event) -> None:
        while not done.is_set():
            for sid in list(sids):
                keys.update(await bus.session_keys(sid))
            await asyncio.sleep(0.2)

    async def main() -> list[SessionRecord]:
        done = asyncio.Event()
        bus = RedisBus(Settings(service="gateway", redis_url=cluster.redis_url))
        async with AvatarClient(cluster.gateway_target) as c:
            watcher = asyncio.ensure_future(watch_redis(bus, done))
            try:
                return list(await asyncio.wait_for(asyncio.gather(*[
                    run_session(c, _config(avatar, rate), pcm, rate,
                                on_started=lambda s: sids.append(s.session_id))
                    for _ in range(n)]), SECONDS + 60))
            finally:
                done.set()
                await watcher
                await bus.close()

    return asyncio.run(main()), sids, keys


def test_sessions_come_back_refined_without_a_rendered_stream(colocated: LocalCluster,
                                                              avatar: str, inputs: dict) -> None:
    records, sids, keys = sessions_watched(colocated, avatar, inputs)
    for rec in records:
        assert rec.ended is not None and rec.indexes_strictly_increase
        assert rec.frames[-1].index >= int(SECONDS * 30) - 30
        assert {len(f.data) > 0 for f in rec.frames} == {True}
        assert all(f.refined for f in rec.frames)
    # The other hops are on Redis as ever; the body pass never is.
    assert len(sids) == 2 and any(k.endswith(":motion") for k in keys), sorted(keys)
    assert not [k for k in keys if "rendered" in k], sorted(keys)
    # Both stages report their own frames, from the renderer processes.
    counts = [_stage_frames(colocated, i) for i in range(2)]
    for stage in ("renderer", "refiner"):
        assert sum(c.get(stage, 0) for c in counts) >= sum(len(r.frames) for r in records)
    statuses = [asyncio.run(_status(colocated, i)) for i in range(2)]
    assert sum(s.frames for s in statuses) >= sum(len(r.frames) for r in records)


def session_taken_over(cluster: LocalCluster, service: str, avatar: str, inputs: dict) -> int:
    """A session of SECONDS + 4 s of speech whose owner on ``service`` (two replicas) is killed
    3 s in: the other replica continues it to its normal end, with no gap over STALL_S, no
    frame index twice, nearly every frame, and every frame after the kill refined. Returns the
    surviving replica."""
    rate = inputs["rate"]
    pcm = looped(inputs["pcm"], rate, SECONDS + 4)
    killed: list[tuple[int, float]] = []

    async def kill() -> None:
        await asyncio.sleep(3.0)
        victim = await owner(cluster, service)
        cluster.kill(service, victim)
        killed.append((victim, time.monotonic()))

    async def main() -> SessionRecord:
        async with AvatarClient(cluster.gateway_target) as c:
            rec, _ = await asyncio.wait_for(asyncio.gather(
                run_session(c, _config(avatar, rate), pcm, rate, keep_data=False), kill()),
                pcm.size / rate + 60)
            return rec

    rec = asyncio.run(main())
    (victim, killed_at), = killed
    survivor = 1 - victim
    assert not cluster.alive(service, victim) and cluster.alive(service, survivor)
    assert rec.ended is not None, "the session must end normally"
    assert rec.indexes_strictly_increase
    assert rec.frame_intervals_ms.max() < STALL_S * 1000
    assert rec.frames[-1].index >= int(pcm.size / rate * 30) - 30
    after = [f for f in rec.frames if f.received_at > killed_at]
    assert after and all(f.refined for f in after)
    return survivor


def up_output(tmp_path, *args: str) -> tuple[int, str, str]:  # noqa: ANN001 - pytest's path
    """``avatarflow up ARGS`` on the stand-in services of tests/unit/test_up.py, stopped with
    SIGTERM once it is up: its exit code, the lines it printed until then and the rest."""
    from tests.unit.test_up import _read_until, _up

    proc = _up(tmp_path, free_port(), *args)
    lines: list[str] = []
    try:
        _read_until(proc, lines, "Ctrl-C")
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.communicate(timeout=30)
    return proc.returncode, "".join(lines), rest


def test_a_killed_renderer_hands_its_sessions_to_the_other_replica(colocated: LocalCluster,
                                                                   avatar: str,
                                                                   inputs: dict) -> None:
    survivor = session_taken_over(colocated, "renderer", avatar, inputs)
    status = asyncio.run(_status(colocated, survivor))
    assert status.recovered >= 1
    assert _stage_frames(colocated, survivor).get("refiner", 0) > 0


def test_up_colocate_starts_no_refiner_and_says_where_it_runs(tmp_path) -> None:
    """``avatarflow up --colocate`` on the stand-in services of tests/unit/test_up.py."""
    code, text, rest = up_output(tmp_path, "--colocate", "--replicas", "renderer=2")
    assert code == 0, text + rest
    assert re.search(r"^  refiner +inside each renderer process \(--colocate\)$", text, re.M), text
    assert "renderer-1" in text and not list(tmp_path.glob("refiner-*.log"))
    assert "AVATARFLOW_RENDERER_COLOCATE" not in text  # an env var, not a table row
    with pytest.raises(InvalidInput, match="drop refiner= from --replicas"):
        up.run(argparse.Namespace(replicas=["refiner=2"], colocate=True))


def test_up_colocate_all_runs_both_guests_inside_their_hosts(tmp_path) -> None:
    """``avatarflow up --colocate all``: the fused layout, three kinds of process."""
    code, text, rest = up_output(tmp_path, "--colocate", "all")
    assert code == 0, text + rest
    assert re.search(r"^  motion-gen +inside each audio-encoder process \(--colocate\)$", text,
                     re.M), text
    assert re.search(r"^  refiner +inside each renderer process \(--colocate\)$", text, re.M)
    assert {p.name for p in tmp_path.glob("*.log") if p.name != "redis.log"} == \
        {"gateway-0.log", "audio-encoder-0.log", "renderer-0.log"}
    with pytest.raises(InvalidInput, match="drop motion-gen= from --replicas"):
        up.run(argparse.Namespace(replicas=["motion-gen=2"], colocate="all"))
