"""``avatarflow serve SERVICE``: one service of the distributed pipeline, as a container runs
it. Settings come from AVATARFLOW_* environment variables (see avatarflow.runtime.settings);
the flags override them. Without SERVICE, ``AVATARFLOW_SERVICE`` names it (the image sets it).

The service runs on uvloop (``AVATARFLOW_EVENT_LOOP=uvloop``, the default): libuv's loop spends
less CPU per socket read and write than asyncio's selector loop, and a service does several
Redis round trips per frame. ``asyncio`` picks the standard library's loop."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any

from avatarflow.contracts.errors import InvalidInput
from avatarflow.runtime import registry
from avatarflow.runtime.settings import SERVICES, Settings

log = logging.getLogger(__name__)

# The module whose ``serve(settings)`` runs each service, from the registry.
MODULES = {s.name: s.server for s in registry.SERVICES}


def entry_point(service: str) -> Callable[[Settings], Coroutine[Any, Any, None]]:
    """The coroutine function that runs ``service`` until SIGTERM."""
    serve: Callable[[Settings], Coroutine[Any, Any, None]] = importlib.import_module(
        MODULES[registry.service(service).name]).serve
    return serve


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("service", choices=SERVICES, nargs="?",
                   default=os.environ.get("AVATARFLOW_SERVICE") or None,
                   help="the service to run (default: $AVATARFLOW_SERVICE)")
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
    if not args.service:
        raise InvalidInput(f"name the service to run ({', '.join(SERVICES)}) or set "
                           "AVATARFLOW_SERVICE")
    settings = Settings.load(args.service, port=args.port, metrics_port=args.metrics_port,
                             redis_url=args.redis_url,
                             engine=args.engine, consumer=args.consumer,
                             weights=args.weights, device=args.device,
                             triton_url=args.triton_url,
                             renderer_target=args.renderer_target)
    run_loop(entry_point(args.service)(settings), settings.event_loop)
    return 0


def loop_factory(event_loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the loop named by ``event_loop`` ("uvloop" or "asyncio"); None means
    asyncio's default. A missing uvloop falls back to asyncio with one warning: the service
    is slower, not broken."""
    if event_loop != "uvloop":
        return None
    try:
        import uvloop
    except ModuleNotFoundError:
        log.warning("uvloop is not installed: running on asyncio's own event loop "
                    "(pip install uvloop, or set AVATARFLOW_EVENT_LOOP=asyncio)")
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_loop(main: Coroutine[Any, Any, None], event_loop: str) -> None:
    """Runs ``main`` to completion on the event loop ``event_loop`` names."""
    with asyncio.Runner(loop_factory=loop_factory(event_loop)) as runner:
        runner.run(main)
