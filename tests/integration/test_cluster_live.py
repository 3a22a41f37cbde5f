"""Live behaviour of a session: barge-in, audio stalls, a client that disconnects, several
sessions at once, and the standard health and reflection services."""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from avatarflow.bus.streams import RedisBus
from avatarflow.client.api import AvatarClient, run_session
from avatarflow.client.record import SessionRecord
from avatarflow.contracts.v1 import api_pb2, internal_pb2, internal_pb2_grpc
from avatarflow.runtime.settings import Settings
from tests.integration.cluster_support import (
    FPS,
    config,
    frame_audio_rms,
    mouth_openings,
    sessions_with,
    steady_fps,
)
from tests.support.video import CLOSED_BELOW

STAGES = ("audio-encoder", "motion-gen", "renderer", "refiner")


async def _collect(session, rec: SessionRecord) -> None:
    async for response in session.responses():
        rec.add(response, time.monotonic())


@pytest.mark.flaky(reruns=1)  # the 250 ms reaction bar is wall time on two shared cores, see README
def test_interrupt_drops_the_old_audio_at_once(cluster, avatar_id: str, inputs: dict) -> None:
    """Old audio (every sample even) is sent in a burst, then a barge-in and new audio (every
    sample odd): no frame carrying old audio may arrive more than 100 ms after the interrupt."""
    rate = inputs["rate"]
    speech = inputs["pcm"][:int(4 * rate)]
    old, new = speech & ~1, (speech[:int(2 * rate)] | 1).astype(np.int16)
    step = int(0.02 * rate)
    marks: dict[str, float] = {}

    async def main() -> SessionRecord:
        async with AvatarClient(cluster.gateway_target) as c:
            s = c.open(config(avatar_id, rate))
            rec = SessionRecord(started=await s.start())
            receiver = asyncio.create_task(_collect(s, rec))
            for i in range(0, old.size, step):  # a burst: far ahead of the renderer
                await s.send_audio(old[i:i + step])
            await asyncio.sleep(1.5)  # old-audio frames are flowing by then, even under load
            await s.interrupt()
            marks["interrupt"] = time.monotonic()
            t0 = time.monotonic()
            for k, i in enumerate(range(0, new.size, step)):
                await asyncio.sleep(max(0.0, t0 + k * 0.02 - time.monotonic()))
                await s.send_audio(new[i:i + step])
                marks.setdefault("new", time.monotonic())
            await s.end()
            await receiver
            return rec

    rec = asyncio.run(main())
    assert rec.ended is not None and rec.indexes_strictly_increase

    def kind(f) -> str:
        a = np.frombuffer(f.audio, "<i2")
        return "silent" if not a.any() else ("new" if (a & 1).all() else "old")

    late_old = [f for f in rec.frames
                if kind(f) == "old" and f.received_at > marks["interrupt"] + 0.1]
    first_new = next(f for f in rec.frames if kind(f) == "new")
    before = sum(kind(f) == "old" for f in rec.frames)
    print(f"{before} old-audio frames before the interrupt, {len(late_old)} after +100 ms; "
          f"first new-audio frame {1e3 * (first_new.received_at - marks['new']):.0f} ms after "
          "the first new chunk was sent")
    assert before > 0 and not late_old
    assert first_new.received_at - marks["new"] < 0.25
    assert sum(kind(f) == "new" for f in rec.frames) >= 2 * FPS - 3


def test_frames_keep_coming_through_an_audio_stall(cluster, avatar_id: str,
                                                   inputs: dict) -> None:
    rate = inputs["rate"]
    speech = inputs["pcm"][:int(1.5 * rate)]
    step = int(0.02 * rate)

    async def main() -> tuple[SessionRecord, float, float]:
        async with AvatarClient(cluster.gateway_target) as c:
            s = c.open(config(avatar_id, rate))
            rec = SessionRecord(started=await s.start())
            receiver = asyncio.create_task(_collect(s, rec))
            t0 = time.monotonic()
            for k, i in enumerate(range(0, speech.size, step)):
                await asyncio.sleep(max(0.0, t0 + k * 0.02 - time.monotonic()))
                await s.send_audio(speech[i:i + step])
            stall_from = time.monotonic()
            await asyncio.sleep(2.0)  # the client has nothing to say for two seconds
            stall_to = time.monotonic()
            for i in range(0, speech.size, step):
                await s.send_audio(speech[i:i + step])
                await asyncio.sleep(0.02)
            await s.end()
            await receiver
            return rec, stall_from, stall_to

    rec, a, b = asyncio.run(main())
    during = [f for f in rec.frames if a + 0.3 < f.received_at < b]
    gaps = [e.gap for e in rec.events if e.WhichOneof("kind") == "gap"]
    intervals = np.diff([f.received_at for f in during]) * 1e3
    print(f"{len(during)} frames in {b - a - 0.3:.1f} s of stall, largest interval "
          f"{intervals.max():.0f} ms; gaps reported: {[(g.pts, g.duration) for g in gaps]}")
    assert len(during) >= 0.9 * FPS * (b - a - 0.3)
    assert intervals.max() < 150
    assert gaps and 1.5 < sum(g.duration for g in gaps) < 2.3
    # the idle frames carry silence and show a closed mouth
    idle = [i for i, f in enumerate(rec.frames) if f in during]
    silent = frame_audio_rms(rec)[idle] == 0
    opening = mouth_openings(rec)[idle]
    assert silent.all()
    assert (opening[6:] < CLOSED_BELOW).mean() >= 0.9


def _stage_sessions(cluster) -> dict[str, int]:
    async def main() -> dict[str, int]:
        out = {}
        for s in STAGES:
            async with grpc.aio.insecure_channel(cluster.target(s)) as ch:
                st = await internal_pb2_grpc.StageStub(ch).Status(internal_pb2.StatusRequest())
                out[s] = st.sessions
        return out

    return asyncio.run(main())


async def _session_keys(redis_url: str, sid: str) -> list[str]:
    """The Redis keys the session still has, as the bus reports them."""
    bus = RedisBus(Settings.load("gateway", environ={}, redis_url=redis_url, consumer="check"))
    try:
        return await bus.session_keys(sid)
    finally:
        await bus.close()


def test_a_client_that_disconnects_releases_everything(cluster, avatar_id: str,
                                                       inputs: dict) -> None:
    rate = inputs["rate"]
    speech = inputs["pcm"][:int(3 * rate)]

    async def main() -> str:
        async with AvatarClient(cluster.gateway_target) as c:
            s = c.open(config(avatar_id, rate))
            started = await s.start()
            for i in range(0, speech.size, int(0.02 * rate)):  # a burst, then gone
                await s.send_audio(speech[i:i + int(0.02 * rate)])
            await asyncio.sleep(0.5)
            s.cancel()
            return started.session_id

    sid = asyncio.run(main())
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        left = asyncio.run(_session_keys(cluster.redis_url, sid))
        busy = _stage_sessions(cluster)
        if not left and not any(busy.values()):
            break
        time.sleep(0.25)
    print(f"left after disconnect: keys {left}, stage sessions {busy}")
    assert not left
    assert not any(busy.values())


@pytest.mark.flaky(reruns=1)  # capacity at the edge of two shared cores: one rerun, see README
def test_four_sessions_at_once_all_keep_their_rate(cluster, avatar_id: str,
                                                   inputs: dict) -> None:
    """Four sessions at 256x256 and 30 fps, each streaming 20 ms chunks paced in real time:
    every one keeps its rate, nearly nothing is dropped. (Held with one of the two cores kept
    busy by another process too; the cluster benchmark measures five at 256x384.)"""
    rate = inputs["rate"]
    pcm = inputs["pcm"][:int(6 * rate)]

    async def register() -> str:  # once per format, as a platform does before its sessions
        async with AvatarClient(cluster.gateway_target) as c:
            reply = await c.register(inputs["portrait"].read_bytes(), width=256, height=256)
            return reply.avatar_id

    small = asyncio.run(register())
    assert small == avatar_id  # the id names the portrait, whatever the format
    fps = 30.0
    cfg = config(small, rate, output=api_pb2.OutputFormat(width=256, height=256, fps=fps))
    recs = sessions_with(cluster.gateway_target, [(cfg, pcm, rate)] * 4, keep_data=False,
                         chunk_s=0.02)
    for rec in recs:
        print(f"{len(rec.frames)} frames, {rec.achieved_fps:.2f} fps, steady "
              f"{steady_fps(rec):.2f}, dropped {rec.dropped}, first frame "
              f"{rec.first_frame_latency_s * 1e3:.0f} ms, p99 interval {rec.p99_interval_ms:.0f}")
    for rec in recs:
        assert rec.ended is not None and rec.indexes_strictly_increase
        assert abs(steady_fps(rec) - fps) <= 0.05 * fps
        assert rec.dropped <= 0.02 * len(rec.frames)


def test_every_service_reports_health_and_offers_reflection(cluster) -> None:
    expected = {"gateway": "avatarflow.v1.Avatars", "renderer": "avatarflow.v1.Portraits",
                **{s: "avatarflow.v1.Stage" for s in STAGES}}

    async def main() -> None:
        for service, name in expected.items():
            target = cluster.gateway_target if service == "gateway" else cluster.target(service)
            async with grpc.aio.insecure_channel(target) as ch:
                health = health_pb2_grpc.HealthStub(ch)
                for svc in ("", name):
                    reply = await health.Check(health_pb2.HealthCheckRequest(service=svc))
                    assert reply.status == health_pb2.HealthCheckResponse.SERVING
                call = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo()
                await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
                await call.done_writing()
                reply = await call.read()
                names = {s.name for s in reply.list_services_response.service}
                assert {name, "grpc.health.v1.Health"} <= names, (service, names)

    asyncio.run(main())


def test_the_client_command_records_video_and_audio(cluster, inputs: dict, tmp_path) -> None:
    from tests.integration.conftest import run_cli
    from tests.support.video import read_video

    out = tmp_path / "talk.mp4"
    res = run_cli("client", "--image", str(inputs["portrait"]), "--audio",
                  str(inputs["speech"]), "--out", str(out), "--target", cluster.gateway_target)
    print(res.stdout)
    assert res.returncode == 0, res.stderr
    for what in ("first frame", "fps", "p99"):
        assert what in res.stdout
    v = read_video(out)
    assert abs(v.audio_seconds - v.video_seconds) <= 1 / FPS
    assert abs(len(v.frames) - inputs["pcm"].size / inputs["rate"] * FPS) <= 2
    _ = run_session  # the library the command is built on is tested above
