"""Every avatarflow service, declared once: the gateway and the pipeline stages in order.

The settings (service names, default ports), the local cluster, ``avatarflow serve``, tracing's
span names, stage construction (embedded and distributed), the container image
(deploy/docker/Dockerfile) and the Helm chart's tests all read this module: a new stage is one
entry here, its package under ``services/<name>/``, its pyproject entries and its chart
component. Standard library only, so a bare interpreter can read it (the image build does).
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass

from avatarflow.contracts.errors import InvalidInput

# Topics between the stages, in pipeline order.
AUDIO, FEATURES, MOTION, RENDERED, FRAMES = "audio", "features", "motion", "rendered", "frames"

# What OpenCV's GUI-enabled wheel (opencv-contrib-python) loads at import time.
OPENCV_LIBS = ("libgl1", "libglib2.0-0")


@dataclass(frozen=True)
class ServiceSpec:
    """One process of the distributed deployment, as ``avatarflow serve <name>`` runs it."""

    name: str  # as in services/<name>/, the chart's component and AVATARFLOW_<NAME>_*
    package: str  # its python package
    _: KW_ONLY
    port: int = 0  # default gRPC port; /metrics defaults to port + 1000
    extra: str = ""  # the pip extra its image installs (pyproject optional-dependencies)
    span: str = ""  # OpenTelemetry span name of its work on one message
    # The module whose ``async serve(settings)`` runs it: a stage needs its own only to add
    # gRPC servicers (the renderer's Portraits).
    server: str = "avatarflow.runtime.stage_service"
    replicas: int = 1  # the Helm chart's default replica count
    system_packages: tuple[str, ...] = ()  # Debian packages its image needs at run time

    @property
    def metrics_port(self) -> int:
        return self.port + 1000


@dataclass(frozen=True)
class StageSpec(ServiceSpec):
    """A pipeline stage: consumes ``input``, produces ``output``; ``package`` provides
    ``build_stage(engine, **options)``."""

    input: str
    output: str
    _: KW_ONLY
    engine: str = ""  # default engine (a name in the package's engines table)
    offload: bool = False  # the runner hands frames to a worker thread (milliseconds per frame)
    avatars: bool = False  # takes the avatar store (portrait analyses, shared across stages)

    @property
    def group(self) -> str:
        """The Redis consumer group of its replicas (also what KEDA watches)."""
        return f"{self.name}-workers"


GATEWAY = ServiceSpec("gateway", "avatarflow_gateway", port=50051, extra="gateway",
                      span="audio chunk", server="avatarflow_gateway.server", replicas=2,
                      system_packages=OPENCV_LIBS)

# Frames that take milliseconds are offloaded so heartbeats and health checks stay prompt; the
# sub-millisecond stages run on the event loop (a thread hand-off would cost more).
PIPELINE: tuple[StageSpec, ...] = (
    StageSpec("audio-encoder", "avatarflow_audio_encoder", AUDIO, FEATURES, engine="mel",
              port=50061, extra="audio", span="features"),
    StageSpec("motion-gen", "avatarflow_motion_gen", FEATURES, MOTION, engine="signal",
              port=50062, extra="motion", span="motion"),
    StageSpec("renderer", "avatarflow_renderer", MOTION, RENDERED, engine="warp",
              port=50063, extra="render", span="render", offload=True, avatars=True,
              server="avatarflow_renderer.server", system_packages=OPENCV_LIBS),
    StageSpec("refiner", "avatarflow_refiner", RENDERED, FRAMES, engine="blend",
              port=50064, extra="refine", span="refine", offload=True, avatars=True,
              system_packages=OPENCV_LIBS),
)

SERVICES: tuple[ServiceSpec, ...] = (GATEWAY, *PIPELINE)
NAMES: tuple[str, ...] = tuple(s.name for s in SERVICES)
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in PIPELINE)
DEFAULT_ENGINES: dict[str, str] = {s.name: s.engine for s in PIPELINE}


def service(name: str) -> ServiceSpec:
    """The service called ``name``; InvalidInput names the known ones otherwise."""
    for spec in SERVICES:
        if spec.name == name:
            return spec
    raise InvalidInput(f"unknown service {name!r}; services: {', '.join(NAMES)}")


def stage(name: str) -> StageSpec:
    """The pipeline stage called ``name``; InvalidInput names the stages otherwise."""
    for spec in PIPELINE:
        if spec.name == name:
            return spec
    raise InvalidInput(f"unknown stage {name!r}; stages: {', '.join(STAGE_NAMES)}")
