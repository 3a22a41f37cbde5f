"""The audio-encoder stage driven through the runner's harness."""

from __future__ import annotations

import numpy as np
import pytest

from avatarflow.contracts import messages as m
from avatarflow.contracts.errors import InvalidInput, NotFound
from avatarflow.dev.testing import of_type, run_test
from avatarflow_audio_encoder import build_stage

TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _chunks(sid: str, seconds: float, sr: int = 16000, ms: int = 20) -> list[m.AudioChunk]:
    t = np.arange(int(sr * seconds)) / sr
    pcm = (8000 * np.sin(2 * np.pi * 150 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.int16)
    step = sr * ms // 1000
    return [m.AudioChunk(session_id=sid, index=k, pts=i / sr, sample_rate=sr,
                         pcm=pcm[i:i + step], traceparent=TRACE)
            for k, i in enumerate(range(0, pcm.size, step))]


def _session(sid: str, seconds: float, sr: int = 16000, fps: float = 30.0) -> list[m.Message]:
    return [m.SessionStart(session_id=sid, sample_rate=sr, fps=fps), *_chunks(sid, seconds, sr),
            m.EndOfAudio(session_id=sid)]


@pytest.mark.parametrize(("sr", "fps", "seconds"), [(16000, 30.0, 2.0), (48000, 25.0, 1.3),
                                                    (44100, 60.0, 0.77)])
def test_one_feature_frame_per_video_frame_in_order(sr: int, fps: float, seconds: float) -> None:
    out = run_test(build_stage(), _session("s1", seconds, sr, fps))
    assert isinstance(out[0], m.SessionStart) and isinstance(out[-1], m.EndOfAudio)
    frames = of_type(out, m.AudioFeatures)
    n = len(frames)
    assert abs(n - seconds * fps) < 1.0
    assert [f.index for f in frames] == list(range(n))
    assert all(f.pts == f.index / fps for f in frames)
    assert all(f.layout == "mel40+energy_db+voicing+zcr+flux" for f in frames)
    assert all(f.features.shape == (44,) and f.features.dtype == np.float32 for f in frames)
    assert all(f.traceparent == TRACE for f in frames[:-3])
    assert out[-1].index == n


def test_sessions_are_independent() -> None:
    a, b = _session("a", 1.0), _session("b", 0.6, 44100)
    mixed = [a[0], b[0]] + [x for pair in zip(a[1:-1], b[1:-1], strict=False) for x in pair]
    mixed += a[len(b) - 1:-1] + [a[-1], b[-1]]
    together = run_test(build_stage(), mixed)
    alone = of_type(run_test(build_stage(), a), m.AudioFeatures)
    from_a = [f for f in of_type(together, m.AudioFeatures) if f.session_id == "a"]
    assert len(from_a) == len(alone)
    assert all(np.array_equal(x.features, y.features) for x, y in zip(from_a, alone, strict=True))


def test_interrupt_drops_audio_but_indexes_keep_counting() -> None:
    chunks = _chunks("s", 1.0)
    msgs = [m.SessionStart(session_id="s"), *chunks[:20], m.Interrupt(session_id="s"),
            m.ControlUpdate(session_id="s"), *chunks[20:], m.EndOfAudio(session_id="s")]
    out = run_test(build_stage(), msgs)
    assert [type(x) for x in out if not isinstance(x, m.AudioFeatures)] == [
        m.SessionStart, m.Interrupt, m.ControlUpdate, m.EndOfAudio]
    frames = of_type(out, m.AudioFeatures)
    assert [f.index for f in frames] == list(range(len(frames)))
    assert all(f.pts == f.index / 30.0 for f in frames)
    assert out[-1].index == len(frames)


def test_interrupt_with_an_index_realigns_the_count() -> None:
    """Frames after the interrupt point were dropped unseen: the count restarts from there."""
    chunks = _chunks("s", 1.0)
    msgs = [m.SessionStart(session_id="s"), *chunks[:20], m.Interrupt(session_id="s", index=4),
            *chunks[20:], m.EndOfAudio(session_id="s")]
    out = run_test(build_stage(), msgs)
    cut = next(i for i, x in enumerate(out) if isinstance(x, m.Interrupt))
    before, after = of_type(out[:cut], m.AudioFeatures), of_type(out[cut:], m.AudioFeatures)
    assert out[cut].index == 4 and len(before) > 4  # the count moves back
    assert [f.index for f in before] == list(range(len(before)))
    assert [f.index for f in after] == list(range(4, 4 + len(after)))
    assert all(f.pts == f.index / 30.0 for f in after)
    assert out[-1].index == 4 + len(after)


@pytest.mark.parametrize(("start", "needle"), [
    (m.SessionStart(session_id="s", sample_rate=4000), "sample rate 4000 Hz"),
    (m.SessionStart(session_id="s", sample_rate=200000), "sample rate 200000 Hz"),
    (m.SessionStart(session_id="s", fps=90.0), "fps 90.0"),
])
def test_bad_session_settings_are_invalid_input(start: m.SessionStart, needle: str) -> None:
    with pytest.raises(InvalidInput, match=needle):
        build_stage().process(start)
    (err,) = run_test(build_stage(), [start])
    assert isinstance(err, m.SessionError) and err.category == "invalid_argument"
    assert err.stage == "audio-encoder" and needle in err.message


@pytest.mark.parametrize(("pcm", "rate", "needle"), [
    (np.zeros(320, np.float32), 16000, "int16"),
    (np.zeros((160, 2), np.int16), 16000, "1-D"),
    (np.zeros(320, np.int16), 48000, "48000 Hz but the session started at 16000 Hz"),
])
def test_bad_audio_is_invalid_input(pcm: np.ndarray, rate: int, needle: str) -> None:
    stage = build_stage()
    stage.process(m.SessionStart(session_id="s"))
    with pytest.raises(InvalidInput, match=needle):
        stage.process(m.AudioChunk(session_id="s", sample_rate=rate, pcm=pcm))


def test_audio_for_an_unknown_session_is_not_found() -> None:
    chunk = _chunks("ghost", 0.02)[0]
    with pytest.raises(NotFound, match="ghost"):
        build_stage().process(chunk)
    (err,) = run_test(build_stage(), [chunk])
    assert isinstance(err, m.SessionError) and err.category == "not_found"


def test_unknown_engine_names_the_choices() -> None:
    with pytest.raises(InvalidInput, match="choose one of mel"):
        build_stage("nope")


def test_silence_only_session_still_yields_frames() -> None:
    msgs = [m.SessionStart(session_id="q"),
            m.AudioChunk(session_id="q", sample_rate=16000, pcm=np.zeros(16000, np.int16)),
            m.EndOfAudio(session_id="q")]
    frames = of_type(run_test(build_stage(), msgs), m.AudioFeatures)
    assert len(frames) == 30
    assert all(f.features[40] == -100.0 for f in frames)
