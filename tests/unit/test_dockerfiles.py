"""One Dockerfile builds every service's image: multi-stage, installing the service's own extra
(more only when a build argument asks), running as a non-root user and serving that service on
its default gRPC and metrics ports, as `avatarflow serve`, settings, the registry and pyproject
define them."""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from avatarflow.cli.serve import add_arguments
from avatarflow.contracts.errors import InvalidInput
from avatarflow.dev import images
from avatarflow.runtime import registry
from avatarflow.runtime.settings import DEFAULT_PORTS, SERVICES, Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / images.DOCKERFILE
TEXT = DOCKERFILE.read_text()
EXTRAS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def test_one_dockerfile_serves_every_service() -> None:
    assert list((ROOT / "services").glob("*/Dockerfile")) == []
    stages = re.split(r"^FROM ", TEXT, flags=re.M)[1:]
    assert len(stages) == 2 and "COPY --from=build" in TEXT
    build, run = stages
    for arg in ("SERVICE", "GRPC_PORT", "METRICS_PORT", "EXTRAS"):
        assert re.search(rf"^ARG {arg}\b", build, re.M), arg
    # The extras default to the service's own (the registry's), and only they are installed.
    assert 'EXTRAS="${EXTRAS:-$(python -m avatarflow.dev.images extra "${SERVICE}")}"' in build
    assert 'pip install ".[${EXTRAS}]"' in build
    assert 'images check "${SERVICE}" "${GRPC_PORT}" "${METRICS_PORT}"' in build
    for named in re.findall(r"--build-arg EXTRAS=(\S+)", TEXT):  # the documented variants
        assert all(e in EXTRAS for e in named.split(",")), named
    user = re.findall(r"^USER (\S+)", run, re.M)
    assert user and user[-1] not in ("root", "0") and "--uid 10001" in run
    assert "EXPOSE ${GRPC_PORT} ${METRICS_PORT}" in run
    assert "AVATARFLOW_SERVICE=${SERVICE}" in run
    assert 'ENTRYPOINT ["avatarflow", "serve"]' in run
    for path in re.findall(r"^COPY (?!--)(\S+)", TEXT, re.M):
        assert (ROOT / path).exists(), path


@pytest.mark.parametrize("service", SERVICES)
def test_each_image_installs_its_extra_and_exposes_its_ports(service: str) -> None:
    args = images.build_args(service)
    extra = registry.service(service).extra
    assert extra in EXTRAS and extra != "cli"  # its own extra, not every stage's
    assert "EXTRAS" not in args  # the Dockerfile's default: the service's own extra
    assert images.build_args(service, f"{extra},neural")["EXTRAS"] == f"{extra},neural"
    settings = Settings.load(service, environ={})
    assert (args["SERVICE"], args["GRPC_PORT"], args["METRICS_PORT"]) == (
        service, str(settings.grpc_port), str(settings.metrics_http_port))
    assert settings.grpc_port == DEFAULT_PORTS[service]
    images.check(service, args["GRPC_PORT"], args["METRICS_PORT"])
    cmd = images.docker_build(service)
    assert cmd[:4] == ["docker", "build", "-f", images.DOCKERFILE] and cmd[-1] == "."
    assert f"avatarflow-{service}" in cmd  # the image name the Helm chart pulls
    # The image sets AVATARFLOW_SERVICE; `avatarflow serve` with no name runs it.
    parser = argparse.ArgumentParser()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AVATARFLOW_SERVICE", service)
        add_arguments(parser)
    assert parser.parse_args([]).service == service


def test_a_wrong_build_argument_fails_the_build_with_the_right_command() -> None:
    with pytest.raises(InvalidInput, match=re.escape(shlex.join(images.docker_build("renderer")))):
        images.check("renderer", "50051", "51051")
    with pytest.raises(InvalidInput, match="SERVICE"):
        images.check("", "", "")
    assert images.main(["check", "nope", "1", "2"]) == 2


def test_images_that_load_opencv_get_its_system_libraries() -> None:
    for spec in registry.SERVICES:
        needs_opencv = any("opencv" in dep for dep in EXTRAS[spec.extra])
        assert bool(spec.system_packages) == needs_opencv, spec.name


def test_the_build_reads_the_registry_before_anything_is_installed() -> None:
    """The build stage runs the helper with the base image's bare interpreter."""
    out = subprocess.run([sys.executable, "-S", "-m", "avatarflow.dev.images", "extra", "renderer"],
                         cwd=ROOT, capture_output=True, text=True, check=True, env={})
    assert out.stdout.split() == [registry.service("renderer").extra]
