"""A session through the public API of a local cluster (redis-server and every service as its
own process), with espeak speech sent in 20 ms chunks paced in real time: what the client
receives is what a viewer would judge."""

from __future__ import annotations

import numpy as np
import pytest

from tests.integration.cluster_support import (
    FPS,
    best_lag,
    config,
    frame_audio_rms,
    mouth_openings,
    session,
    steady_fps,
)


@pytest.fixture(scope="module")
def talk(cluster, avatar_id: str, inputs: dict) -> dict:
    rec = session(cluster.gateway_target, config(avatar_id, inputs["rate"]), inputs["pcm"],
                  inputs["rate"])
    return {"rec": rec, "opening": mouth_openings(rec), "energy": frame_audio_rms(rec)}


def test_frames_arrive_at_the_requested_rate_in_order(talk: dict, inputs: dict) -> None:
    rec = talk["rec"]
    duration = inputs["pcm"].size / inputs["rate"]
    print(f"{len(rec.frames)} frames, first after {rec.first_frame_latency_s * 1e3:.0f} ms, "
          f"{rec.achieved_fps:.2f} fps overall, {steady_fps(rec):.2f} fps steady, "
          f"p99 interval {rec.p99_interval_ms:.1f} ms, dropped {rec.dropped}")
    assert rec.indexes_strictly_increase
    assert rec.ended is not None and rec.ended.frames == len(rec.frames)
    assert len(rec.frames) >= duration * FPS * 0.98
    assert rec.achieved_fps == pytest.approx(FPS, rel=0.05)
    assert steady_fps(rec) == pytest.approx(FPS, rel=0.05)


def test_audio_comes_back_with_its_frames(talk: dict, inputs: dict) -> None:
    """Each frame carries the audio of its own span (and of any frame dropped just before
    it): played together, they stay in sync."""
    rec, rate = talk["rec"], inputs["rate"]

    def span(i: int) -> int:
        return round(i * rate / FPS)

    prev = [-1] + [f.index for f in rec.frames[:-1]]
    for f, p in zip(rec.frames, prev, strict=True):
        assert len(f.audio) // 2 == span(f.index + 1) - span(p + 1)
    back = np.concatenate([np.frombuffer(f.audio, "<i2") for f in rec.frames])
    gaps = [e.gap for e in rec.events if e.WhichOneof("kind") == "gap"]
    # Silence filled in where the client's audio ran late is reported; without it the audio
    # that comes back is the audio that went in, sample for sample.
    keep = np.ones(back.size, bool)
    for g in gaps:
        keep[int(round(g.pts * rate)):int(round((g.pts + g.duration) * rate))] = False
    sent = inputs["pcm"]
    got = back[keep][:sent.size]
    assert np.array_equal(got, sent[:got.size])
    assert got.size >= sent.size - rate / FPS


def test_mouth_follows_the_speech_in_sync(talk: dict) -> None:
    opening, energy = talk["opening"], talk["energy"]
    assert np.isfinite(opening).mean() >= 0.98
    ok = np.isfinite(opening)
    r = np.corrcoef(opening[ok], energy[ok])[0, 1]
    lag, r_best = best_lag(opening, energy)
    print(f"lip sync: r = {r:.3f}; best at a shift of {lag} frames (r = {r_best:.3f})")
    assert r >= 0.6
    assert abs(lag) <= 1  # audio/video offset within one frame


def test_latency_is_reported(talk: dict) -> None:
    rec = talk["rec"]
    summaries = [e.latency for e in rec.events if e.WhichOneof("kind") == "latency"]
    assert summaries and all(s.p50_ms > 0 for s in summaries)
    assert rec.ended.latency.p99_ms >= rec.ended.latency.p50_ms > 0
