"""OpenTelemetry traces: one trace follows a frame through every service.

Off by default. It turns on when the standard variables ask for it: ``OTEL_TRACES_EXPORTER``
(``otlp``, ``console``; ``none`` keeps it off) or an OTLP endpoint
(``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``); the exporter,
sampler and service name then read their usual ``OTEL_*`` settings. While off, ``start`` is a
single check and nothing from OpenTelemetry is imported.

Context travels as a W3C ``traceparent``: in gRPC metadata from a client to the gateway, and in
every message's envelope between services. Each stage's span is the child of the span that
produced its input, and passes its own context on in its outputs, so the spans of one frame
(audio chunk -> features -> motion -> render -> refine -> send) share one trace id.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from avatarflow.contracts import messages as m
from avatarflow.runtime import registry

_tracer: Any = None  # an opentelemetry Tracer while tracing is on
_provider: Any = None
# While on: the W3C propagator and opentelemetry.trace, looked up once rather than per span.
_propagator: Any = None
_trace: Any = None
# The span each service opens per message it handles, declared with the service.
SPAN_NAMES = {s.name: s.span for s in registry.SERVICES}
SEND = "send"


def wanted(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the ``OTEL_*`` environment asks for traces."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters == "none":
        return False
    return bool(exporters or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def configure(service: str, environ: Mapping[str, str] | None = None) -> bool:
    """Turns tracing on for ``service`` if the environment asks for it; returns whether on."""
    env = os.environ if environ is None else environ
    if not wanted(env):
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = env.get("OTEL_SERVICE_NAME") or f"avatarflow-{service}"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    for exporter in (env.get("OTEL_TRACES_EXPORTER") or "otlp").split(","):
        provider.add_span_processor(BatchSpanProcessor(_exporter(exporter.strip().lower())))
    enable(provider)
    return True


def _exporter(name: str) -> Any:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    from avatarflow.contracts.errors import InvalidInput

    raise InvalidInput(f"OTEL_TRACES_EXPORTER={name!r} is not supported: use otlp or console")


def enable(provider: Any) -> None:
    """Traces into ``provider`` (an SDK TracerProvider; tests pass one with an in-memory
    exporter)."""
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    global _tracer, _provider, _propagator, _trace
    _provider = provider
    _propagator, _trace = TraceContextTextMapPropagator(), trace
    _tracer = provider.get_tracer("avatarflow")


def disable() -> None:
    """Stops tracing, flushing what was recorded."""
    global _tracer, _provider, _propagator, _trace
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = _propagator = _trace = None


def enabled() -> bool:
    return _tracer is not None


def start(name: str, msg: m.Message, parent: str = "") -> Any:
    """A span for ``msg``, child of its envelope's trace context (or ``parent``); None while
    tracing is off."""
    if _tracer is None:
        return None
    carrier = {"traceparent": msg.traceparent or parent}
    context = _propagator.extract(carrier) if carrier["traceparent"] else None
    return _tracer.start_span(name, context=context, attributes={
        "avatarflow.session_id": msg.session_id, "avatarflow.frame": msg.index,
        "avatarflow.message": type(msg).__name__})


def finish(span: Any, outputs: Iterable[m.Message] = ()) -> None:
    """Ends ``span``; ``outputs`` carry its context on, so the next service's span is its child."""
    if span is None:
        return
    tp = traceparent_of(span)
    frames = []
    for o in outputs:
        o.traceparent = tp
        if not isinstance(o, m.AudioChunk) and o.tier is m.Tier.DATA:
            frames.append(o.index)
    if frames:
        span.set_attribute("avatarflow.output_frames", frames)
    span.end()


def traceparent_of(span: Any) -> str:
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=_trace.set_span_in_context(span))
    return carrier.get("traceparent", "")


def from_metadata(metadata: Sequence[tuple[str, Any]] | None) -> str:
    """The ``traceparent`` a client sent in gRPC metadata, or ''."""
    for key, value in metadata or ():
        if key.lower() == "traceparent":
            return value.decode() if isinstance(value, bytes) else str(value)
    return ""


def metadata_for(traceparent: str) -> tuple[tuple[str, str], ...]:
    """gRPC metadata carrying ``traceparent`` (empty when there is none)."""
    return (("traceparent", traceparent),) if traceparent else ()
