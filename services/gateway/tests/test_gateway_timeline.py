"""The gateway's audio clock: each frame gets exactly its own span of the audio, a barge-in
cuts the clock after the last delivered frame, and only undelivered audio is kept."""

from __future__ import annotations

import numpy as np

from avatarflow.session.timeline import Timeline


def test_frames_get_their_own_span_and_spans_tile_the_audio() -> None:
    t = Timeline(16000, 30.0)
    audio = np.arange(16000, dtype=np.int16)
    t.append(audio)
    parts = [np.frombuffer(t.frame_audio(i), "<i2") for i in range(30)]
    assert np.array_equal(np.concatenate(parts), audio)
    assert {len(p) for p in parts} <= {533, 534}


def test_missing_audio_reads_as_silence_and_delivered_audio_is_forgotten() -> None:
    t = Timeline(16000, 30.0)
    t.append(np.ones(600, np.int16))
    first = np.frombuffer(t.frame_audio(0), "<i2")
    second = np.frombuffer(t.frame_audio(1), "<i2")
    assert first.all() and second[:67].all() and not second[67:].any()
    assert t.end == 600


def test_barge_in_cuts_after_the_resume_frame_and_new_audio_follows() -> None:
    t = Timeline(16000, 30.0)
    t.append(np.full(16000, 7, np.int16))
    t.frame_audio(4)  # frames up to 4 delivered
    end = t.cut(5)
    assert end == t.span(5)[0]
    t.append(np.full(600, 9, np.int16))
    assert (np.frombuffer(t.frame_audio(5), "<i2") == 9).all()


def test_a_cut_ahead_of_the_clock_pads_with_silence() -> None:
    t = Timeline(16000, 30.0)
    t.append(np.full(100, 3, np.int16))
    t.cut(2)
    assert t.end == t.span(2)[0]
    assert not np.frombuffer(t.frame_audio(1), "<i2").any()


def test_a_frame_after_dropped_frames_brings_their_audio_along() -> None:
    """Frames 3 and 4 were dropped on the way: frame 5 carries spans 3 to 5, so the audio
    the client gets has no hole."""
    t = Timeline(16000, 30.0)
    audio = np.arange(16000, dtype=np.int16)
    t.append(audio)
    parts = [np.frombuffer(t.frame_audio(i), "<i2") for i in range(3)]
    parts.append(np.frombuffer(t.frame_audio(5, first=3), "<i2"))
    parts += [np.frombuffer(t.frame_audio(i), "<i2") for i in range(6, 30)]
    assert len(parts[3]) == t.span(5)[1] - t.span(3)[0]
    assert np.array_equal(np.concatenate(parts), audio)
