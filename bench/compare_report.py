"""Summary and markdown table of a ``bench.compare`` run: base vs current with ratios."""

from __future__ import annotations

from statistics import median
from typing import Any

SIDES = ("base", "current")
TOLERANCE = 0.03  # "at least as good": within 3%, about the spread of repeated runs here


def _spread(values: list[float]) -> dict[str, Any]:
    return {"median": median(values), "min": min(values), "max": max(values), "all": values}


def _embedded(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per mode and side: fps over repetitions, per-stage medians of medians and of p99s."""
    out: dict[str, Any] = {}
    for mode in runs["base"][0]["runs"]:
        out[mode] = {}
        for side in SIDES:
            reps = [r["runs"][mode] for r in runs[side]]
            stages = {name: {"median_ms": median(r["stages"][name]["median_ms"] for r in reps),
                             "p99_ms": median(r["stages"][name]["p99_ms"] for r in reps)}
                      for name in reps[0]["stages"]}
            stages["encode (H.264)"] = {"median_ms": median(r["encode_median_ms"] for r in reps),
                                        "p99_ms": median(r["encode_p99_ms"] for r in reps)}
            out[mode][side] = {"fps": _spread([r["fps"] for r in reps]),
                               "steady_fps": _spread([r["steady_fps"] for r in reps]),
                               "first_frame_ms": median(r["first_frame_s"] * 1e3 for r in reps),
                               "frames": reps[0]["frames"], "stages": stages}
    return out


def _cluster(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Capacity per size and side over repetitions; the fixed-count run's figures."""
    capacity: dict[str, Any] = {}
    for size in runs["base"][0]["capacity"]:
        capacity[size] = {side: _spread([r["capacity"][size]["max_sessions"]
                                         for r in runs[side]]) for side in SIDES}
    fixed: dict[str, Any] = {}
    for side in SIDES:
        reps = [r["fixed"] for r in runs[side]]
        fixed[side] = {"sessions": reps[0]["sessions"], "size": reps[0]["size"],
                       "median_fps": median(f["median_fps"] for f in reps),
                       "min_fps": min(f["min_fps"] for f in reps),
                       "late_fraction": median(f["late_fraction"] for f in reps),
                       "latency_p50_ms": median(f["latency_p50_ms"] for f in reps),
                       "latency_p99_ms": median(f["latency_p99_ms"] for f in reps),
                       "first_frame_ms": median(f["first_frame_ms"] for f in reps)}
    return {"capacity": capacity, "fixed": fixed}


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    """Medians and spreads per side, and whether current is at least as good as base."""
    s: dict[str, Any] = {}
    verdict: dict[str, bool] = {}
    if "embedded" in report["raw"]:
        s["embedded"] = _embedded(report["raw"]["embedded"])
        for mode, sides in s["embedded"].items():
            verdict[f"embedded {mode} fps"] = (sides["current"]["fps"]["median"]
                                               >= sides["base"]["fps"]["median"] * (1 - TOLERANCE))
    if "cluster" in report["raw"]:
        s["cluster"] = _cluster(report["raw"]["cluster"])
        for size, sides in s["cluster"]["capacity"].items():
            verdict[f"capacity {size}"] = (sides["current"]["median"]
                                           >= sides["base"]["median"])
        f = s["cluster"]["fixed"]
        verdict["fixed-count fps"] = (f["current"]["median_fps"]
                                      >= f["base"]["median_fps"] * (1 - TOLERANCE))
    s["verdict"] = verdict
    s["at_least_as_good"] = all(verdict.values())
    return s


def _ratio(base: float, current: float) -> str:
    return f"{current / base:.2f}x" if base else "-"


def _row(name: str, base: float, current: float, fmt: str = "{:.2f}",
         base_note: str = "", current_note: str = "") -> str:
    return (f"| {name} | {fmt.format(base)}{base_note} | {fmt.format(current)}{current_note} | "
            f"{_ratio(base, current)} |")


def _range(x: dict[str, Any], fmt: str = "{:.1f}") -> str:
    return f" ({fmt.format(x['min'])}-{fmt.format(x['max'])})" if len(x["all"]) > 1 else ""


def table(report: dict[str, Any]) -> str:
    """The markdown a person reads: the machine, the commits, then base | current | ratio."""
    c, m, s = report["commits"], report["machine"], report["summary"]
    cur = c["current"]["sha"][:7] + (" + uncommitted changes" if
                                     c["current"]["uncommitted_changes"] else "")
    load = " -> ".join(", ".join(f"{x:.2f}" for x in report[k])
                       for k in ("load_before", "load_after") if k in report)
    lines = [f"# Base vs current, side by side in one run{' (quick)' if report['quick'] else ''}",
             "", f"{report['date']}; {m['cpu']}, {m['cores']} cores, Python {m['python']}; "
             f"load average (1, 5, 15 min) before -> after: {load}; "
             f"{report['wall_s'] / 60:.1f} min.", "",
             f"- base: {c['base']['sha'][:7]} ({c['base']['subject']})",
             f"- current: {cur} ({c['current']['subject']})", "",
             "Measured interleaved (base, current, base, current ...), each in a fresh process "
             "importing only its own tree (checked from the files each imported, the cluster's "
             "service processes included). Ratios are current / base.", ""]
    if report["quick"]:
        lines += ["**Quick run: a smoke test of the tooling (2-3 s of speech, one repetition, "
                  "one session); its figures are too short to compare.**", ""]
    if "embedded" in s:
        reps = len(report["raw"]["embedded"]["base"])
        lines += [f"## Embedded: the demo job on one core ({reps} repetition(s) each, medians; "
                  "fps range in brackets)", "", "| measure | base | current | current/base |",
                  "|---|---|---|---|"]
        for mode, sides in s["embedded"].items():
            b, k = sides["base"], sides["current"]
            lines.append(_row(f"**{mode}** fps end to end ({b['frames']} frames)",
                              b["fps"]["median"], k["fps"]["median"], "{:.1f}",
                              _range(b["fps"]), _range(k["fps"])))
            lines.append(_row(f"{mode} fps first frame to last", b["steady_fps"]["median"],
                              k["steady_fps"]["median"], "{:.1f}"))
            lines.append(_row(f"{mode} first frame ms", b["first_frame_ms"],
                              k["first_frame_ms"], "{:.0f}"))
            for stage, x in b["stages"].items():
                y = k["stages"].get(stage, {"median_ms": 0.0, "p99_ms": 0.0})
                lines.append(_row(f"{mode} {stage} ms/frame median", x["median_ms"],
                                  y["median_ms"], "{:.2f}", f" (p99 {x['p99_ms']:.2f})",
                                  f" (p99 {y['p99_ms']:.2f})"))
        lines.append("")
    if "cluster" in s:
        reps = len(report["raw"]["cluster"]["base"])
        lines += [f"## Cluster: redis-server + 5 service processes ({reps} repetition(s) each)",
                  "", "| measure | base | current | current/base |", "|---|---|---|---|"]
        for size, sides in s["cluster"]["capacity"].items():
            b, k = sides["base"], sides["current"]
            lines.append(_row(f"**sessions held at 30 fps, < 1% late, {size}**", b["median"],
                              k["median"], "{:g}", _range(b, "{:g}"), _range(k, "{:g}")))
        fb, fk = s["cluster"]["fixed"]["base"], s["cluster"]["fixed"]["current"]
        name = f"{fb['sessions']} x {fb['size']}"
        lines += [_row(f"{name}: per-session fps, median", fb["median_fps"], fk["median_fps"]),
                  _row(f"{name}: per-session fps, lowest", fb["min_fps"], fk["min_fps"]),
                  _row(f"{name}: late frames %", fb["late_fraction"] * 100,
                       fk["late_fraction"] * 100, "{:.2f}"),
                  _row(f"{name}: latency p50 ms", fb["latency_p50_ms"], fk["latency_p50_ms"],
                       "{:.0f}"),
                  _row(f"{name}: latency p99 ms", fb["latency_p99_ms"], fk["latency_p99_ms"],
                       "{:.0f}"),
                  _row(f"{name}: first frame ms", fb["first_frame_ms"], fk["first_frame_ms"],
                       "{:.0f}"), ""]
    verdict = "; ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in s["verdict"].items())
    lines += [f"At least as good as base (fps within {TOLERANCE:.0%}, capacity not lower): "
              f"**{'yes' if s['at_least_as_good'] else 'no'}** ({verdict}).", ""]
    return "\n".join(lines)
