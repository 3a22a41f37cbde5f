"""Every service serves Prometheus metrics on its own port: after a short session through the
local cluster, each stage's per-frame histograms counted that session's frames, the gateway's
end-to-end histogram counted every frame it sent, and the late / dropped counters exist."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from avatarflow.runtime.settings import SERVICES
from tests.integration.cluster_support import config, session

STAGES = ("audio-encoder", "motion-gen", "renderer", "refiner")


def _scrape(url: str) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"{name}{labels} is not exported"
    return samples[key]


def test_a_session_is_counted_by_every_service(cluster, avatar_id: str, inputs: dict) -> None:
    before = {s: _scrape(cluster.metrics_url(s)) for s in SERVICES}
    rate = inputs["rate"]
    rec = session(cluster.gateway_target, config(avatar_id, rate), inputs["pcm"][:2 * rate],
                  rate)
    after = {s: _scrape(cluster.metrics_url(s)) for s in SERVICES}
    frames = len(rec.frames)
    assert frames >= 55

    def delta(service: str, name: str, **labels: str) -> float:
        return _value(after[service], name, **labels) - before[service].get(
            (name, tuple(sorted(labels.items()))), 0.0)

    gw = "gateway"
    assert delta(gw, "avatarflow_gateway_frames_sent_total") == frames
    assert delta(gw, "avatarflow_gateway_frame_latency_seconds_count") == frames
    assert delta(gw, "avatarflow_gateway_frame_latency_seconds_bucket", le="+Inf") == frames
    for name in ("avatarflow_gateway_late_frames_total", "avatarflow_gateway_dropped_frames_total",
                 "avatarflow_gateway_fps"):
        _value(after[gw], name)
    _value(after[gw], "avatarflow_active_sessions", service="gateway")
    for stage in STAGES:
        produced = delta(stage, "avatarflow_stage_frames_total", stage=stage)
        dropped = delta(stage, "avatarflow_stage_dropped_frames_total", stage=stage)
        shed = delta(stage, "avatarflow_stage_shed_frames_total", stage=stage)
        # Every frame the client got went through every stage, processed or (refiner, under
        # load) shed and passed on; some may also have been dropped on the way, which the
        # gateway's count would not include.
        assert produced + shed >= frames, (stage, produced, shed, frames)
        assert produced + dropped <= frames + 2, (stage, produced, dropped, frames)
        assert delta(stage, "avatarflow_stage_frame_seconds_count", stage=stage) == produced
        # Frames flushed at the end of the audio carry no deadline, hence no latency; frames
        # the refiner sheds leave it too, unprocessed.
        timed = delta(stage, "avatarflow_stage_frame_latency_seconds_count", stage=stage)
        assert produced - 2 <= timed <= produced + shed, (stage, timed, produced, shed)
        # The budget is a bucket boundary, so "within 33.3 ms" is read off the histogram.
        _value(after[stage], "avatarflow_stage_frame_seconds_bucket", stage=stage,
               le="0.0333")
        _value(after[stage], "avatarflow_stage_late_frames_total", stage=stage)
        _value(after[stage], "avatarflow_stage_stream_lag", stage=stage)
        _value(after[stage], "avatarflow_active_sessions", service=stage)
        assert delta(stage, "avatarflow_stage_queue_seconds_count", stage=stage) > 0
