"""Telemetry every service shares: Prometheus metrics (``metrics``) and OpenTelemetry traces
(``tracing``). Both cost nothing when nobody looks: the per-frame stage metrics are one flag
check while no metrics port is served, and tracing is one check per message while it is off
(the default). On, metrics are a few counter increments and observations per frame."""
