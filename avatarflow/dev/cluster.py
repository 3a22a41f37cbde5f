"""A local cluster of real processes: Redis, every stage service and the gateway (the
services of avatarflow.runtime.registry).

Each service runs as ``python -m avatarflow.cli.main serve SERVICE`` on its own port with its
own log file; the cluster is ready when every process reports SERVING through grpc.health.v1.
With a RestartPolicy, a supervisor thread starts a replica that exits on its own again, under
the same port and consumer name (as a container restart does), with exponential backoff.
``revive`` does the same at once on demand and ``add_replica`` scales a stage out (the kill
drill, ``avatarflow.dev.drill``). Co-located stages run inside the processes of the stage
before them and have no process of their own: ``colocate=True`` the refiner inside the
renderer's (``AVATARFLOW_RENDERER_COLOCATE=refiner``), ``colocate=("motion-gen", "refiner")``
motion-gen inside the audio-encoder's too (the fused layout).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from avatarflow.contracts.errors import AvatarflowError
from avatarflow.dev.net import free_port, serving
from avatarflow.dev.redis_server import RedisServer, tail
from avatarflow.runtime import profiles, registry
from avatarflow.runtime.settings import Settings

STAGE_SERVICES = registry.STAGE_NAMES
GATEWAY = registry.GATEWAY.name
# Start order: the stages first, so the gateway finds them serving.
SERVICES = (*STAGE_SERVICES, GATEWAY)
HOST = "127.0.0.1"
# A local deployment listens on loopback only and so needs no API keys; ``env`` can ask for
# them (AVATARFLOW_AUTH=required plus a keys file) or open it up.
LOCAL_ENV = {"AVATARFLOW_LISTEN_HOST": HOST, "AVATARFLOW_AUTH": "off"}
# Co-location: each stage that can run inside another's processes (a guest) and that host,
# the stage whose output it reads (avatarflow.runtime.stage_service.colocated).
COLOCATE_HOSTS = {guest: next(s.name for s in registry.PIPELINE
                              if s.output == registry.stage(guest).input)
                  for guest in ("motion-gen", "refiner")}
DEFAULT_GUESTS = ("refiner",)  # colocate=True: the renderer runs the refiner

log = logging.getLogger(__name__)


class ClusterError(AvatarflowError):
    """A service process exited or did not become SERVING in time."""

    category = "unavailable"


@dataclass(frozen=True)
class RestartPolicy:
    """Backoff for restarting a replica that exited on its own: ``initial`` seconds doubling
    (``factor``) to ``maximum``; back to ``initial`` once a process stayed up ``reset_after``."""

    initial: float = 0.5
    maximum: float = 10.0
    factor: float = 2.0
    reset_after: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum or self.factor < 1 or self.reset_after <= 0:
            raise ValueError(f"invalid restart policy {self}")


@dataclass(frozen=True)
class RestartEvent:
    """A replica exited on its own and will be started again after ``delay`` seconds."""

    service: str
    replica: int
    code: int  # the exit status; -N for signal N
    delay: float
    restarts: int  # the replica's restarts so far, this one included
    log_tail: str  # the end of its log file when it exited

    @property
    def name(self) -> str:
        return f"{self.service}-{self.replica}"


@dataclass
class _Replica:
    service: str
    index: int
    port: int
    metrics_port: int
    log_path: Path
    health_port: int = 0  # plaintext health beside a TLS port; 0: health is on ``port``
    generation: int = 0
    spawns: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    # Supervisor state: when the process started, consecutive quick failures (the backoff
    # exponent), supervised restarts, and when a pending restart is due (None: none pending).
    started_at: float = 0.0
    failures: int = 0
    restarts: int = 0
    due: float | None = None

    @property
    def name(self) -> str:
        return f"{self.service}-{self.index}"

    @property
    def consumer(self) -> str:
        """The Redis consumer name; ``restart()`` makes a new one, the supervisor keeps it."""
        return self.name if self.generation == 0 else f"{self.name}-r{self.generation}"


class LocalCluster:
    """Starts, watches and stops the services of one local deployment.

    Args:
        replicas: processes per service (default 1 each).
        redis_url: an existing Redis to use; a private redis-server is started when None.
        env: extra environment variables for every service process.
        log_dir: where ``<service>-<replica>.log`` and ``redis.log`` go (a new temporary
            directory, kept after stop, when None).
        gateway_port: the gateway's port (a free one when None).
        profile, weights_root: an engine profile (avatarflow.runtime.profiles) and its
            weights root for every service, as AVATARFLOW_PROFILE / AVATARFLOW_WEIGHTS_ROOT
            (``env`` still wins).
        restart: restart replicas that exit on their own with this backoff (off when None;
            ``stop()`` and ``restart()`` never count as exits).
        on_restart: called from the supervisor thread for each restart it schedules.
        colocate: the co-located deployment (issue 13): stages that run inside the processes
            of the stage before them (COLOCATE_HOSTS), messages passed between the two in
            memory instead of over Redis. True is the renderer running the refiner (frames
            as pixels, not JPEG); a collection names the guests: ("motion-gen",) the
            audio-encoder running motion-gen, ("motion-gen", "refiner") both (the fused
            layout). A guest has no processes (``replicas`` may not name it, and
            ``target(guest)`` and the like raise ClusterError); its host's Stage.Status and
            /metrics report both stages (metrics labelled by stage as before). Everything
            else, the other hops included, is as in the default deployment, so the layouts
            compare like for like (``services`` lists the processes' services either way).
    """

    def __init__(self, *, replicas: dict[str, int] | None = None, redis_url: str | None = None,
                 env: dict[str, str] | None = None, log_dir: str | Path | None = None,
                 gateway_port: int | None = None, profile: str | None = None,
                 weights_root: str | Path | None = None, restart: RestartPolicy | None = None,
                 on_restart: Callable[[RestartEvent], None] | None = None,
                 colocate: bool | str | Iterable[str] = False) -> None:
        unknown = set(replicas or {}) - set(SERVICES)
        if unknown:
            raise ValueError(f"unknown services {sorted(unknown)}; known: {', '.join(SERVICES)}")
        self.colocate = guests(colocate)  # the co-located stages, in pipeline order
        for guest in self.colocate:
            host = COLOCATE_HOSTS[guest]
            if guest in (replicas or {}):
                raise ValueError(f"colocate runs the {guest} inside the {host} processes: "
                                 f"scale the {host} instead")
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="avatarflow-cluster-"))
        self.env = {f"AVATARFLOW_{_env_name(COLOCATE_HOSTS[g])}_COLOCATE": g
                    for g in self.colocate}
        if profile:
            profiles.validate(profile, weights_root or "")  # before any process starts
            self.env.update(profiles.environment(profile, weights_root or ""))
        self.env.update(env or {})
        self._redis_url = redis_url
        self._redis: RedisServer | None = None
        self._replicas: dict[tuple[str, int], _Replica] = {}
        self._started = False
        self._policy = restart
        self._on_restart = on_restart
        self._lock = threading.RLock()  # the replicas' processes, against the supervisor
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._ports: set[int] = {gateway_port} if gateway_port else set()
        for service in self.services:
            count = (replicas or {}).get(service, 1)
            if count < 1:
                raise ValueError(f"{service} needs at least one replica, got {count}")
            for i in range(count):
                self._declare(service, i, gateway_port if service == GATEWAY and i == 0 else None)

    def _declare(self, service: str, index: int, port: int | None = None) -> _Replica:
        """A new replica's ports (free ones, never one already handed out here) and log."""
        chosen = []
        for wanted in (port, None):
            p = wanted or free_port()
            while wanted is None and p in self._ports:  # the OS repeats a port until bound
                p = free_port()
            self._ports.add(p)
            chosen.append(p)
        r = self._replicas[service, index] = _Replica(
            service, index, chosen[0], chosen[1], self.log_dir / f"{service}-{index}.log")
        return r

    @property
    def services(self) -> tuple[str, ...]:
        """The services that run as processes here, in start order (no co-located stage)."""
        return tuple(s for s in SERVICES if s not in self.colocate)

    def runs_in(self, service: str) -> str:
        """The service whose processes run ``service``: its host when co-located, else itself."""
        return COLOCATE_HOSTS[service] if service in self.colocate else service

    # -- addresses ---------------------------------------------------------------------------

    @property
    def redis_url(self) -> str:
        if self._redis_url is None:
            raise ClusterError("the cluster is not started")
        return self._redis_url

    @property
    def gateway_target(self) -> str:
        return self.target(GATEWAY)

    def target(self, service: str, replica: int = 0) -> str:
        return f"{HOST}:{self._get(service, replica).port}"

    def metrics_url(self, service: str, replica: int = 0) -> str:
        """Where the service's Prometheus metrics are served."""
        return f"http://{HOST}:{self._get(service, replica).metrics_port}/metrics"

    def replicas(self, service: str) -> int:
        return sum(1 for s, _ in self._replicas if s == service)

    def consumer(self, service: str, replica: int = 0) -> str:
        return self._get(service, replica).consumer

    def log_path(self, service: str, replica: int = 0) -> Path:
        return self._get(service, replica).log_path

    def restarts(self, service: str, replica: int = 0) -> int:
        """How many times the supervisor restarted the replica."""
        return self._get(service, replica).restarts

    def log_tail(self, service: str, replica: int = 0, n: int = 40) -> str:
        return tail(self.log_path(service, replica), n)

    def _has_processes(self, service: str) -> None:
        """ClusterError for a stage that has no process of its own here (co-located)."""
        if service in self.colocate:
            host = COLOCATE_HOSTS[service]
            raise ClusterError(
                f"this cluster co-locates the {service} with the {host} "
                f"(colocate={self.colocate!r}): it has no {service} process; the {host}'s "
                f"Stage.Status and /metrics report both stages")

    def _get(self, service: str, replica: int) -> _Replica:
        self._has_processes(service)
        try:
            return self._replicas[service, replica]
        except KeyError:
            raise ValueError(f"no replica {replica} of {service!r}") from None

    # -- processes ---------------------------------------------------------------------------

    def command_for(self, service: str, replica: int = 0) -> list[str]:
        """The command line of one service process (tests override it)."""
        r = self._get(service, replica)
        cmd = [sys.executable, "-m", "avatarflow.cli.main", "serve", service,
               "--port", str(r.port), "--metrics-port", str(r.metrics_port),
               "--redis", self.redis_url, "--consumer", r.consumer]
        if service == GATEWAY:
            cmd += ["--renderer", self.target("renderer")]
        return cmd

    def start(self, timeout: float = 90.0) -> LocalCluster:
        """Starts Redis, the stage services, then the gateway; returns when all are SERVING."""
        if self._started:
            raise ClusterError("the cluster is already started")
        self._started = True
        self._stopping.clear()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            if self._redis_url is None:
                self._redis = RedisServer(log_dir=self.log_dir).start()
                self._redis_url = self._redis.url
            atexit.register(self.stop)  # after Redis's own hook, so it runs first (LIFO)
            stages = [r for r in self._replicas.values() if r.service != GATEWAY]
            for r in stages:
                self._spawn(r)
            self._wait_serving(stages, timeout)
            gateways = [r for r in self._replicas.values() if r.service == GATEWAY]
            for r in gateways:
                self._spawn(r)
            self._wait_serving(gateways, timeout)
        except BaseException:
            self.stop(grace=2)
            raise
        if self._policy is not None:
            self._supervisor = threading.Thread(target=self._supervise, name="cluster-supervisor",
                                                daemon=True)
            self._supervisor.start()
        return self

    def _spawn(self, r: _Replica) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **LOCAL_ENV, **self.env}
        if not r.health_port and Settings.load(r.service, env).tls_cert:
            r.health_port = free_port()  # its port has TLS: readiness is checked beside it
            while r.health_port in self._ports:
                r.health_port = free_port()
            self._ports.add(r.health_port)
        if r.health_port:
            env[f"AVATARFLOW_{_env_name(r.service)}_HEALTH_PORT"] = str(r.health_port)
        cmd = self.command_for(r.service, r.index)
        with r.log_path.open("w" if r.spawns == 0 else "a") as log:
            log.write(f"=== {r.name} (consumer {r.consumer}): {' '.join(cmd)}\n")
            log.flush()
            # A new session: a terminal's Ctrl-C reaches only the owner, which then drains
            # the services in order.
            r.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                      stderr=subprocess.STDOUT, env=env, start_new_session=True)
        r.spawns += 1
        r.started_at = time.monotonic()
        r.due = None

    def _wait_serving(self, pending: list[_Replica], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = list(pending)
        while pending:
            for r in list(pending):
                if r.proc is None or r.proc.poll() is not None:
                    code = None if r.proc is None else r.proc.returncode
                    raise ClusterError(f"{r.name} exited with code {code} before it was "
                                       f"SERVING; {r.log_path} ends:\n{tail(r.log_path)}")
                if serving(f"{HOST}:{r.health_port or r.port}"):
                    pending.remove(r)
            if pending and time.monotonic() > deadline:
                r = pending[0]
                raise ClusterError(f"{r.name} was not SERVING after {timeout:g} s; "
                                   f"{r.log_path} ends:\n{tail(r.log_path)}")
            if pending:
                time.sleep(0.1)

    def alive(self, service: str, replica: int = 0) -> bool:
        proc = self._get(service, replica).proc
        return proc is not None and proc.poll() is None

    def returncode(self, service: str, replica: int = 0) -> int | None:
        """The exit status of the replica's last process (None while it runs)."""
        proc = self._get(service, replica).proc
        return None if proc is None else proc.poll()

    def pid(self, service: str, replica: int = 0) -> int | None:
        proc = self._get(service, replica).proc
        return None if proc is None else proc.pid

    def kill(self, service: str, replica: int = 0, sig: int = signal.SIGKILL) -> None:
        """Sends ``sig``; for SIGKILL also waits until the process is gone."""
        proc = self._get(service, replica).proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        if sig == signal.SIGKILL:
            proc.wait()

    def restart(self, service: str, replica: int = 0, wait: bool = True,
                timeout: float = 90.0) -> None:
        """Starts a fresh process (a new consumer, the same port), stopping the old one first."""
        r = self._get(service, replica)
        with self._lock:
            if r.proc is not None:
                _terminate([r.proc], grace=10)
            r.generation += 1
            self._spawn(r)
        if wait:
            self._wait_serving([r], timeout)

    def revive(self, service: str, replica: int = 0) -> None:
        """Starts a replica whose process is gone again at once, under the same port and
        consumer name, as a container restart does (``kill`` first; no wait for SERVING)."""
        r = self._get(service, replica)
        with self._lock:
            if r.proc is not None and r.proc.poll() is None:
                raise ClusterError(f"{r.name} is still running; kill it first")
            self._spawn(r)

    def add_replica(self, service: str, timeout: float = 90.0) -> int:
        """Starts one more replica of a stage (scaling out); returns its index once SERVING."""
        if service not in STAGE_SERVICES:
            raise ValueError(f"only stages scale out here, not {service!r}")
        self._has_processes(service)
        with self._lock:
            r = self._declare(service, self.replicas(service))
            self._spawn(r)
        self._wait_serving([r], timeout)
        return r.index

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM every service (gateway first) so it drains, SIGKILL what is left after
        ``grace`` seconds, then stop Redis. Idempotent."""
        atexit.unregister(self.stop)
        with self._lock:  # no restart starts after this, none is half-way
            self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join()
            self._supervisor = None
        order = sorted(self._replicas.values(), key=lambda r: r.service != GATEWAY)
        _terminate([r.proc for r in order if r.proc is not None], grace)
        if self._redis is not None:
            self._redis.stop()
            self._redis, self._redis_url = None, None
        self._started = False

    # -- supervision -------------------------------------------------------------------------

    def _supervise(self) -> None:
        """Polls every replica; restarts those that exited, each when its backoff is due."""
        assert self._policy is not None
        while not self._stopping.wait(0.05):
            for r in list(self._replicas.values()):  # add_replica may add one meanwhile
                with self._lock:
                    if self._stopping.is_set():
                        return
                    event = self._check(r, self._policy)
                if event is not None:
                    self._report(event)

    def _check(self, r: _Replica, policy: RestartPolicy) -> RestartEvent | None:
        """Schedules a restart of an exited replica, or starts one that is due."""
        now = time.monotonic()
        if r.due is not None:
            if now >= r.due:
                with r.log_path.open("a") as f:
                    f.write(f"=== restart {r.restarts} of {r.name} (consumer {r.consumer})\n")
                self._spawn(r)
            return None
        code = None if r.proc is None else r.proc.poll()
        if code is None:
            return None
        if now - r.started_at >= policy.reset_after:
            r.failures = 0
        delay = min(policy.maximum, policy.initial * policy.factor ** r.failures)
        r.failures += 1
        r.restarts += 1
        r.due = now + delay
        return RestartEvent(r.service, r.index, code, delay, r.restarts, tail(r.log_path, 20))

    def _report(self, event: RestartEvent) -> None:
        log.warning("%s exited with code %d; restart %d in %.2g s; its log ends:\n%s",
                    event.name, event.code, event.restarts, event.delay, event.log_tail)
        if self._on_restart is not None:
            try:
                self._on_restart(event)
            except Exception:  # a reporting bug must not end supervision
                log.exception("on_restart failed for %s", event.name)

    def __enter__(self) -> LocalCluster:
        return self if self._started else self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def guests(colocate: bool | str | Iterable[str]) -> tuple[str, ...]:
    """The co-located stages ``colocate`` asks for, in pipeline order (see LocalCluster)."""
    if isinstance(colocate, bool):
        return DEFAULT_GUESTS if colocate else ()
    names = {colocate} if isinstance(colocate, str) else set(colocate)
    unknown = names - set(COLOCATE_HOSTS)
    if unknown:
        raise ValueError(f"colocate: {sorted(unknown)} cannot run inside another stage's "
                         "processes; co-locatable: " + ", ".join(
                             f"{g} (in the {h})" for g, h in COLOCATE_HOSTS.items()))
    return tuple(s for s in STAGE_SERVICES if s in names)


def _env_name(service: str) -> str:
    return service.upper().replace("-", "_")


def _terminate(procs: list[subprocess.Popen[bytes]], grace: float) -> None:
    running = [p for p in procs if p.poll() is None]
    for p in running:
        p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in running:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
