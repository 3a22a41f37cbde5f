"""Generates the protobuf modules in ``avatarflow/contracts/v1`` from ``proto/avatarflow/v1``.

The proto package is ``avatarflow.v1`` (its wire names, e.g. ``avatarflow.v1.Avatars``, stay
that); the Python modules live with the other contracts, so their imports of each other are
rewritten to ``avatarflow.contracts.v1``. Run with ``make proto``. The generated files are
committed; a test fails when they are stale.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "proto"
OUT = ROOT / "avatarflow" / "contracts" / "v1"


def generate(out_dir: Path) -> list[Path]:
    """Runs protoc (grpcio-tools) on every proto file, writes the modules into ``out_dir``
    and returns the written files."""
    import grpc_tools
    from grpc_tools import protoc  # dev extra

    include = Path(grpc_tools.__file__).parent / "_proto"
    files = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        args = ["protoc", f"-I{PROTO_DIR}", f"-I{include}", f"--python_out={tmp}",
                f"--pyi_out={tmp}", f"--grpc_python_out={tmp}", *files]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        for raw in sorted(Path(tmp).rglob("*_pb2*.py*")):  # modules and their type stubs
            text = raw.read_text().replace("from avatarflow.v1 import",
                                           "from avatarflow.contracts.v1 import")
            target = out_dir / raw.name
            target.write_text(text)
            written.append(target)
    return written


def main() -> None:
    generate(OUT)
    print("generated into", OUT)


def check() -> list[str]:
    """Returns the generated files that differ from a fresh generation."""
    stale = []
    with tempfile.TemporaryDirectory() as tmp:
        for fresh in generate(Path(tmp)):
            committed = OUT / fresh.name
            if not committed.exists() or committed.read_bytes() != fresh.read_bytes():
                stale.append(str(committed.relative_to(ROOT)))
    return stale


if __name__ == "__main__":
    main()
