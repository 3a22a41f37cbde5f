"""What a session asks for (``SessionSpec``) and how live the front runs it (``FrontSettings``)."""

from __future__ import annotations

from dataclasses import dataclass

from avatarflow.contracts import messages as m
from avatarflow.contracts import style as styles
from avatarflow.contracts.controls import Controls
from avatarflow.contracts.v1 import api_pb2
from avatarflow.runtime import profiles, registry
from avatarflow.runtime.settings import Settings


@dataclass(frozen=True)
class SessionSpec:
    """A validated session configuration: the portrait (an avatar id or an inline image), the
    audio rate, the output format, the controls and the client's frame encoding."""

    sample_rate: int
    mode: str
    width: int
    height: int
    fps: float
    encoding: api_pb2.FrameEncoding  # what the client wants; the front passes pictures on
    controls: Controls
    avatar_id: str
    image: bytes
    style: styles.StyleReference | None = None
    tenant: str = ""  # who opened it (the gateway's API key's tenant; "" without keys)

    def output(self) -> api_pb2.OutputFormat:
        return api_pb2.OutputFormat(mode=self.mode, width=self.width, height=self.height,
                                    fps=self.fps)

    def start(self, session_id: str, avatar_id: str) -> m.SessionStart:
        return m.SessionStart(session_id=session_id, avatar_id=avatar_id,
                              sample_rate=self.sample_rate, mode=self.mode, width=self.width,
                              height=self.height, fps=self.fps, controls=self.controls,
                              style=self.style)


@dataclass(frozen=True)
class FrontSettings:
    """The live behaviour of the sessions of one front. None switches a feature off: a file
    read as fast as the pipeline takes it has no deadlines, never stalls and wants no
    periodic summaries. The limits on a client (slow reading, silence) are off unless set:
    the gateway sets them for its remote clients (``live``); an in-process caller reads its
    own frames."""

    budget_s: float | None = 0.5  # a frame is late this long after its audio is due
    stall_s: float | None = 0.15  # audio this far behind the clock is filled with silence
    summary_s: float | None = 2.0  # period of the latency summaries
    # Frames waiting for the client: at most this many and this many bytes (the oldest go);
    # one more than max_lag_s past due while a frame that much newer waits is dropped.
    out_frames: int | None = None
    out_bytes: int | None = None
    max_lag_s: float | None = None
    evict_s: float | None = None  # a client that takes no frame this long is ended
    idle_s: float | None = None  # a session whose client sends nothing this long is ended
    # When audio goes on the bus (``packing``): held until it lets the audio encoder make a
    # new frame, by the look-ahead of the encoder's engine ("mel", "pcm", ...), a number of
    # milliseconds, or "off" (each chunk as it comes).
    audio_lead: str = "mel"

    @classmethod
    def live(cls, settings: Settings) -> FrontSettings:
        """From a service's settings (``frame_budget_ms``, ``stall_ms``, ``summary_s``,
        ``out_frames``, ``out_mb``, ``max_lag_ms``, ``evict_s``, ``idle_s``: 0 = never)."""
        return cls(budget_s=settings.frame_budget_ms / 1000, stall_s=settings.stall_ms / 1000,
                   summary_s=settings.summary_s, out_frames=settings.out_frames,
                   out_bytes=int(settings.out_mb * 2**20),
                   max_lag_s=settings.max_lag_ms / 1000, evict_s=settings.evict_s,
                   idle_s=settings.idle_s or None, audio_lead=_audio_lead(settings))

    @classmethod
    def offline(cls) -> FrontSettings:
        """A whole file as fast as it goes: every frame made and kept, none filled in, the
        reader never hurried."""
        return cls(budget_s=None, stall_s=None, summary_s=None)


def _audio_lead(settings: Settings) -> str:
    """``audio_lead``; "auto": the engine of the audio encoder that the deployment's profile
    names, else the default engine's."""
    if settings.audio_lead != "auto":
        return settings.audio_lead
    stage = "audio-encoder"
    choice = profiles.profile(settings.profile).stages.get(stage) if settings.profile else None
    return choice.engine if choice is not None else registry.DEFAULT_ENGINES[stage]
