"""The container image of each service, from the registry: deploy/docker/Dockerfile builds any
of them, given the build arguments this module works out.

    python -m avatarflow.dev.images build renderer            # prints the docker build command
    python -m avatarflow.dev.images build renderer --extras render,neural,triton

Inside the Dockerfile (plain Python, nothing installed yet) it checks the arguments and names
the service's extra and the OS packages its image needs. Standard library only.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from avatarflow.contracts.errors import InvalidInput
from avatarflow.runtime import registry

DOCKERFILE = "deploy/docker/Dockerfile"


def build_args(service: str, extras: str = "") -> dict[str, str]:
    """The Dockerfile's build arguments for ``service``; EXTRAS only when not its own extra."""
    spec = registry.service(service)
    args = {"SERVICE": spec.name, "GRPC_PORT": str(spec.port),
            "METRICS_PORT": str(spec.metrics_port)}
    if extras and extras != spec.extra:
        args["EXTRAS"] = extras
    return args


def docker_build(service: str, tag: str = "", extras: str = "") -> list[str]:
    """``docker build`` of ``service``'s image, run from the repository root."""
    cmd = ["docker", "build", "-f", DOCKERFILE]
    for name, value in build_args(service, extras).items():
        cmd += ["--build-arg", f"{name}={value}"]
    return [*cmd, "-t", tag or f"avatarflow-{service}", "."]


def check(service: str, grpc_port: str, metrics_port: str) -> None:
    """Raises InvalidInput unless the image's ports are the ones ``service`` serves on."""
    if not service:
        raise InvalidInput(f"--build-arg SERVICE= names the service: {', '.join(registry.NAMES)}")
    expected = build_args(service)
    if (grpc_port, metrics_port) != (expected["GRPC_PORT"], expected["METRICS_PORT"]):
        raise InvalidInput(
            f"{service} serves on gRPC {expected['GRPC_PORT']} and metrics "
            f"{expected['METRICS_PORT']}, got GRPC_PORT={grpc_port!r} "
            f"METRICS_PORT={metrics_port!r}; build with: {shlex.join(docker_build(service))}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m avatarflow.dev.images", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="print the docker build command of a service's image")
    b.add_argument("service", choices=registry.NAMES)
    b.add_argument("--tag", default="", help="image name (default avatarflow-<service>)")
    b.add_argument("--extras", default="", help="pip extras (default: the service's own)")
    c = sub.add_parser("check", help="fail unless the ports are the service's")
    c.add_argument("service")
    c.add_argument("grpc_port")
    c.add_argument("metrics_port")
    for name in ("extra", "system-packages"):
        sub.add_parser(name, help=f"print the service's {name}").add_argument("service")
    args = p.parse_args(argv)
    try:
        if args.command == "build":
            print(shlex.join(docker_build(args.service, args.tag, args.extras)))
        elif args.command == "check":
            check(args.service, args.grpc_port, args.metrics_port)
        elif args.command == "extra":
            print(registry.service(args.service).extra)
        else:
            print(" ".join(registry.service(args.service).system_packages))
    except InvalidInput as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
