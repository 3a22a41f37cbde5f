"""The joyvasa motion engine: exact against JoyVASA's own code offline, strict about its
weights layout, and a live engine that streams, resamples to the session's fps, keeps its
seed, survives barge-in and snapshots, and carries LivePortrait motion to the renderer.

Tiny random weights in JoyVASA's published layout stand in for the real ones. The fixture
``joyvasa_expected.npz`` holds what JoyVASA's own ``gen_motion_sequence`` (its public code, run
on CPU in fp32 without smoothing) made from the same weights and clip.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from avatarflow.contracts import messages as m
from avatarflow.contracts.controls import Controls
from avatarflow.contracts.errors import InvalidInput
from avatarflow.dev.testing import of_type, run_test
from avatarflow_motion_gen import build_stage
from avatarflow_motion_gen.engines import create
from avatarflow_motion_gen.engines.joyvasa import layout, sampler

FIXTURE = Path(__file__).parent / "fixtures" / "joyvasa_expected.npz"
TINY = dict(seed=3, audio_model="hubert_zh", n_motions=20, n_prev=5, motion_dim=72,
            feature_dim=32, diff_steps=8)  # as the fixture was made
SID = "jv"


def clip(seconds: float = 1.9) -> np.ndarray:
    """Voiced bursts at 2.5 Hz over a little noise, 16 kHz float32 (the fixture's clip)."""
    rng = np.random.default_rng(1)
    t = np.arange(int(16000 * seconds)) / 16000
    voiced = 0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 2.5 * t) > 0)
    return (voiced + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("joyvasa")
    layout.write_random_weights(path, **TINY)  # type: ignore[arg-type]
    return path


def test_offline_motion_equals_joyvasas_own(root: Path) -> None:
    loaded = layout.load(root)
    want = np.load(FIXTURE)
    torch.manual_seed(int(want["torch_seed"]))
    got = sampler.denormalise(sampler.generate(loaded.model, clip(), float(want["cfg_scale"])),
                              loaded.template)
    for name in ("exp", "scale", "t", "pitch", "yaw", "roll"):
        assert got[name].shape == want[name].shape and got[name].dtype == np.float32
        assert np.abs(got[name] - want[name]).max() <= 1e-4, name


def test_network_is_built_as_joyvasas_loader_builds_it(root: Path) -> None:
    model = layout.load(root).model
    assert model.motion_dim == 72  # from the tensors, not the usual 70
    assert len(model.denoising_net.transformer.layers) == 8  # args say 6; the loader builds 8
    ckpt = torch.load(next((root / layout.GENERATOR_DIR).glob("*.pt")), weights_only=False)
    key = "audio_encoder.encoder.layers.0.attention.q_proj.weight"
    # The checkpoint's audio encoder wins over the folder's (which the writer made different).
    assert torch.equal(model.state_dict()[key], ckpt["model"][key])


def test_weights_check_passes_and_names_what_is_wrong(root: Path, tmp_path: Path) -> None:
    assert all(r.ok for r in layout.check_weights(root))
    assert sum(r.parameters for r in layout.check_weights(root)) > 0
    bad = tmp_path / "bad"
    layout.write_random_weights(bad, **TINY)  # type: ignore[arg-type]
    path = next((bad / layout.GENERATOR_DIR).glob("*.pt"))
    data = torch.load(path, weights_only=False)
    state = data["model"]
    state["audio_feature_map.weights"] = state.pop("audio_feature_map.weight")
    state["null_audio_feat"] = torch.zeros(1, 1, 16)
    torch.save(data, path)
    (bad / layout.TEMPLATE).unlink()
    reports = {r.path: r for r in layout.check_weights(bad)}
    gen = reports[str(layout.GENERATOR_DIR / "iter_0020000.pt")]
    assert gen.missing == ["audio_feature_map.weight"]
    assert gen.unexpected == ["audio_feature_map.weights"]
    assert gen.mismatched == ["null_audio_feat: file 1x1x16, network 1x1x32"]
    assert not reports[str(layout.TEMPLATE)].found
    with pytest.raises(InvalidInput, match="audio_feature_map"):
        layout.load(bad)


def test_missing_generator_and_audio_model_are_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="motion_generator"):
        layout.load(tmp_path)
    layout.write_random_weights(tmp_path, **TINY)  # type: ignore[arg-type]
    for f in (tmp_path / "chinese-hubert-base").iterdir():
        f.unlink()
    with pytest.raises(InvalidInput, match="chinese-hubert-base"):
        layout.load(tmp_path)


def pcm_frames(audio: np.ndarray, fps: float = 30.0) -> list[np.ndarray]:
    """What the audio encoder's pcm engine sends: each frame's 16 kHz samples."""
    edges = [round(i * 16000 / fps) for i in range(math.ceil(audio.size * fps / 16000) + 1)]
    return [audio[a:b] for a, b in zip(edges, edges[1:], strict=False)]


def live(root: Path, frames: list[np.ndarray], chunk: int = 1, seed: int = 0, fps: float = 30.0,
         snapshot: bool = False, **options: object) -> list:
    engine = create("joyvasa", weights=str(root), **options)
    s = engine.open_session(fps, Controls(seed=seed), "pcm16k")
    out = []
    for i in range(0, len(frames), chunk):
        out += s.push(frames[i:i + chunk])
        if snapshot:
            s = pickle.loads(pickle.dumps(s))
    return out + s.flush()


def lp(outs: list) -> np.ndarray:
    """T x 67 LivePortrait motion, each part in units of its template range."""
    return np.stack([np.concatenate([o.liveportrait.exp.ravel() / 0.01,
                                     [o.liveportrait.pitch / 40, o.liveportrait.yaw / 60,
                                      o.liveportrait.roll / 30, o.liveportrait.scale / 0.6]])
                     for o in outs])


def test_live_motion_at_the_session_fps_for_any_chunking(root: Path) -> None:
    frames = pcm_frames(clip())
    one = live(root, frames, chunk=1, snapshot=True)  # 20 ms chunks are < 1 frame at 30 fps
    whole = live(root, frames, chunk=len(frames))
    assert [o.frame for o in one] == list(range(math.ceil(1.9 * 30)))
    np.testing.assert_array_equal(lp(one), lp(whole))
    assert all(o.liveportrait.exp.shape == (21, 3) and o.liveportrait.t.shape == (3,)
               for o in one)


def test_live_motion_keeps_its_seed(root: Path) -> None:
    frames = pcm_frames(clip())
    a, b, c = live(root, frames, seed=4), live(root, frames, seed=4), live(root, frames, seed=5)
    np.testing.assert_array_equal(lp(a), lp(b))
    assert np.abs(lp(a) - lp(c)).max() > 0.1


def test_live_motion_is_continuous_across_windows(root: Path) -> None:
    frames = pcm_frames(clip(), fps=25.0)  # JoyVASA's own rate: no resampling in between
    for stride in (5, 10):
        motion = lp(live(root, frames, fps=25.0, stride=stride))
        step = np.abs(np.diff(motion, axis=0)).max(axis=1)  # jump into frame n + 1
        boundary = (np.arange(1, len(motion)) % stride) == 0
        assert step[boundary].max() <= step[~boundary].max(), stride


def test_resampling_to_30_fps_follows_the_25_fps_motion(root: Path) -> None:
    native = lp(live(root, pcm_frames(clip(), 25.0), fps=25.0))
    at30 = lp(live(root, pcm_frames(clip(), 30.0), fps=30.0))
    np.testing.assert_allclose(at30[::6], native[::5][: len(at30[::6])], atol=1e-5)


def test_barge_in_drops_pending_frames_and_continues(root: Path) -> None:
    frames = pcm_frames(clip())
    engine = create("joyvasa", weights=str(root))
    s = engine.open_session(30.0, Controls(), "pcm16k")
    first = s.push(frames[:30])
    s.reset_audio()
    after = s.push(frames[:20]) + s.flush()
    assert [o.frame for o in first] == list(range(len(first))) and len(first) < 30
    assert [o.frame for o in after] == list(range(30, 50))


def test_a_stall_filled_with_silence_keeps_the_frames_coming(root: Path) -> None:
    """The session front fills a stalled client's audio with zeros: every frame of the
    silent stretch comes out, in order, with finite motion, and the speech after it goes on."""
    speech = pcm_frames(clip())
    silence = [np.zeros_like(f) for f in pcm_frames(np.zeros(int(16000 * 0.4), np.float32))]
    frames = speech[:20] + silence + speech[20:]
    out = live(root, frames)
    assert [o.frame for o in out] == list(range(len(frames)))
    assert np.isfinite(lp(out)).all()


def test_stage_end_to_end_with_the_pcm_audio_encoder(root: Path) -> None:
    from avatarflow_audio_encoder import build_stage as audio_stage

    pcm = (clip(1.0) * 32767).astype(np.int16)
    start = m.SessionStart(session_id=SID, fps=30.0, sample_rate=16000,
                           controls=Controls(seed=2))
    chunks = [m.AudioChunk(session_id=SID, index=i, pcm=pcm[k:k + 320], sample_rate=16000)
              for i, k in enumerate(range(0, pcm.size, 320))]
    feats = run_test(audio_stage("pcm"), [start, *chunks,
                                          m.EndOfAudio(session_id=SID, index=len(chunks))])
    stage = build_stage("joyvasa", weights=str(root))
    out = of_type(run_test(stage, feats), m.MotionFrame)
    assert [f.index for f in out] == list(range(30))
    assert [f.pts for f in out] == [i / 30.0 for i in range(30)]
    assert all(f.liveportrait is not None for f in out)
    # A session moved to another replica mid-stream continues exactly.
    first = build_stage("joyvasa", weights=str(root))
    part = run_test(first, feats[:12])
    data = first.snapshot(SID)
    assert data is not None and len(data) < 64_000
    fresh = build_stage("joyvasa", weights=str(root))
    fresh.restore(SID, data)
    moved = of_type(part + run_test(fresh, feats[12:]), m.MotionFrame)
    np.testing.assert_array_equal(lp(moved), lp(out))
