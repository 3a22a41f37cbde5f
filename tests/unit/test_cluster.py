"""LocalCluster process management, with a stand-in service behind the real command line."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from avatarflow.dev.cluster import (
    SERVICES,
    ClusterError,
    LocalCluster,
    RestartEvent,
    RestartPolicy,
)
from avatarflow.dev.net import serving
from tests.support import fake_service


def _children() -> set[int]:
    """Live (not zombie) child processes of this test process."""
    kids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            kids.add(int(stat.parent.name))
    return kids


def _fake(cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch, code: str | None = None):
    real = cluster.command_for

    def command_for(service: str, replica: int = 0) -> list[str]:
        if code is not None:
            return [sys.executable, "-c", code]
        return [sys.executable, fake_service.__file__, *real(service, replica)[4:]]

    monkeypatch.setattr(cluster, "command_for", command_for)


def test_command_line_of_each_service(tmp_path: Path) -> None:
    cluster = LocalCluster(log_dir=tmp_path, redis_url="redis://127.0.0.1:1/0",
                           replicas={"motion-gen": 2})
    cmd = cluster.command_for("motion-gen", 1)
    assert cmd[:5] == [sys.executable, "-m", "avatarflow.cli.main", "serve", "motion-gen"]
    metrics_port = cluster.metrics_url("motion-gen", 1).split(":")[2].split("/")[0]
    assert cmd[5:] == ["--port", cluster.target("motion-gen", 1).split(":")[1],
                       "--metrics-port", metrics_port,
                       "--redis", "redis://127.0.0.1:1/0", "--consumer", "motion-gen-1"]
    gateway = cluster.command_for("gateway")
    assert gateway[-2:] == ["--renderer", cluster.target("renderer")]
    ports = {cluster.target(s, i) for s in SERVICES for i in range(cluster.replicas(s))}
    assert len(ports) == 6
    metrics = {cluster.metrics_url(s, i) for s in SERVICES for i in range(cluster.replicas(s))}
    assert len(metrics) == 6 and not {u.split("/")[2] for u in metrics} & ports


def test_start_fails_with_the_log_tail(tmp_path: Path, monkeypatch) -> None:
    before = _children()
    cluster = LocalCluster(log_dir=tmp_path)
    _fake(cluster, monkeypatch, "import sys; print('boom: no model'); sys.exit(3)")
    with pytest.raises(ClusterError, match="exited with code 3") as err:
        cluster.start(timeout=30)
    assert "boom: no model" in err.value.message
    assert _children() <= before  # redis and the other services were stopped


def test_start_times_out_with_the_log_tail(tmp_path: Path, monkeypatch) -> None:
    cluster = LocalCluster(log_dir=tmp_path)
    _fake(cluster, monkeypatch, "import time; print('loading', flush=True); time.sleep(60)")
    t0 = time.monotonic()
    with pytest.raises(ClusterError, match="not SERVING after 1 s") as err:
        cluster.start(timeout=1)
    assert "loading" in err.value.message
    assert time.monotonic() - t0 < 10


def test_start_kill_restart_stop(tmp_path: Path, monkeypatch) -> None:
    before = _children()
    cluster = LocalCluster(log_dir=tmp_path, replicas={"motion-gen": 2})
    _fake(cluster, monkeypatch)
    with cluster.start(timeout=60):
        for s in SERVICES:
            for i in range(cluster.replicas(s)):
                assert cluster.alive(s, i) and serving(cluster.target(s, i))
        assert cluster.redis_url.startswith("redis://127.0.0.1:")
        with pytest.raises(ClusterError, match="already started"):
            cluster.start()
        assert f"renderer={cluster.target('renderer')}" in cluster.log_tail("gateway")

        cluster.kill("motion-gen", 1)
        assert not cluster.alive("motion-gen", 1)
        assert cluster.returncode("motion-gen", 1) == -signal.SIGKILL
        port = cluster.target("motion-gen", 1)
        cluster.restart("motion-gen", 1)
        assert cluster.alive("motion-gen", 1) and cluster.target("motion-gen", 1) == port
        assert cluster.consumer("motion-gen", 1) == "motion-gen-1-r1"
        assert "serving as motion-gen-1-r1" in cluster.log_tail("motion-gen", 1)
        assert "serving as motion-gen-1 " in cluster.log_path("motion-gen", 1).read_text()
    for s in SERVICES:  # every service drained on SIGTERM and exited 0
        for i in range(cluster.replicas(s)):
            assert cluster.returncode(s, i) == 0, cluster.log_tail(s, i)
    assert "draining" in cluster.log_tail("gateway")
    assert _children() <= before


def _wait(predicate, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_supervisor_restarts_a_killed_replica_as_the_same_consumer(tmp_path: Path,
                                                                     monkeypatch) -> None:
    before = _children()
    events: list[RestartEvent] = []
    cluster = LocalCluster(log_dir=tmp_path, replicas={"motion-gen": 2},
                           restart=RestartPolicy(initial=0.05), on_restart=events.append)
    _fake(cluster, monkeypatch)
    with cluster.start(timeout=60):
        port, pid = cluster.target("motion-gen", 1), cluster.pid("motion-gen", 1)
        cluster.kill("motion-gen", 1)
        _wait(lambda: cluster.pid("motion-gen", 1) != pid and serving(port), "the restart")
        assert cluster.target("motion-gen", 1) == port
        assert cluster.consumer("motion-gen", 1) == "motion-gen-1"
        assert cluster.restarts("motion-gen", 1) == 1 and cluster.restarts("motion-gen", 0) == 0
        assert [(e.name, e.code, e.restarts) for e in events] == [
            ("motion-gen-1", -signal.SIGKILL, 1)]
        assert "serving as motion-gen-1 " in events[0].log_tail  # the tail of the dead process
        log = cluster.log_path("motion-gen", 1).read_text()
        assert log.count("serving as motion-gen-1 ") == 2 and "=== restart 1 of" in log
    for s in SERVICES:  # a clean stop is not an exit to restart: everything drained, once
        for i in range(cluster.replicas(s)):
            assert cluster.returncode(s, i) == 0, cluster.log_tail(s, i)
    assert len(events) == 1 and _children() <= before


def test_supervisor_backs_off_in_a_crash_loop_and_resets(tmp_path: Path, monkeypatch) -> None:
    events: list[RestartEvent] = []
    policy = RestartPolicy(initial=0.02, maximum=0.16, reset_after=1.0)
    cluster = LocalCluster(log_dir=tmp_path, restart=policy, on_restart=events.append)
    _fake(cluster, monkeypatch)
    with cluster.start(timeout=60):
        fake = cluster.command_for
        crash = [sys.executable, "-c", "import sys; print('boom: bad weights'); sys.exit(3)"]
        monkeypatch.setattr(cluster, "command_for",
                            lambda s, i=0: crash if s == "refiner" else fake(s, i))
        cluster.kill("refiner")
        _wait(lambda: len(events) >= 6, "six restarts")
        monkeypatch.setattr(cluster, "command_for", fake)  # the weights are fixed
        delays = [e.delay for e in events[:6]]
        assert delays == pytest.approx([0.02, 0.04, 0.08, 0.16, 0.16, 0.16])
        assert [e.code for e in events[:6]] == [-signal.SIGKILL, 3, 3, 3, 3, 3]
        assert "boom: bad weights" in events[1].log_tail
        _wait(lambda: serving(cluster.target("refiner")), "the fixed refiner")
        n = len(events)
        time.sleep(policy.reset_after + 0.2)  # up for long enough: the backoff resets
        cluster.kill("refiner")
        _wait(lambda: len(events) > n, "the next restart")
        assert events[n].delay == pytest.approx(policy.initial)
        assert events[n].restarts == n + 1


def test_stop_during_backoff_does_not_restart(tmp_path: Path, monkeypatch) -> None:
    before = _children()
    events: list[RestartEvent] = []
    cluster = LocalCluster(log_dir=tmp_path, restart=RestartPolicy(initial=30, maximum=30),
                           on_restart=events.append)
    _fake(cluster, monkeypatch)
    cluster.start(timeout=60)
    pid = cluster.pid("renderer")
    cluster.kill("renderer")
    _wait(lambda: len(events) == 1, "the exit to be seen")
    cluster.stop()
    assert cluster.pid("renderer") == pid and cluster.returncode("renderer") == -signal.SIGKILL
    assert cluster.restarts("renderer") == 1 and len(events) == 1
    assert cluster.log_path("renderer").read_text().count("serving as") == 1
    assert _children() <= before


def test_restart_policy_is_validated() -> None:
    with pytest.raises(ValueError, match="invalid restart policy"):
        RestartPolicy(initial=5, maximum=1)
