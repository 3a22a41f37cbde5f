"""Inputs for the end-to-end tests: the astronaut portrait and espeak-ng speech with pauses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from avatarflow.cli.inputs import astronaut_png, speech_with_pauses, write_wav

BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("inputs")
    pcm, rate = speech_with_pauses()
    astronaut_png(d / "portrait.png")
    write_wav(d / "speech.wav", pcm, rate)
    return {"dir": d, "portrait": d / "portrait.png", "speech": d / "speech.wav", "pcm": pcm,
            "rate": rate}


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Runs the installed ``avatarflow`` command as a user would."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([str(BIN / "avatarflow"), *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """A local cluster of real processes, shared by the distributed-mode tests."""
    from avatarflow.dev.cluster import LocalCluster

    with LocalCluster(log_dir=tmp_path_factory.mktemp("cluster-logs")) as c:
        yield c


@pytest.fixture(scope="session")
def avatar_id(cluster, inputs: dict) -> str:
    """The test portrait, registered once for the default output format."""
    import asyncio

    from avatarflow.client.api import AvatarClient

    async def register() -> str:
        async with AvatarClient(cluster.gateway_target) as c:
            return (await c.register(inputs["portrait"].read_bytes())).avatar_id

    return asyncio.run(register())
