"""The whole pipeline on a real 3-master Redis Cluster (the same redis-server binary in
cluster mode, on free ports): sessions through the public API, then the kill drill's rounds (a
stage killed and restarted under its own name; a stage killed for good with a standby taking
the session over) on the cluster. Every Lua script and every read touches one slot; the
sessions' shards, and so their bytes, spread over the masters."""

from __future__ import annotations

import asyncio

from avatarflow.bus import keys
from avatarflow.client.api import AvatarClient, run_session
from avatarflow.contracts.v1 import api_pb2
from avatarflow.dev.cluster import LocalCluster
from avatarflow.dev.drill import Round, looped, run_drill
from avatarflow.dev.redis_cluster import RedisClusterServer
from avatarflow.runtime.registry import AUDIO

OUTPUT = api_pb2.OutputFormat(width=256, height=384)
SESSIONS = 3
STALL_S = 10.0


def test_sessions_kills_and_a_takeover_run_on_a_redis_cluster(tmp_path, inputs: dict) -> None:
    rate = inputs["rate"]
    pcm = inputs["pcm"]
    rounds = [Round("motion-gen"), Round("renderer"),
              Round("audio-encoder", revive_after_s=None, standby=True)]
    drill_pcm = looped(pcm, rate, 4.0 + len(rounds) * 5.0 + 4.0)
    with RedisClusterServer(masters=3, log_dir=tmp_path / "redis") as rc, \
            LocalCluster(redis_url=rc.url, log_dir=tmp_path / "logs") as cluster:
        async def main():
            async with AvatarClient(cluster.gateway_target) as client:
                avatar = await client.register(inputs["portrait"].read_bytes(),
                                               width=OUTPUT.width, height=OUTPUT.height)
                cfg = api_pb2.SessionConfig(avatar_id=avatar.avatar_id, sample_rate=rate,
                                            output=OUTPUT)
                records = await asyncio.gather(*[
                    run_session(client, cfg, pcm, rate, keep_data=False)
                    for _ in range(SESSIONS)])
            drill = await run_drill(cluster, avatar.avatar_id, drill_pcm, rate, rounds,
                                    first_s=4.0, every_s=5.0, output=OUTPUT)
            return records, drill

        records, drill = asyncio.run(main())
        held = [rc.keys(i, "af:*") for i in range(rc.masters)]
        placed = {k: rc.node_of(k) for i, node in enumerate(held) for k in node
                  if ":join:" in k}
        for r in drill.rounds:
            print(r.line())

    # Every session finished normally, each frame of its audio delivered in order or counted
    # as dropped (a loaded machine drops late frames by design), on a cluster.
    expected = int(pcm.size / rate * 30)
    for rec in records:
        assert rec.ended is not None, rec
        indexes = [f.index for f in rec.frames]
        assert indexes == sorted(set(indexes)) and len(indexes) == rec.ended.frames
        assert rec.ended.frames + rec.ended.dropped >= expected - 3, rec.ended
    # The join streams of the 16 shards lie on every master (their slots spread).
    joins = [{k for k in node if k.endswith(":join:" + AUDIO)} for node in held]
    assert sum(len(j) for j in joins) == 16 and all(joins), joins
    assert all(placed[k] == i for i, node in enumerate(held) for k in node if k in placed)
    assert all(keys.join(AUDIO, s) in set().union(*joins) for s in range(16))
    # The drill on the cluster: the session survived each kill without a stall, and the
    # standby took it over.
    assert drill.ended, f"the session must end with SessionEnded, not {drill.error!r}"
    assert drill.indexes_strictly_increase
    assert drill.rounds[-1].replicas == 2
    assert max(r.gap_s for r in drill.rounds) < STALL_S, [r.line() for r in drill.rounds]
