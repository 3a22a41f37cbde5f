from avatarflow.contracts.v1 import pipeline_pb2 as _pipeline_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FrameEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FRAME_ENCODING_UNSPECIFIED: _ClassVar[FrameEncoding]
    FRAME_ENCODING_JPEG: _ClassVar[FrameEncoding]
    FRAME_ENCODING_RAW_RGB: _ClassVar[FrameEncoding]
FRAME_ENCODING_UNSPECIFIED: FrameEncoding
FRAME_ENCODING_JPEG: FrameEncoding
FRAME_ENCODING_RAW_RGB: FrameEncoding

class OutputFormat(_message.Message):
    __slots__ = ("mode", "width", "height", "fps")
    MODE_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    mode: str
    width: int
    height: int
    fps: float
    def __init__(self, mode: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., fps: _Optional[float] = ...) -> None: ...

class RegisterAvatarRequest(_message.Message):
    __slots__ = ("image", "output")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    output: OutputFormat
    def __init__(self, image: _Optional[bytes] = ..., output: _Optional[_Union[OutputFormat, _Mapping]] = ...) -> None: ...

class RegisterAvatarResponse(_message.Message):
    __slots__ = ("avatar_id", "output", "ttl_s")
    AVATAR_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    avatar_id: str
    output: OutputFormat
    ttl_s: int
    def __init__(self, avatar_id: _Optional[str] = ..., output: _Optional[_Union[OutputFormat, _Mapping]] = ..., ttl_s: _Optional[int] = ...) -> None: ...

class SessionConfig(_message.Message):
    __slots__ = ("avatar_id", "image", "sample_rate", "output", "encoding", "controls", "style")
    AVATAR_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    CONTROLS_FIELD_NUMBER: _ClassVar[int]
    STYLE_FIELD_NUMBER: _ClassVar[int]
    avatar_id: str
    image: bytes
    sample_rate: int
    output: OutputFormat
    encoding: FrameEncoding
    controls: _pipeline_pb2.Controls
    style: _pipeline_pb2.StyleReference
    def __init__(self, avatar_id: _Optional[str] = ..., image: _Optional[bytes] = ..., sample_rate: _Optional[int] = ..., output: _Optional[_Union[OutputFormat, _Mapping]] = ..., encoding: _Optional[_Union[FrameEncoding, str]] = ..., controls: _Optional[_Union[_pipeline_pb2.Controls, _Mapping]] = ..., style: _Optional[_Union[_pipeline_pb2.StyleReference, _Mapping]] = ...) -> None: ...

class AudioData(_message.Message):
    __slots__ = ("pcm16",)
    PCM16_FIELD_NUMBER: _ClassVar[int]
    pcm16: bytes
    def __init__(self, pcm16: _Optional[bytes] = ...) -> None: ...

class ControlChange(_message.Message):
    __slots__ = ("controls",)
    CONTROLS_FIELD_NUMBER: _ClassVar[int]
    controls: _pipeline_pb2.Controls
    def __init__(self, controls: _Optional[_Union[_pipeline_pb2.Controls, _Mapping]] = ...) -> None: ...

class InterruptRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EndAudio(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SessionRequest(_message.Message):
    __slots__ = ("config", "audio", "controls", "interrupt", "end")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    CONTROLS_FIELD_NUMBER: _ClassVar[int]
    INTERRUPT_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    config: SessionConfig
    audio: AudioData
    controls: ControlChange
    interrupt: InterruptRequest
    end: EndAudio
    def __init__(self, config: _Optional[_Union[SessionConfig, _Mapping]] = ..., audio: _Optional[_Union[AudioData, _Mapping]] = ..., controls: _Optional[_Union[ControlChange, _Mapping]] = ..., interrupt: _Optional[_Union[InterruptRequest, _Mapping]] = ..., end: _Optional[_Union[EndAudio, _Mapping]] = ...) -> None: ...

class SessionStarted(_message.Message):
    __slots__ = ("session_id", "avatar_id", "output", "encoding", "sample_rate")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    AVATAR_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    avatar_id: str
    output: OutputFormat
    encoding: FrameEncoding
    sample_rate: int
    def __init__(self, session_id: _Optional[str] = ..., avatar_id: _Optional[str] = ..., output: _Optional[_Union[OutputFormat, _Mapping]] = ..., encoding: _Optional[_Union[FrameEncoding, str]] = ..., sample_rate: _Optional[int] = ...) -> None: ...

class VideoFrame(_message.Message):
    __slots__ = ("index", "pts", "data", "audio", "refined")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PTS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    REFINED_FIELD_NUMBER: _ClassVar[int]
    index: int
    pts: float
    data: bytes
    audio: bytes
    refined: bool
    def __init__(self, index: _Optional[int] = ..., pts: _Optional[float] = ..., data: _Optional[bytes] = ..., audio: _Optional[bytes] = ..., refined: bool = ...) -> None: ...

class LatencySummary(_message.Message):
    __slots__ = ("frames", "dropped", "p50_ms", "p99_ms", "fps", "stale")
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    frames: int
    dropped: int
    p50_ms: float
    p99_ms: float
    fps: float
    stale: int
    def __init__(self, frames: _Optional[int] = ..., dropped: _Optional[int] = ..., p50_ms: _Optional[float] = ..., p99_ms: _Optional[float] = ..., fps: _Optional[float] = ..., stale: _Optional[int] = ...) -> None: ...

class AudioGap(_message.Message):
    __slots__ = ("pts", "duration")
    PTS_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    pts: float
    duration: float
    def __init__(self, pts: _Optional[float] = ..., duration: _Optional[float] = ...) -> None: ...

class SessionEvent(_message.Message):
    __slots__ = ("warning", "latency", "gap")
    WARNING_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    GAP_FIELD_NUMBER: _ClassVar[int]
    warning: str
    latency: LatencySummary
    gap: AudioGap
    def __init__(self, warning: _Optional[str] = ..., latency: _Optional[_Union[LatencySummary, _Mapping]] = ..., gap: _Optional[_Union[AudioGap, _Mapping]] = ...) -> None: ...

class SessionEnded(_message.Message):
    __slots__ = ("frames", "dropped", "duration_s", "latency")
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    frames: int
    dropped: int
    duration_s: float
    latency: LatencySummary
    def __init__(self, frames: _Optional[int] = ..., dropped: _Optional[int] = ..., duration_s: _Optional[float] = ..., latency: _Optional[_Union[LatencySummary, _Mapping]] = ...) -> None: ...

class SessionResponse(_message.Message):
    __slots__ = ("started", "frame", "event", "ended")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    ENDED_FIELD_NUMBER: _ClassVar[int]
    started: SessionStarted
    frame: VideoFrame
    event: SessionEvent
    ended: SessionEnded
    def __init__(self, started: _Optional[_Union[SessionStarted, _Mapping]] = ..., frame: _Optional[_Union[VideoFrame, _Mapping]] = ..., event: _Optional[_Union[SessionEvent, _Mapping]] = ..., ended: _Optional[_Union[SessionEnded, _Mapping]] = ...) -> None: ...
