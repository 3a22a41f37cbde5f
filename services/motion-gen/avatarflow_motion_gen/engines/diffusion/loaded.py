"""What a diffusion session needs of its engine, and the engines loaded in this process.

A session keeps no reference to its engine when it is saved (the network stays out of the
snapshot), only the engine's spec and its class; on another replica it finds the engine loaded
there with that spec, or loads one from the same weights. Neither module imports the other:
both go through this one.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .config import DiffusionConfig


class WindowModel(Protocol):
    """The engine as a session uses it: its config and the two networks' windows."""

    config: DiffusionConfig
    weights: Path
    spec: dict[str, Any]  # the engine's constructor arguments: loads the same engine again

    def face(self, *, seed: int, window: int, audio: np.ndarray, audio_valid: np.ndarray,
             history: np.ndarray, history_valid: np.ndarray, style: tuple[float, float],
             emotion: int, reference: np.ndarray | None) -> np.ndarray: ...

    def body(self, keypoints: np.ndarray, audio: np.ndarray, audio_valid: np.ndarray,
             appearance: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


# Engines loaded in this process by their spec, so restored sessions find theirs again.
_LOADED: weakref.WeakValueDictionary[tuple[Any, ...], WindowModel] = (
    weakref.WeakValueDictionary())


def _key(spec: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(sorted(spec.items()))


def register(engine: WindowModel) -> None:
    _LOADED[_key(engine.spec)] = engine


def forget(engine: WindowModel) -> None:
    """Stops offering ``engine`` to restored sessions; live sessions keep theirs."""
    if _LOADED.get(_key(engine.spec)) is engine:
        del _LOADED[_key(engine.spec)]


def attach(spec: dict[str, Any], load: Callable[..., WindowModel]) -> WindowModel:
    """The engine loaded here with ``spec``, else ``load(**spec)``."""
    engine = _LOADED.get(_key(spec))
    return engine if engine is not None else load(**spec)
