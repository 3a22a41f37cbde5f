"""Per-session stage state as bytes, so another replica can continue a session.

State is pickled, and unpickled with an allow-list: only numpy arrays and random generators,
plain containers and classes defined in avatarflow packages can be rebuilt. Whoever can write
to the state store can therefore not make a worker run arbitrary code.

A snapshot is taken after every message, so its cost counts per frame: numpy arrays and
scalars are written as their raw bytes, dtype and shape (``_array``, ``_scalar``) instead of
through numpy's own reduce, which costs 5-6 us per array however small; a motion-gen session
(a dozen small arrays) pickles in about three quarters of the time. Snapshots written by
numpy's own reduce (an older replica's) still load.
"""

from __future__ import annotations

import copyreg
import io
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np

from avatarflow.contracts.errors import AvatarflowError

_MODULE_PREFIXES = ("avatarflow.", "avatarflow_")
_ALLOWED = {
    ("builtins", name) for name in
    ("dict", "list", "tuple", "set", "frozenset", "bytes", "bytearray", "complex", "slice",
     "range", "getattr")
} | {
    ("collections", "deque"), ("collections", "OrderedDict"), ("copyreg", "_reconstructor"),
    ("builtins", "object"),
    ("numpy", "dtype"), ("numpy", "ndarray"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    # Protocol 5 rebuilds contiguous arrays from their bytes (object dtypes are refused there).
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy.random._pickle", "__generator_ctor"), ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pickle", "__randomstate_ctor"),
}
_NUMPY_SCALARS = ("float64", "float32", "int64", "int32", "int16", "uint8", "bool_")


class StateError(AvatarflowError):
    """Saved session state could not be restored."""


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if ((module, name) in _ALLOWED or module.startswith(_MODULE_PREFIXES)
                or module in ("avatarflow",) or (module == "numpy" and name in _NUMPY_SCALARS)):
            return super().find_class(module, name)
        raise StateError(f"session state refers to {module}.{name}, which is not allowed")


def _array(data: bytes, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Rebuilds an array ``_reduce_array`` wrote: a writable copy, never an object array."""
    dt = np.dtype(dtype)
    if dt.hasobject:
        raise StateError("session state holds an object array, which is not allowed")
    return np.frombuffer(data, dt).reshape(shape).copy()


def _scalar(dtype: str, data: bytes) -> Any:
    """Rebuilds a numpy scalar ``_reduce_scalar`` wrote."""
    return _array(data, dtype, ())[()]


def _reduce_array(a: np.ndarray) -> Any:
    if a.dtype.hasobject:  # numpy's own reduce: the loader's allow-list judges the objects
        return a.__reduce_ex__(pickle.HIGHEST_PROTOCOL)
    return _array, (a.tobytes(), a.dtype.str, a.shape)


def _reduce_scalar(x: np.generic) -> Any:
    return _scalar, (x.dtype.str, x.tobytes())


_DISPATCH: dict[type, Callable[[Any], Any]] = {
    **copyreg.dispatch_table, np.ndarray: _reduce_array,
    **{np.dtype(t).type: _reduce_scalar for t in _NUMPY_SCALARS}}


class _Pickler(pickle.Pickler):
    dispatch_table = _DISPATCH  # by exact type: ndarray subclasses keep their own reduce


def dumps(state: Any) -> bytes:
    out = io.BytesIO()
    _Pickler(out, protocol=pickle.HIGHEST_PROTOCOL).dump(state)
    return out.getvalue()


def loads(data: bytes) -> Any:
    try:
        return _Unpickler(io.BytesIO(data)).load()
    except StateError:
        raise
    except Exception as exc:
        raise StateError(f"session state is unreadable: {type(exc).__name__}: {exc}") from exc
