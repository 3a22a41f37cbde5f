"""Telemetry every service shares: Prometheus metrics (``metrics``) and OpenTelemetry traces
(``tracing``). Both are cheap when nobody looks: metrics are a few counter increments per
frame, and tracing is one boolean check per message while it is off (the default)."""
