"""SessionRecord statistics on synthetic arrivals; decode_frame for JPEG and raw RGB."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from avatarflow.client.api import SessionRecord, decode_frame
from avatarflow.contracts.errors import InvalidInput
from avatarflow.contracts.v1 import api_pb2


def _record(times: list[float], indexes: list[int] | None = None) -> SessionRecord:
    record = SessionRecord(first_audio_sent_at=10.0)
    for i, t in zip(indexes or range(len(times)), times, strict=True):
        frame = api_pb2.VideoFrame(index=i, pts=i / 30, data=b"x", audio=b"\0\0")
        record.add(api_pb2.SessionResponse(frame=frame), t)
    return record


def test_steady_stream_statistics() -> None:
    times = [10.5 + i / 30 for i in range(31)]
    record = _record(times)
    assert record.first_frame_latency_s == pytest.approx(0.5)
    assert record.achieved_fps == pytest.approx(30.0)
    assert record.frame_intervals_ms.shape == (30,)
    assert record.frame_intervals_ms == pytest.approx(np.full(30, 1000 / 30))
    assert record.p99_interval_ms == pytest.approx(1000 / 30)
    assert record.indexes_strictly_increase
    assert record.dropped == 0


def test_a_stall_shows_in_p99_and_gaps_count_as_dropped() -> None:
    times = [i * 0.033 + 0.2 * (i >= 30) + 0.2 * (i >= 50) + 0.2 * (i >= 80) for i in range(100)]
    indexes = [i if i < 50 else i + 2 for i in range(100)]
    record = _record(times, indexes)
    assert record.p99_interval_ms > 200
    assert record.missing_indexes == [50, 51]
    assert record.dropped == 2
    record.add(api_pb2.SessionResponse(ended=api_pb2.SessionEnded(frames=100, dropped=3)), 99.0)
    assert record.dropped == 3  # the server's count wins once the session ended


def test_out_of_order_and_empty_records() -> None:
    assert not _record([1.0, 1.1, 1.2], [0, 2, 1]).indexes_strictly_increase
    empty = SessionRecord()
    assert empty.first_frame_latency_s is None
    assert empty.achieved_fps == 0.0
    assert empty.p99_interval_ms == 0.0
    assert empty.indexes_strictly_increase


def test_events_and_started_are_kept() -> None:
    record = SessionRecord()
    record.add(api_pb2.SessionResponse(started=api_pb2.SessionStarted(session_id="s")), 0.0)
    record.add(api_pb2.SessionResponse(event=api_pb2.SessionEvent(warning="slow")), 0.1)
    assert record.started.session_id == "s"
    assert record.warnings == ["slow"]


def test_decode_jpeg_returns_rgb() -> None:
    rgb = np.zeros((48, 32, 3), np.uint8)
    rgb[..., 0] = 220  # red
    data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()
    for encoding in (api_pb2.FRAME_ENCODING_JPEG, api_pb2.FRAME_ENCODING_UNSPECIFIED):
        out = decode_frame(data, encoding, 32, 48)
        assert out.shape == (48, 32, 3) and out.dtype == np.uint8
        assert abs(int(out[..., 0].mean()) - 220) < 4 and out[..., 2].mean() < 4


def test_decode_raw_and_bad_frames() -> None:
    rgb = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    out = decode_frame(rgb.tobytes(), api_pb2.FRAME_ENCODING_RAW_RGB, 6, 4)
    assert np.array_equal(out, rgb)
    with pytest.raises(InvalidInput, match="expected 6x5x3"):
        decode_frame(rgb.tobytes(), api_pb2.FRAME_ENCODING_RAW_RGB, 6, 5)
    with pytest.raises(InvalidInput, match="not a decodable JPEG"):
        decode_frame(b"not a jpeg", api_pb2.FRAME_ENCODING_JPEG, 6, 4)
