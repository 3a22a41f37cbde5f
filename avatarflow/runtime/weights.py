"""What `avatarflow weights check` reports about one weights file: found or missing, how many
parameters it holds, and how it differs from what the engine's network expects."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FileReport:
    """One file a profile needs, as its engine's strict loader sees it."""

    path: str  # relative to the weights root
    found: bool
    parameters: int = 0  # numbers in the tensors the network loads from it
    missing: list[str] = field(default_factory=list)  # keys the network needs, not in the file
    unexpected: list[str] = field(default_factory=list)  # keys in the file the network lacks
    mismatched: list[str] = field(default_factory=list)  # "key: file 3x4, network 4x4"
    error: str = ""  # unreadable, wrong format ... (the loader's message)

    @property
    def ok(self) -> bool:
        return self.found and not (self.missing or self.unexpected or self.mismatched
                                   or self.error)


def compare(path: str, expected: Mapping[str, tuple[int, ...]], state: Mapping[str, Any],
            optional: Collection[str] = ()) -> FileReport:
    """The report of a found file whose tensors are ``state`` (name -> anything with a
    ``shape``), checked strictly against the network's ``expected`` shapes; keys in
    ``optional`` may be absent (e.g. training-only buffers a loader skips)."""
    report = FileReport(path=path, found=True)
    for key, shape in expected.items():
        if key not in state:
            if key not in optional:
                report.missing.append(key)
            continue
        have = tuple(state[key].shape)
        if have != tuple(shape):
            report.mismatched.append(f"{key}: file {_dims(have)}, network {_dims(shape)}")
        else:
            report.parameters += math.prod(have)
    report.unexpected = [k for k in state if k not in expected]
    return report


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) or "scalar"
