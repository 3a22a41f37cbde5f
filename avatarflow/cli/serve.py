"""``avatarflow serve SERVICE``: one service of the distributed pipeline, as a container runs
it. Settings come from AVATARFLOW_* environment variables (see avatarflow.runtime.settings);
the flags override them."""

from __future__ import annotations

import argparse
import asyncio
import importlib

from avatarflow.runtime.settings import SERVICES, Settings

MODULES = {"gateway": "avatarflow_gateway.server",
           **{s: f"avatarflow_{s.replace('-', '_')}.server" for s in SERVICES if s != "gateway"}}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("service", choices=SERVICES)
    p.add_argument("--port", type=int, help="gRPC port (default: the service's own)")
    p.add_argument("--redis", dest="redis_url", help="redis URL, e.g. redis://host:6379/0")
    p.add_argument("--engine", help="stage engine (default: the stage's default)")
    p.add_argument("--metrics-port", type=int,
                   help="Prometheus /metrics port (default: gRPC port + 1000; -1: off)")
    p.add_argument("--weights", help="local directory of the engine's weights (neural engines)")
    p.add_argument("--device", help="torch device for a neural engine, e.g. cpu or cuda:0")
    p.add_argument("--triton", dest="triton_url",
                   help="renderer/refiner: run the network on this Triton server (host:port)")
    p.add_argument("--consumer", help="consumer name in the stage's group (default host-pid)")
    p.add_argument("--renderer", dest="renderer_target",
                   help="gateway only: the renderer's gRPC address host:port")


def run(args: argparse.Namespace) -> int:
    settings = Settings.load(args.service, port=args.port, metrics_port=args.metrics_port,
                             redis_url=args.redis_url,
                             engine=args.engine, consumer=args.consumer,
                             weights=args.weights, device=args.device,
                             triton_url=args.triton_url,
                             renderer_target=args.renderer_target)
    module = importlib.import_module(MODULES[args.service])
    asyncio.run(module.serve(settings))
    return 0
