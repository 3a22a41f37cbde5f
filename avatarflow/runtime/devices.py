"""Where a neural engine runs: its ``device`` and ``dtype`` options checked once, the same way
for every engine. torch is imported only when asked (it is the ``neural`` extra)."""

from __future__ import annotations

from typing import Any

from avatarflow.contracts.errors import InvalidInput

DTYPE_NAMES = ("float32", "float16", "bfloat16")


def resolve(device: str, dtype: str) -> tuple[Any, Any]:
    """(torch.device, torch.dtype) for the options, or InvalidInput naming what is wrong: an
    unknown device or dtype, CUDA asked for where there is none, or half precision off CUDA."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidInput(f"unknown device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInput(f"device {device!r} is not available: no CUDA device here")
    if dtype not in DTYPE_NAMES:
        raise InvalidInput(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPE_NAMES)}")
    if dtype != "float32" and dev.type != "cuda":
        raise InvalidInput(f"{dtype} needs a cuda device, got {device!r}: half precision "
                           "needs a CUDA device; use float32 on the CPU")
    return dev, getattr(torch, dtype)
