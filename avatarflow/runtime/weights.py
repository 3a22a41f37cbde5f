"""What `avatarflow weights check` reports about one weights file: found or missing, how many
parameters it holds, and how it differs from what the engine's network expects."""

from __future__ import annotations

from dataclasses import dataclass, field


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
