"""Services run on uvloop by default and on asyncio's loop when asked, in one cluster: the
stages on uvloop and the gateway on the standard loop serve a session together (gRPC health,
the bidirectional Session stream, Redis), and every one of them drains on SIGTERM and exits
0, as a rolling deploy stops them."""

from __future__ import annotations

from pathlib import Path

from avatarflow.dev.cluster import SERVICES, LocalCluster
from avatarflow.dev.net import serving
from tests.integration.cluster_support import config, session

ON_ASYNCIO = "gateway"  # the others keep the default


def _runs_uvloop(pid: int) -> bool:
    """Whether the process has uvloop's extension loaded."""
    return "uvloop" in Path(f"/proc/{pid}/maps").read_text()


def test_stages_on_uvloop_and_a_gateway_on_asyncio_serve_and_drain(tmp_path, inputs) -> None:
    env = {"AVATARFLOW_GATEWAY_EVENT_LOOP": "asyncio"}
    with LocalCluster(log_dir=tmp_path / "logs", env=env) as cluster:
        for s in SERVICES:
            assert serving(cluster.target(s)), s
            pid = cluster.pid(s)
            assert pid is not None
            assert _runs_uvloop(pid) == (s != ON_ASYNCIO), s
        rate = inputs["rate"]
        image = inputs["portrait"].read_bytes()
        rec = session(cluster.gateway_target, config("", rate, image=image),
                      inputs["pcm"][:2 * rate], rate)
        assert len(rec.frames) >= 55 and rec.ended is not None
        indexes = [f.index for f in rec.frames]
        assert indexes == sorted(set(indexes))
    for s in SERVICES:  # every one drained on SIGTERM and exited cleanly
        assert cluster.returncode(s) == 0, cluster.log_tail(s)
