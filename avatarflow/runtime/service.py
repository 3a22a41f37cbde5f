"""What every service process shares: a grpc.aio server with standard health checking
(NOT_SERVING until warm) and reflection, and a graceful stop on SIGTERM: mark NOT_SERVING,
stop taking new work, drain, then stop the server with a grace period."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from avatarflow.runtime.settings import Settings
from avatarflow.telemetry import metrics, tracing

log = logging.getLogger(__name__)


class ServiceRuntime:
    """A service's gRPC server. Add servicers, then ``await run(work, drain)``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        limit = int(settings.max_message_mb * 1024 * 1024)
        self.server = grpc.aio.server(options=[("grpc.max_receive_message_length", limit),
                                               ("grpc.max_send_message_length", limit)])
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.service_names: list[str] = []
        self.port = 0

    def add(self, add_to_server: Callable[..., None], servicer: object, full_name: str) -> None:
        add_to_server(servicer, self.server)
        self.service_names.append(full_name)

    async def _set(self, status: int) -> None:
        for name in ("", *self.service_names):
            await self.health.set(name, status)

    async def run(self, warm_up: Callable[[], Awaitable[None]],
                  work: Sequence[Awaitable[None]],
                  drain: Callable[[], Awaitable[None]]) -> None:
        """Starts serving (NOT_SERVING), warms up, reports SERVING, runs ``work`` until
        SIGTERM/SIGINT or until a piece of work fails, then drains and stops."""
        reflection.enable_server_reflection(
            (*self.service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME), self.server)
        if self.settings.metrics_http_port is not None:
            metrics.serve(self.settings.metrics_http_port)
        tracing.configure(self.settings.service)
        address = f"{self.settings.listen_host}:{self.settings.grpc_port}"
        self.port = self.server.add_insecure_port(address)
        await self._set(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        tasks: list[asyncio.Task[None]] = []
        try:
            await warm_up()
            tasks = [asyncio.ensure_future(w) for w in work]
            await self._set(health_pb2.HealthCheckResponse.SERVING)
            log.info("%s serving on port %d", self.settings.service, self.port)
            stopper = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            for t in done:
                failure = None if t is stopper else t.exception()
                if failure is not None:
                    raise failure
        finally:
            log.info("%s stopping: draining for up to %.1f s", self.settings.service,
                     self.settings.grace_s)
            await self._set(health_pb2.HealthCheckResponse.NOT_SERVING)
            try:
                await asyncio.wait_for(drain(), self.settings.grace_s)
            except TimeoutError:
                log.warning("%s: drain did not finish in %.1f s", self.settings.service,
                            self.settings.grace_s)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.server.stop(self.settings.grace_s)
            tracing.disable()  # flushes the spans still batched for export
