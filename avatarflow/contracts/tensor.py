"""The tensor envelope: the one place where arrays become bytes and back."""

from __future__ import annotations

import math
import sys

import numpy as np

from avatarflow.contracts.errors import InvalidInput
from avatarflow.contracts.v1 import tensor_pb2

_LITTLE = sys.byteorder == "little"
ALLOWED_DTYPES = frozenset({"float16", "float32", "float64", "int16", "int32", "int64", "uint8"})


def encode(array: np.ndarray) -> tensor_pb2.Tensor:
    """Packs an array (any layout) as a little-endian, C-order tensor."""
    out = tensor_pb2.Tensor()
    fill(out, array)
    return out


def fill(out: tensor_pb2.Tensor, array: np.ndarray) -> None:
    """``encode`` into an existing (empty) tensor field, saving a copy of the data."""
    arr = np.asarray(array)
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
    if tensor.dtype not in ALLOWED_DTYPES:
        raise InvalidInput(f"tensor dtype {tensor.dtype!r} is not one of {sorted(ALLOWED_DTYPES)}")
    dtype = np.dtype(tensor.dtype).newbyteorder("<")
    shape = tuple(int(s) for s in tensor.shape)
    if any(s < 0 for s in shape):
        raise InvalidInput(f"tensor shape {shape} has a negative dimension")
    expected = math.prod(shape) * dtype.itemsize
    if len(tensor.data) != expected:
        raise InvalidInput(
            f"tensor of shape {shape} and dtype {tensor.dtype} needs {expected} bytes, "
            f"got {len(tensor.data)}")
    return np.frombuffer(tensor.data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
