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

from avatarflow.runtime import tls
from avatarflow.runtime.settings import Settings
from avatarflow.telemetry import metrics, tracing

log = logging.getLogger(__name__)


class ServiceRuntime:
    """A service's gRPC server. Add servicers, then ``await run(work, drain)``."""

    def __init__(self, settings: Settings,
                 interceptors: Sequence[grpc.aio.ServerInterceptor] = ()) -> None:
        self.settings = settings
        # TLS on the port when a certificate is set (mutual with a client CA): the files are
        # checked first, so bad ones stop the service before anything starts.
        self.tls = tls.certificate_files(settings)
        limit = int(settings.max_message_mb * 1024 * 1024)
        self.server = grpc.aio.server(options=[("grpc.max_receive_message_length", limit),
                                               ("grpc.max_send_message_length", limit)],
                                      interceptors=list(interceptors))
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.service_names: list[str] = []
        self.port = 0
        self.health_server: grpc.aio.Server | None = None  # plaintext health (health_port)
        self._warm = False  # readiness: SERVING only once warm and not full (set_full)
        self._full = False

    def add(self, add_to_server: Callable[..., None], servicer: object, full_name: str) -> None:
        add_to_server(servicer, self.server)
        self.service_names.append(full_name)

    def _plain_health(self, port: int) -> grpc.aio.Server:
        """grpc.health.v1 alone, in plaintext, for probes that cannot do TLS (kubelet's)."""
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        server.add_insecure_port(f"{self.settings.listen_host}:{port}")
        return server

    async def _set(self, status: int) -> None:
        for name in ("", *self.service_names):
            await self.health.set(name, status)

    async def set_full(self, full: bool) -> None:
        """Readiness under admission control: NOT_SERVING while the service is at its
        capacity, so a load balancer sends new work elsewhere; SERVING again below it, but
        never before warm-up or during the drain (health's graceful shutdown ignores it)."""
        self._full = full
        if not self._warm:
            return
        for name in ("", *self.service_names):
            # The latest value at each write: concurrent calls converge on the last one.
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING
                                  if self._full else health_pb2.HealthCheckResponse.SERVING)

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
        if self.tls is None:
            self.port = self.server.add_insecure_port(address)
        else:
            self.port = self.server.add_secure_port(address, self.tls.credentials())
        if self.settings.health_port:
            self.health_server = self._plain_health(self.settings.health_port)
            await self.health_server.start()
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
            self._warm = True
            await self.set_full(self._full)
            log.info("%s serving on port %d%s (%s event loop)", self.settings.service,
                     self.port, "" if self.tls is None else " with mutual TLS"
                     if self.tls.mutual else " with TLS", loop_name(loop))
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
            await self.health.enter_graceful_shutdown()  # NOT_SERVING for good
            try:
                await asyncio.wait_for(drain(), self.settings.grace_s)
            except TimeoutError:
                log.warning("%s: drain did not finish in %.1f s", self.settings.service,
                            self.settings.grace_s)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.server.stop(self.settings.grace_s)
            if self.health_server is not None:
                await self.health_server.stop(0)
            tracing.disable()  # flushes the spans still batched for export


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """Which event loop a service runs on, for its start-up line: uvloop or asyncio."""
    return type(loop).__module__.split(".")[0]
