"""Cluster profile: where each service process spends its CPU under the 4-session load.

A local cluster of real processes (redis-server, the gateway and the four stages) carries
4 concurrent sessions at 256x256 (head mode, 30 fps), speech paced in real time in 20 ms
chunks through the public API. While they run, every service process is sampled with py-spy
(``record --format raw --nonblocking``, 200 Hz, Python threads; samples blocked in a wait
such as ``select`` set apart, see ``is_wait``) and its CPU seconds (utime + stime, per
thread too) are read from /proc before and after the window.

Per process it reports CPU ms per delivered frame, the split of its Python samples between the
stage's own work, stage runtime, codec, bus client, asyncio, telemetry, gRPC and other (see
``categorise_stack``), and the top functions by self and inclusive time. Threads py-spy cannot
see (gRPC's C-core threads) show only in the per-thread CPU figures.

The services run on uvloop, as deployed (``--event-loop asyncio`` for the standard loop).

Results: ``bench/results/profile.{md,json}`` and a flame graph per service (an SVG drawn from
the collapsed stacks, or the stacks as .txt when the SVG would be large) under
``bench/results/profile/``.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

SERVICES = ("gateway", "audio-encoder", "motion-gen", "renderer", "refiner")
CATEGORIES = ("own work", "runtime", "codec", "bus", "asyncio", "telemetry", "grpc", "other")
SVG_LIMIT = 300_000
TICK = os.sysconf("SC_CLK_TCK")

# (category, path fragments), checked in order against a frame's file name.
_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("own work", ("avatarflow_audio_encoder/", "avatarflow_motion_gen/", "avatarflow_renderer/",
                  "avatarflow_refiner/", "avatarflow_gateway/", "avatarflow/avatars/",
                  "avatarflow/session/", "avatarflow/runtime/engines.py")),
    ("codec", ("avatarflow/contracts/", "google/protobuf/", "PIL/", "simplejpeg", "turbojpeg",
               "cv2/")),
    ("bus", ("avatarflow/bus/", "redis/", "hiredis")),
    ("telemetry", ("avatarflow/telemetry/", "prometheus_client/", "opentelemetry/")),
    ("grpc", ("grpc/", "grpc_health/", "grpc_reflection/", "_cygrpc")),
    ("runtime", ("avatarflow/runtime/",)),
    ("asyncio", ("asyncio/", "selectors.py", "uvloop/")),
)
_DISPATCH = ("_run_once", "_run")
# Leaves where a thread blocks outside the GIL: py-spy's --nonblocking mode cannot tell these
# from work (it reads no syscall state), so they are counted apart as waiting. On uvloop the
# loop is C code: a main thread whose leaf is asyncio's Runner.run sits in libuv (epoll, or
# libuv's own I/O work, which py-spy cannot tell apart; the CPU figures from /proc include it).
_WAITS = (("select", "selectors.py"), ("poll", "selectors.py"), ("wait", "threading.py"),
          ("run", "threading.py"), ("join", "threading.py"), ("get", "queue.py"),
          ("_worker", "concurrent/futures/thread.py"), ("run", "asyncio/runners.py"))


def frame_file(frame: str) -> tuple[str, str]:
    """``"func (path/file.py:12)"`` -> ``("func", "path/file.py")``."""
    func, _, rest = frame.rpartition(" (")
    if not func:
        return frame, ""
    path = rest.rstrip(")")
    head, sep, line = path.rpartition(":")
    return func, head if sep and line.isdigit() else path


def categorise_frame(frame: str) -> str:
    """The category of one py-spy frame, by its file's path; ``other`` when none matches."""
    _, path = frame_file(frame)
    path = "/" + path.replace("\\", "/")
    for category, fragments in _RULES:
        if any(f"/{frag}" in path or frag.startswith("_") and frag in path
               for frag in fragments):
            return category
    return "other"


def is_wait(leaf: str) -> bool:
    """Whether a sample's leaf frame is a thread blocked in a wait (select, a lock, a queue)."""
    func, path = frame_file(leaf)
    method = func.rpartition(".")[2]
    return any(method == f and path.endswith(p) for f, p in _WAITS)


def categorise_stack(frames: list[str]) -> str:
    """The category a sample's time goes to; ``frames`` run from root to leaf.

    Walks from the leaf up: the first frame in a specific category (not asyncio, not other)
    wins, so numpy called by an engine is the stage's work and a socket write made by the
    Redis client is the bus's. Reaching the event loop's dispatch (``_run_once`` or a
    handle's ``_run``) first means the loop itself was working: asyncio.
    """
    seen_asyncio = False
    for frame in reversed(frames):
        category = categorise_frame(frame)
        if category == "asyncio":
            if frame_file(frame)[0] in _DISPATCH:
                return "asyncio"
            seen_asyncio = True
        elif category != "other":
            return category
    return "asyncio" if seen_asyncio else "other"


def _short(frame: str) -> str:
    """A frame without its line number (the line moves from sample to sample)."""
    func, path = frame_file(frame)
    return f"{func} ({path})" if path else func


def parse_collapsed(text: str) -> list[tuple[list[str], int]]:
    """py-spy's raw output: one ``root;...;leaf count`` line per distinct stack."""
    stacks = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def summarise_stacks(stacks: list[tuple[list[str], int]], top: int = 15) -> dict[str, Any]:
    """Samples per category and the top functions by self and inclusive samples.

    Samples whose leaf is a wait (``is_wait``) are counted in ``waiting`` and nowhere else.
    """
    cats: Counter[str] = Counter()
    self_t: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = waiting = 0
    for frames, n in stacks:
        if is_wait(frames[-1]):
            waiting += n
            continue
        total += n
        cats[categorise_stack(frames)] += n
        self_t[_short(frames[-1])] += n
        for name in {_short(f) for f in frames}:
            incl[name] += n
    return {"samples": total, "waiting": waiting,
            "categories": {c: cats[c] for c in CATEGORIES},
            "top_self": self_t.most_common(top), "top_inclusive": incl.most_common(top)}


_COLOURS = {"own work": "#e8a33d", "runtime": "#d6c35a", "codec": "#5aa0d6", "bus": "#d65a5a",
            "asyncio": "#8fd65a", "telemetry": "#b05ad6", "grpc": "#5ad6c3", "other": "#aaaaaa"}


def flamegraph_svg(stacks: list[tuple[list[str], int]], title: str,
                   width: float = 1200.0) -> str:
    """An icicle graph (root on top) of collapsed stacks; boxes under a pixel are left out."""
    tree: dict[str, Any] = {"n": 0, "c": {}}
    for frames, n in stacks:
        if is_wait(frames[-1]):
            continue
        node = tree
        node["n"] += n
        for f in frames:
            node = node["c"].setdefault(_short(f), {"n": 0, "c": {}})
            node["n"] += n
    total = max(tree["n"], 1)
    row, parts, depth_max = 16, [], 0

    def draw(node: dict[str, Any], x: float, depth: int) -> None:
        nonlocal depth_max
        for name, child in sorted(node["c"].items()):
            w = child["n"] / total * width
            if w >= 1.0:
                depth_max = max(depth_max, depth)
                y = 24 + depth * row
                label = html.escape(name[: int(w / 7)]) if w > 30 else ""
                parts.append(
                    f'<g><title>{html.escape(name)} ({child["n"] / total:.1%})</title>'
                    f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 1}" '
                    f'fill="{_COLOURS[categorise_frame(name)]}"/>'
                    + (f'<text x="{x + 2:.1f}" y="{y + 12}">{label}</text>' if label else "")
                    + "</g>")
                draw(child, x, depth + 1)
            x += w

    draw(tree, 0.0, 0)
    height = 24 + (depth_max + 1) * row + 4
    legend = " ".join(f"{c}" for c in CATEGORIES)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height}" '
            'font-family="monospace" font-size="11">'
            f'<text x="2" y="14">{html.escape(title)} ({total} samples; colours by category: '
            f'{legend})</text>' + "".join(parts) + "</svg>")


def _cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _threads(pid: int) -> dict[int, tuple[str, float]]:
    """Each thread's name and CPU seconds."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            out[int(task.name)] = (name, _task_cpu_s(task))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


def _task_cpu_s(task: Path) -> float:
    """utime + stime of one thread, in seconds."""
    fields = (task / "stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _thread_delta(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]],
                  pid: int) -> dict[str, float]:
    """CPU seconds per thread group in the window: the main thread, then threads by name."""
    groups: Counter[str] = Counter()
    for tid, (name, cpu) in after.items():
        spent = cpu - before.get(tid, (name, 0.0))[1]
        groups["main thread" if tid == pid else name] += spent
    return dict(groups)


async def _load(cluster: Any, pcm: np.ndarray, rate: int, sessions: int, warmup_s: float,
                window_s: float, rec_dir: Path, rate_hz: int) -> dict[str, Any]:
    """Runs the sessions; samples and meters every service during the window."""
    from avatarflow.client.api import AvatarClient, run_session
    from avatarflow.contracts.v1 import api_pb2

    arrivals: list[float] = []
    pids = {s: cluster.pid(s) for s in SERVICES}
    spy = str(Path(sys.executable).with_name("py-spy"))
    async with AvatarClient(cluster.gateway_target) as c:
        image = (rec_dir / "portrait.png").read_bytes()
        reg = await c.register(image, mode="head", width=256, height=256)
        cfg = api_pb2.SessionConfig(avatar_id=reg.avatar_id, sample_rate=rate,
                                    output=api_pb2.OutputFormat(mode="head", width=256,
                                                                height=256))
        runs = [asyncio.create_task(run_session(c, cfg, pcm, rate, keep_data=False,
                                                on_frame=lambda _f: arrivals.append(
                                                    time.monotonic())))
                for _ in range(sessions)]
        await asyncio.sleep(warmup_s)
        procs = {s: subprocess.Popen([spy, "record", "--pid", str(pid), "--duration",
                                      str(int(window_s)), "--rate", str(rate_hz), "--format",
                                      "raw", "--nonblocking", "--output",
                                      str(rec_dir / f"{s}.txt")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for s, pid in pids.items()}
        t0 = time.monotonic()
        cpu0 = {s: _cpu_s(p) for s, p in pids.items()}
        th0 = {s: _threads(p) for s, p in pids.items()}
        await asyncio.sleep(int(window_s))
        t1 = time.monotonic()
        cpu1 = {s: _cpu_s(p) for s, p in pids.items()}
        th1 = {s: _threads(p) for s, p in pids.items()}
        errors = {}
        for s, p in procs.items():
            _, err = await asyncio.to_thread(p.communicate)
            if p.returncode:
                errors[s] = err.decode(errors="replace")[-400:]
        records = await asyncio.gather(*runs)
    frames = sum(t0 <= t <= t1 for t in arrivals)
    return {"window_s": t1 - t0, "frames": frames, "fps_total": frames / (t1 - t0),
            "pids": pids, "pyspy_errors": errors,
            "cpu_s": {s: cpu1[s] - cpu0[s] for s in SERVICES},
            "threads_cpu_s": {s: _thread_delta(th0[s], th1[s], pids[s]) for s in SERVICES},
            "session_records": [{"frames": len(r.frames), "dropped": r.dropped} for r in records]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--speech", type=float, default=12.0, help="seconds of speech per session")
    ap.add_argument("--warmup", type=float, default=2.5, help="seconds before sampling")
    ap.add_argument("--window", type=float, default=8.0, help="seconds sampled")
    ap.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    ap.add_argument("--event-loop", choices=("uvloop", "asyncio"), default="uvloop",
                    help="the services' event loop (AVATARFLOW_EVENT_LOOP)")
    a = ap.parse_args()
    from avatarflow.cli.inputs import astronaut_png, speech_with_pauses
    from avatarflow.dev.cluster import LocalCluster

    pcm, rate = speech_with_pauses()
    while pcm.size < a.speech * rate:
        pcm = np.concatenate([pcm, pcm])
    pcm = pcm[:int(a.speech * rate)]
    out = Path(a.out)
    svg_dir = out / "profile"
    svg_dir.mkdir(parents=True, exist_ok=True)
    env = {"AVATARFLOW_EVENT_LOOP": a.event_loop}
    with tempfile.TemporaryDirectory() as tmp, LocalCluster(env=env) as cluster:
        rec_dir = Path(tmp)
        astronaut_png(rec_dir / "portrait.png")
        load = asyncio.run(_load(cluster, pcm, rate, a.sessions, a.warmup, a.window, rec_dir,
                                 a.rate))
        services = {}
        for s in SERVICES:
            raw = rec_dir / f"{s}.txt"
            stacks = parse_collapsed(raw.read_text()) if raw.exists() else []
            services[s] = summarise_stacks(stacks)
            services[s]["cpu_ms_per_frame"] = load["cpu_s"][s] * 1e3 / max(load["frames"], 1)
            services[s]["cpu_cores"] = load["cpu_s"][s] / load["window_s"]
            services[s]["sampled_busy_cores"] = services[s]["samples"] / (a.rate * a.window)
            services[s]["threads_ms_per_frame"] = {
                k: v * 1e3 / max(load["frames"], 1)
                for k, v in sorted(load["threads_cpu_s"][s].items(), key=lambda x: -x[1]) if v}
            for old in svg_dir.glob(f"{s}.*"):
                old.unlink()
            svg = flamegraph_svg(stacks, f"{s}: {a.sessions} sessions at 256x256")
            if len(svg.encode()) <= SVG_LIMIT:
                (svg_dir / f"{s}.svg").write_text(svg)
            else:
                (svg_dir / f"{s}.txt").write_text(raw.read_text())
    results = {"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "date": time.strftime("%Y-%m-%d %H:%M"), "sessions": a.sessions,
               "size": "256x256", "speech_s": a.speech, "pyspy_rate_hz": a.rate,
               "event_loop": a.event_loop,
               **{k: v for k, v in load.items() if k not in ("cpu_s", "threads_cpu_s")},
               "services": services}
    (out / "profile.json").write_text(json.dumps(results, indent=2))
    (out / "profile.md").write_text(_table(results))
    print(_table(results))


def _table(r: dict[str, Any]) -> str:
    """The markdown report: CPU per frame and the category split, then the top-N tables."""
    sv = r["services"]
    total = sum(x["cpu_ms_per_frame"] for x in sv.values())
    lines = [f"# Cluster profile ({r['sessions']} sessions x {r['size']}, {r['cores']} cores, "
             f"{r.get('event_loop', 'asyncio')} event loop), {r['date']}", "",
             f"{r['frames']} frames delivered in the {r['window_s']:.1f} s window "
             f"({r['fps_total']:.1f} fps over all sessions); py-spy at {r['pyspy_rate_hz']} Hz, "
             "non-blocking, Python threads only. CPU is utime+stime of the whole process (all "
             "threads) over the window / frames delivered. Samples whose leaf is a wait "
             "(selector select, lock or queue wait, a thread parked in C) are set apart; the "
             "category shares are of the remaining (busy) samples. Busy samples / (rate x "
             "window) should come close to the CPU cores the process used: the check that the "
             "wait filter leaves the work.", "",
             "| service | CPU ms/frame | CPU cores | sampled busy cores | busy samples | "
             + " | ".join(f"% {c}" for c in CATEGORIES) + " |",
             "|---|---|---|---|---|" + "---|" * len(CATEGORIES)]
    for s, x in sv.items():
        n = max(x["samples"], 1)
        lines.append(f"| {s} | {x['cpu_ms_per_frame']:.2f} | {x['cpu_cores']:.2f} | "
                     f"{x['sampled_busy_cores']:.2f} | {x['samples']} | "
                     + " | ".join(f"{100 * x['categories'][c] / n:.0f}" for c in CATEGORIES)
                     + " |")
    lines += [f"| total | {total:.2f} |" + " |" * (len(CATEGORIES) + 3), "",
              "## CPU ms/frame per thread (the threads py-spy cannot see included)", "",
              "| service | threads |", "|---|---|"]
    for s, x in sv.items():
        th = ", ".join(f"{k} {v:.2f}" for k, v in list(x["threads_ms_per_frame"].items())[:6])
        lines.append(f"| {s} | {th} |")
    if r["pyspy_errors"]:
        lines += ["", f"py-spy failed on: {', '.join(r['pyspy_errors'])}"]
    for s, x in sv.items():
        n = max(x["samples"], 1)
        lines += ["", f"## {s}: top functions", "", "| self % | function | | incl. % | function |",
                  "|---|---|---|---|---|"]
        for (fs, ns), (fi, ni) in zip(x["top_self"], x["top_inclusive"], strict=False):
            lines.append(f"| {100 * ns / n:.1f} | `{fs}` | | {100 * ni / n:.1f} | `{fi}` |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
