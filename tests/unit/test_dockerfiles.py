"""Each service's Dockerfile is multi-stage, installs the service's own extra (more only when a
build argument asks), runs as a non-root user, and serves that service on its default gRPC and
metrics ports, as `avatarflow serve`, settings and pyproject define them."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from avatarflow.runtime.settings import DEFAULT_PORTS, SERVICES, Settings

ROOT = Path(__file__).resolve().parents[2]
EXTRA = {"gateway": "gateway", "audio-encoder": "audio", "motion-gen": "motion",
         "renderer": "render", "refiner": "refine"}


@pytest.mark.parametrize("service", SERVICES)
def test_dockerfile_matches_the_service(service: str) -> None:
    text = (ROOT / "services" / service / "Dockerfile").read_text()
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert EXTRA[service] in extras
    assert f"ARG EXTRAS={EXTRA[service]}\n" in text
    assert 'pip install ".[${EXTRAS}]"' in text
    for named in re.findall(r"--build-arg EXTRAS=(\S+)", text):  # the documented variants
        assert all(e in extras for e in named.split(",")), named
    assert len(re.findall(r"^FROM ", text, re.M)) == 2 and "COPY --from=build" in text
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1] not in ("root", "0")
    assert f'ENTRYPOINT ["avatarflow", "serve", "{service}"]' in text
    settings = Settings.load(service, environ={})
    assert f"EXPOSE {settings.grpc_port} {settings.metrics_http_port}" in text
    assert f'"--port", "{DEFAULT_PORTS[service]}"' in text
    for path in re.findall(r"^COPY (?!--)(\S+)", text, re.M):
        assert (ROOT / path).exists(), path
