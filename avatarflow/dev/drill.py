"""The kill drill: one long live session through the public API while stages of a local
cluster are killed with SIGKILL, round after round, and what the client saw of each round.

A round kills the replica that owns the session on a stage; it is started again under the
same port and consumer name after ``revive_after_s`` (a container restart), or left dead
(``None``) so a second replica standing by takes the session over. Per round the client's view
is measured: the longest time without a frame from the kill until the next round, and the
frame indexes skipped meanwhile. ``tests/integration/test_kill_drill.py`` and
``bench/run_takeover.py`` run it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import numpy as np

from avatarflow.client.api import AvatarClient, run_session
from avatarflow.client.record import SessionRecord
from avatarflow.contracts.v1 import api_pb2, internal_pb2, internal_pb2_grpc
from avatarflow.dev.cluster import LocalCluster


@dataclass(frozen=True)
class Round:
    """Kill the session's owner on ``service``; start it again after ``revive_after_s``
    seconds under the same consumer name, or never (None). With ``standby``, a second replica
    of the stage is running first (one is started when needed) to take the session over."""

    service: str
    revive_after_s: float | None = 1.0
    standby: bool = False


@dataclass(frozen=True)
class RoundResult:
    """What the client saw of one round."""

    number: int
    service: str
    replica: int  # the index of the replica killed
    replicas: int  # replicas of the stage running when it was killed
    revive_after_s: float | None
    killed_at: float  # time.monotonic()
    gap_s: float = 0.0  # longest time without a frame, from the kill to the next round
    dropped: int = 0  # frame indexes skipped in that time

    def line(self) -> str:
        how = ("left dead" if self.revive_after_s is None
               else f"restarted after {self.revive_after_s:g} s under the same consumer name")
        if self.replicas > 1:
            how += ", a standby replica took over"
        return (f"round {self.number}: kill -9 {self.service}-{self.replica} "
                f"({self.replicas} running), {how}: no frame for {self.gap_s:.2f} s, "
                f"{self.dropped} frames dropped")


def looped(pcm: np.ndarray, rate: int, seconds: float) -> np.ndarray:
    """``pcm`` repeated to ``seconds`` of audio (a long session from a short recording)."""
    n = int(seconds * rate)
    return np.resize(pcm, n).astype(np.int16)


async def owner(cluster: LocalCluster, service: str) -> int:
    """The running replica of ``service`` that owns the most sessions (0 when none does)."""
    best, most = 0, -1
    for i in range(cluster.replicas(service)):
        if not cluster.alive(service, i):
            continue
        try:
            async with grpc.aio.insecure_channel(cluster.target(service, i)) as ch:
                st = await internal_pb2_grpc.StageStub(ch).Status(internal_pb2.StatusRequest(),
                                                                  timeout=5)
        except grpc.aio.AioRpcError:
            continue  # starting up: it owns nothing yet
        if st.sessions > most:
            best, most = i, st.sessions
    return best


async def _kill_rounds(cluster: LocalCluster, rounds: Sequence[Round], first_s: float,
                       every_s: float, out: list[RoundResult]) -> None:
    """Runs ``rounds``, appending each to ``out`` as it happens (kept if cancelled)."""
    revivals: list[asyncio.Task[None]] = []
    due = time.monotonic() + first_s
    for n, spec in enumerate(rounds, 1):
        if spec.standby:
            # After the restarts in flight: a new replica would take a restarting one's place.
            await asyncio.gather(*revivals)
            if _running(cluster, spec.service) < 2:
                await asyncio.to_thread(cluster.add_replica, spec.service)
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        replica = await owner(cluster, spec.service)
        running = _running(cluster, spec.service)
        cluster.kill(spec.service, replica)
        killed_at = time.monotonic()
        out.append(RoundResult(n, spec.service, replica, running, spec.revive_after_s,
                               killed_at))
        if spec.revive_after_s is not None:
            revivals.append(asyncio.ensure_future(
                _revive(cluster, spec.service, replica, spec.revive_after_s)))
        due = killed_at + every_s
    await asyncio.gather(*revivals)


def _running(cluster: LocalCluster, service: str) -> int:
    return sum(cluster.alive(service, i) for i in range(cluster.replicas(service)))


async def _revive(cluster: LocalCluster, service: str, replica: int, after_s: float) -> None:
    await asyncio.sleep(after_s)
    cluster.revive(service, replica)


@dataclass
class DrillResult:
    """The session's frames as the client received them, how it ended, and each round."""

    rounds: list[RoundResult]
    frames: list[tuple[int, float]]  # (index, time.monotonic() on arrival)
    ended: bool  # SessionEnded came: the session finished normally
    dropped: int  # frames dropped in all, as SessionEnded counts them
    error: str = ""  # how the call ended otherwise (a status, or a stall)

    @property
    def indexes_strictly_increase(self) -> bool:
        return all(a < b for (a, _), (b, _) in zip(self.frames, self.frames[1:], strict=False))


def measure(frames: list[tuple[int, float]], rounds: list[RoundResult]) -> list[RoundResult]:
    """Each round with its gap and dropped frames, from the frames the client received."""
    times = np.array([t for _, t in frames], np.float64)
    indexes = np.array([i for i, _ in frames], np.int64)
    out = []
    for k, r in enumerate(rounds):
        end = rounds[k + 1].killed_at if k + 1 < len(rounds) else np.inf
        first = max(0, int(np.searchsorted(times, r.killed_at)) - 1)  # the last frame before
        last = int(np.searchsorted(times, end))
        t, i = times[first:last], indexes[first:last]
        gap = float(np.diff(t).max()) if len(t) > 1 else float("inf")
        dropped = int((np.diff(i) - 1).sum()) if len(i) > 1 else 0
        out.append(dataclasses.replace(r, gap_s=gap, dropped=dropped))
    return out


async def run_drill(cluster: LocalCluster, avatar_id: str, pcm: np.ndarray, rate: int,
                    rounds: Sequence[Round], *, first_s: float = 4.0, every_s: float = 6.0,
                    output: api_pb2.OutputFormat | None = None,
                    stall_s: float = 20.0) -> DrillResult:
    """One Session call streaming ``pcm`` in real time while ``rounds`` run, the first
    ``first_s`` after the start and one every ``every_s``. A session that has not ended
    ``stall_s`` after its audio is over is cancelled and reported as stalled."""
    cfg = api_pb2.SessionConfig(avatar_id=avatar_id, sample_rate=rate, output=output)
    frames: list[tuple[int, float]] = []
    done: list[RoundResult] = []
    record: SessionRecord | None = None
    error = ""
    async with AvatarClient(cluster.gateway_target) as client:
        session = asyncio.ensure_future(asyncio.wait_for(
            run_session(client, cfg, pcm, rate, keep_data=False,
                        on_frame=lambda f: frames.append((f.index, time.monotonic()))),
            pcm.size / rate + stall_s))
        killer = asyncio.ensure_future(_kill_rounds(cluster, rounds, first_s, every_s, done))
        try:
            record = await session
        except TimeoutError:
            error = f"stalled: no SessionEnded {stall_s:g} s after the audio ended"
        except grpc.aio.AioRpcError as exc:
            error = f"{exc.code().name}: {exc.details()}"
        if error:
            killer.cancel()
        failure = (await asyncio.gather(killer, return_exceptions=True))[0]
    if isinstance(failure, Exception):  # the drill itself failed (a replica did not start)
        raise failure
    ended = record is not None and record.ended is not None
    return DrillResult(measure(frames, done), frames, ended,
                       record.dropped if record is not None else 0, error)
