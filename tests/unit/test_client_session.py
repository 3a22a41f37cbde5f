"""The client library and ``avatarflow client`` against an in-process stand-in gateway."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from avatarflow.cli import client as cli
from avatarflow.cli.inputs import write_wav
from avatarflow.client.api import AvatarClient, decode_frame, run_session
from avatarflow.contracts.v1 import api_pb2
from avatarflow.dev.net import free_port
from tests.support.fake_gateway import COLOR, SIZE, FakeAvatars, serve
from tests.support.video import read_video

RATE = 16000


@pytest.fixture
def gateway(request: pytest.FixtureRequest) -> Iterator[str]:
    drop = getattr(request, "param", frozenset())
    server, target = serve(FakeAvatars(drop=drop))
    yield target
    server.stop(None)


def _tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * 220 * t) * 8000).astype(np.int16)


def _config(**kw) -> api_pb2.SessionConfig:
    kw.setdefault("sample_rate", RATE)
    return api_pb2.SessionConfig(avatar_id="a1", output=api_pb2.OutputFormat(fps=30), **kw)


def test_frames_arrive_in_order_with_their_audio(gateway: str) -> None:
    pcm = _tone(0.5)

    async def main():
        async with AvatarClient(gateway) as client:
            return await run_session(client, _config(), pcm, RATE, realtime=False)

    record = asyncio.run(main())
    assert record.started.sample_rate == RATE
    assert [f.index for f in record.frames] == list(range(15))
    assert record.indexes_strictly_increase and record.ended.frames == 15
    assert record.first_frame_latency_s is not None and record.first_frame_latency_s >= 0
    audio = np.frombuffer(b"".join(f.audio for f in record.frames), "<i2")
    assert np.array_equal(audio[:pcm.size], pcm)
    rgb = decode_frame(record.frames[0].data, record.started.encoding, SIZE, SIZE)
    assert np.abs(rgb.mean(axis=(0, 1)) - COLOR).max() < 4


def test_realtime_streaming_follows_the_wall_clock(gateway: str) -> None:
    async def main():
        async with AvatarClient(gateway) as client:
            t0 = time.monotonic()
            record = await run_session(client, _config(), _tone(0.4), RATE)
            return record, time.monotonic() - t0

    record, wall = asyncio.run(main())
    assert wall >= 0.37
    assert len(record.frames) == 12 and record.achieved_fps > 0


def test_server_errors_surface_with_code_and_details(gateway: str) -> None:
    async def main():
        async with AvatarClient(gateway) as client:
            await run_session(client, _config(sample_rate=4000), _tone(0.1), 4000)

    with pytest.raises(grpc.aio.AioRpcError) as err:
        asyncio.run(main())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "sample_rate must be within 8000..48000 Hz" in err.value.details()


def test_register_returns_a_stable_id(gateway: str) -> None:
    async def main():
        async with AvatarClient(gateway) as client:
            return [await client.register(b"portrait") for _ in range(2)]

    a, b = asyncio.run(main())
    assert a.avatar_id == b.avatar_id and a.output.width == SIZE


def _args(tmp_path: Path, target: str, *extra: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    write_wav(tmp_path / "speech.wav", _tone(0.5), RATE)
    (tmp_path / "portrait.png").write_bytes(b"a portrait")
    return p.parse_args(["--image", str(tmp_path / "portrait.png"), "--audio",
                         str(tmp_path / "speech.wav"), "--out", str(tmp_path / "out.mp4"),
                         "--target", target, "--no-realtime", *extra])


@pytest.mark.parametrize("gateway", [frozenset({3, 4})], indirect=True)
@pytest.mark.parametrize("encoding", ["jpeg", "raw"])
def test_cli_writes_an_mp4_aligned_with_the_audio(gateway: str, tmp_path: Path, capsys,
                                                  encoding: str) -> None:
    assert cli.run(_args(tmp_path, gateway, "--encoding", encoding)) == 0
    out = capsys.readouterr().out
    assert "13 received, 2 dropped" in out and "wrote" in out
    video = read_video(tmp_path / "out.mp4")
    assert len(video.frames) == 15  # the dropped frames repeat the previous picture
    assert abs(video.audio_seconds - 0.5) < 1 / 30 + 0.03  # AAC pads a little
    assert np.abs(video.frames[4].mean(axis=(0, 1)) - COLOR).max() < 8


def test_cli_prints_grpc_errors_with_their_status(gateway: str, tmp_path: Path, capsys) -> None:
    assert cli.run(_args(tmp_path, gateway, "--size", "100x100", "--no-register")) == 2
    err = capsys.readouterr().err
    assert err.startswith("avatarflow: error: INVALID_ARGUMENT: unsupported output size")
    assert not (tmp_path / "out.mp4").exists()


def test_cli_explains_an_unreachable_gateway(tmp_path: Path, capsys) -> None:
    target = f"127.0.0.1:{free_port()}"
    assert cli.run(_args(tmp_path, target, "--connect-timeout", "0.5")) == 5
    assert f"cannot reach the gateway at {target}" in capsys.readouterr().err


def test_unsupported_sample_rates_are_resampled() -> None:
    pcm, rate = cli.fit_sample_rate(np.zeros(96000, np.int16), 96000)
    assert rate == 16000 and pcm.dtype == np.int16 and abs(pcm.size - 16000) <= 16
    same, rate = cli.fit_sample_rate(np.zeros(10, np.int16), 44100)
    assert rate == 44100 and same.size == 10
