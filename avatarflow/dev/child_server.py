"""A server the project starts itself as a child process (redis-server, tritonserver): its own
session (a terminal's Ctrl-C goes to its owner), stopped at exit, waited for until ready, and
a directory of its own that is removed on stop unless the caller named it."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any


class ChildServer:
    def __init__(self, directory: str | Path | None, prefix: str) -> None:
        self._own_dir = directory is None
        self._dir = Path(directory) if directory else Path(tempfile.mkdtemp(prefix=prefix))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Any:  # pragma: no cover - every server defines it
        raise NotImplementedError

    def _spawn(self, args: Sequence[str], *, stdout: int | IO[bytes] = subprocess.DEVNULL,
               env: Mapping[str, str] | None = None, cwd: Path | None = None) -> None:
        self._proc = subprocess.Popen(list(args), stdin=subprocess.DEVNULL, stdout=stdout,
                                      stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                      start_new_session=True)
        atexit.register(self.stop)

    def _wait_until(self, ready: Callable[[], bool], timeout: float, step: float) -> bool:
        """True once ``ready()``; False when the process exits or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                return False
            if ready():
                return True
            time.sleep(step)
        return False

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL of its process group after ``grace`` seconds; idempotent."""
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: its children go too
                proc.wait()
        if self._own_dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Any:
        return self if self.alive() else self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
