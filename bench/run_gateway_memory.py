"""Gateway memory per session: a local cluster of real processes, the gateway's resident
memory (VmRSS) and Redis's ``used_memory`` with 0, 1, 2, 4 and 8 sessions open at once, each
streaming speech-like audio paced in real time and read by its client as it comes. Then one
client that stops reading, to show the bound on what the gateway keeps for it.

Sessions run at 512x768 (the default size, so frames have their real size) and, to let two
shared cores carry eight of them, 5 fps: the gateway's per-session state (outbound queue,
audio clock, bus queues) does not grow with the frame rate; what a session's frames occupy
while they wait is bounded by ``out_frames`` / ``out_mb`` and measured by the stall run.

Results: ``bench/results/gateway_memory.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
from pathlib import Path

import grpc
import numpy as np

RATE = 16000
COUNTS = (0, 1, 2, 4, 8)


def _rss_mb(pid: int | None) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _speechlike(seconds: float) -> np.ndarray:
    """A tone with a syllable-rate envelope: the mouth moves, no espeak-ng needed."""
    t = np.arange(int(seconds * RATE)) / RATE
    envelope = np.clip(np.sin(2 * np.pi * 3 * t), 0, None)
    return (np.sin(2 * np.pi * 180 * t) * envelope * 9000).astype(np.int16)


async def _sample(fn, seconds: float, every: float = 0.25) -> float:
    values = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        values.append(await fn())
        await asyncio.sleep(every)
    return statistics.median(values)


async def _steps(cluster, image: bytes, settle_s: float, sample_s: float) -> list[dict]:
    from avatarflow.bus.streams import RedisBus
    from avatarflow.client.api import AvatarClient, run_session
    from avatarflow.contracts.v1 import api_pb2
    from avatarflow.runtime.settings import Settings

    bus = RedisBus(Settings.load("gateway", environ={}, redis_url=cluster.redis_url,
                                 consumer="bench"))
    pid = cluster.pid("gateway")

    async def rss() -> float:
        return _rss_mb(pid)

    async def redis_mb() -> float:
        return (await bus.redis.info("memory"))["used_memory"] / 2**20

    rows, sessions = [], []
    try:
        async with AvatarClient(cluster.gateway_target) as c:
            output = api_pb2.OutputFormat(width=512, height=768, fps=5)
            avatar = (await c.register(image, width=512, height=768, fps=5)).avatar_id
            cfg = api_pb2.SessionConfig(avatar_id=avatar, sample_rate=RATE, output=output)
            pcm = _speechlike(600)
            for n in COUNTS:
                while len(sessions) < n:
                    sessions.append(asyncio.create_task(
                        run_session(c, cfg, pcm, RATE, keep_data=False)))
                await asyncio.sleep(settle_s)
                failed = [t for t in sessions if t.done()]
                if failed:
                    raise RuntimeError(f"a session ended early: {failed[0].exception()!r}")
                row = {"sessions": n, "gateway_rss_mb": await _sample(rss, sample_s),
                       "redis_used_mb": await _sample(redis_mb, sample_s)}
                print(row, flush=True)
                rows.append(row)
    finally:
        for t in sessions:
            t.cancel()
        await asyncio.gather(*sessions, return_exceptions=True)
        await bus.close()
    return rows


async def _stall(cluster, image: bytes) -> dict:
    """One 512x768 30 fps client that reads 5 frames and stops: the gateway's RSS until it
    ends the call, the frames the client gets when it reads again, and the status."""
    from avatarflow.client.api import AvatarClient
    from avatarflow.contracts.v1 import api_pb2

    pid = cluster.pid("gateway")
    async with AvatarClient(cluster.gateway_target) as c:
        avatar = (await c.register(image)).avatar_id
        s = c.open(api_pb2.SessionConfig(avatar_id=avatar, sample_rate=RATE))
        await s.start()
        pcm, step = _speechlike(60), RATE // 50

        async def send() -> None:
            t0 = time.monotonic()
            try:
                for i in range(0, pcm.size, step):
                    await asyncio.sleep(max(0.0, t0 + i / RATE - time.monotonic()))
                    await s.send_audio(pcm[i:i + step])
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                pass

        sender = asyncio.create_task(send())
        for _ in range(5):
            await s.call.read()
        base, peak, t0 = _rss_mb(pid), 0.0, time.monotonic()
        ended = None
        while time.monotonic() - t0 < 30 and ended is None:
            peak = max(peak, _rss_mb(pid))
            ended = await _ended_by_limit(cluster)
            await asyncio.sleep(0.25)
        stalled_s = time.monotonic() - t0
        old, code, details = 0, "", ""
        try:
            async for r in s.responses():
                old += r.WhichOneof("kind") == "frame"
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code().name, exc.details()
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    return {"rss_before_mb": base, "rss_peak_mb": peak, "ended_after_s": stalled_s,
            "old_frames_after": old, "status": code, "details": details}


async def _ended_by_limit(cluster) -> float | None:
    """The gateway's count of sessions ended for a slow client, once there is one."""
    import urllib.request

    def read() -> str:
        with urllib.request.urlopen(cluster.metrics_url("gateway"), timeout=5) as r:
            return r.read().decode()

    text = await asyncio.to_thread(read)
    for line in text.splitlines():
        if line.startswith('avatarflow_gateway_sessions_ended_by_limit_total{reason="slow"}'):
            return float(line.split()[-1]) or None
    return None


def _per_session(rows: list[dict], key: str) -> float:
    """Median of the increments per added session."""
    steps = [(b[key] - a[key]) / (b["sessions"] - a["sessions"])
             for a, b in zip(rows, rows[1:], strict=False)]
    return statistics.median(steps)


def _slope(rows: list[dict], key: str) -> float:
    """Least-squares MB per session over every step (less noisy than one increment)."""
    return float(np.polyfit([x["sessions"] for x in rows], [x[key] for x in rows], 1)[0])


def _summarise(rows: list[dict], stall: dict) -> dict:
    return {"machine": platform.processor() or platform.machine(),
            "date": time.strftime("%Y-%m-%d %H:%M"), "steps": rows,
            "gateway_mb_per_session": _per_session(rows, "gateway_rss_mb"),
            "gateway_mb_per_session_fit": _slope(rows, "gateway_rss_mb"),
            "redis_mb_per_session": _per_session(rows, "redis_used_mb"),
            "redis_mb_per_session_fit": _slope(rows, "redis_used_mb"), "stall": stall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--settle", type=float, default=4.0, help="seconds after opening sessions")
    ap.add_argument("--sample", type=float, default=3.0, help="seconds of samples per step")
    a = ap.parse_args()

    from avatarflow.cli.inputs import astronaut_png
    from avatarflow.dev.cluster import LocalCluster

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    portrait = out / ".portrait.png"
    astronaut_png(portrait)
    image = portrait.read_bytes()
    portrait.unlink()
    with LocalCluster() as cluster:
        rows = asyncio.run(_steps(cluster, image, a.settle, a.sample))
        stall = asyncio.run(_stall(cluster, image))
    results = _summarise(rows, stall)
    (out / "gateway_memory.json").write_text(json.dumps(results, indent=2))
    (out / "gateway_memory.md").write_text(_table(results))
    print(_table(results))


def _table(r: dict) -> str:
    s = r["stall"]
    lines = [f"# Gateway memory per session (local cluster, 2 cores), {r['date']}", "",
             "Sessions at 512x768, 5 fps, speech-like audio paced in real time, each read by "
             "its client as frames come; medians of 3 s of samples after 4 s to settle.", "",
             "| open sessions | gateway RSS MB | Redis used_memory MB |", "|---|---|---|"]
    lines += [f"| {x['sessions']} | {x['gateway_rss_mb']:.1f} | {x['redis_used_mb']:.2f} |"
              for x in r["steps"]]
    lines += ["", f"Per session, median of the increments (least-squares slope): gateway "
              f"{r['gateway_mb_per_session']:.2f} ({r['gateway_mb_per_session_fit']:.2f}) MB, "
              f"Redis {r['redis_mb_per_session']:.3f} ({r['redis_mb_per_session_fit']:.3f}) MB. "
              "Increments under about 1 MB are within the noise of RSS (a step may even "
              "fall). Redis holds no frames for a session that keeps up (acknowledged "
              "entries are deleted): what is left is its keys and consumer groups.",
              "", "## A client that stops reading (512x768, 30 fps, default limits)", "",
              f"Gateway RSS {s['rss_before_mb']:.1f} MB when it stopped, peak "
              f"{s['rss_peak_mb']:.1f} MB until the gateway ended the call "
              f"{s['ended_after_s']:.1f} s later (its receive window filled, then evict_s); "
              f"reading again, the client got {s['old_frames_after']} old frames (what its "
              f"HTTP/2 receive window held), then {s['status']}: \"{s['details']}\"."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
