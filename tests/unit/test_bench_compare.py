"""bench.compare: each side imports only its own tree, the base worktree never outlives the run,
and the report says plainly whether the current tree kept up with the base."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import compare
from bench.compare_report import summarize, table


def _fake_tree(root: Path) -> Path:
    (root / "avatarflow").mkdir(parents=True)
    (root / "avatarflow" / "__init__.py").write_text("")
    (root / "services" / "renderer" / "avatarflow_renderer").mkdir(parents=True)
    (root / "services" / "renderer" / "avatarflow_renderer" / "__init__.py").write_text("")
    return root


def test_a_side_imports_its_own_tree_not_the_installed_one(tmp_path: Path) -> None:
    tree = _fake_tree(tmp_path / "tree")
    code = "import avatarflow, avatarflow_renderer; print(avatarflow.__file__); " \
           "print(avatarflow_renderer.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, env=compare.tree_env(tree),
                         check=True, capture_output=True, text=True).stdout.split()
    assert [Path(p).resolve().is_relative_to(tree.resolve()) for p in out] == [True, True]


def test_a_run_that_imported_the_other_tree_is_refused(tmp_path: Path) -> None:
    tree = _fake_tree(tmp_path / "tree")
    with pytest.raises(compare.CompareError, match="imported code from elsewhere"):
        compare._check_own_code(tree, {"modules": {"avatarflow": str(compare.ROOT)}})


@pytest.mark.skipif(not (compare.ROOT / ".git").exists(), reason="needs a git checkout")
def test_the_base_worktree_is_removed_even_when_the_run_fails(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), compare.base_worktree("HEAD", tmp_path) as path:
        assert (path / "pyproject.toml").is_file()
        raise RuntimeError("a probe failed")
    assert not path.exists()
    assert str(path) not in compare._git("worktree", "list")


def _raw(fps: float, capacity: int) -> dict[str, Any]:
    stages = {"renderer": {"median_ms": 6.0, "p99_ms": 8.0}}
    run = {"fps": fps, "steady_fps": fps, "first_frame_s": 0.4, "frames": 433,
           "stages": stages, "encode_median_ms": 3.0, "encode_p99_ms": 5.0}
    fixed = {"sessions": 2, "size": "512x768", "median_fps": 30.0, "min_fps": 29.9,
             "late_fraction": 0.0, "latency_p50_ms": 40.0, "latency_p99_ms": 60.0,
             "first_frame_ms": 60.0}
    return {"embedded": {"runs": {"upper-body 512x768": run}},
            "cluster": {"capacity": {"256x384": {"max_sessions": capacity}}, "fixed": fixed}}


def _report(base: list[dict[str, Any]], current: list[dict[str, Any]]) -> dict[str, Any]:
    raw = {part: {"base": [b[part] for b in base], "current": [c[part] for c in current]}
           for part in ("embedded", "cluster")}
    report = {"raw": raw, "quick": False, "date": "today", "wall_s": 60.0,
              "load_before": (0.1, 0.1, 0.1),
              "machine": {"cpu": "cpu", "cores": 2, "python": "3.11"},
              "commits": {"base": {"sha": "33fba26" * 6, "subject": "before"},
                          "current": {"sha": "c014fc2" * 6, "subject": "after",
                                      "uncommitted_changes": True}}}
    report["summary"] = summarize(report)
    return report


def test_report_shows_both_sides_and_a_slower_current_tree_fails() -> None:
    kept_up = _report([_raw(60.0, 5), _raw(62.0, 5)], [_raw(61.0, 5), _raw(60.5, 5)])
    text = table(kept_up)
    assert "| **upper-body 512x768** fps end to end (433 frames) | 61.0 (60.0-62.0) | " \
           "60.8 (60.5-61.0) | 1.00x |" in text
    assert "**yes**" in text and "c014fc2 + uncommitted changes" in text
    slower = _report([_raw(60.0, 5)], [_raw(50.0, 4)])
    assert not slower["summary"]["at_least_as_good"]
    assert "capacity 256x384: NO" in table(slower)
