"""Session snapshots: numpy arrays and scalars round trip exactly through the compact form,
snapshots in numpy's own form (written by an older replica) still load, and the allow-list
still refuses what could run code."""

from __future__ import annotations

import pickle
from collections import deque

import numpy as np
import pytest

from avatarflow.runtime import state
from avatarflow.runtime.state import StateError


def _sample() -> dict:
    rng = np.random.default_rng(5)
    return {
        "f32": rng.normal(size=(4, 3)).astype(np.float32),
        "i16": np.arange(-3, 3, dtype=np.int16),
        "strided": np.arange(20)[::3],
        "fortran": np.asfortranarray(rng.normal(size=(2, 5))),
        "empty": np.zeros((0, 3), np.float32),
        "zero_d": np.array(2.5),
        "scalars": (np.float64(1.25), np.float32(-0.5), np.int64(7), np.bool_(True)),
        "history": deque([np.ones(2), np.zeros(2)], maxlen=4),
        "rng": rng,
    }


def _same(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray):
        return (type(b) is np.ndarray and a.dtype == b.dtype and a.shape == b.shape
                and np.array_equal(a, b))
    if isinstance(a, np.generic):
        return type(a) is type(b) and a == b
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, tuple | list | deque):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, np.random.Generator):
        return a.bit_generator.state == b.bit_generator.state
    return a == b


def test_arrays_and_scalars_round_trip_exactly() -> None:
    before = _sample()
    after = state.loads(state.dumps(before))
    assert _same(before, after)
    assert after["f32"].flags.writeable and after["f32"].flags.c_contiguous
    assert after["history"].maxlen == 4
    assert after["rng"].random() == before["rng"].random()  # the stream continues alike


def test_snapshots_in_numpy_form_still_load() -> None:
    before = _sample()
    assert _same(before, state.loads(pickle.dumps(before, protocol=pickle.HIGHEST_PROTOCOL)))


def test_the_compact_form_is_smaller_than_numpy_form() -> None:
    small = [np.zeros(3, np.float32) for _ in range(20)]
    assert len(state.dumps(small)) < len(pickle.dumps(small, pickle.HIGHEST_PROTOCOL))


class _ForgedObjectArray:
    """Pickles as a call of the compact form's loader with an object dtype."""

    def __reduce__(self) -> tuple:
        return state._array, (b"\0" * 8, "|O", (1,))


def test_object_arrays_in_the_compact_form_are_refused() -> None:
    with pytest.raises(StateError, match="object array"):
        state.loads(pickle.dumps(_ForgedObjectArray()))


def test_code_outside_the_allow_list_is_refused() -> None:
    evil = pickle.dumps(__import__("os").system)
    with pytest.raises(StateError, match="not allowed"):
        state.loads(evil)
