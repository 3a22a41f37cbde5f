"""A private Triton server on free local ports, for tests, benchmarks and local runs.

Runs the ``tritonserver`` binary that ships inside nvidia-pytriton (``pip install
'avatarflow[triton-server]'``) on a run-time copy of a model repository
(deploy/triton/model_repository): the copy is where the launcher fills in each model's
``parameters`` (``weights``, ``arch``, ``dtype``...) and, on ``device="cpu"``, turns every
instance group into KIND_CPU, so the production repository stays as deployed (KIND_GPU, weights
at their mounted paths). In a container the same parameters are overridden through the
environment instead: ``AVATARFLOW_TRITON_<MODEL>_<PARAMETER>`` (``model_parameters``; see
deploy/triton/Dockerfile).

How the python backend finds our interpreter: the backend runs each model instance in a stub
process that embeds libpython. The launcher

- copies the python backend with the stub built for this interpreter's Python version into a
  private backend directory (what PyTriton does);
- puts this interpreter's ``LIBDIR`` first on LD_LIBRARY_PATH, so the stub links the same
  libpython as this interpreter (another build of the same version, e.g. the system's, can fail
  inside ``threading`` with ``RLock._recursion_count``), then PyTriton's bundled libraries;
- puts this interpreter's ``bin`` directory first on PATH: an embedded Python finds its
  prefix by looking its program name up on PATH, so the stub starts as this virtualenv's
  python (its ``pyvenv.cfg`` and site-packages, editable installs included);
- passes the entries of ``sys.path`` that site-packages does not provide (a checkout on
  PYTHONPATH, pytest's ``pythonpath``) as PYTHONPATH.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sys
import sysconfig
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avatarflow.child_server import ChildServer
from avatarflow.errors import AvatarflowError, InvalidInput, Unavailable
from avatarflow.net import free_port
from avatarflow.redis_server import tail

HOST = "127.0.0.1"
REPOSITORY = Path(__file__).resolve().parent.parent / "deploy" / "triton" / "model_repository"
SHM_BYTES = 16 << 20  # python backend shared memory: initial size and growth step


class TritonNotInstalled(AvatarflowError):
    """No tritonserver binary: nvidia-pytriton is not installed."""

    category = "failed_precondition"


@contextlib.contextmanager
def quiet_tritonclient() -> Iterator[None]:
    """Imports tritonclient.grpc (pytriton does too) without its warning that its generated
    code expects grpcio >= 1.64.1: the grpcio we pin (1.62; mediapipe needs protobuf < 5)
    runs it (avatarflow.triton_client makes its stub accept 1.62)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The grpc package installed is at version",
                                category=RuntimeWarning)
        yield


def find_tritonserver() -> Path:
    """The tritonserver binary bundled with nvidia-pytriton."""
    try:
        with quiet_tritonclient():
            import pytriton
    except ImportError:
        raise TritonNotInstalled("tritonserver not found: pip install "
                                 "'avatarflow[triton-server]' (it ships in nvidia-pytriton), "
                                 "or run the Triton image (deploy/triton/Dockerfile)") from None
    path = Path(pytriton.__file__).parent / "tritonserver" / "bin" / "tritonserver"
    if not path.is_file():
        raise TritonNotInstalled(f"nvidia-pytriton is installed without {path}")
    return path


def _stub(dist: Path) -> Path:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise TritonNotInstalled(f"nvidia-pytriton has no python backend stub for Python "
                                 f"{version} ({stub})")
    return stub


def child_environment(libs: Path) -> dict[str, str]:
    """tritonserver's environment: the stub runs as this interpreter (module docstring)."""
    env = dict(os.environ)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (libdir, str(libs), env.get("LD_LIBRARY_PATH", "")) if p)
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    prefixes = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    extra = [p for p in sys.path if p and Path(p).is_dir()
             and not any(Path(p).resolve().is_relative_to(x) for x in prefixes)]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(
        [*extra, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]))
    env.pop("PYTHONHOME", None)
    return env


def write_repository(source: Path, target: Path, models: Iterable[str], device: str,
                     parameters: Mapping[str, Mapping[str, str]],
                     max_queue_delay_us: int | None) -> None:
    """Copies ``models`` of the repository at ``source`` to ``target`` with their
    config.pbtxt changed: parameters set, KIND_CPU on ``device="cpu"``, the batcher's delay."""
    from google.protobuf import text_format

    with quiet_tritonclient():
        from tritonclient.grpc import model_config_pb2 as mc

    for name in models:
        src = source / name
        if not (src / "config.pbtxt").is_file():
            raise InvalidInput(f"model {name!r}: no {src / 'config.pbtxt'}")
        shutil.copytree(src, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        config = text_format.Parse((src / "config.pbtxt").read_text(), mc.ModelConfig())
        for key, value in parameters.get(name, {}).items():
            config.parameters[key].string_value = str(value)
        if device == "cpu":
            for group in config.instance_group:
                group.kind = mc.ModelInstanceGroup.KIND_CPU
                del group.gpus[:]
        if max_queue_delay_us is not None and config.HasField("dynamic_batching"):
            config.dynamic_batching.max_queue_delay_microseconds = max_queue_delay_us
        (target / name / "config.pbtxt").write_text(text_format.MessageToString(config))


class TritonServer(ChildServer):
    """A tritonserver child process bound to 127.0.0.1, loading ``models`` explicitly.

    ``with TritonServer(weights={"refiner": "/w/refiner"}) as t: use(t.url)``.
    ``parameters`` sets further config parameters per model (``{"renderer": {"arch":
    "upperbody"}}``); ``weights`` is shorthand for the ``weights`` parameter. ``device="cpu"``
    runs every instance on the CPU; ``"gpu"`` keeps the repository's instance groups.
    ``max_queue_delay_us`` replaces the dynamic batchers' delay; ``env`` adds environment
    variables for the server and its stubs (e.g. ``OMP_NUM_THREADS``). Logs go to
    ``triton.log`` in ``work_dir`` (a temporary directory, removed on stop, when not given).
    """

    def __init__(self, repository: str | Path = REPOSITORY, *, models: Iterable[str] | None = None,
                 weights: Mapping[str, str | Path] | None = None,
                 parameters: Mapping[str, Mapping[str, str]] | None = None,
                 device: str = "cpu", max_queue_delay_us: int | None = None,
                 env: Mapping[str, str] | None = None, work_dir: str | Path | None = None,
                 log_verbose: int = 0) -> None:
        if device not in ("cpu", "gpu"):
            raise InvalidInput(f"device must be 'cpu' or 'gpu', not {device!r}")
        self.repository = Path(repository)
        names = list(models) if models is not None else sorted(
            p.name for p in self.repository.iterdir() if (p / "config.pbtxt").is_file())
        self.models = names
        self.parameters = {m: dict((parameters or {}).get(m, {})) for m in names}
        for model, path in (weights or {}).items():
            self.parameters.setdefault(model, {})["weights"] = str(Path(path).resolve())
        self.device, self.max_queue_delay_us, self.log_verbose = (device, max_queue_delay_us,
                                                                  log_verbose)
        self.env = dict(env or {})
        super().__init__(work_dir, "avf-triton-")
        self.work_dir = self._dir
        self.log_path = self.work_dir / "triton.log"
        self.http_port = self.grpc_port = self.metrics_port = 0

    @property
    def url(self) -> str:
        """The gRPC endpoint, host:port (what TritonNetwork takes)."""
        return f"{HOST}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    def log(self, n: int = 60) -> str:
        return tail(self.log_path, n)

    def _prepare(self) -> tuple[Path, list[str], dict[str, str]]:
        binary = find_tritonserver()
        dist = binary.parent.parent  # .../pytriton/tritonserver
        backends = self.work_dir / "backends"
        shutil.rmtree(backends, ignore_errors=True)
        shutil.copytree(dist / "backends" / "python", backends / "python",
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(_stub(dist), backends / "python" / "triton_python_backend_stub")
        repo = self.work_dir / "model_repository"
        shutil.rmtree(repo, ignore_errors=True)
        repo.mkdir(parents=True)
        write_repository(self.repository, repo, self.models, self.device, self.parameters,
                         self.max_queue_delay_us)
        shm = f"python,shm-region-prefix-name=avf{os.getpid()}-{secrets.token_hex(4)}"
        args = [str(binary), f"--model-repository={repo}", f"--backend-directory={backends}",
                "--model-control-mode=explicit", *(f"--load-model={m}" for m in self.models),
                "--exit-on-error=true", "--strict-readiness=true",
                f"--log-verbose={self.log_verbose}", f"--backend-config={shm}",
                f"--backend-config=python,shm-default-byte-size={SHM_BYTES}",
                f"--backend-config=python,shm-growth-byte-size={SHM_BYTES}"]
        if self.device == "cpu":
            args += ["--pinned-memory-pool-byte-size=0", "--cuda-memory-pool-byte-size=0:0"]
        libs = dist.parent.parent / "nvidia_pytriton.libs"
        return binary, args, {**child_environment(libs), **self.env}

    def start(self, timeout: float = 180.0) -> TritonServer:
        """Starts the server; returns once every model is ready. Retries a port taken meanwhile;
        raises Unavailable with the log's tail when it does not come up."""
        if self.alive():
            raise Unavailable(f"tritonserver is already running at {self.url}", retryable=False)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        binary, args, env = self._prepare()
        for _ in range(3):
            self.http_port, self.grpc_port, self.metrics_port = (free_port(HOST) for _ in "hgm")
            ports = [f"--http-address={HOST}", f"--http-port={self.http_port}",
                     f"--grpc-address={HOST}", f"--grpc-port={self.grpc_port}",
                     f"--metrics-address={HOST}", f"--metrics-port={self.metrics_port}"]
            with self.log_path.open("wb") as log:
                self._spawn([*args, *ports], stdout=log, env=env, cwd=self.work_dir)
            if self._wait_until(lambda: all(self.ready(m) for m in self.models), timeout, 0.1):
                return self
            if "already in use" not in self.log() or self.alive():
                break
        log = self.log()
        self.stop()
        raise Unavailable(f"tritonserver did not get {', '.join(self.models)} ready within "
                          f"{timeout:g} s ({binary}); its log ends:\n{log}")

    def ready(self, model: str | None = None) -> bool:
        """True when the server (or ``model``) answers ready on the HTTP health endpoint."""
        path = f"/v2/models/{model}/ready" if model else "/v2/health/ready"
        try:
            with urllib.request.urlopen(self.http_url + path, timeout=1.0) as reply:
                return reply.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM (Triton unloads its models and stops their stubs), then SIGKILL of the
        process group after ``grace`` seconds; idempotent."""
        super().stop(grace)


# Inside Triton: what a model.py of deploy/triton/model_repository shares. Runs in the python
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
