"""Per-session stage state as bytes, so another replica can continue a session.

State is pickled, and unpickled with an allow-list: only numpy arrays and random generators,
plain containers and classes defined in avatarflow packages can be rebuilt. Whoever can write
to the state store can therefore not make a worker run arbitrary code.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

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


def dumps(state: Any) -> bytes:
    return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)


def loads(data: bytes) -> Any:
    try:
        return _Unpickler(io.BytesIO(data)).load()
    except StateError:
        raise
    except Exception as exc:
        raise StateError(f"session state is unreadable: {type(exc).__name__}: {exc}") from exc
