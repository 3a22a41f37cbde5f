"""``avatarflow up`` starts everything, prints where it is, and drains on SIGTERM/SIGINT."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from avatarflow.cli.up import parse_replicas
from avatarflow.contracts.errors import InvalidInput
from avatarflow.dev.net import free_port

# Runs `up` with the stand-in service behind the real command line.
DRIVER = """
import argparse, sys
from avatarflow.cli import up
from avatarflow.dev.cluster import LocalCluster
from tests.support import fake_service

real = LocalCluster.command_for
LocalCluster.command_for = lambda self, s, i=0: [sys.executable, fake_service.__file__,
                                                 *real(self, s, i)[4:]]
p = argparse.ArgumentParser()
up.add_arguments(p)
sys.exit(up.run(p.parse_args(sys.argv[1:])))
"""


def _up(tmp_path: Path, port: int, *args: str,
        stderr: int = subprocess.STDOUT) -> subprocess.Popen[str]:
    """`avatarflow up` on the stand-in services, its output piped."""
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, "--port", str(port), "--log-dir", str(tmp_path), *args],
        stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=Path(__file__).parents[2])


def _read_until(proc: subprocess.Popen[str], lines: list[str], prefix: str) -> None:
    """Collects output lines until one starts with ``prefix`` or the process ends."""
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(prefix) or proc.poll() is not None:
            return


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_up_serves_until_a_signal_then_drains(tmp_path: Path, sig: int) -> None:
    port = free_port()
    proc = _up(tmp_path, port, "--replicas", "renderer=2")
    lines: list[str] = []
    try:
        _read_until(proc, lines, "Ctrl-C")
        text = "".join(lines)
        row = rf"^  gateway +127\.0\.0\.1:{port}  metrics http://127\.0\.0\.1:\d+/metrics$"
        assert re.search(row, text, re.M), text
        assert "renderer-1" in text and "redis://127.0.0.1:" in text
        assert f"avatarflow client --target 127.0.0.1:{port}" in text
        proc.send_signal(sig)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:  # a failed assertion: still stop the services cleanly
            proc.terminate()
            proc.communicate(timeout=30)
    assert proc.returncode == 0, text + rest
    assert rest.rstrip().endswith("stopped")
    for log in ("gateway-0", "renderer-1", "refiner-0"):
        assert "draining" in (tmp_path / f"{log}.log").read_text()


def test_replicas_are_validated() -> None:
    assert parse_replicas(["motion-gen=3", "renderer=2"]) == {"motion-gen": 3, "renderer": 2}
    with pytest.raises(InvalidInput, match="unknown service 'render'"):
        parse_replicas(["render=2"])
    with pytest.raises(InvalidInput, match="SERVICE=N"):
        parse_replicas(["renderer"])
    with pytest.raises(InvalidInput, match="at least 1"):
        parse_replicas(["renderer=0"])


def test_up_restarts_a_service_that_dies(tmp_path: Path) -> None:
    port = free_port()
    proc = _up(tmp_path, port, stderr=subprocess.DEVNULL)
    lines: list[str] = []
    try:
        _read_until(proc, lines, "Ctrl-C")
        log = tmp_path / "refiner-0.log"
        pid = int(re.search(r"pid=(\d+)", log.read_text()).group(1))
        os.kill(pid, signal.SIGKILL)
        _read_until(proc, lines, "restarting")
        text = "".join(lines)
        assert re.search(r"^restarting refiner-0 in 0\.5 s \(restart 1\): exited with code -9; "
                         r"last log line: refiner serving as refiner-0 ", text, re.M), text
        deadline = time.monotonic() + 30
        while log.read_text().count("serving as refiner-0 ") < 2:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.communicate(timeout=30)
    assert proc.returncode == 0, text + rest
    assert "restarting" not in rest and rest.rstrip().endswith("stopped")
    assert log.read_text().count("draining") == 1  # the restarted process drained on stop
