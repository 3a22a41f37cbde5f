"""Session configs are checked before anything starts, with messages naming the bad field."""

from __future__ import annotations

import pytest

from avatarflow.errors import InvalidInput, OutOfRange
from avatarflow.v1 import api_pb2, pipeline_pb2
from avatarflow_gateway.config import parse_config, pcm_from_bytes


def _cfg(**kw) -> api_pb2.SessionConfig:
    kw.setdefault("sample_rate", 16000)
    kw.setdefault("avatar_id", "av-1")
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
