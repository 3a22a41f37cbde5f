"""Cluster benchmark: a local cluster of real processes (redis-server plus every service),
driven through the public API with speech paced in real time in 20 ms chunks.

Measures, in one run:
- first-frame latency: first audio chunk sent -> first frame received (fresh sessions);
- bus overhead per hop, isolated: encode + XADD -> XREADGROUP + decode, and the commit
  (publish + ack + state) round trip, for each message kind at its real size, on an idle
  consumer of a private redis-server;
- per-hop latency inside the running pipeline (publish upstream -> decoded here, queueing
  included) and bytes per frame on every hop, from each stage's Status;
- the largest number of concurrent sessions held at 30 fps with under 1% late frames;
- overload, side by side: more 512x768 sessions than the machine holds, on a cluster with load
  shedding (the default) and on one without (``AVATARFLOW_SHED_AFTER_MS=0``): latency,
  delivered fps and what each stage dropped or passed on unrefined.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
from pathlib import Path

import grpc
import numpy as np

FPS = 30.0
STAGES = ("audio-encoder", "motion-gen", "renderer", "refiner")


def pct(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, np.float64), q)) if len(values) else 0.0


async def _status(cluster) -> dict:
    from avatarflow.contracts.v1 import internal_pb2, internal_pb2_grpc

    out = {}
    for s in STAGES:
        async with grpc.aio.insecure_channel(cluster.target(s)) as ch:
            st = await internal_pb2_grpc.StageStub(ch).Status(internal_pb2.StatusRequest())
        out[s] = {"topic": st.input.topic, "p50_ms": st.input.p50_ms, "p99_ms": st.input.p99_ms,
                  "bytes_per_frame": st.input.bytes_per_frame, "frames": st.frames,
                  "dropped": st.dropped, "degraded": st.degraded,
                  "process_p50_ms": st.process_p50_ms, "process_p99_ms": st.process_p99_ms}
    return out


async def _sessions(target: str, avatar_id: str, pcm, rate: int, n: int, w: int, h: int):
    from avatarflow.client.api import AvatarClient, run_session
    from avatarflow.contracts.v1 import api_pb2

    cfg = api_pb2.SessionConfig(avatar_id=avatar_id, sample_rate=rate,
                                output=api_pb2.OutputFormat(width=w, height=h))
    async with AvatarClient(target) as c:
        return await asyncio.gather(*[run_session(c, cfg, pcm, rate, keep_data=False)
                                      for _ in range(n)])


def _session_figures(rec, seconds: float) -> dict:
    expected = int(round(seconds * FPS))
    t = np.array([f.received_at for f in rec.frames])
    steady = t[t >= t[0] + 1.0]
    return {"frames": len(rec.frames), "expected": expected, "dropped": rec.dropped,
            "late_fraction": 1 - len(rec.frames) / expected,
            "first_frame_ms": (rec.first_frame_latency_s or 0) * 1e3,
            "fps": (len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) > 2 else 0.0,
            "p99_interval_ms": rec.p99_interval_ms,
            "latency_p50_ms": rec.ended.latency.p50_ms if rec.ended else 0.0,
            "latency_p99_ms": rec.ended.latency.p99_ms if rec.ended else 0.0}


def _capacity(target: str, avatar_id: str, pcm, rate: int, w: int, h: int,
              max_n: int) -> dict:
    seconds = pcm.size / rate
    trials = {}
    best = 0
    for n in range(1, max_n + 1):
        recs = asyncio.run(_sessions(target, avatar_id, pcm, rate, n, w, h))
        figs = [_session_figures(r, seconds) for r in recs]
        late = sum(f["expected"] - f["frames"] for f in figs) / sum(f["expected"] for f in figs)
        held = late < 0.01 and min(f["fps"] for f in figs) >= FPS * 0.97
        trials[n] = {"late_fraction": late, "min_fps": min(f["fps"] for f in figs),
                     "latency_p50_ms": float(np.median([f["latency_p50_ms"] for f in figs])),
                     "held": held}
        print(f"  {w}x{h}: {n} sessions: late {late:.2%}, min fps "
              f"{trials[n]['min_fps']:.1f}, held={held}")
        if not held:
            break
        best = n
    return {"max_sessions": best, "trials": trials}


def _overload(image: bytes, pcm, rate: int, n: int, w: int = 512, h: int = 768) -> dict:
    """``n`` sessions at once on a fresh cluster with shedding on, then on one with it off."""
    from avatarflow.client.api import AvatarClient
    from avatarflow.dev.cluster import LocalCluster

    out = {}
    for name, env in (("shedding", {}), ("no shedding", {"AVATARFLOW_SHED_AFTER_MS": "0"})):
        with LocalCluster(env=env) as cluster:
            async def register() -> str:
                async with AvatarClient(cluster.gateway_target) as c:
                    return (await c.register(image, width=w, height=h)).avatar_id

            avatar_id = asyncio.run(register())
            recs = asyncio.run(_sessions(cluster.gateway_target, avatar_id, pcm, rate, n, w, h))
            figs = [_session_figures(r, pcm.size / rate) for r in recs]
            status = asyncio.run(_status(cluster))
        out[name] = {
            "latency_p50_ms": float(np.median([f["latency_p50_ms"] for f in figs])),
            "latency_p99_ms": max(f["latency_p99_ms"] for f in figs),
            "min_fps": min(f["fps"] for f in figs),
            "delivered": sum(f["frames"] for f in figs) / sum(f["expected"] for f in figs),
            "renderer_dropped": status["renderer"]["dropped"],
            "refiner_unrefined": status["refiner"]["degraded"]}
        print(f"  {name}: {out[name]}")
    return {"sessions": n, "size": f"{w}x{h}", "runs": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--max-sessions", type=int, default=6)
    ap.add_argument("--overload-sessions", type=int, default=3,
                    help="512x768 sessions for the overload comparison (0 skips it)")
    a = ap.parse_args()
    from avatarflow.cli.inputs import astronaut_png, speech_with_pauses
    from avatarflow.client.api import AvatarClient
    from avatarflow.dev.cluster import LocalCluster
    from bench.bus_probe import probe

    pcm, rate = speech_with_pauses()
    results: dict = {"machine": platform.processor() or platform.machine(),
                     "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    print("bus overhead per hop (isolated)...")
    results["bus"] = probe()
    with LocalCluster() as cluster:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            astronaut_png(Path(tmp) / "p.png")
            image = (Path(tmp) / "p.png").read_bytes()

        async def register(w: int, h: int) -> str:
            async with AvatarClient(cluster.gateway_target) as c:
                return (await c.register(image, width=w, height=h)).avatar_id

        avatar_id = asyncio.run(register(512, 768))
        asyncio.run(register(256, 384))
        print("first-frame latency (8 fresh sessions, 2 s each)...")
        short = pcm[int(0.2 * rate):int(2.2 * rate)]
        firsts = [asyncio.run(_sessions(cluster.gateway_target, avatar_id, short, rate, 1, 512,
                                        768))[0].first_frame_latency_s * 1e3 for _ in range(8)]
        results["first_frame_ms"] = {"median": pct(firsts, 50), "p99": pct(firsts, 99),
                                     "all": firsts}
        print("one session, whole speech, per-hop figures...")
        rec = asyncio.run(_sessions(cluster.gateway_target, avatar_id, pcm, rate, 1, 512,
                                    768))[0]
        results["single"] = _session_figures(rec, pcm.size / rate)
        results["hops"] = asyncio.run(_status(cluster))
        print("capacity...")
        cap_pcm = pcm[:int(6 * rate)]
        results["capacity"] = {
            f"{w}x{h}": _capacity(cluster.gateway_target, avatar_id, cap_pcm, rate, w, h,
                                  a.max_sessions) for w, h in ((512, 768), (256, 384))}
    if a.overload_sessions:
        print(f"overload: {a.overload_sessions} sessions at 512x768, shedding on and off...")
        results["overload"] = _overload(image, pcm[:int(6 * rate)], rate, a.overload_sessions)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cluster.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "cluster.md").write_text(_table(results))
    print(_table(results))


def _table(r: dict) -> str:
    ff, s = r["first_frame_ms"], r["single"]
    lines = [f"# Cluster (redis-server + 5 service processes, 2 cores), {r['date']}", "",
             f"First frame (first audio chunk sent -> first frame received, 8 fresh sessions): "
             f"median {ff['median']:.0f} ms, p99 {ff['p99']:.0f} ms (target <= 250 ms: "
             f"{ff['median'] / 250:.2f}x of it at the median).", "",
             f"One 512x768 session, {s['expected'] / FPS:.1f} s of speech paced in real time: "
             f"{s['frames']} of {s['expected']} frames, {s['fps']:.2f} fps steady, p99 frame "
             f"interval {s['p99_interval_ms']:.1f} ms, audio-in -> frame-out latency p50 "
             f"{s['latency_p50_ms']:.0f} ms / p99 {s['latency_p99_ms']:.0f} ms.", "",
             "## Bus overhead per hop, isolated (idle consumer, private redis-server)", "",
             "Publisher in its own process; the bare column is a plain XADD -> XREADGROUP of "
             "the same bytes with redis-py, measured in the same run: the machine's floor.", "",
             "| message | bytes | publish -> received p50 / p99 ms | bare XADD p50 / p99 ms "
             "| ratio p50 | commit p50 / p99 ms |", "|---|---|---|---|---|---|"]
    for kind, b in r["bus"].items():
        bare = b["bare"]
        lines.append(f"| {kind} | {b['bytes']} | {b['transit_p50_ms']:.2f} / "
                     f"{b['transit_p99_ms']:.2f} | {bare['p50_ms']:.2f} / {bare['p99_ms']:.2f} "
                     f"| {b['transit_p50_ms'] / bare['p50_ms']:.2f}x | "
                     f"{b['commit_p50_ms']:.2f} / {b['commit_p99_ms']:.2f} |")
    lines += ["", "Target: bus overhead <= 2 ms per hop at p99.", "",
              "## Hops inside the running pipeline (one session; queueing included)", "",
              "| consumer | topic | bytes/frame | publish -> decoded p50 / p99 ms | "
              "stage ms/frame p50 / p99 |", "|---|---|---|---|---|"]
    for stage, h in r["hops"].items():
        lines.append(f"| {stage} | {h['topic']} | {h['bytes_per_frame']:.0f} | "
                     f"{h['p50_ms']:.1f} / {h['p99_ms']:.1f} | {h['process_p50_ms']:.1f} / "
                     f"{h['process_p99_ms']:.1f} |")
    lines += ["", "## Concurrent sessions at 30 fps with under 1% late frames", "",
              "| size | sessions held | trials (late %, min fps, latency p50 ms) |",
              "|---|---|---|"]
    for size, c in r["capacity"].items():
        trials = "; ".join(f"{n}: {t['late_fraction']:.1%}, {t['min_fps']:.1f}, "
                           f"{t['latency_p50_ms']:.0f}" for n, t in c["trials"].items())
        lines.append(f"| {size} | {c['max_sessions']} | {trials} |")
    if "overload" in r:
        o = r["overload"]
        lines += ["", f"## Overload: {o['sessions']} sessions at {o['size']}, load shedding on "
                  "and off (a fresh cluster each, same run)", "",
                  "| cluster | latency p50 ms (median of sessions) | latency p99 ms (worst "
                  "session) | min fps | frames delivered | renderer dropped | refiner "
                  "unrefined |", "|---|---|---|---|---|---|---|"]
        for name, x in o["runs"].items():
            lines.append(f"| {name} | {x['latency_p50_ms']:.0f} | {x['latency_p99_ms']:.0f} | "
                         f"{x['min_fps']:.1f} | {x['delivered']:.1%} | {x['renderer_dropped']} "
                         f"| {x['refiner_unrefined']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
