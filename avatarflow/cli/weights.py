"""``avatarflow weights check ROOT [--profile NAME]``: loads every file a profile needs from a
weights root, strictly, as its engines load them, and says per file what is wrong. Operators
run it before deploying; exit status 0 only when the profile can run on ROOT, 2 otherwise."""

from __future__ import annotations

import argparse
from pathlib import Path

from avatarflow.contracts.errors import InvalidInput
from avatarflow.runtime import profiles
from avatarflow.runtime.weights import FileReport

SHOWN = 5  # keys listed per problem; the rest are counted


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="weights_command", required=True)
    c = sub.add_parser("check", help="check a weights root against a profile")
    c.add_argument("root", help="the weights root (laid out as the profile's publishers lay "
                                "it out)")
    c.add_argument("--profile", default="liveportrait-joyvasa", choices=sorted(profiles.PROFILES))


def run(args: argparse.Namespace) -> int:
    root = Path(args.root)
    if not root.is_dir():
        raise InvalidInput(f"weights root {root} is not a directory")
    profile = profiles.profile(args.profile)
    print(f"profile {profile.name}: {profile.description}")
    print(f"weights root {root.resolve()}")
    bad: list[str] = []
    for check, reports in profile.check(root):
        print(f"\n{check.name}")
        for r in reports:
            print("\n".join(describe(r)))
            if not r.ok:
                bad.append(r.path)
    if bad:
        print(f"\nFAIL: profile {profile.name} cannot run on {root}: {len(bad)} file(s) with "
              f"problems ({', '.join(bad)})")
        return 2
    print(f"\nOK: profile {profile.name} can run on {root}")
    return 0


def describe(r: FileReport) -> list[str]:
    """The report as indented lines: a status line, then one line per kind of problem."""
    if not r.found:
        return [f"  MISSING  {r.path}" + (f"  ({r.error})" if r.error else "")]
    status = "ok" if r.ok else "BAD"
    lines = [f"  {status:<7}  {r.path}  ({r.parameters:,} parameters)"]
    for label, keys in (("missing keys", r.missing), ("unexpected keys", r.unexpected),
                        ("shape mismatches", r.mismatched)):
        if keys:
            more = f" (and {len(keys) - SHOWN} more)" if len(keys) > SHOWN else ""
            lines.append(f"           {len(keys)} {label}: {', '.join(keys[:SHOWN])}{more}")
    if r.error:
        lines.append(f"           error: {r.error}")
    return lines
