"""A stand-in service process for LocalCluster tests: the ``serve`` command line, grpc health
SERVING on --port, exit 0 after SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


async def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("service")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--metrics-port", type=int)
    p.add_argument("--redis", required=True)
    p.add_argument("--consumer", required=True)
    p.add_argument("--renderer")
    args = p.parse_args(argv)
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    await servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)  # grpc starts SERVING
    await server.start()
    print(f"{args.service} serving as {args.consumer} renderer={args.renderer} "
          f"pid={os.getpid()}", flush=True)
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    print("draining", flush=True)
    await server.stop(1)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
