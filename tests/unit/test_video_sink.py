"""The client's MP4 writer keeps audio and video aligned when frames were dropped: the missing
picture is repeated and the audio the next frame brings fills the dropped span exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avatarflow.cli.sink import VideoSink
from avatarflow.contracts.v1 import api_pb2

RATE, FPS, W, H = 16000, 30, 32, 32


def _span(i: int) -> int:
    return round(i * RATE / FPS)


def test_a_dropped_frame_leaves_no_hole_in_audio_or_video(tmp_path: Path) -> None:
    started = api_pb2.SessionStarted(
        session_id="s", sample_rate=RATE, encoding=api_pb2.FRAME_ENCODING_RAW_RGB,
        output=api_pb2.OutputFormat(mode="head", width=W, height=H, fps=FPS))
    sink = VideoSink(tmp_path / "out.mp4", started)
    audio = (np.arange(_span(5)) % 3000).astype(np.int16)
    delivered = [(0, 0), (1, 1), (2, 4)]  # (first span, index): frames 2 and 3 were dropped
    for first, index in delivered:
        pixels = np.full((H, W, 3), 40 * index, np.uint8)
        sink.put(api_pb2.VideoFrame(index=index, pts=index / FPS, data=pixels.tobytes(),
                                    audio=audio[_span(first):_span(index + 1)].tobytes()))
    written = sink.close()
    assert written == 5 and sink.repeated == 2
    assert np.array_equal(sink._pcm(), audio)
