"""Inside Triton: what every model.py of deploy/triton/model_repository shares.

Runs in the python backend's stub process, which passes its ``triton_python_backend_utils``
module in: request checking against declared tensor specs, model parameters from the config or
the environment (``AVATARFLOW_TRITON_<MODEL>_<PARAMETER>``), the instance's device, the mounted
weights directory, and ``BatchedModel``, which runs one forward pass per Triton batch and answers
each request on its own (a bad request fails alone).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avatarflow.contracts.errors import AvatarflowError, InvalidInput

# backend's stub process, which passes its ``triton_python_backend_utils`` module in.


@dataclass(frozen=True)
class TensorSpec:
    """One input of a served network, per item (the batch dimension is not listed).

    ``dims`` entries are sizes that must match, or names: a named size may be anything but
    must agree wherever the name appears (e.g. the keypoint count "K" of two inputs).
    ``dtype``: "float32" (values must be finite) or "bytes" (Triton's BYTES: an object array
    of ``bytes``, e.g. a key).
    """

    name: str
    dims: tuple[int | str, ...]
    optional: bool = False
    dtype: str = "float32"


def check_request(arrays: Mapping[str, np.ndarray | None],
                  specs: Iterable[TensorSpec]) -> str | None:
    """What is wrong with one request's inputs, in words (None: nothing)."""
    problems: list[str] = []
    named: dict[str, tuple[int, str]] = {}
    batch: dict[int, list[str]] = {}
    for spec in specs:
        a = arrays.get(spec.name)
        if a is None:
            if not spec.optional:
                problems.append(f"{spec.name} is missing")
            continue
        want = "[B, " + ", ".join(map(str, spec.dims)) + "]"
        text = spec.dtype == "bytes"
        if a.dtype != (np.object_ if text else np.float32):
            problems.append(f"{spec.name} is {a.dtype}, expected "
                            f"{'BYTES' if text else 'float32'}")
            continue
        if a.ndim != len(spec.dims) + 1:
            problems.append(f"{spec.name} has shape {list(a.shape)}, expected {want}")
            continue
        batch.setdefault(a.shape[0], []).append(spec.name)
        for dim, size in zip(spec.dims, a.shape[1:], strict=True):
            if isinstance(dim, str):
                seen = named.setdefault(dim, (size, spec.name))
                if seen[0] != size:
                    problems.append(f"{spec.name} has {dim}={size} but {seen[1]} has "
                                    f"{dim}={seen[0]}")
            elif dim != size:
                problems.append(f"{spec.name} has shape {list(a.shape)}, expected {want}")
                break
        bad = 0 if text else a.size - int(np.count_nonzero(np.isfinite(a)))
        if bad:
            problems.append(f"{spec.name} has {bad} non-finite values (NaN or Inf)")
    if len(batch) > 1:
        problems.append("batch sizes differ: " + ", ".join(
            f"{'/'.join(names)} {b}" for b, names in sorted(batch.items())))
    return "; ".join(problems) or None


def model_parameters(model_config: Mapping[str, Any],
                     environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A model config's ``parameters`` as strings; ``AVATARFLOW_TRITON_<MODEL>_<PARAMETER>``
    in the environment (model and parameter names upper-cased, dashes as underscores)
    overrides a parameter, so a container points a model at other weights without editing
    its config.pbtxt."""
    env = os.environ if environ is None else environ
    params = {k: str(v.get("string_value", "")) for k, v in
              model_config.get("parameters", {}).items()}
    prefix = "AVATARFLOW_TRITON_" + str(model_config.get("name", "")).upper().replace("-", "_")
    for key in params:
        value = env.get(f"{prefix}_{key.upper().replace('-', '_')}")
        if value:
            params[key] = value
    return params


def model_device(args: Mapping[str, str], params: Mapping[str, str]) -> tuple[str, str]:
    """(torch device, dtype) for an instance: ``cuda:<id>`` with the ``dtype`` parameter on a
    KIND_GPU instance; the CPU always runs float32."""
    if args.get("model_instance_kind") == "GPU":
        return f"cuda:{args.get('model_instance_device_id', '0')}", params.get("dtype",
                                                                               "float32")
    return "cpu", "float32"


def weights_dir(args: Mapping[str, str], params: Mapping[str, str]) -> Path:
    """The ``weights`` parameter as a directory; relative paths are taken from the model's
    directory in the repository. Never downloads: a missing directory is an error."""
    raw = params.get("weights", "")
    if not raw:
        raise InvalidInput("the model config sets no 'weights' parameter (a local directory)")
    path = Path(raw)
    if not path.is_absolute():
        path = Path(args.get("model_repository", ".")) / path
    if not path.is_dir():
        raise InvalidInput(f"weights directory {path} does not exist (weights are mounted, "
                           "never downloaded)")
    return path


def _concat(column: Sequence[Any]) -> Any:
    """Items of several requests as one batch: numpy arrays, or torch tensors (what a
    ``prepare`` may make, e.g. cached features on the instance's device)."""
    if column[0] is None:
        return None
    if isinstance(column[0], np.ndarray):
        return np.concatenate(column)
    import torch  # only a model that prepares tensors gets here, in a stub that has torch

    return torch.cat(list(column))


class BatchedModel:
    """The body of a python-backend ``execute``: validates each request, runs the valid ones
    as one batch (one forward per distinct set of shapes, normally one), and answers every
    request in order; a bad request gets its own INVALID_ARG error.

    ``prepare`` (optional) turns one valid request's inputs (name -> array, None where an
    optional input is absent) into the forward's arguments for its items (arrays, tensors or
    None, batch first); raising AvatarflowError fails that request alone, with its message.
    Without it the forward takes the inputs in ``specs`` order.
    """

    def __init__(self, pb_utils: Any, specs: list[TensorSpec], output: str,
                 forward: Callable[..., np.ndarray],
                 prepare: Callable[[dict[str, np.ndarray | None]], list[Any]] | None = None
                 ) -> None:
        self.pb, self.specs, self.output, self.forward = pb_utils, specs, output, forward
        self.prepare = prepare or (lambda arrays: [arrays[s.name] for s in self.specs])

    def _error(self, message: str, code: str = "INVALID_ARG") -> Any:
        err = self.pb.TritonError
        error = err(message, getattr(err, code)) if hasattr(err, code) else err(message)
        return self.pb.InferenceResponse(output_tensors=[], error=error)

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        groups: dict[tuple, list[tuple[int, list[Any]]]] = {}
        for i, request in enumerate(requests):
            arrays = {}
            for spec in self.specs:
                tensor = self.pb.get_input_tensor_by_name(request, spec.name)
                arrays[spec.name] = None if tensor is None else tensor.as_numpy()
            problem = check_request(arrays, self.specs)
            if problem:
                responses[i] = self._error(problem)
                continue
            try:
                values = self.prepare(arrays)
            except AvatarflowError as exc:
                responses[i] = self._error(exc.message)
                continue
            except Exception as exc:  # this request fails; the others of the batch go on
                responses[i] = self._error(f"{type(exc).__name__}: {exc}", "INTERNAL")
                continue
            key = tuple(None if v is None else tuple(v.shape[1:]) for v in values)
            groups.setdefault(key, []).append((i, values))
        for members in groups.values():
            self._run(members, responses)
        return responses

    def _run(self, members: list[tuple[int, list[Any]]], responses: list[Any]) -> None:
        batch = [_concat(col) for col in zip(*(values for _, values in members), strict=True)]
        try:
            out = self.forward(*batch)
        except AvatarflowError as exc:
            for i, _ in members:
                responses[i] = self._error(exc.message)
            return
        except Exception as exc:  # every request must still get a response, the error in it
            for i, _ in members:
                responses[i] = self._error(f"{type(exc).__name__}: {exc}", "INTERNAL")
            return
        start = 0
        for i, values in members:
            n = next(v for v in values if v is not None).shape[0]
            tensor = self.pb.Tensor(self.output, np.ascontiguousarray(out[start:start + n]))
            responses[i] = self.pb.InferenceResponse(output_tensors=[tensor])
            start += n
