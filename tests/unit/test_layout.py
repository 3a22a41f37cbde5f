"""The folder shows the architecture, and the imports keep to it: Redis only behind the bus,
the development launchers apart from what production imports, each service on its own."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ("contracts", "runtime", "bus", "avatars", "session", "triton", "telemetry")
STAGES = {"avatarflow_audio_encoder": "audio-encoder", "avatarflow_motion_gen": "motion-gen",
          "avatarflow_renderer": "renderer", "avatarflow_refiner": "refiner",
          "avatarflow_gateway": "gateway"}


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute names (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


def _sources(*tops: str) -> list[Path]:
    return [p for top in tops for p in (ROOT / top).rglob("*.py")
            if ".venv" not in p.parts and "_pb2" not in p.name]


def _importers(paths: list[Path], wanted: str) -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in paths
                  if any(n == wanted or n.startswith(wanted + ".") for n in _imports(p)))


def test_only_the_bus_talks_to_redis() -> None:
    outside = [p for p in _sources("avatarflow", "services", "bench", "tests")
               if not p.relative_to(ROOT).as_posix().startswith(("avatarflow/bus/", "tests/bus/"))]
    assert _importers(outside, "redis") == []


def test_production_code_does_not_import_the_development_launchers() -> None:
    production = [p for top in PRODUCTION for p in _sources(f"avatarflow/{top}")]
    production += [p for p in _sources("services") if "tests" not in p.parts]
    assert _importers(production, "avatarflow.dev") == []


def test_services_do_not_import_each_other() -> None:
    for package, service in STAGES.items():
        code = [p for p in _sources(f"services/{service}") if "tests" not in p.parts]
        for other in STAGES:
            if other != package:
                assert _importers(code, other) == [], f"{service} imports {other}"
