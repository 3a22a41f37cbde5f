"""Efficiency: CPU per frame of the embedded pipeline against the cluster, in one run.

The same job on each layout: N sessions of the same speech at the same output size, paced in
real time (20 ms chunks), JPEG frames out. Each measurement is a fresh process
(bench/efficiency_probe.py) that meters CPU (utime + stime) over a steady window after a
warm-up and divides by the frames delivered in it:

- embedded: one process, the four stages behind the session front;
- cluster: LocalCluster (redis-server + every service process), sessions through the public
  gRPC API; per process, redis-server included, the client shown but not counted;
- colocated: the cluster with the refiner inside the renderer process
  (``LocalCluster(colocate=True)``), skipped with a note where the tree lacks it;
- fused: the cluster with motion-gen inside the audio-encoder process too
  (``LocalCluster(colocate=("motion-gen", "refiner"))``), skipped likewise.

Sizes: 256x256 (head, 4 sessions) and 512x768 (upper-body, 2 sessions) by default, few enough
that the machine is not saturated (CPU per frame grows past saturation: queues, shedding);
a measurement that delivered under 97% of its frames is marked saturated. Repetitions run
interleaved (embedded, cluster, colocated, fused, embedded, ...) so each layout sees the same
machine noise; the tables show medians. Writes bench/results/efficiency.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

from bench.compare import ROOT, CompareError, _machine, _terminate_as_exit, run_probe

PROBE = Path(__file__).resolve().parent / "efficiency_probe.py"
KINDS = ("embedded", "cluster", "colocated", "fused")
CLUSTERS = KINDS[1:]  # the distributed layouts, each compared with embedded
NOT_COUNTED = ("client",)  # the load generator: shown, not part of the deployment's cost
SATURATED = 0.97  # delivered / expected frames below this: CPU per frame is not comparable
TARGET_RATIO = 1.5  # issue 13: cluster within 1.5x of embedded at 256x256


def parse_plan(text: str) -> list[tuple[str, str, int]]:
    """``"head:256x256:4,upper-body:512x768:2"`` -> [(mode, size, sessions), ...]."""
    plan = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        mode, size, sessions = item.split(":")
        w, h = (int(v) for v in size.split("x"))
        plan.append((mode, f"{w}x{h}", int(sessions)))
    return plan


def counted_total(run: dict[str, Any]) -> float:
    """CPU ms per frame of the deployment: every process but the load generator."""
    return sum(v for g, v in run["cpu_ms_per_frame"].items() if g not in NOT_COUNTED)


def summarize(raw: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Per size and layout: medians over the repetitions; the ratios to embedded."""
    out: dict[str, Any] = {}
    for size, kinds in raw.items():
        rows: dict[str, Any] = {}
        for kind, runs in kinds.items():
            ok = [r for r in runs if "cpu_ms_per_frame" in r]
            if not ok:
                rows[kind] = {"note": next((r.get("skipped") or r.get("error", "")
                                            for r in runs), "not run")}
                continue
            groups = list(ok[0]["cpu_ms_per_frame"])
            rows[kind] = {
                "reps": len(ok),
                "per_process": {g: median(r["cpu_ms_per_frame"].get(g, 0.0) for r in ok)
                                for g in groups},
                "total": median(counted_total(r) for r in ok),
                "totals": [counted_total(r) for r in ok],
                "cores_used": median(r["cores_used"] for r in ok),
                "delivered": min(r["delivered_ratio"] for r in ok),
                "saturated": any(r["delivered_ratio"] < SATURATED for r in ok),
                "unrefined": sum(r["unrefined"] for r in ok) / max(sum(r["frames"] for r in ok),
                                                                   1)}
            if "stages_median_ms" in ok[0]:
                rows[kind]["stages_median_ms"] = {
                    s: median(r["stages_median_ms"][s] for r in ok)
                    for s in ok[0]["stages_median_ms"]}
        base = rows.get("embedded", {}).get("total")
        for kind in CLUSTERS:
            if base and "total" in rows.get(kind, {}):
                rows[kind]["ratio"] = rows[kind]["total"] / base
        out[size] = rows
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench/results", help="where efficiency.{json,md} go")
    ap.add_argument("--plan", default="head:256x256:4,upper-body:512x768:2",
                    help="mode:WxH:sessions, comma-separated")
    ap.add_argument("--kinds", default=",".join(KINDS), help="layouts to measure")
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions")
    ap.add_argument("--warmup", type=float, default=4.0, help="seconds before the window")
    ap.add_argument("--seconds", type=float, default=20.0, help="the metered window")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, _terminate_as_exit)
    # One engine thread per process, as the services run (set before numpy loads in the
    # probe; the cluster's processes inherit it).
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    plan, kinds = parse_plan(a.plan), [k for k in a.kinds.split(",") if k]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise SystemExit(f"unknown layouts {sorted(unknown)}; known: {', '.join(KINDS)}")
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                              "machine": _machine(), "load_before": os.getloadavg(),
                              "window_s": a.seconds, "warmup_s": a.warmup, "reps": a.reps,
                              "plan": [{"mode": m, "size": s, "sessions": n}
                                       for m, s, n in plan], "raw": {}}
    started = time.monotonic()
    skipped: dict[str, dict[str, Any]] = {}  # layouts this tree lacks: noted once per size
    with tempfile.TemporaryDirectory(prefix="avatarflow-efficiency-") as tmp:
        for rep in range(a.reps):
            for mode, size, sessions in plan:
                for kind in kinds:
                    runs = report["raw"].setdefault(size, {}).setdefault(kind, [])
                    if kind in skipped:
                        if not runs:
                            runs.append(skipped[kind])
                        continue
                    print(f"[{time.monotonic() - started:5.0f} s] {size} x{sessions} {kind} "
                          f"{rep + 1}/{a.reps}", flush=True)
                    args = [kind, "--sessions", str(sessions), "--mode", mode, "--size", size,
                            "--warmup", str(a.warmup), "--window", str(a.seconds)]
                    out = Path(tmp) / f"{size}-{kind}-{rep}.json"
                    try:
                        result = run_probe(ROOT, PROBE, args, out,
                                           timeout=300 + 3 * (a.warmup + a.seconds))
                    except CompareError as exc:
                        result = {"error": str(exc)}
                    result.pop("modules", None)
                    if "skipped" in result:
                        skipped[kind] = result
                    runs.append(result)
    report["wall_s"] = time.monotonic() - started
    report["load_after"] = os.getloadavg()
    report["summary"] = summarize(report["raw"])
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "efficiency.json").write_text(json.dumps(report, indent=2, default=str))
    (out_dir / "efficiency.md").write_text(table(report))
    print(table(report))
    print(f"wrote {out_dir / 'efficiency.json'} and {out_dir / 'efficiency.md'}")


def _savings(rows: dict[str, Any]) -> list[str]:
    """What each co-located layout saves against the separate cluster, when both ran."""
    split = rows.get("cluster", {})
    out: list[str] = []
    for kind, what in (("colocated", "Co-location (renderer+refiner)"),
                       ("fused", "Fusing both pairs")):
        joined = rows.get(kind, {})
        if "total" in split and "total" in joined:
            saved = split["total"] - joined["total"]
            out.append(f"{what} saves {saved:.2f} ms per frame "
                       f"({saved / split['total']:.0%} of the cluster's CPU).")
    return ["", *out] if out else []


def table(r: dict[str, Any]) -> str:
    """The markdown report: one table per size, per process and in total, with the ratios."""
    m = r["machine"]
    lines = [f"# CPU per frame: embedded vs cluster, {r['date']}", "",
             f"{m['cpu']}, {m['cores']} cores, Python {m['python']}; load average "
             f"{r['load_before'][0]:.2f} before, {r['load_after'][0]:.2f} after; "
             f"{r['wall_s'] / 60:.1f} min.", "",
             f"Each cell: the median over {r['reps']} interleaved repetitions of CPU ms "
             f"(utime + stime, all threads) in a {r['window_s']:g} s window after "
             f"{r['warmup_s']:g} s of warm-up / frames delivered in it. The same job each time: "
             "the sessions below, the same speech paced in real time, JPEG frames out. "
             "Totals count every process of the deployment (redis-server included); the "
             "client (the load generator) is shown, not counted. Measured below saturation: "
             f"a layout that delivered under {SATURATED:.0%} of its frames is marked.", ""]
    for p in r["plan"]:
        rows = r["summary"].get(p["size"], {})
        lines += [f"## {p['size']} ({p['mode']}), {p['sessions']} sessions", ""]
        groups: list[str] = []
        for row in rows.values():
            groups += [g for g in row.get("per_process", {}) if g not in groups]
        lines += ["| layout | " + " | ".join(groups) + " | total | x embedded | cores used | "
                  "delivered | unrefined |", "|---|" + "---|" * (len(groups) + 5)]
        for kind, row in rows.items():
            if "total" not in row:
                lines.append(f"| {kind} | {row['note']} |")
                continue
            cells = [f"{row['per_process'][g]:.2f}" if g in row["per_process"] else "-"
                     for g in groups]
            ratio = f"{row.get('ratio', 1.0):.2f}x" if kind == "embedded" or "ratio" in row \
                else "-"
            flag = " (saturated)" if row["saturated"] else ""
            lines.append(f"| {kind} | " + " | ".join(cells) + f" | **{row['total']:.2f}** | "
                         f"{ratio} | {row['cores_used']:.2f} | {row['delivered']:.1%}{flag} | "
                         f"{row['unrefined']:.1%} |")
        lines += _savings(rows)
        lines += _rounds(rows)
        stages = rows.get("embedded", {}).get("stages_median_ms")
        if stages:
            lines += ["", "Embedded stage work, median ms per frame: "
                      + ", ".join(f"{s} {v:.2f}" for s, v in stages.items()) + "."]
        lines.append("")
    small = r["summary"].get("256x256", {})
    verdicts = [f"{kind} {small[kind]['ratio']:.2f}x "
                f"({'met' if small[kind]['ratio'] <= TARGET_RATIO else 'not met'})"
                for kind in CLUSTERS if "ratio" in small.get(kind, {})]
    if verdicts:
        lines += [f"Target (issue 13): a cluster within {TARGET_RATIO}x of embedded at "
                  "256x256: " + ", ".join(verdicts) + ".", ""]
    return "\n".join(lines)


def _rounds(rows: dict[str, Any]) -> list[str]:
    """Each layout's ratio round by round (against the embedded run of the same round): how
    much of the medians' ratio is the machine's noise."""
    base = rows.get("embedded", {}).get("totals")
    out = []
    for kind in CLUSTERS:
        totals = rows.get(kind, {}).get("totals")
        if base and totals and len(totals) == len(base):
            out.append(f"{kind} " + " / ".join(f"{t / b:.2f}x" for t, b in zip(totals, base,
                                                                              strict=True)))
    return ["", "Ratio per round (each against that round's embedded run): "
            + "; ".join(out) + "."] if out else []


if __name__ == "__main__":
    main()
