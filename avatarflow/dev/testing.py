"""A harness that runs one stage on a list of messages and returns what it produced."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from avatarflow.contracts import messages as m
from avatarflow.runtime.stage import ENDS_SESSION, Stage, StageStats, run_stage

T = TypeVar("T", bound=m.Message)


def run_test(stage: Stage[Any, Any], inputs: Iterable[m.Message],
             stats: StageStats | None = None) -> list[m.Message]:
    """Feeds ``inputs`` through ``stage`` in order, as the runner would, and collects the
    outputs. A session ends on an EndOfAudio or SessionError input; unlike the runner, the
    harness keeps a session the stage itself failed, so a test can see what it does next."""
    out: list[m.Message] = []
    for msg in inputs:
        out.extend(run_stage(stage, msg, stats))
        if isinstance(msg, ENDS_SESSION):
            stage.end(msg.session_id)
    return out


def of_type(msgs: Iterable[m.Message], cls: type[T]) -> list[T]:
    return [x for x in msgs if isinstance(x, cls)]


class DictBacking:
    """An ``AvatarBacking`` in a dict: what Redis is to the avatar store, for unit tests."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def load(self, key: str) -> bytes | None:
        return self.data.get(key)

    def save(self, key: str, data: bytes) -> None:
        self.data[key] = data
