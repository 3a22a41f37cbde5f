"""The tensor envelope: the one place where arrays become bytes and back."""

from __future__ import annotations

import math
import sys

import numpy as np

from avatarflow.contracts.errors import InvalidInput
from avatarflow.contracts.v1 import tensor_pb2

_LITTLE = sys.byteorder == "little"
ALLOWED_DTYPES = frozenset({"float16", "float32", "float64", "int16", "int32", "int64", "uint8"})
# Looked up per tensor, several per message: numpy's ``dtype.name`` is a Python-level property
# that costs more than packing a small array, so the names and dtypes are computed once.
_NAME_OF = {np.dtype(n): n for n in ALLOWED_DTYPES}  # native byte order
_WIRE = {n: np.dtype(n).newbyteorder("<") for n in ALLOWED_DTYPES}
_NATIVE = {n: np.dtype(n) for n in ALLOWED_DTYPES}


def encode(array: np.ndarray) -> tensor_pb2.Tensor:
    """Packs an array (any layout) as a little-endian, C-order tensor."""
    out = tensor_pb2.Tensor()
    fill(out, array)
    return out


def fill(out: tensor_pb2.Tensor, array: np.ndarray) -> None:
    """``encode`` into an existing (empty) tensor field, saving a copy of the data."""
    arr = np.asarray(array)
    name = _NAME_OF.get(arr.dtype)
    if name is None:  # another dtype, or an allowed one in the other byte order
        name = arr.dtype.name
        if name not in ALLOWED_DTYPES:
            raise InvalidInput(f"tensor dtype {name} is not one of {sorted(ALLOWED_DTYPES)}")
    if not arr.flags.c_contiguous or arr.dtype.byteorder == (">" if _LITTLE else "="):
        arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
    out.dtype = name
    out.shape.extend(arr.shape)
    out.data = arr.tobytes()


def decode(tensor: tensor_pb2.Tensor) -> np.ndarray:
    """Unpacks a tensor, checking that dtype, shape and byte length agree."""
    dtype = _WIRE.get(tensor.dtype)
    if dtype is None:
        raise InvalidInput(f"tensor dtype {tensor.dtype!r} is not one of {sorted(ALLOWED_DTYPES)}")
    shape = tuple(tensor.shape)  # Python ints already (a repeated int64 field)
    if shape and min(shape) < 0:
        raise InvalidInput(f"tensor shape {shape} has a negative dimension")
    expected = math.prod(shape) * dtype.itemsize
    data = tensor.data  # each read of a bytes field copies it out of the message
    if len(data) != expected:
        raise InvalidInput(
            f"tensor of shape {shape} and dtype {tensor.dtype} needs {expected} bytes, "
            f"got {len(data)}")
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(_NATIVE[tensor.dtype])
