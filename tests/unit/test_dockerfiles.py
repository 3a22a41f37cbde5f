"""Each service's Dockerfile installs the service's own extra and runs that service on its
default port, as `avatarflow serve` and pyproject define them."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from avatarflow.settings import DEFAULT_PORTS, SERVICES

ROOT = Path(__file__).resolve().parents[2]
EXTRA = {"gateway": "gateway", "audio-encoder": "audio", "motion-gen": "motion",
         "renderer": "render", "refiner": "refine"}


@pytest.mark.parametrize("service", SERVICES)
def test_dockerfile_matches_the_service(service: str) -> None:
    text = (ROOT / "services" / service / "Dockerfile").read_text()
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert EXTRA[service] in extras
    assert re.search(rf"pip install '\.\[{EXTRA[service]}\]'", text)
    assert f'ENTRYPOINT ["avatarflow", "serve", "{service}"]' in text
    port = DEFAULT_PORTS[service]
    assert f"EXPOSE {port}" in text and f'"--port", "{port}"' in text
    for path in re.findall(r"^COPY (\S+)", text, re.M):
        assert (ROOT / path).exists(), path
