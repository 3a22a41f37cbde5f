"""Capacity at 512x768 by soak: how many sessions one machine holds at full quality.

For each layout (``separate``: every service its own process; ``colocated``: the refiner inside
the renderer process; ``fused``: motion-gen inside the audio-encoder process too; ``fused-2``:
the fused layout with two renderer replicas, each running its refiner, as a node of two 1-core
renderer pods would; a tree without one, e.g. an older ``--base``, is skipped with a note) and
each step (2, 3, 4 ... sessions), a fresh cluster holds that many sessions for ``--minutes`` (5
by default; the issue asks for at least 5 per step), speech looped and paced in real time
through the public API (bench/soak_probe.py, one fresh process per step). A step holds when
under 1% of the frames its audio should make were dropped or late (past the 500 ms frame
budget), under 1% were delivered unrefined, and every session kept 29.1 fps; a layout stops at
its first step that does not hold. The capacity is the last step that held. Target (issue 13): 4
sessions.

``--base COMMIT`` runs the same steps on that commit too, in a temporary git worktree
(bench/compare.py's machinery), interleaved step by step with the current tree, so before and
after stand side by side in bench/results/soak.{json,md}. The files are rewritten after every
step (marked incomplete until the end), so an interrupted soak keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.compare import PROBE as COMPARE_PROBE
from bench.compare import (
    ROOT,
    CompareError,
    _commits,
    _machine,
    _terminate_as_exit,
    base_worktree,
    run_probe,
)

PROBE = Path(__file__).resolve().parent / "soak_probe.py"
LAYOUTS = ("separate", "colocated", "fused", "fused-2")
STARTUP_S = 300.0  # a probe's cluster start, registration and stop, generously


def capacity(steps: list[dict[str, Any]], start: int) -> str:
    """The capacity a layout's steps show: the last step that held, ``<start`` when none did,
    ``>=n`` when the last one run (n) still held."""
    done = [s for s in steps if "passed" in s]
    held = [s["sessions"] for s in done if s["passed"]]
    if not done:
        return steps[0].get("skipped", "error") if steps else "not run"
    if not held:
        return f"<{start}"
    return f">={held[-1]}" if done[-1]["passed"] else str(held[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench/results", help="where soak.{json,md} go")
    ap.add_argument("--layouts", default=",".join(LAYOUTS))
    ap.add_argument("--minutes", type=float, default=5.0, help="per step")
    ap.add_argument("--start", type=int, default=2, help="sessions of the first step")
    ap.add_argument("--max-sessions", type=int, default=6, help="sessions of the last step")
    ap.add_argument("--size", default="512x768", help="upper-body WxH")
    ap.add_argument("--base", help="also soak this commit, side by side")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, _terminate_as_exit)
    layouts = [x for x in a.layouts.split(",") if x]
    if set(layouts) - set(LAYOUTS):
        raise SystemExit(f"unknown layouts {layouts}; known: {', '.join(LAYOUTS)}")
    sides = ["base", "current"] if a.base else ["current"]
    commits = _commits(a.base or "HEAD")
    if not a.base:
        del commits["base"]
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": _machine(),
        "commits": commits,
        "minutes": a.minutes, "size": a.size, "start": a.start, "complete": False,
        "load_before": os.getloadavg(), "steps": {}}
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="avatarflow-soak-") as tmp_name, ExitStack() as st:
        tmp = Path(tmp_name)
        # The probes run from copies, so the current tree's bench/ is not on the base's path.
        probe = Path(shutil.copy(PROBE, tmp / PROBE.name))
        shutil.copy(COMPARE_PROBE, tmp / COMPARE_PROBE.name)
        roots = {"current": ROOT}
        if a.base:
            roots["base"] = st.enter_context(base_worktree(a.base, tmp))
        for layout in layouts:
            active = list(sides)
            for n in range(a.start, a.max_sessions + 1):
                for side in list(active):
                    print(f"[{time.monotonic() - started:5.0f} s] {layout}: {n} sessions for "
                          f"{a.minutes:g} min, {side}", flush=True)
                    args = ["--layout", layout, "--sessions", str(n), "--minutes",
                            str(a.minutes), "--size", a.size]
                    try:
                        step = run_probe(roots[side], probe, args,
                                         tmp / f"{layout}-{side}-{n}.json",
                                         timeout=STARTUP_S + 1.5 * a.minutes * 60)
                    except CompareError as exc:
                        step = {"sessions": n, "error": str(exc)}
                    step.pop("modules", None)
                    step.setdefault("sessions", n)
                    report["steps"].setdefault(layout, {}).setdefault(side, []).append(step)
                    if not step.get("passed"):
                        active.remove(side)  # the first step that fails ends the layout
                    _write(report, out_dir, time.monotonic() - started)
                if not active:
                    break
    report["complete"] = True
    report["load_after"] = os.getloadavg()
    _write(report, out_dir, time.monotonic() - started)
    print(table(report))
    print(f"wrote {out_dir / 'soak.json'} and {out_dir / 'soak.md'}")


def _write(report: dict[str, Any], out_dir: Path, wall_s: float) -> None:
    report["wall_s"] = wall_s
    report["capacity"] = {layout: {side: capacity(steps, report["start"])
                                   for side, steps in sides.items()}
                          for layout, sides in report["steps"].items()}
    (out_dir / "soak.json").write_text(json.dumps(report, indent=2, default=str))
    (out_dir / "soak.md").write_text(table(report))


def _failed(errors: list[str]) -> str:
    first = errors[0][:120].replace("|", "/") if errors else ""
    return f"; {len(errors)} sessions failed, e.g. {first}" if errors else ""


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2%}"


def table(r: dict[str, Any]) -> str:
    """The markdown report: capacity per layout and side, then every step's counts."""
    m, c = r["machine"], r["commits"]
    state = "" if r["complete"] else " (INCOMPLETE: still running or interrupted)"
    lines = [f"# Soak capacity at {r['size']}, {r['minutes']:g} min per step, "
             f"{r['date']}{state}", "",
             f"{m['cpu']}, {m['cores']} cores; {r['wall_s'] / 60:.0f} min in all. Current: "
             f"{c['current']['sha'][:10]} {c['current']['subject']}"
             + (" (plus uncommitted changes)" if c["current"]["uncommitted_changes"] else "")
             + (f"; base: {c['base']['sha'][:10]} {c['base']['subject']}" if "base" in c
                else "") + ".", "",
             "A fresh local cluster per step holds the sessions, speech looped and paced in real "
             "time. Dropped: frames the audio should have made that never came; late: frames "
             "that came over the 500 ms frame budget after their audio was sent; unrefined: "
             "frames delivered without face refinement (shed to keep the rate); the stages' "
             "own counters (Status, summed over the stages) beside them. A step holds "
             "with under 1% dropped or late, under 1% unrefined and every session at >= 29.1 "
             "fps; each layout stops at its first step that does not. Target: 4 sessions.", "",
             "| layout | " + " | ".join(f"capacity ({s})" for s in ("base", "current")
                                        if "base" in c or s == "current") + " |",
             "|---|" + "---|" * (2 if "base" in c else 1)]
    for layout, caps in r.get("capacity", {}).items():
        cells = [caps.get(s, "-") for s in ("base", "current") if "base" in c or s == "current"]
        lines.append(f"| {layout} | " + " | ".join(cells) + " |")
    lines += ["", "| layout | sessions | tree | expected | delivered | dropped | late | "
              "unrefined | latency p50 / p99 ms | fps min / median | stages: dropped / "
              "degraded | held |", "|---|" + "---|" * 11]
    for layout, sides in r["steps"].items():
        rows = [(s["sessions"], side, s) for side, steps in sides.items() for s in steps]
        for n, side, s in sorted(rows, key=lambda x: (x[0], x[1])):
            if "expected" not in s:
                lines.append(f"| {layout} | {n} | {side} | {s.get('skipped') or s.get('error')}"
                             " |")
                continue
            stages = [x for x in s.get("stages", {}).values() if "error" not in x]
            lines.append(
                f"| {layout} | {n} | {side} | {s['expected']} | {s['delivered']} | "
                f"{s['dropped']} | {s['late']} | {s['unrefined']} "
                f"({_pct(s['unrefined_fraction'])}) | {s['latency_p50_ms']:.0f} / "
                f"{s['latency_p99_ms']:.0f} | {s['fps_min']:.1f} / {s['fps_median']:.1f} | "
                f"{sum(x['dropped'] for x in stages)} / {sum(x['degraded'] for x in stages)} | "
                f"{'yes' if s['passed'] else 'no'} ({_pct(s['dropped_or_late_fraction'])} "
                f"dropped or late{_failed(s.get('errors', []))}) |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
