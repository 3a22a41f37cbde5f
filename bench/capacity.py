"""Capacity per node as numbers ops can plan with, from the measured CPU per frame.

Reads ``bench/results/efficiency.json`` (``bench.run_efficiency``: CPU ms per frame of every
process, per output size and layout) and turns it into sessions per core: per process (what
one replica of each service carries per core it is given) and for the whole deployment (what a
node running everything carries), at 30 fps, raw and with 30% kept in hand for bursts,
takeovers and the measurement's own noise. It also derives what the Helm chart's autoscaling
(``sessionsPerReplica`` at each stage's CPU limit) and the gateway's default session limit
(sessions per core) would be from those figures, so the values in the chart and in
``avatarflow_gateway.capacity`` can be checked against them. Writes
``bench/results/capacity.{json,md}``.

    python -m bench.capacity [--efficiency bench/results/efficiency.json] [--out bench/results]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
VALUES = ROOT / "deploy" / "helm" / "avatarflow" / "values.yaml"
FPS = 30.0
HEADROOM = 0.7  # plan with 70% of the measured capacity
STAGES = ("audio-encoder", "motion-gen", "renderer", "refiner")
NOT_COUNTED = ("client",)


def per_core(ms_per_frame: float) -> float:
    """Sessions at 30 fps one core carries for a process spending ``ms_per_frame``."""
    return 1000.0 / (FPS * ms_per_frame) if ms_per_frame > 0 else math.inf


def cpu_limit(values: dict[str, Any], component: str) -> float:
    """The chart's CPU limit of a component, in cores."""
    raw = str(values["components"][component]["resources"]["limits"]["cpu"])
    return int(raw[:-1]) / 1000 if raw.endswith("m") else float(raw)


def plan(efficiency: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Sessions per core per size, layout and process, and the chart values they imply."""
    out: dict[str, Any] = {"fps": FPS, "headroom": HEADROOM, "sizes": {}}
    for size, layouts in efficiency["summary"].items():
        rows: dict[str, Any] = {}
        for layout, row in layouts.items():
            if layout == "embedded" or "per_process" not in row:
                continue
            procs = {g: ms for g, ms in row["per_process"].items() if g not in NOT_COUNTED}
            rows[layout] = {
                "saturated": row.get("saturated", False),
                "ms_per_frame": procs,
                "sessions_per_core": {g: round(per_core(ms), 2) for g, ms in procs.items()},
                "node_sessions_per_core": round(per_core(sum(procs.values())), 2)}
        out["sizes"][size] = rows
    biggest = max(out["sizes"], key=lambda s: _pixels(s))  # the product's size
    separate = out["sizes"][biggest].get("cluster", {}).get("sessions_per_core", {})
    out["chart"] = {"size": biggest, "sessionsPerReplica": {
        s: max(1, math.floor(HEADROOM * separate[s] * cpu_limit(values, s)))
        for s in STAGES if s in separate}}
    if "gateway" in separate:
        out["gateway_sessions_per_core"] = math.floor(HEADROOM * separate["gateway"])
    return out


def _pixels(size: str) -> int:
    w, h = size.split("x")
    return int(w) * int(h)


def table(p: dict[str, Any]) -> str:
    lines = ["# Capacity per node: sessions at 30 fps per core (bench/results/efficiency.json)",
             "", f"Raw figures; plan with {p['headroom']:.0%} of them (the chart and the gateway "
             "default do).", ""]
    for size, rows in p["sizes"].items():
        lines += [f"## {size}", "", "| layout | " + " | ".join(
            ["gateway", *STAGES, "redis-server", "whole node"]) + " |", "|---" * 8 + "|"]
        for layout, r in rows.items():
            spc = r["sessions_per_core"]
            cells = [f"{spc[g]:.1f}" if g in spc else "-" for g in
                     ("gateway", *STAGES, "redis-server")]
            mark = " (saturated)" if r["saturated"] else ""
            lines.append(f"| {layout}{mark} | " + " | ".join(cells)
                         + f" | {r['node_sessions_per_core']:.1f} |")
        lines.append("")
    chart = p["chart"]
    lines += [f"Chart `sessionsPerReplica` these imply at {chart['size']} (each stage's CPU "
              "limit, separate layout): " + ", ".join(
                  f"{s} {n}" for s, n in chart["sessionsPerReplica"].items()) + ".",
              f"Gateway sessions per core: {p.get('gateway_sessions_per_core', '-')}.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--efficiency", default=str(ROOT / "bench/results/efficiency.json"))
    ap.add_argument("--out", default=str(ROOT / "bench/results"))
    a = ap.parse_args()
    p = plan(json.loads(Path(a.efficiency).read_text()), yaml.safe_load(VALUES.read_text()))
    out = Path(a.out)
    (out / "capacity.json").write_text(json.dumps(p, indent=2))
    (out / "capacity.md").write_text(table(p))
    print(table(p))


if __name__ == "__main__":
    main()
