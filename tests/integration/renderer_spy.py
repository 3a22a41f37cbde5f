"""Counts the motion frames that reach the ``neural`` renderer with a LivePortrait motion block
(``MotionFrame.liveportrait``), by wrapping the engine's render calls: in-process with
``install()``, or as a renderer process of a local cluster
(``python tests/integration/renderer_spy.py serve renderer ...``), which logs the count."""

from __future__ import annotations

import functools
import sys
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from avatarflow.contracts.messages import MotionFrame

SEEN: Counter[str] = Counter()  # "with" / "without" a block
_DEPTH = threading.local()  # .value: inside a wrapped call on this thread
LOG_LINE = "renderer spy: motion frames with a liveportrait block:"


def _motions(value: Any) -> list[MotionFrame]:
    if isinstance(value, MotionFrame):
        return [value]
    if isinstance(value, list | tuple):
        return [m for v in value for m in _motions(v)]
    return []


def _spy(method: Callable[..., Any], log: bool) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if getattr(_DEPTH, "value", 0):  # one entry point calling another: counted once, outside
            return method(*args, **kwargs)
        for m in _motions([*args, *kwargs.values()]):
            SEEN["with" if m.liveportrait is not None else "without"] += 1
        if log and SEEN["with"]:
            print(f"{LOG_LINE} {SEEN['with']}", flush=True)
        _DEPTH.value = 1
        try:
            return method(*args, **kwargs)
        finally:
            _DEPTH.value = 0

    return wrapper


def install(log: bool = False) -> Counter[str]:
    """Wraps the neural engine's render entry points; returns the (reset) counter."""
    from avatarflow_renderer.engines.neural import NeuralEngine

    for name in ("render", "render_batch", "render_batch_async"):
        method = getattr(NeuralEngine, name, None)
        if method is not None and not hasattr(method, "__wrapped__"):
            setattr(NeuralEngine, name, _spy(method, log))
    SEEN.clear()
    return SEEN


if __name__ == "__main__":
    from avatarflow.cli.main import main

    install(log=True)
    sys.exit(main(sys.argv[1:]))
