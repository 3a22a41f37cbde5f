"""The fused layout (issue 13) on a real local cluster: motion-gen inside the audio-encoder
processes and the refiner inside the renderer's (``LocalCluster(colocate=("motion-gen",
"refiner"))``), so a frame crosses Redis three times (audio, motion, final frames) instead of
five. Sessions through the public API come back in order and refined with nothing of theirs
on a ``features`` or ``rendered`` stream; the hosts report their guests' metrics; and when the
audio-encoder that owns a session is killed, the other replica takes the session over,
audio-encoder and motion-gen state together, and the session ends normally.

Its own module (not tests/integration/test_colocated.py) so that its cluster and the
co-located one never run at the same time on a small machine.
"""

from __future__ import annotations

import asyncio

import pytest

from avatarflow.dev.cluster import ClusterError, LocalCluster
from tests.integration.test_colocated import (
    ALWAYS_REFINE,
    SECONDS,
    _stage_frames,
    _status,
    registered,
    session_taken_over,
    sessions_watched,
)

HOST = "audio-encoder"


@pytest.fixture(scope="module")
def fused(tmp_path_factory: pytest.TempPathFactory):
    with LocalCluster(log_dir=tmp_path_factory.mktemp("fused-logs"),
                      colocate=("motion-gen", "refiner"), replicas={HOST: 2},
                      env=ALWAYS_REFINE) as c:
        yield c


@pytest.fixture(scope="module")
def avatar(fused: LocalCluster, inputs: dict) -> str:
    return registered(fused, inputs)


def test_motion_gen_and_the_refiner_have_no_processes(fused: LocalCluster) -> None:
    assert fused.colocate == ("motion-gen", "refiner")
    assert fused.services == ("audio-encoder", "renderer", "gateway")
    assert fused.runs_in("motion-gen") == HOST and fused.runs_in("renderer") == "renderer"
    assert fused.replicas("motion-gen") == fused.replicas("refiner") == 0
    with pytest.raises(ClusterError, match="co-locates the motion-gen with the audio-encoder"):
        fused.target("motion-gen")
    with pytest.raises(ClusterError):
        fused.kill("motion-gen")
    with pytest.raises(ValueError, match="scale the audio-encoder instead"):
        LocalCluster(colocate=("motion-gen",), replicas={"motion-gen": 2})
    with pytest.raises(ValueError, match="cannot run inside another stage's processes"):
        LocalCluster(colocate=("renderer",))


def test_sessions_come_back_in_order_and_refined_over_three_hops(fused: LocalCluster,
                                                                 avatar: str,
                                                                 inputs: dict) -> None:
    records, sids, keys = sessions_watched(fused, avatar, inputs)
    for rec in records:
        assert rec.ended is not None and rec.indexes_strictly_increase
        assert rec.frames[-1].index >= int(SECONDS * 30) - 30
        assert all(f.refined and len(f.data) > 0 for f in rec.frames)
    # Audio and motion still go over Redis; features and the body pass never do.
    assert len(sids) == 2 and any(k.endswith(":motion") for k in keys), sorted(keys)
    assert not [k for k in keys if "features" in k or "rendered" in k], sorted(keys)
    delivered = sum(len(r.frames) for r in records)
    hosts = [_stage_frames(fused, i, HOST) for i in range(2)]
    for stage in ("audio-encoder", "motion-gen"):
        assert sum(c.get(stage, 0) for c in hosts) >= delivered
    renderer = _stage_frames(fused, 0)
    assert renderer.get("renderer", 0) >= delivered and renderer.get("refiner", 0) >= delivered


def test_a_killed_fused_audio_encoder_hands_its_sessions_to_the_other_replica(
        fused: LocalCluster, avatar: str, inputs: dict) -> None:
    survivor = session_taken_over(fused, HOST, avatar, inputs)
    assert asyncio.run(_status(fused, survivor, HOST)).recovered >= 1
    assert _stage_frames(fused, survivor, HOST).get("motion-gen", 0) > 0
