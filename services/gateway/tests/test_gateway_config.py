"""Session configs are checked before anything starts, with messages naming the bad field."""

from __future__ import annotations

import pytest

from avatarflow.contracts.errors import InvalidInput, OutOfRange
from avatarflow.contracts.v1 import api_pb2, pipeline_pb2
from avatarflow_gateway.config import parse_config, pcm_from_bytes


def _cfg(**kw) -> api_pb2.SessionConfig:
    kw.setdefault("sample_rate", 16000)
    kw.setdefault("avatar_id", "av-" + "1" * 32)
    return api_pb2.SessionConfig(**kw)


def test_defaults_are_filled_in() -> None:
    spec = parse_config(_cfg())
    assert (spec.mode, spec.width, spec.height, spec.fps) == ("upper-body", 512, 768, 30.0)
    assert spec.encoding == api_pb2.FRAME_ENCODING_JPEG
    assert spec.controls.expression_intensity == 1.0  # unset controls are natural


@pytest.mark.parametrize("kw,words", [
    ({"sample_rate": 7999}, "sample rate 7999"),
    ({"encoding": 9}, "frame encoding 9"),
    ({"avatar_id": ""}, "needs a portrait"),
    ({"output": api_pb2.OutputFormat(width=100, height=100)}, "output size 100x100"),
    ({"output": api_pb2.OutputFormat(mode="full-body")}, "mode must be one of"),
])
def test_bad_fields_are_named(kw: dict, words: str) -> None:
    with pytest.raises(InvalidInput, match=words):
        parse_config(_cfg(**kw))


def test_controls_out_of_range() -> None:
    with pytest.raises(OutOfRange, match="emotion"):
        parse_config(_cfg(controls=pipeline_pb2.Controls(
            expression_intensity=1, pose_amplitude=1, emotion="bored")))


def test_audio_bytes() -> None:
    assert pcm_from_bytes(b"\x01\x00\xff\xff", 16000).tolist() == [1, -1]
    with pytest.raises(InvalidInput, match="PCM16"):
        pcm_from_bytes(b"\x01", 16000)
    with pytest.raises(InvalidInput, match="at most 10 s"):
        pcm_from_bytes(bytes(2 * 16000 * 11), 16000)


def test_the_renderer_target_resolves_every_address_of_its_name() -> None:
    from avatarflow_gateway.server import renderer_channel_target

    assert renderer_channel_target("af-renderer:50063") == "dns:///af-renderer:50063"
    assert renderer_channel_target("127.0.0.1:50063") == "dns:///127.0.0.1:50063"
    for explicit in ("dns:///r:1", "unix:/tmp/r.sock", "ipv4:10.0.0.1:1,10.0.0.2:1"):
        assert renderer_channel_target(explicit) == explicit


def _style(t: int = 30, e: int = 8, fps: float = 25.0, fill: float = 0.2
           ) -> pipeline_pb2.StyleReference:
    import numpy as np

    from avatarflow.contracts import tensor

    x = np.full((t, e), fill, dtype=np.float32)
    return pipeline_pb2.StyleReference(expressions=tensor.encode(x), fps=fps)


def test_a_style_reference_travels_to_session_start() -> None:
    spec = parse_config(_cfg(style=_style(t=40)))
    start = spec.start("sid", "av-1")
    assert start.style is not None and start.style.expressions.shape == (40, 8)
    assert start.style.fps == 25.0
    assert parse_config(_cfg()).start("sid", "av-1").style is None


@pytest.mark.parametrize("style,error,words", [
    (_style(e=6), InvalidInput, r"shape \(30, 6\); need T x 8"),
    (_style(t=5), OutOfRange, "8..1800 frames, got 5"),
    (_style(t=1801), OutOfRange, "8..1800 frames, got 1801"),
    (_style(fill=float("nan")), InvalidInput, "NaN"),
    (_style(fps=0.0), OutOfRange, r"fps must be within \(0, 120\], got 0"),
    (_style(fps=240.0), OutOfRange, r"fps must be within \(0, 120\], got 240"),
    (_style(fill=1.5), OutOfRange, "jaw_open must be within 0..1, got 1.5"),
])
def test_bad_style_references_are_named(style, error: type, words: str) -> None:
    with pytest.raises(error, match=words):
        parse_config(_cfg(style=style))


def test_bad_style_references_get_their_grpc_status() -> None:
    import grpc

    from avatarflow.contracts.grpc_status import code_for

    for style, code in ((_style(e=6), grpc.StatusCode.INVALID_ARGUMENT),
                        (_style(t=5), grpc.StatusCode.OUT_OF_RANGE),
                        (_style(fill=float("nan")), grpc.StatusCode.INVALID_ARGUMENT),
                        (_style(fps=-1.0), grpc.StatusCode.OUT_OF_RANGE)):
        with pytest.raises((InvalidInput, OutOfRange)) as info:
            parse_config(_cfg(style=style))
        assert code_for(info.value.category) == code


@pytest.mark.parametrize("avatar_id", ["av-nope", "AV-" + "0" * 32, "av-" + "g" * 32,
                                       "av-" + "0" * 33, "../" + "0" * 32])
def test_a_malformed_avatar_id_is_rejected_naming_the_format(avatar_id: str) -> None:
    with pytest.raises(InvalidInput, match=r'malformed avatar id .*"av-" and 32 lowercase hex'):
        parse_config(_cfg(avatar_id=avatar_id))


def test_a_long_string_is_cut_where_an_error_quotes_it() -> None:
    with pytest.raises(InvalidInput) as info:
        parse_config(_cfg(avatar_id="x" * 10_000))
    assert len(info.value.message) < 300 and "(10000 chars)" in info.value.message
    with pytest.raises(OutOfRange) as out:
        parse_config(_cfg(controls=pipeline_pb2.Controls(
            expression_intensity=1, pose_amplitude=1, emotion="e" * 10_000)))
    assert len(out.value.message) < 300 and "..." in out.value.message


def test_undecodable_bytes_become_a_request_the_servicer_rejects() -> None:
    from avatarflow_gateway.wire import checked, parser

    parse = parser(api_pb2.SessionRequest)
    good = api_pb2.SessionRequest(end=api_pb2.EndAudio())
    assert checked(parse(good.SerializeToString())) == good
    with pytest.raises(InvalidInput, match="could not be decoded as avatarflow.v1.SessionRequest"):
        checked(parse(b"\xff\xff\xff\xff"))


def test_a_set_controls_message_is_taken_as_sent_zeros_included() -> None:
    spec = parse_config(_cfg(controls=pipeline_pb2.Controls()))
    c = spec.controls
    assert (c.expression_intensity, c.pose_amplitude, c.emotion, c.seed) == (0, 0, "neutral", 0)


def test_sample_rate_zero_is_rejected() -> None:
    with pytest.raises(InvalidInput, match="sample rate 0 Hz"):
        parse_config(_cfg(sample_rate=0))
