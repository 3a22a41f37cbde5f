"""A network served by Triton, called like the in-process one.

``TritonNetwork(url, model).forward_batch(source, kp_source, kp_driving, image)`` has the
signature of ``RendererNetwork.forward_batch`` (``image`` = hand image, optional) and
``RefinerNetwork.forward_batch`` (``image`` = masked body crop), takes numpy arrays or torch
tensors and returns the same kind. Each call is ONE request carrying the whole batch; Triton's
dynamic batcher may further merge requests of several callers into one execution.
``forward_batch_async`` is the same for asyncio code. ``infer`` / ``infer_async`` send inputs
by name, BYTES ones (object arrays of ``bytes``, e.g. the renderer's avatar keys) included.

Errors are avatarflow's: Unavailable when Triton cannot be reached or does not answer in
time, InvalidInput (with Triton's message) when it rejects the request, NotFound for an
unknown model.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from avatarflow.contracts.errors import (
    AvatarflowError,
    InvalidInput,
    MissingExtra,
    NotFound,
    Unavailable,
)
from avatarflow.telemetry.metrics import TRITON_REQUEST


@contextlib.contextmanager
def quiet_tritonclient() -> Iterator[None]:
    """Imports tritonclient.grpc (pytriton does too) without its warning that its generated
    code expects grpcio >= 1.64.1: the grpcio we pin (1.62; mediapipe needs protobuf < 5)
    runs it (this module makes its stub accept 1.62)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The grpc package installed is at version",
                                category=RuntimeWarning)
        yield


try:
    import grpc

    with quiet_tritonclient():
        import tritonclient.grpc as tc
        import tritonclient.grpc.aio as tca
        from tritonclient.grpc import service_pb2_grpc
        from tritonclient.utils import InferenceServerException
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installed extra
    raise MissingExtra(exc.name or "tritonclient", "triton") from exc


class _DropRegisteredMethod:
    """A channel proxy that drops the ``_registered_method`` keyword grpcio < 1.63 lacks."""

    def __init__(self, channel: Any) -> None:
        self._channel = channel

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._channel, name)
        if name not in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            return attr

        def call(*args: Any, _registered_method: bool = False, **kwargs: Any) -> Any:
            return attr(*args, **kwargs)

        return call


def _accept_grpcio_162() -> None:
    """Lets tritonclient's generated stub construct on grpcio 1.62 (idempotent, and a no-op on
    a grpcio that takes ``_registered_method``)."""
    stub = service_pb2_grpc.GRPCInferenceServiceStub
    params = inspect.signature(grpc.Channel.unary_unary).parameters
    if getattr(stub, "avatarflow_compat", False) or "_registered_method" in params:
        return

    class CompatStub(stub):  # type: ignore[misc, valid-type]
        avatarflow_compat = True

        def __init__(self, channel: Any) -> None:
            super().__init__(_DropRegisteredMethod(channel))

    service_pb2_grpc.GRPCInferenceServiceStub = CompatStub


_accept_grpcio_162()


def map_error(exc: InferenceServerException, model: str) -> AvatarflowError:
    """Triton's error as avatarflow's, keeping Triton's message."""
    status = str(exc.status() or "")
    message = f"triton model {model!r}: {exc.message()}"
    if "INVALID_ARGUMENT" in status:
        return InvalidInput(message)
    if "NOT_FOUND" in status or "unknown model" in message:
        return NotFound(message)
    if any(s in status for s in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED")):
        return Unavailable(message)
    return AvatarflowError(message)


def _array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, on any device
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


class TritonNetwork:
    """One model of a Triton server at ``url`` (host:port, gRPC)."""

    def __init__(self, url: str, model: str, *, timeout_s: float = 10.0) -> None:
        self.url, self.model, self.timeout_s = url, model, timeout_s
        self._client: tc.InferenceServerClient | None = None
        self._aclient: tca.InferenceServerClient | None = None
        self._aloop: asyncio.AbstractEventLoop | None = None
        self._signature: tuple[list[str], str] | None = None
        self._lock = threading.Lock()

    def _sync(self) -> tc.InferenceServerClient:
        with self._lock:
            if self._client is None:
                self._client = tc.InferenceServerClient(self.url)
            return self._client

    def _async(self) -> tca.InferenceServerClient:
        loop = asyncio.get_running_loop()
        if self._aclient is None or self._aloop is not loop:  # a channel serves one loop
            self._aclient, self._aloop = tca.InferenceServerClient(self.url), loop
        return self._aclient

    def _names(self, config: dict[str, Any]) -> tuple[list[str], str]:
        cfg = config.get("config", config)
        self._signature = [i["name"] for i in cfg["input"]], cfg["output"][0]["name"]
        return self._signature

    def signature(self) -> tuple[list[str], str]:
        """(input names in the model config's order, output name), asked once."""
        if self._signature is None:
            try:
                config = self._sync().get_model_config(self.model, as_json=True,
                                                       client_timeout=self.timeout_s)
            except InferenceServerException as exc:
                raise map_error(exc, self.model) from None
            self._names(config)
        assert self._signature is not None
        return self._signature

    @staticmethod
    def _inputs(named: Mapping[str, Any]) -> list[Any]:
        """Triton inputs; None is an optional input left out (the renderer's hand image)."""
        inputs = []
        for name, x in named.items():
            if x is None:
                continue
            if isinstance(x, np.ndarray) and x.dtype.kind in "OS":  # bytes
                tensor = tc.InferInput(name, list(x.shape), "BYTES")
                tensor.set_data_from_numpy(x)
            else:
                a = _array(x)
                tensor = tc.InferInput(name, list(a.shape), "FP32")
                tensor.set_data_from_numpy(a)
            inputs.append(tensor)
        return inputs

    def _request(self, names: Sequence[str], arrays: Sequence[Any]) -> list[Any]:
        if len(arrays) > len(names):
            raise InvalidInput(f"triton model {self.model!r} takes {len(names)} inputs "
                               f"({', '.join(names)}), got {len(arrays)}")
        return self._inputs(dict(zip(names, arrays, strict=False)))

    def _infer(self, inputs: list[Any]) -> Any:
        start = time.perf_counter()
        try:
            result = self._sync().infer(self.model, inputs, client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            raise map_error(exc, self.model) from None
        TRITON_REQUEST.labels(self.model).observe(time.perf_counter() - start)
        return result

    async def _infer_async(self, make: Callable[[Sequence[str]], list[Any]]
                           ) -> tuple[Any, str]:
        """(result, output name) of one request, its inputs ``make(input names)``."""
        client = self._async()
        try:
            if self._signature is None:
                self._names(await client.get_model_config(self.model, as_json=True,
                                                          client_timeout=self.timeout_s))
            names, output = self._signature  # type: ignore[misc]
            inputs = make(names)
            start = time.perf_counter()
            result = await client.infer(self.model, inputs, client_timeout=self.timeout_s)
            TRITON_REQUEST.labels(self.model).observe(time.perf_counter() - start)
        except InferenceServerException as exc:
            raise map_error(exc, self.model) from None
        return result, output

    def infer(self, inputs: Mapping[str, Any]) -> np.ndarray:
        """One request with inputs by name: float32 arrays or tensors (sent as FP32), object
        arrays of ``bytes`` (sent as BYTES), None for an optional input left out. Returns the
        model's output as a read-only numpy array."""
        _, output = self.signature()
        return self._infer(self._inputs(inputs)).as_numpy(output)

    async def infer_async(self, inputs: Mapping[str, Any]) -> np.ndarray:
        """``infer`` for asyncio code: concurrent calls are concurrent requests."""
        result, output = await self._infer_async(lambda _: self._inputs(inputs))
        return result.as_numpy(output)

    @staticmethod
    def _like(out: np.ndarray, source: Any) -> Any:
        """The output as the kind of array the caller passed (numpy arrays come back
        read-only: they view the reply's buffer)."""
        if hasattr(source, "detach"):
            import torch

            return torch.from_numpy(out.copy())  # torch wants a writable buffer
        return out

    def forward_batch(self, source: Any, kp_source: Any, kp_driving: Any,
                      image: Any = None) -> Any:
        """One request with the whole batch: B x 3 x H x W, B x K x 3, B x K x 3 and the
        model's fourth input (or None where it is optional); returns B x 3 x H' x W'."""
        names, output = self.signature()
        result = self._infer(self._request(names, (source, kp_source, kp_driving, image)))
        return self._like(result.as_numpy(output), source)

    async def forward_batch_async(self, source: Any, kp_source: Any, kp_driving: Any,
                                  image: Any = None) -> Any:
        """``forward_batch`` for asyncio code: concurrent calls are concurrent requests."""
        result, output = await self._infer_async(
            lambda names: self._request(names, (source, kp_source, kp_driving, image)))
        return self._like(result.as_numpy(output), source)

    def ready(self) -> bool:
        """True when the server is up and the model is loaded and ready."""
        try:
            return bool(self._sync().is_model_ready(self.model, client_timeout=self.timeout_s))
        except InferenceServerException:
            return False

    def statistics(self) -> dict[str, int]:
        """Triton's counters for the model: ``inference_count`` (items inferred),
        ``execution_count`` (batched executions), ``success_count`` / ``fail_count``
        (requests), summed over versions."""
        try:
            stats = self._sync().get_inference_statistics(self.model, as_json=True,
                                                          client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            raise map_error(exc, self.model) from None
        out = {"inference_count": 0, "execution_count": 0, "success_count": 0, "fail_count": 0}
        for s in stats.get("model_stats", []):
            out["inference_count"] += int(s.get("inference_count", 0))
            out["execution_count"] += int(s.get("execution_count", 0))
            inference = s.get("inference_stats", {})
            out["success_count"] += int(inference.get("success", {}).get("count", 0))
            out["fail_count"] += int(inference.get("fail", {}).get("count", 0))
        return out

    def close(self) -> None:
        """Closes the synchronous channel (the asyncio one: ``aclose``)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        client, self._aclient, self._aloop = self._aclient, None, None
        if client is not None:
            await client.close()
        self.close()
