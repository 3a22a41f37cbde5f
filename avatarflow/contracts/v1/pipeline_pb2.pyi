from avatarflow.contracts.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TraceContext(_message.Message):
    __slots__ = ("traceparent", "tracestate")
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    TRACESTATE_FIELD_NUMBER: _ClassVar[int]
    traceparent: str
    tracestate: str
    def __init__(self, traceparent: _Optional[str] = ..., tracestate: _Optional[str] = ...) -> None: ...

class Header(_message.Message):
    __slots__ = ("session_id", "index", "pts", "trace", "deadline")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PTS_FIELD_NUMBER: _ClassVar[int]
    TRACE_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    index: int
    pts: float
    trace: TraceContext
    deadline: float
    def __init__(self, session_id: _Optional[str] = ..., index: _Optional[int] = ..., pts: _Optional[float] = ..., trace: _Optional[_Union[TraceContext, _Mapping]] = ..., deadline: _Optional[float] = ...) -> None: ...

class Controls(_message.Message):
    __slots__ = ("expression_intensity", "pose_amplitude", "emotion", "seed")
    EXPRESSION_INTENSITY_FIELD_NUMBER: _ClassVar[int]
    POSE_AMPLITUDE_FIELD_NUMBER: _ClassVar[int]
    EMOTION_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    expression_intensity: float
    pose_amplitude: float
    emotion: str
    seed: int
    def __init__(self, expression_intensity: _Optional[float] = ..., pose_amplitude: _Optional[float] = ..., emotion: _Optional[str] = ..., seed: _Optional[int] = ...) -> None: ...

class StyleReference(_message.Message):
    __slots__ = ("expressions", "fps")
    EXPRESSIONS_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    expressions: _tensor_pb2.Tensor
    fps: float
    def __init__(self, expressions: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., fps: _Optional[float] = ...) -> None: ...

class SessionStart(_message.Message):
    __slots__ = ("header", "avatar_id", "image", "sample_rate", "mode", "width", "height", "fps", "controls", "style")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    AVATAR_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    CONTROLS_FIELD_NUMBER: _ClassVar[int]
    STYLE_FIELD_NUMBER: _ClassVar[int]
    header: Header
    avatar_id: str
    image: bytes
    sample_rate: int
    mode: str
    width: int
    height: int
    fps: float
    controls: Controls
    style: StyleReference
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ..., avatar_id: _Optional[str] = ..., image: _Optional[bytes] = ..., sample_rate: _Optional[int] = ..., mode: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., fps: _Optional[float] = ..., controls: _Optional[_Union[Controls, _Mapping]] = ..., style: _Optional[_Union[StyleReference, _Mapping]] = ...) -> None: ...

class ControlUpdate(_message.Message):
    __slots__ = ("header", "controls")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CONTROLS_FIELD_NUMBER: _ClassVar[int]
    header: Header
    controls: Controls
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ..., controls: _Optional[_Union[Controls, _Mapping]] = ...) -> None: ...

class Interrupt(_message.Message):
    __slots__ = ("header",)
    HEADER_FIELD_NUMBER: _ClassVar[int]
    header: Header
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ...) -> None: ...

class EndOfAudio(_message.Message):
    __slots__ = ("header",)
    HEADER_FIELD_NUMBER: _ClassVar[int]
    header: Header
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ...) -> None: ...

class AudioChunk(_message.Message):
    __slots__ = ("header", "sample_rate", "pcm")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    PCM_FIELD_NUMBER: _ClassVar[int]
    header: Header
    sample_rate: int
    pcm: _tensor_pb2.Tensor
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ..., sample_rate: _Optional[int] = ..., pcm: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...

class AudioFeatures(_message.Message):
    __slots__ = ("header", "features", "layout")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    header: Header
    features: _tensor_pb2.Tensor
    layout: str
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ..., features: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., layout: _Optional[str] = ...) -> None: ...

class MotionFrame(_message.Message):
    __slots__ = ("header", "rotation", "translation", "scale", "expression", "head_template", "head_offset", "body", "hands", "liveportrait")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ROTATION_FIELD_NUMBER: _ClassVar[int]
    TRANSLATION_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    EXPRESSION_FIELD_NUMBER: _ClassVar[int]
    HEAD_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    HEAD_OFFSET_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    HANDS_FIELD_NUMBER: _ClassVar[int]
    LIVEPORTRAIT_FIELD_NUMBER: _ClassVar[int]
    header: Header
    rotation: _tensor_pb2.Tensor
    translation: _tensor_pb2.Tensor
    scale: float
    expression: _tensor_pb2.Tensor
    head_template: _tensor_pb2.Tensor
    head_offset: _tensor_pb2.Tensor
    body: _tensor_pb2.Tensor
    hands: _tensor_pb2.Tensor
    liveportrait: LivePortraitMotion
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ..., rotation: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., translation: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., scale: _Optional[float] = ..., expression: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., head_template: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., head_offset: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., body: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., hands: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., liveportrait: _Optional[_Union[LivePortraitMotion, _Mapping]] = ...) -> None: ...

class LivePortraitMotion(_message.Message):
    __slots__ = ("exp", "scale", "t", "pitch", "yaw", "roll")
    EXP_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    T_FIELD_NUMBER: _ClassVar[int]
    PITCH_FIELD_NUMBER: _ClassVar[int]
    YAW_FIELD_NUMBER: _ClassVar[int]
    ROLL_FIELD_NUMBER: _ClassVar[int]
    exp: _tensor_pb2.Tensor
    scale: float
    t: _tensor_pb2.Tensor
    pitch: float
    yaw: float
    roll: float
    def __init__(self, exp: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., scale: _Optional[float] = ..., t: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., pitch: _Optional[float] = ..., yaw: _Optional[float] = ..., roll: _Optional[float] = ...) -> None: ...

class Picture(_message.Message):
    __slots__ = ("rgb", "jpeg", "width", "height")
    RGB_FIELD_NUMBER: _ClassVar[int]
    JPEG_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    rgb: _tensor_pb2.Tensor
    jpeg: bytes
    width: int
    height: int
    def __init__(self, rgb: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., jpeg: _Optional[bytes] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class RenderedFrame(_message.Message):
    __slots__ = ("header", "image", "motion")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MOTION_FIELD_NUMBER: _ClassVar[int]
    header: Header
    image: Picture
    motion: MotionFrame
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ..., image: _Optional[_Union[Picture, _Mapping]] = ..., motion: _Optional[_Union[MotionFrame, _Mapping]] = ...) -> None: ...

class FinalFrame(_message.Message):
    __slots__ = ("header", "image", "refined")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    REFINED_FIELD_NUMBER: _ClassVar[int]
    header: Header
    image: Picture
    refined: bool
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ..., image: _Optional[_Union[Picture, _Mapping]] = ..., refined: bool = ...) -> None: ...

class Envelope(_message.Message):
    __slots__ = ("session_start", "control_update", "interrupt", "end_of_audio", "audio_chunk", "audio_features", "motion_frame", "rendered_frame", "final_frame", "session_error")
    SESSION_START_FIELD_NUMBER: _ClassVar[int]
    CONTROL_UPDATE_FIELD_NUMBER: _ClassVar[int]
    INTERRUPT_FIELD_NUMBER: _ClassVar[int]
    END_OF_AUDIO_FIELD_NUMBER: _ClassVar[int]
    AUDIO_CHUNK_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FEATURES_FIELD_NUMBER: _ClassVar[int]
    MOTION_FRAME_FIELD_NUMBER: _ClassVar[int]
    RENDERED_FRAME_FIELD_NUMBER: _ClassVar[int]
    FINAL_FRAME_FIELD_NUMBER: _ClassVar[int]
    SESSION_ERROR_FIELD_NUMBER: _ClassVar[int]
    session_start: SessionStart
    control_update: ControlUpdate
    interrupt: Interrupt
    end_of_audio: EndOfAudio
    audio_chunk: AudioChunk
    audio_features: AudioFeatures
    motion_frame: MotionFrame
    rendered_frame: RenderedFrame
    final_frame: FinalFrame
    session_error: SessionError
    def __init__(self, session_start: _Optional[_Union[SessionStart, _Mapping]] = ..., control_update: _Optional[_Union[ControlUpdate, _Mapping]] = ..., interrupt: _Optional[_Union[Interrupt, _Mapping]] = ..., end_of_audio: _Optional[_Union[EndOfAudio, _Mapping]] = ..., audio_chunk: _Optional[_Union[AudioChunk, _Mapping]] = ..., audio_features: _Optional[_Union[AudioFeatures, _Mapping]] = ..., motion_frame: _Optional[_Union[MotionFrame, _Mapping]] = ..., rendered_frame: _Optional[_Union[RenderedFrame, _Mapping]] = ..., final_frame: _Optional[_Union[FinalFrame, _Mapping]] = ..., session_error: _Optional[_Union[SessionError, _Mapping]] = ...) -> None: ...

class SessionError(_message.Message):
    __slots__ = ("header", "stage", "category", "message")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    header: Header
    stage: str
    category: str
    message: str
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ..., stage: _Optional[str] = ..., category: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...
