"""Bad input over the public API: the right status with a message that says what is wrong,
while a session streaming alongside keeps going."""

from __future__ import annotations

import asyncio
import io

import grpc
import numpy as np
import pytest

from avatarflow.client.api import AvatarClient, run_session
from avatarflow.contracts.v1 import api_pb2, pipeline_pb2
from tests.integration.cluster_support import config

RATE = 16000


async def _first_error(c: AvatarClient, *requests: api_pb2.SessionRequest
                       ) -> grpc.aio.AioRpcError:
    """Sends ``requests`` on a new session and returns the status it ends with."""
    call = c.stub.Session()
    for r in requests:
        await call.write(r)
    await call.done_writing()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        while True:
            response = await call.read()
            assert response is not grpc.aio.EOF, "the session should have failed"
    return info.value


def _run(target: str, coro_fn):
    async def main():
        async with AvatarClient(target) as c:
            return await coro_fn(c)

    return asyncio.run(main())


def _cfg(**kw) -> api_pb2.SessionRequest:
    kw.setdefault("sample_rate", RATE)
    return api_pb2.SessionRequest(config=api_pb2.SessionConfig(**kw))


def _audio(seconds: float = 0.02) -> api_pb2.SessionRequest:
    return api_pb2.SessionRequest(audio=api_pb2.AudioData(
        pcm16=np.zeros(int(seconds * RATE), "<i2").tobytes()))


def _faceless_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_audio_before_config(cluster) -> None:
    err = _run(cluster.gateway_target, lambda c: _first_error(c, _audio()))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "first message" in err.details() and "SessionConfig" in err.details()


def test_unsupported_sample_rate(cluster, avatar_id: str) -> None:
    err = _run(cluster.gateway_target,
               lambda c: _first_error(c, _cfg(avatar_id=avatar_id, sample_rate=4000)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "sample rate 4000" in err.details()


def test_unsupported_frame_encoding(cluster, avatar_id: str) -> None:
    err = _run(cluster.gateway_target,
               lambda c: _first_error(c, _cfg(avatar_id=avatar_id, encoding=7)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "frame encoding 7" in err.details()


def test_malformed_image(cluster) -> None:
    async def register(c: AvatarClient):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await c.register(b"\x89PNG\r\n\x1a\n but not really")
        return info.value

    err = _run(cluster.gateway_target, register)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a readable image" in err.details()


def test_image_without_a_face(cluster) -> None:
    err = _run(cluster.gateway_target, lambda c: _first_error(c, _cfg(image=_faceless_png())))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "face" in err.details()


def test_oversized_message(cluster) -> None:
    async def main():
        async with AvatarClient(cluster.gateway_target, max_message_mb=64) as c:
            return await _first_error(c, _cfg(image=b"\xff" * (17 * 1024 * 1024)))

    err = asyncio.run(main())
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in err.details()


def test_unknown_avatar_id(cluster) -> None:
    unknown = "av-" + "0" * 32  # well formed (a malformed id is INVALID_ARGUMENT)
    err = _run(cluster.gateway_target, lambda c: _first_error(c, _cfg(avatar_id=unknown)))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert unknown in err.details() and "RegisterAvatar" in err.details()


def test_controls_out_of_range(cluster, avatar_id: str) -> None:
    bad = pipeline_pb2.Controls(expression_intensity=5.0, pose_amplitude=1.0)
    err = _run(cluster.gateway_target,
               lambda c: _first_error(c, _cfg(avatar_id=avatar_id, controls=bad)))
    assert err.code() == grpc.StatusCode.OUT_OF_RANGE
    assert "expression_intensity" in err.details() and "0..2" in err.details()


def test_controls_out_of_range_mid_stream(cluster, avatar_id: str) -> None:
    bad = api_pb2.SessionRequest(controls=api_pb2.ControlChange(
        controls=pipeline_pb2.Controls(pose_amplitude=-1, expression_intensity=1)))
    err = _run(cluster.gateway_target,
               lambda c: _first_error(c, _cfg(avatar_id=avatar_id), _audio(), bad))
    assert err.code() == grpc.StatusCode.OUT_OF_RANGE
    assert "pose_amplitude" in err.details()


def test_odd_audio_bytes(cluster, avatar_id: str) -> None:
    odd = api_pb2.SessionRequest(audio=api_pb2.AudioData(pcm16=b"\x00\x01\x02"))
    err = _run(cluster.gateway_target,
               lambda c: _first_error(c, _cfg(avatar_id=avatar_id), odd))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "PCM16" in err.details()


def test_other_sessions_keep_going_while_bad_input_arrives(cluster, avatar_id: str,
                                                          inputs: dict) -> None:
    rate = inputs["rate"]
    pcm = inputs["pcm"][:int(4 * rate)]

    async def main(c: AvatarClient):
        async def abuse():
            await asyncio.sleep(0.5)
            for req in (_audio(), _cfg(avatar_id="av-nope"), _cfg(avatar_id=avatar_id,
                                                                   sample_rate=1)):
                await _first_error(c, req)

        rec, _ = await asyncio.gather(
            run_session(c, config(avatar_id, rate), pcm, rate, keep_data=False), abuse())
        return rec

    rec = _run(cluster.gateway_target, main)
    assert rec.ended is not None and rec.indexes_strictly_increase
    assert len(rec.frames) >= 4 * 30 - 3


@pytest.mark.parametrize("rows,cols,fps,code,words", [
    (30, 6, 25.0, grpc.StatusCode.INVALID_ARGUMENT, "need T x 8"),
    (4, 8, 25.0, grpc.StatusCode.OUT_OF_RANGE, "8..1800 frames, got 4"),
    (30, 8, 500.0, grpc.StatusCode.OUT_OF_RANGE, "fps must be within"),
])
def test_bad_style_reference(cluster, avatar_id: str, rows: int, cols: int, fps: float,
                             code: grpc.StatusCode, words: str) -> None:
    from avatarflow.contracts import tensor

    style = pipeline_pb2.StyleReference(
        expressions=tensor.encode(np.zeros((rows, cols), np.float32)), fps=fps)
    err = _run(cluster.gateway_target,
               lambda c: _first_error(c, _cfg(avatar_id=avatar_id, style=style)))
    assert err.code() == code
    assert words in err.details()
