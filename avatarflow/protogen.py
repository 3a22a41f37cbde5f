"""Generates the protobuf modules in ``avatarflow/v1`` from ``proto/avatarflow/v1``.

Run with ``make proto``. The generated files are committed; a test fails when they are stale.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"


def generate(out_dir: Path) -> list[Path]:
    """Runs protoc (grpcio-tools) on every proto file and returns the written files."""
    import grpc_tools
    from grpc_tools import protoc  # dev extra

    include = Path(grpc_tools.__file__).parent / "_proto"
    files = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    args = ["protoc", f"-I{PROTO_DIR}", f"-I{include}", f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}", *files]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(p for p in out_dir.rglob("*_pb2*.py"))


def main() -> None:
    generate(ROOT)
    print("generated into", ROOT / "avatarflow" / "v1")


def check() -> list[str]:
    """Returns the generated files that differ from a fresh generation."""
    stale = []
    with tempfile.TemporaryDirectory() as tmp:
        for fresh in generate(Path(tmp)):
            rel = fresh.relative_to(tmp)
            committed = ROOT / rel
            if not committed.exists() or committed.read_bytes() != fresh.read_bytes():
                stale.append(str(rel))
    return stale


if __name__ == "__main__":
    sys.exit(main())
