"""Prometheus metrics, served on a port of their own (``/metrics``).

Names follow ``avatarflow_<stage>_<thing>_<unit>``; the stage is a label, never the session
(label cardinality stays bounded however many sessions run). Latency histograms have buckets
packed around the 33.3 ms frame budget of 30 fps.

What "late" means:
- a stage's frame is late when that stage alone spent longer on it than one frame interval
  (33.3 ms): a stage that slow cannot keep a 30 fps session fed from one replica;
- a frame at the gateway is late when it is sent after its deadline (the audio's arrival plus
  the frame budget, ``frame_budget_ms``).

The per-frame stage metrics (``StageMeter``) are recorded only while someone can read them:
``serve`` (a service with a metrics port) or ``record(True)`` (a program serving the default
registry itself) turns them on. Off, each costs one flag check: the embedded pipeline and a
service started with ``metrics_port=-1`` pay nothing for them.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server

FRAME_BUDGET_S = 1 / 30
LATENCY_BUCKETS = (0.005, 0.010, 0.015, 0.020, 0.025, 0.030, 0.0333, 0.040, 0.050, 0.075,
                   0.100, 0.150, 0.250, 0.500, 1.0, 2.5)
E2E_BUCKETS = (0.025, 0.0333, 0.050, 0.075, 0.100, 0.150, 0.200, 0.250, 0.300, 0.400, 0.500,
               0.750, 1.0, 2.0, 5.0)

STAGE_FRAMES = Counter("avatarflow_stage_frames", "Frames a stage produced.", ["stage"])
STAGE_LATE = Counter("avatarflow_stage_late_frames",
                     "Frames on which a stage spent more than one frame interval (33.3 ms).",
                     ["stage"])
STAGE_DROPPED = Counter("avatarflow_stage_dropped_frames",
                        "Frames a stage dropped: past their deadline, or shed and not passed on.",
                        ["stage"])
STAGE_SHED = Counter("avatarflow_stage_shed_frames",
                     "Frames a stage shed under load (skipped, or passed on unprocessed) because "
                     "it was behind on them and a newer frame of the session was waiting.",
                     ["stage"])
STAGE_PROCESS = Histogram("avatarflow_stage_frame_seconds",
                          "Time a stage spent on one frame.", ["stage"],
                          buckets=LATENCY_BUCKETS)
STAGE_LATENCY = Histogram("avatarflow_stage_frame_latency_seconds",
                          "Audio arrival -> frame leaving this stage.", ["stage"],
                          buckets=E2E_BUCKETS)
STAGE_QUEUE = Histogram("avatarflow_stage_queue_seconds",
                        "Publish upstream -> received by this stage (bus and queueing).",
                        ["stage"], buckets=LATENCY_BUCKETS)
STAGE_LAG = Gauge("avatarflow_stage_stream_lag",
                  "Messages received by this replica and not yet processed.", ["stage"])
ACTIVE_SESSIONS = Gauge("avatarflow_active_sessions", "Sessions this process is serving.",
                        ["service"])
GATEWAY_LATENCY = Histogram("avatarflow_gateway_frame_latency_seconds",
                            "End to end: audio arrival -> frame sent to the client.",
                            buckets=E2E_BUCKETS)
GATEWAY_FRAMES = Counter("avatarflow_gateway_frames_sent", "Frames sent to clients.")
GATEWAY_LATE = Counter("avatarflow_gateway_late_frames",
                       "Frames sent after their deadline.")
GATEWAY_DROPPED = Counter("avatarflow_gateway_dropped_frames",
                          "Frame indexes that never reached the client (dropped on the way).")
GATEWAY_STALE = Counter("avatarflow_gateway_stale_frames",
                        "Frames dropped at the gateway: their client was too far behind "
                        "(lag) or not reading (outbound buffer full).")
GATEWAY_ENDED = Counter("avatarflow_gateway_sessions_ended_by_limit",
                        "Sessions the gateway ended: 'slow' (the client read no frame for "
                        "evict_s) or 'idle' (no audio from the client for idle_s).", ["reason"])
GATEWAY_FPS = Gauge("avatarflow_gateway_fps",
                    "Mean achieved frame rate of the active sessions over the last period.")
TRITON_REQUEST = Histogram("avatarflow_triton_request_seconds",
                           "Round trip of one batched request to Triton.", ["model"],
                           buckets=LATENCY_BUCKETS)
# Triton's own queue and compute times per model come from its metrics port (8002):
# nv_inference_queue_duration_us and nv_inference_compute_infer_duration_us.


_recording = False  # whether StageMeter records (see the module doc)


def record(on: bool) -> None:
    """Turns the per-frame stage metrics on or off for this process."""
    global _recording
    _recording = on


def recording() -> bool:
    return _recording


class StageMeter:
    """The metrics of one stage, labels bound once; every method is a no-op while the
    process is not recording."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.frames = STAGE_FRAMES.labels(stage)
        self.late = STAGE_LATE.labels(stage)
        self.dropped = STAGE_DROPPED.labels(stage)
        self.shed = STAGE_SHED.labels(stage)
        self.process = STAGE_PROCESS.labels(stage)
        self.latency = STAGE_LATENCY.labels(stage)
        self.queue = STAGE_QUEUE.labels(stage)
        self.lag = STAGE_LAG.labels(stage)

    def processed(self, seconds_per_frame: float, frames: int) -> None:
        """``frames`` frames came out of work that took ``seconds_per_frame`` each."""
        if not _recording:
            return
        self.frames.inc(frames)
        for _ in range(frames):
            self.process.observe(seconds_per_frame)
        if seconds_per_frame > FRAME_BUDGET_S:
            self.late.inc(frames)

    def received(self, queue_s: float) -> None:
        """A message arrived ``queue_s`` after it was published upstream."""
        if _recording:
            self.queue.observe(queue_s)

    def left(self, latency_s: float) -> None:
        """A frame leaves the stage ``latency_s`` after its audio arrived."""
        if _recording:
            self.latency.observe(latency_s)

    def waiting(self, count: Callable[[], int]) -> None:
        """The stream lag gauge, set to ``count()`` (not called while off)."""
        if _recording:
            self.lag.set(count())

    def was_shed(self) -> None:
        if _recording:
            self.shed.inc()

    def was_dropped(self) -> None:
        if _recording:
            self.dropped.inc()


def track_sessions(service: str, count: Callable[[], int]) -> None:
    """The active-sessions gauge of ``service`` reads ``count()`` at every scrape."""
    ACTIVE_SESSIONS.labels(service).set_function(count)


def serve(port: int) -> None:
    """Serves ``/metrics`` on ``port`` in a daemon thread (the default registry), and
    records the per-frame stage metrics from now on."""
    start_http_server(port, registry=REGISTRY)
    record(True)
