"""Tracing is off unless the standard OTEL_* variables ask for it, and costs nothing then."""

from __future__ import annotations

import numpy as np

from avatarflow.contracts import messages as m
from avatarflow.telemetry import tracing


def test_only_the_standard_variables_turn_tracing_on() -> None:
    assert not tracing.wanted({})
    assert tracing.wanted({"OTEL_TRACES_EXPORTER": "otlp"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"})
    assert not tracing.wanted({"OTEL_TRACES_EXPORTER": "none",
                               "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"})
    assert not tracing.wanted({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"})
    assert not tracing.configure("renderer", {})


def test_off_means_no_span_and_an_untouched_envelope() -> None:
    assert not tracing.enabled()
    msg = m.AudioFeatures(session_id="s", index=3, features=np.zeros(2, np.float32),
                          traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    span = tracing.start("features", msg)
    assert span is None
    out = m.AudioFeatures(session_id="s", index=3, features=np.zeros(2, np.float32),
                          traceparent=msg.traceparent)
    tracing.finish(span, [out])
    assert out.traceparent == msg.traceparent


def test_traceparent_is_read_from_grpc_metadata() -> None:
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert tracing.from_metadata([("user-agent", "x"), ("traceparent", tp)]) == tp
    assert tracing.from_metadata(None) == ""
    assert tracing.metadata_for(tp) == (("traceparent", tp),) and tracing.metadata_for("") == ()
