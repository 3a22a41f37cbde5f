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

import os
import secrets
import shutil
import sys
import sysconfig
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path

from avatarflow.contracts.errors import AvatarflowError, InvalidInput, Unavailable
from avatarflow.dev.child_server import ChildServer
from avatarflow.dev.net import free_port
from avatarflow.dev.redis_server import tail
from avatarflow.triton.client import quiet_tritonclient

HOST = "127.0.0.1"
REPOSITORY = Path(__file__).resolve().parents[2] / "deploy" / "triton" / "model_repository"
SHM_BYTES = 16 << 20  # python backend shared memory: initial size and growth step


class TritonNotInstalled(AvatarflowError):
    """No tritonserver binary: nvidia-pytriton is not installed."""

    category = "failed_precondition"


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
        log_text = self.log()
        self.stop()
        raise Unavailable(f"tritonserver did not get {', '.join(self.models)} ready within "
                          f"{timeout:g} s ({binary}); its log ends:\n{log_text}")

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
