"""The API contract at the public API of a real local cluster: undecodable bytes, over-long
strings, the avatar id format, one portrait in two output formats, and the open points that
api.proto now settles (half-close, sample_rate 0)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import numpy as np
import pytest

from avatarflow.client.api import AvatarClient
from avatarflow.contracts.v1 import api_pb2, pipeline_pb2

RATE = 16000
SESSION = "/avatarflow.v1.Avatars/Session"
REGISTER = "/avatarflow.v1.Avatars/RegisterAvatar"
GARBAGE = b"\xff\xff\xff\xff\x0f"  # a varint that never ends: not any protobuf
BAD_UTF8_ID = b"\x0a\x04\x0a\x02\xff\xfe"  # SessionRequest{config{avatar_id: b"\xff\xfe"}}


def _run(target: str, fn: Callable[[grpc.aio.Channel], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with grpc.aio.insecure_channel(target) as channel:
            return await asyncio.wait_for(fn(channel), 60)

    return asyncio.run(main())


def _cfg(**kw: Any) -> bytes:
    kw.setdefault("sample_rate", RATE)
    return api_pb2.SessionRequest(config=api_pb2.SessionConfig(**kw)).SerializeToString()


def _audio(seconds: float) -> bytes:
    pcm = (np.sin(np.arange(int(seconds * RATE)) / 8) * 8000).astype("<i2").tobytes()
    return api_pb2.SessionRequest(audio=api_pb2.AudioData(pcm16=pcm)).SerializeToString()


async def _session(channel: grpc.aio.Channel, *raw: bytes, half_close: bool = True
                   ) -> tuple[list[api_pb2.SessionResponse], grpc.aio.AioRpcError | None]:
    """Sends ``raw`` (serialised or not) on a new session; every response, and the error."""
    call = channel.stream_stream(
        SESSION, response_deserializer=api_pb2.SessionResponse.FromString)()
    for r in raw:
        await call.write(r)
    if half_close:
        await call.done_writing()
    out = []
    try:
        while (response := await call.read()) is not grpc.aio.EOF:
            out.append(response)
    except grpc.aio.AioRpcError as exc:
        return out, exc
    return out, None


def _error(target: str, *raw: bytes, half_close: bool = True) -> grpc.aio.AioRpcError:
    _, err = _run(target, lambda ch: _session(ch, *raw, half_close=half_close))
    assert err is not None, "the session should have failed"
    return err


def _log_since(cluster, start: int) -> str:
    return cluster.log_path("gateway").read_text(errors="replace")[start:]


@pytest.fixture
def log_start(cluster) -> int:
    return len(cluster.log_path("gateway").read_text(errors="replace"))


@pytest.mark.parametrize("first", [GARBAGE, BAD_UTF8_ID], ids=["garbage", "bad-utf8-id"])
def test_an_undecodable_first_message_is_invalid_argument(cluster, log_start: int,
                                                          first: bytes) -> None:
    err = _error(cluster.gateway_target, first)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "could not be decoded as avatarflow.v1.SessionRequest" in err.details()
    assert "Traceback" not in _log_since(cluster, log_start)


def test_garbage_after_a_valid_config_ends_the_call(cluster, avatar_id: str,
                                                    log_start: int) -> None:
    # No half-close: the garbage alone must end the call.
    responses, err = _run(cluster.gateway_target, lambda ch: _session(
        ch, _cfg(avatar_id=avatar_id), _audio(0.2), GARBAGE, half_close=False))
    assert responses and responses[0].WhichOneof("kind") == "started"
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "could not be decoded" in err.details()
    assert "Traceback" not in _log_since(cluster, log_start)


def test_an_undecodable_register_request_is_invalid_argument(cluster, log_start: int) -> None:
    async def register(channel: grpc.aio.Channel) -> grpc.aio.AioRpcError:
        call = channel.unary_unary(
            REGISTER, response_deserializer=api_pb2.RegisterAvatarResponse.FromString)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(GARBAGE)
        return info.value

    err = _run(cluster.gateway_target, register)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "could not be decoded as avatarflow.v1.RegisterAvatarRequest" in err.details()
    assert "Traceback" not in _log_since(cluster, log_start)


@pytest.mark.parametrize("field,code", [
    ("avatar_id", grpc.StatusCode.INVALID_ARGUMENT),
    ("emotion", grpc.StatusCode.OUT_OF_RANGE),
    ("mode", grpc.StatusCode.INVALID_ARGUMENT),
])
def test_a_10kb_string_gets_the_documented_code_with_a_short_message(
        cluster, avatar_id: str, field: str, code: grpc.StatusCode) -> None:
    long = "x" * 10_000
    kw: dict[str, Any] = {"avatar_id": avatar_id}
    if field == "avatar_id":
        kw["avatar_id"] = long
    elif field == "emotion":
        kw["controls"] = pipeline_pb2.Controls(expression_intensity=1, pose_amplitude=1,
                                               emotion=long)
    else:
        kw["output"] = api_pb2.OutputFormat(mode=long)
    err = _error(cluster.gateway_target, _cfg(**kw))
    assert err.code() == code
    assert "xxxx" in err.details() and len(err.details()) < 400


@pytest.mark.parametrize("bad", ["av-nope", "av-" + "A" * 32, "av-" + "0" * 31, "../etc"])
def test_a_malformed_avatar_id_is_invalid_argument_naming_the_format(cluster, bad: str) -> None:
    err = _error(cluster.gateway_target, _cfg(avatar_id=bad))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed avatar id" in err.details() and '"av-" and 32' in err.details()


def test_a_well_formed_unknown_avatar_id_is_not_found(cluster) -> None:
    err = _error(cluster.gateway_target, _cfg(avatar_id="av-" + "0" * 32))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "RegisterAvatar" in err.details()


def test_sample_rate_zero_is_invalid_argument(cluster, avatar_id: str) -> None:
    err = _error(cluster.gateway_target, _cfg(avatar_id=avatar_id, sample_rate=0))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "sample rate 0" in err.details()


def test_a_half_close_without_end_audio_ends_the_session_normally(cluster,
                                                                  avatar_id: str) -> None:
    responses, err = _run(cluster.gateway_target, lambda ch: _session(
        ch, _cfg(avatar_id=avatar_id), _audio(0.5)))
    assert err is None
    kinds = [r.WhichOneof("kind") for r in responses]
    assert kinds[0] == "started" and kinds[-1] == "ended" and kinds.count("frame") >= 12


def test_one_portrait_in_two_formats_gives_each_session_its_own_size(cluster, inputs: dict
                                                                     ) -> None:
    image = inputs["portrait"].read_bytes()

    async def main() -> dict[str, tuple[str, set[int]]]:
        async with AvatarClient(cluster.gateway_target) as c:
            body = await c.register(image)
            head = await c.register(image, mode="head")
            assert body.avatar_id == head.avatar_id
            assert (head.output.width, head.output.height) == (512, 512)
            out = {}
            async with grpc.aio.insecure_channel(cluster.gateway_target) as channel:
                for mode in ("head", "upper-body"):
                    responses, err = await _session(channel, _cfg(
                        avatar_id=head.avatar_id, encoding=api_pb2.FRAME_ENCODING_RAW_RGB,
                        output=api_pb2.OutputFormat(mode=mode)), _audio(0.3))
                    assert err is None
                    out[mode] = (responses[0].started.output.mode,
                                 {len(r.frame.data) for r in responses if r.HasField("frame")})
            return out

    got = asyncio.run(main())
    assert got["head"] == ("head", {512 * 512 * 3})
    assert got["upper-body"] == ("upper-body", {512 * 768 * 3})
