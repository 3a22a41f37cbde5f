from avatarflow.contracts.v1 import api_pb2 as _api_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HopStats(_message.Message):
    __slots__ = ("topic", "messages", "bytes_per_frame", "p50_ms", "p99_ms")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    BYTES_PER_FRAME_FIELD_NUMBER: _ClassVar[int]
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    topic: str
    messages: int
    bytes_per_frame: float
    p50_ms: float
    p99_ms: float
    def __init__(self, topic: _Optional[str] = ..., messages: _Optional[int] = ..., bytes_per_frame: _Optional[float] = ..., p50_ms: _Optional[float] = ..., p99_ms: _Optional[float] = ...) -> None: ...

class StageStatus(_message.Message):
    __slots__ = ("service", "consumer", "sessions", "frames", "dropped", "degraded", "recovered", "input", "process_p50_ms", "process_p99_ms")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    RECOVERED_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    PROCESS_P50_MS_FIELD_NUMBER: _ClassVar[int]
    PROCESS_P99_MS_FIELD_NUMBER: _ClassVar[int]
    service: str
    consumer: str
    sessions: int
    frames: int
    dropped: int
    degraded: int
    recovered: int
    input: HopStats
    process_p50_ms: float
    process_p99_ms: float
    def __init__(self, service: _Optional[str] = ..., consumer: _Optional[str] = ..., sessions: _Optional[int] = ..., frames: _Optional[int] = ..., dropped: _Optional[int] = ..., degraded: _Optional[int] = ..., recovered: _Optional[int] = ..., input: _Optional[_Union[HopStats, _Mapping]] = ..., process_p50_ms: _Optional[float] = ..., process_p99_ms: _Optional[float] = ...) -> None: ...

class PrepareRequest(_message.Message):
    __slots__ = ("avatar_id", "output")
    AVATAR_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    avatar_id: str
    output: _api_pb2.OutputFormat
    def __init__(self, avatar_id: _Optional[str] = ..., output: _Optional[_Union[_api_pb2.OutputFormat, _Mapping]] = ...) -> None: ...

class PrepareResponse(_message.Message):
    __slots__ = ("avatar_id", "output")
    AVATAR_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    avatar_id: str
    output: _api_pb2.OutputFormat
    def __init__(self, avatar_id: _Optional[str] = ..., output: _Optional[_Union[_api_pb2.OutputFormat, _Mapping]] = ...) -> None: ...
