"""``avatarflow keys``: API keys for the gateway's tenants.

``keys new --tenant NAME --file KEYS.yaml`` makes a key, adds its hash to the file (creating
the file or the tenant when needed) and prints the key once: only the hash is kept. A second
``new`` for the same tenant adds a second key, both valid; that is how a key is rotated (then
delete the old hash, the first in the tenant's list, from the file). The gateway re-reads the
file within ``AVATARFLOW_KEYS_RELOAD_S``. ``keys hash`` prints the hash line of a key read on
stdin (to check which hash is a given key, or to add a key made elsewhere).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from avatarflow.contracts.errors import InvalidInput


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="keys_command", required=True)
    new = sub.add_parser("new", help="make a tenant's API key; store its hash in the keys file")
    new.add_argument("--tenant", required=True, help="the tenant the key belongs to")
    new.add_argument("--file", required=True, type=Path,
                     help="the keys file (AVATARFLOW_API_KEYS_FILE); created when missing")
    for flag, kind, what in (("--max-sessions", int, "concurrent sessions"),
                             ("--max-avatars", int, "registered avatars"),
                             ("--register-per-minute", float, "RegisterAvatar calls a minute")):
        new.add_argument(flag, type=kind, help=f"the tenant's quota of {what} (default: the "
                         "gateway's setting)")
    sub.add_parser("hash", help="print the stored form (sha256:...) of a key read on stdin")


def run(args: argparse.Namespace) -> int:
    from avatarflow_gateway.keys import hash_key, new_key

    if args.keys_command == "hash":
        key = sys.stdin.readline().strip()
        if not key:
            raise InvalidInput("no key on stdin: pipe the key in, e.g. "
                               "`echo \"$KEY\" | avatarflow keys hash`")
        print(hash_key(key))
        return 0
    key = new_key()
    doc = _load(args.file)
    tenants = doc.get("tenants") or {}
    entry = tenants.get(args.tenant) or {}
    if not isinstance(tenants, dict) or not isinstance(entry, dict) or not isinstance(
            entry.get("keys") or [], list):
        raise InvalidInput(f"{args.file}: expected 'tenants: {{name: {{keys: [...]}}}}'; "
                           "fix the file first")
    entry["keys"] = [*(entry.get("keys") or []), hash_key(key)]
    tenants[args.tenant] = entry
    doc["tenants"] = tenants
    for name in ("max_sessions", "max_avatars", "register_per_minute"):
        if getattr(args, name) is not None:
            entry[name] = getattr(args, name)
    _save(args.file, doc)
    print(key)
    print(f"avatarflow: tenant {args.tenant!r}: key added to {args.file} ({len(entry['keys'])} "
          "valid); only its hash is stored, so this is the only time the key is shown",
          file=sys.stderr)
    return 0


def _load(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{path}: not valid YAML ({exc})") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise InvalidInput(f"{path}: expected a mapping with 'tenants:'")
    return doc


def _save(path: Path, doc: dict[str, Any]) -> None:
    """Checks the new file as the gateway will read it, then replaces the old one at once
    (a gateway re-reading it never sees half a file), readable by its owner only."""
    from avatarflow_gateway.keys import KeyTable, Quotas

    text = "# avatarflow API keys: SHA-256 hashes only (`avatarflow keys new`)\n" + yaml.safe_dump(
        doc, sort_keys=False)
    KeyTable.parse(text, Quotas(1, 1, 1.0), str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:  # mkstemp's file is the owner's alone (0600)
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
