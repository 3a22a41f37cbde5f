"""Side-by-side benchmark: a base commit against the current tree, in one run.

``python -m bench.compare --base 33fba26 [--quick]`` checks the base out into a temporary git
worktree, then measures both trees interleaved (base, current, base, current ...), so both see
the same machine noise. Each measurement is a fresh process (bench/compare_probe.py) whose
working directory is that tree's root and whose PYTHONPATH puts that tree (its root and its
services/<name> package directories) first; the cluster's service processes inherit both, so
each side runs its own code, and the files the probe reports it imported are checked to prove
it. Measures (a) embedded fps end to end and per-stage medians (the demo job, both modes, one
core, after a warm-up) and (b) cluster capacity at 256x384 and 512x768 plus a fixed-count
run's fps and latency. Writes bench/results/compare.{json,md}; the worktree is removed
afterwards, also on failure, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from bench.compare_report import summarize, table

ROOT = Path(__file__).resolve().parents[1]
PROBE = Path(__file__).resolve().parent / "compare_probe.py"
SIDES = ("base", "current")


class CompareError(RuntimeError):
    """A probe failed, or a side ran code from outside its own tree."""


def _git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise CompareError(f"git {' '.join(args)} failed (a shallow clone lacks the base "
                           f"commit: git fetch --unshallow): {done.stderr.strip()}")
    return done.stdout.strip()


@contextmanager
def base_worktree(rev: str, parent: Path) -> Iterator[Path]:
    """A detached worktree of ``rev`` under ``parent``, removed on the way out whatever
    happened (git's own record of it included)."""
    path = parent / "base"
    _git("worktree", "add", "--detach", "--quiet", str(path), rev)
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)],
                       capture_output=True)
        shutil.rmtree(path, ignore_errors=True)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], capture_output=True)


def tree_env(root: Path) -> dict[str, str]:
    """The environment that makes Python import ``root``'s code: the tree and its service
    package directories first on PYTHONPATH (any inherited PYTHONPATH is dropped, so the
    other tree cannot leak in; the editable install's finder comes after sys.path)."""
    services = sorted(str(p) for p in (root / "services").iterdir() if p.is_dir())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(root), *services])
    return env


def run_probe(root: Path, probe: Path, args: list[str], out: Path, timeout: float) -> Any:
    """Runs the probe in ``root`` and returns its JSON; on any interruption the probe gets
    SIGTERM first, so its LocalCluster stops its service processes."""
    cmd = [sys.executable, str(probe), *args, "--json-out", str(out)]
    proc = subprocess.Popen(cmd, cwd=root, env=tree_env(root))
    try:
        code = proc.wait(timeout)
    except BaseException:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    if code != 0:
        raise CompareError(f"probe {' '.join(args)} failed in {root} (exit {code})")
    result: dict[str, Any] = json.loads(out.read_text())
    _check_own_code(root, result)
    # Kept in the report: the packages' files, relative to their tree (the worktree is gone).
    result["modules"] = {name: str(Path(f).resolve().relative_to(root.resolve()))
                         for name, f in result["modules"].items() if "." not in name}
    return result


def _check_own_code(root: Path, result: dict[str, Any]) -> None:
    foreign = {name: f for name, f in result["modules"].items()
               if not Path(f).resolve().is_relative_to(root.resolve())}
    if foreign:
        raise CompareError(f"the run in {root} imported code from elsewhere: {foreign}")


def _machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model or platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "python": sys.version.split()[0],
            "platform": platform.platform()}


def _commits(base: str) -> dict[str, Any]:
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return {"base": {"rev": base, "sha": _git("rev-parse", base),
                     "subject": _git("log", "-1", "--format=%s", base)[:100]},
            "current": {"sha": _git("rev-parse", "HEAD"), "uncommitted_changes": dirty,
                        "subject": _git("log", "-1", "--format=%s", "HEAD")[:100]}}


def _terminate_as_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: worktree removed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="33fba26", help="commit to compare against")
    ap.add_argument("--out", help="bench/results; out/bench-quick for --quick, so a smoke "
                    "test never replaces a real result")
    ap.add_argument("--quick", action="store_true", help="a tiny run: a smoke test only")
    ap.add_argument("--only", choices=("embedded", "cluster"), help="measure one part only")
    ap.add_argument("--embedded-reps", type=int, default=5)
    ap.add_argument("--cluster-reps", type=int, default=2)
    ap.add_argument("--max-sessions", type=int, default=6)
    ap.add_argument("--fixed", type=int, default=2, help="512x768 sessions in the fixed run")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, _terminate_as_exit)
    if a.quick:
        a.embedded_reps, a.cluster_reps, a.max_sessions, a.fixed = 1, 1, 1, 1
    embedded_args = ["embedded", *(["--seconds", "2"] if a.quick else [])]
    cluster_args = ["cluster", "--max-sessions", str(a.max_sessions), "--fixed", str(a.fixed),
                    *(["--seconds", "3"] if a.quick else [])]
    plan = ([] if a.only == "cluster" else [("embedded", embedded_args, a.embedded_reps, 900)])
    plan += [] if a.only == "embedded" else [("cluster", cluster_args, a.cluster_reps, 1800)]
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "quick": a.quick,
        "machine": _machine(), "commits": _commits(a.base), "load_before": os.getloadavg(),
        "raw": {}}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="avatarflow-compare-") as tmp_name:
        tmp = Path(tmp_name)
        # The probe runs from a copy, so the current tree's bench/ is not on the base's path.
        probe = Path(shutil.copy(PROBE, tmp / PROBE.name))
        with base_worktree(a.base, tmp) as base_root:
            roots = {"base": base_root, "current": ROOT}
            for part, args, reps, timeout in plan:
                raw: dict[str, list[Any]] = report["raw"].setdefault(part, {s: [] for s in SIDES})
                for rep in range(reps):
                    for side in SIDES:
                        print(f"[{time.monotonic() - started:5.0f} s] {part} {rep + 1}/{reps}: "
                              f"{side}", flush=True)
                        out = tmp / f"{part}-{side}-{rep}.json"
                        raw[side].append(run_probe(roots[side], probe, args, out, timeout))
    report["load_after"] = os.getloadavg()
    report["wall_s"] = time.monotonic() - started
    report["summary"] = summarize(report)
    out_dir = Path(a.out or ("out/bench-quick" if a.quick else "bench/results"))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "compare.json").write_text(json.dumps(report, indent=2, default=str))
    (out_dir / "compare.md").write_text(table(report))
    print(table(report))
    print(f"wrote {out_dir / 'compare.json'} and {out_dir / 'compare.md'}")


if __name__ == "__main__":
    main()
