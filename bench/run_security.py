"""What API keys and TLS cost per frame, side by side in one run.

One local cluster (redis-server and the four stages) with four gateways beside each other on
the same stages, one per variant: (a) no TLS, no keys; (b) API keys; (c) TLS + keys;
(d) mutual TLS + keys. Rounds alternate the variants (a, b, c, d, a, b, ...) so that the
machine's load drifts over all of them alike. Each round runs the same sessions (speech
paced in real time, one client connection per session, handshake included) through one
gateway and reads that gateway's CPU time from /proc/<pid>/stat before and after.

Reported per variant: the gateway's CPU milliseconds per delivered frame, frame latency as
the client sees it (arrival minus the moment the last audio sample of the frame's span was
sent) p50 / p99, the median steady fps of the sessions, and each ratio against (a).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from avatarflow.dev.child_server import ChildServer
from avatarflow.dev.cluster import LocalCluster
from avatarflow.dev.net import free_port, serving

FPS = 30.0
VARIANTS = ("no TLS, no keys", "keys", "TLS + keys", "mTLS + keys")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class Gateway(ChildServer):
    """One more gateway process on the cluster's Redis and stages, with its own settings."""

    def __init__(self, cluster: LocalCluster, name: str, env: dict[str, str], log_dir: Path,
                 health: bool) -> None:
        super().__init__(log_dir, "avf-gw-")
        self.port, self.health_port = free_port(), free_port() if health else 0
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "AVATARFLOW_LISTEN_HOST": "127.0.0.1",
                    "AVATARFLOW_AUTH": "off", **env}
        if health:  # TLS on the port: readiness is read from a plaintext one beside it
            self.env["AVATARFLOW_GATEWAY_HEALTH_PORT"] = str(self.health_port)
        self.cmd = [sys.executable, "-m", "avatarflow.cli.main", "serve", "gateway",
                    "--port", str(self.port), "--metrics-port", "-1",
                    "--redis", cluster.redis_url, "--consumer", f"gateway-{name}",
                    "--renderer", cluster.target("renderer")]
        self.log_path = Path(log_dir) / f"gateway-{name.replace(' ', '')}.log"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> Gateway:
        with self.log_path.open("wb") as log:
            self._spawn(self.cmd, stdout=log, env=self.env)
        check = f"127.0.0.1:{self.health_port or self.port}"
        if not self._wait_until(lambda: serving(check), timeout, 0.1):
            raise RuntimeError(f"{self.log_path} ends:\n{self.log_path.read_text()[-2000:]}")
        return self


def variant_env(pki, keys_file: Path) -> list[tuple[dict[str, str], bool]]:
    keys = {"AVATARFLOW_GATEWAY_AUTH": "required",
            "AVATARFLOW_GATEWAY_API_KEYS_FILE": str(keys_file)}
    tls = {**keys, "AVATARFLOW_GATEWAY_TLS_CERT": str(pki.server.cert),
           "AVATARFLOW_GATEWAY_TLS_KEY": str(pki.server.key)}
    mtls = {**tls, "AVATARFLOW_GATEWAY_TLS_CLIENT_CA": str(pki.ca)}
    return [({}, False), (keys, False), (tls, True), (mtls, True)]


def client_options(pki, variant: int, key: str) -> dict:
    from avatarflow.client.api import TlsOptions

    tls = [None, None, TlsOptions(ca=str(pki.ca)),
           TlsOptions(ca=str(pki.ca), cert=str(pki.client.cert), key=str(pki.client.key))]
    return {"tls": tls[variant], "api_key": key if variant else ""}


async def _one(target: str, options: dict, avatar_id: str, pcm: np.ndarray, rate: int):
    from avatarflow.client.api import AvatarClient, run_session
    from avatarflow.contracts.v1 import api_pb2

    async with AvatarClient(target, **options) as c:
        return await run_session(c, api_pb2.SessionConfig(avatar_id=avatar_id, sample_rate=rate),
                                 pcm, rate, keep_data=False)


def run_round(gw: Gateway, options: dict, avatar_id: str, pcm: np.ndarray, rate: int,
              sessions: int) -> dict:
    async def main():
        return await asyncio.gather(*[_one(gw.target, options, avatar_id, pcm, rate)
                                      for _ in range(sessions)])

    assert gw.pid is not None
    before = cpu_seconds(gw.pid)
    records = asyncio.run(main())
    cpu = cpu_seconds(gw.pid) - before
    latencies, fps = [], []
    for rec in records:
        t0 = rec.first_audio_sent_at
        latencies += [f.received_at - (t0 + f.pts + 1 / FPS) for f in rec.frames]
        t = np.array([f.received_at for f in rec.frames])
        steady = t[t >= t[0] + 1.0] if len(t) else t
        if len(steady) > 2:
            fps.append((len(steady) - 1) / (steady[-1] - steady[0]))
    return {"cpu_s": cpu, "frames": sum(len(r.frames) for r in records),
            "latency_s": latencies, "fps": fps}


def register(gw: Gateway, options: dict, image: bytes) -> str:
    from avatarflow.client.api import AvatarClient

    async def main() -> str:
        async with AvatarClient(gw.target, **options) as c:
            await c.wait_ready(30)
            return (await c.register(image)).avatar_id

    return asyncio.run(main())


def summarise(rounds: list[dict]) -> dict:
    frames = sum(r["frames"] for r in rounds)
    lat = np.array([x for r in rounds for x in r["latency_s"]]) * 1e3
    return {"frames": frames, "cpu_ms_per_frame": 1e3 * sum(r["cpu_s"] for r in rounds) / frames,
            "latency_p50_ms": float(np.percentile(lat, 50)),
            "latency_p99_ms": float(np.percentile(lat, 99)),
            "median_fps": float(np.median([f for r in rounds for f in r["fps"]]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sessions", type=int, default=2, help="at once, per round")
    ap.add_argument("--seconds", type=float, default=5.0, help="of speech per session")
    a = ap.parse_args()
    from avatarflow.cli.inputs import astronaut_png, speech_with_pauses
    from avatarflow.dev import certs
    from avatarflow_gateway.keys import hash_key, new_key

    pcm, rate = speech_with_pauses()
    pcm = pcm[:int(a.seconds * rate)]
    work = Path(tempfile.mkdtemp(prefix="avf-bench-security-"))
    astronaut_png(work / "p.png")
    image = (work / "p.png").read_bytes()
    pki = certs.write(work / "pki")
    key = new_key()
    keys_file = work / "keys.yaml"
    keys_file.write_text(yaml.safe_dump({"tenants": {"bench": {"keys": [hash_key(key)]}}}))
    per_variant: list[list[dict]] = [[] for _ in VARIANTS]
    with LocalCluster(log_dir=work / "logs") as cluster:
        gateways = [Gateway(cluster, name, env, work / "logs", health)
                    for name, (env, health) in zip(VARIANTS, variant_env(pki, keys_file),
                                                   strict=True)]
        try:
            for gw in gateways:
                gw.start()
            options = [client_options(pki, i, key) for i in range(len(VARIANTS))]
            ids = [register(gw, o, image) for gw, o in zip(gateways, options, strict=True)]
            for i, gw in enumerate(gateways):  # warm-up: one short session each
                run_round(gw, options[i], ids[i], pcm[:rate], rate, 1)
            for n in range(a.rounds):
                for i, gw in enumerate(gateways):
                    r = run_round(gw, options[i], ids[i], pcm, rate, a.sessions)
                    per_variant[i].append(r)
                    print(f"round {n + 1}: {VARIANTS[i]}: {r['frames']} frames, gateway "
                          f"{1e3 * r['cpu_s'] / r['frames']:.2f} ms CPU/frame", flush=True)
        finally:
            for gw in gateways:
                gw.stop()
    results = {"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "date": time.strftime("%Y-%m-%d %H:%M:%S"), "rounds": a.rounds,
               "sessions": a.sessions, "seconds": a.seconds,
               "variants": {name: summarise(rounds)
                            for name, rounds in zip(VARIANTS, per_variant, strict=True)}}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "security.json").write_text(json.dumps(results, indent=2))
    (out / "security.md").write_text(table(results))
    print(table(results))


def table(r: dict) -> str:
    base = r["variants"][VARIANTS[0]]
    lines = [f"# What API keys and TLS cost per frame ({r['cores']} cores), {r['date']}", "",
             f"Four gateways side by side on one cluster's stages; {r['rounds']} rounds "
             f"alternating the variants, each {r['sessions']} sessions at once of "
             f"{r['seconds']:g} s of speech paced in real time at 512x768 (one client "
             "connection per session, its handshake included). Latency: frame arrival minus "
             "the moment the last audio sample of its span was sent.", "",
             "| gateway | frames | gateway CPU ms/frame (ratio) | latency p50 ms (ratio) | "
             "latency p99 ms (ratio) | median fps |", "|---|---|---|---|---|---|"]
    for name, v in r["variants"].items():
        lines.append(
            f"| {name} | {v['frames']} | {v['cpu_ms_per_frame']:.2f} "
            f"({v['cpu_ms_per_frame'] / base['cpu_ms_per_frame']:.2f}x) | "
            f"{v['latency_p50_ms']:.0f} ({v['latency_p50_ms'] / base['latency_p50_ms']:.2f}x) | "
            f"{v['latency_p99_ms']:.0f} ({v['latency_p99_ms'] / base['latency_p99_ms']:.2f}x) | "
            f"{v['median_fps']:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
