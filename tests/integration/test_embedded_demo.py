"""The main job end to end, as a user runs it: `avatarflow demo` on a portrait and speech.

Measures the output video the way a viewer would judge it: the mouth (found by face landmarks on
the rendered frames) follows the speech and closes in the pauses, the frame count and the
audio/video durations agree, and a silent clip keeps the person's identity.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.integration.conftest import run_cli
from tests.support.video import CLOSED_BELOW, MouthMeter, frame_energy, read_video, silent_frames


@pytest.fixture(scope="module")
def demo(inputs: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("demo") / "not" / "yet" / "there" / "talk.mp4"
    res = run_cli("demo", "--image", str(inputs["portrait"]), "--audio", str(inputs["speech"]),
                  "--out", str(out), "--no-progress")
    assert res.returncode == 0, res.stderr
    video = read_video(out)
    meter = MouthMeter()
    opening = np.array([meter.opening(f) for f in video.frames])
    meter.close()
    return {"out": out, "stdout": res.stdout, "video": video, "opening": opening}


def test_missing_output_directory_is_created_and_summary_printed(demo: dict) -> None:
    assert demo["out"].is_file()
    assert "achieved" in demo["stdout"] and "fps" in demo["stdout"]
    assert "per-stage median ms/frame" in demo["stdout"]


def test_face_is_tracked_in_every_frame(demo: dict) -> None:
    assert np.isfinite(demo["opening"]).mean() >= 0.98


def test_mouth_follows_speech_energy(demo: dict, inputs: dict) -> None:
    v, opening = demo["video"], demo["opening"]
    energy = frame_energy(inputs["pcm"], inputs["rate"], v.fps, len(v.frames))
    ok = np.isfinite(opening)
    r = np.corrcoef(opening[ok], energy[ok])[0, 1]
    print(f"lip sync: Pearson r = {r:.3f} over {ok.sum()} frames")
    assert r >= 0.6


def test_mouth_closed_in_pauses(demo: dict, inputs: dict) -> None:
    v, opening = demo["video"], demo["opening"]
    quiet = silent_frames(inputs["pcm"], inputs["rate"], v.fps, len(v.frames))
    speech = frame_energy(inputs["pcm"], inputs["rate"], v.fps, len(v.frames)) > 0.05
    assert quiet.sum() >= 30, "the test speech must contain pauses"
    closed = opening[quiet] < CLOSED_BELOW
    print(f"closed in {closed.mean():.1%} of {quiet.sum()} silent frames; "
          f"median opening silent {np.nanmedian(opening[quiet]):.3f} "
          f"speech {np.nanmedian(opening[speech]):.3f}")
    assert closed.mean() >= 0.9
    assert np.nanmedian(opening[speech]) > np.nanmedian(opening[quiet]) + 0.05


def test_frame_count_and_durations_agree(demo: dict, inputs: dict) -> None:
    v = demo["video"]
    duration = inputs["pcm"].size / inputs["rate"]
    assert abs(len(v.frames) - duration * 30) <= 1
    assert v.fps == pytest.approx(30.0)
    assert abs(v.audio_seconds - v.video_seconds) <= 1 / 30
    assert v.frames[0].shape == (768, 512, 3)
