"""The kill drill (issue 12, item 5) on a real local cluster: one long live session through
the public API while a random stage is killed with SIGKILL and started again under the same
consumer name (a container restart), ten times, then once more with a second replica standing
by and the killed one left dead. The session survives every round without reconnecting: one
Session call, frame indexes strictly increasing, SessionEnded at the end.

The session is longer than the lifetime of idle session keys (``session_ttl_s``, set short
here), which a session without control messages used to outlive: every stage then forgot it.
Each round's gap is printed (``pytest -s``); gaps are measured, not asserted, except that none
may be a stall.
"""

from __future__ import annotations

import asyncio
import random

from avatarflow.client.api import AvatarClient
from avatarflow.contracts.v1 import api_pb2
from avatarflow.dev.cluster import STAGE_SERVICES, LocalCluster
from avatarflow.dev.drill import Round, looped, run_drill

RESTARTS = 10
FIRST_S, EVERY_S, TAIL_S = 4.0, 5.0, 4.0
STALL_S = 10.0  # no frame for this long is a stall, whatever the machine's load
OUTPUT = api_pb2.OutputFormat(width=256, height=384)  # light: the drill is about recovery


def test_a_session_survives_ten_kills_and_a_standby_takeover(tmp_path, inputs: dict,
                                                             record_property) -> None:
    rng = random.Random(12)  # seeded, so a failing drill replays the same kills
    rounds = [Round(rng.choice(STAGE_SERVICES)) for _ in range(RESTARTS)]
    rounds.append(Round(rng.choice(STAGE_SERVICES), revive_after_s=None, standby=True))
    seconds = FIRST_S + len(rounds) * EVERY_S + TAIL_S
    rate = inputs["rate"]
    pcm = looped(inputs["pcm"], rate, seconds)
    env = {"AVATARFLOW_SESSION_TTL_S": "20"}  # shorter than the session

    with LocalCluster(log_dir=tmp_path / "logs", env=env) as cluster:
        async def main():
            async with AvatarClient(cluster.gateway_target) as client:
                avatar = await client.register(inputs["portrait"].read_bytes(),
                                               width=OUTPUT.width, height=OUTPUT.height)
            return await run_drill(cluster, avatar.avatar_id, pcm, rate, rounds,
                                   first_s=FIRST_S, every_s=EVERY_S, output=OUTPUT)

        drill = asyncio.run(main())
        for r in drill.rounds:
            print(r.line())
        record_property("rounds", [r.line() for r in drill.rounds])
        print(f"{len(drill.frames)} frames, {drill.dropped} dropped, ended={drill.ended} "
              f"{drill.error}; logs in {cluster.log_dir}")

    assert drill.ended, f"the session must end with SessionEnded, not {drill.error!r}"
    assert drill.indexes_strictly_increase
    assert len(drill.rounds) == len(rounds)
    assert all(r.replicas == 1 for r in drill.rounds[:-1]) and drill.rounds[-1].replicas == 2
    assert max(r.gap_s for r in drill.rounds) < STALL_S, [r.line() for r in drill.rounds]
    # Frames came after the last round, up to the end of the audio.
    assert drill.frames[-1][1] > drill.rounds[-1].killed_at
    assert drill.frames[-1][0] >= int(seconds * 30) - 30
