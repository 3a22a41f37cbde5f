"""A harness that runs one stage on a list of messages and returns what it produced."""

from __future__ import annotations

from collections.abc import Iterable

from avatarflow.contracts import messages as m
from avatarflow.runtime.stage import Stage, StageStats, run_stage


def run_test(stage: Stage, inputs: Iterable[m.Message],
             stats: StageStats | None = None) -> list[m.Message]:
    """Feeds ``inputs`` through ``stage`` in order, as the runner would, and collects outputs."""
    out: list[m.Message] = []
    for msg in inputs:
        out.extend(run_stage(stage, msg, stats))
    return out


def of_type(msgs: Iterable[m.Message], cls: type[m.Message]) -> list:
    return [x for x in msgs if isinstance(x, cls)]


class DictBacking:
    """An ``AvatarBacking`` in a dict: what Redis is to the avatar store, for unit tests."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def load(self, key: str) -> bytes | None:
        return self.data.get(key)

    def save(self, key: str, data: bytes) -> None:
        self.data[key] = data
