"""The diffusion motion engine: streaming, seeds, controls, weights and snapshots.

A randomly initialised "small" network stands in for trained weights, so these tests check what
the engine promises whatever the weights: shapes, determinism, chunking, controls reaching the
output, history carrying over, weights loading strictly, sessions surviving a snapshot.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from motion_gen_synth import FPS, LAYOUT, speech
from test_motion_signal import FIELDS
from test_motion_stage import SID, features, start

from avatarflow.contracts import messages as m
from avatarflow.contracts.controls import Controls
from avatarflow.contracts.errors import InvalidInput, MissingExtra
from avatarflow.contracts.motion import BODY_CANONICAL, EXPR, HAND_REST
from avatarflow.dev.testing import of_type, run_test
from avatarflow.runtime import state
from avatarflow_motion_gen import build_stage
from avatarflow_motion_gen.engines import create
from avatarflow_motion_gen.engines.body import CURL_DELTA, WRISTS
from avatarflow_motion_gen.engines.diffusion import build_model, loaded, preset, save
from avatarflow_motion_gen.models import HAND_BASIS, HAND_COMPONENTS, hand_keypoints

NON_BLINK = [i for n, i in EXPR.items() if not n.startswith("blink")]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> str:
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("diffusion-small")
    save(build_model(preset("small")), preset("small"), directory)
    return str(directory)


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return speech(3.0, seed=11).features  # 90 frames: 11 windows and a partial one


def run(weights: str, frames: np.ndarray, controls: Controls | None = None,
        chunks: list[int] | None = None, **options) -> list:
    session = create("diffusion", weights=weights, **options).open_session(
        FPS, controls or Controls(), LAYOUT)
    out, start_at = [], 0
    for size in chunks or [len(frames)]:
        out += session.push(list(frames[start_at:start_at + size]))
        start_at += size
    return out + session.flush()


def same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        x.frame == y.frame and all(np.array_equal(getattr(x, f), getattr(y, f)) for f in FIELDS)
        for x, y in zip(a, b, strict=True))


def stack(outputs: list, name: str) -> np.ndarray:
    return np.array([getattr(o, name) for o in outputs])


def test_outputs_look_like_the_signal_engines(weights: str, clip: np.ndarray) -> None:
    out = run(weights, clip)
    ref = create("signal").open_session(FPS, Controls(), LAYOUT).push(list(clip[:1]))[0]
    assert [o.frame for o in out] == list(range(len(clip)))
    for o in out:
        for name in FIELDS:
            got, want = getattr(o, name), getattr(ref, name)
            assert type(got) is type(want), name
            if isinstance(want, np.ndarray):
                assert (got.shape, got.dtype) == (want.shape, want.dtype), name
                assert np.isfinite(got).all(), name


def test_chunking_never_changes_the_motion(weights: str, clip: np.ndarray) -> None:
    whole = run(weights, clip)
    sizes = np.random.default_rng(0).integers(1, 13, size=len(clip))
    random_chunks = list(sizes[np.cumsum(sizes) <= len(clip)]) + [len(clip)]
    assert same(run(weights, clip, chunks=[1] * len(clip)), whole)
    assert same(run(weights, clip, chunks=random_chunks), whole)


def test_the_seed_decides_the_motion(weights: str, clip: np.ndarray) -> None:
    first = run(weights, clip[:40], Controls(seed=3))
    assert same(run(weights, clip[:40], Controls(seed=3)), first)
    assert not np.array_equal(stack(run(weights, clip[:40], Controls(seed=4)), "rotation"),
                              stack(first, "rotation"))


def test_saved_weights_reload_to_the_same_motion(weights: str, clip: np.ndarray,
                                                 tmp_path: Path) -> None:
    model = build_model(preset("small"))
    model.load_state_dict(torch.load(Path(weights) / "model.pt", weights_only=True), strict=True)
    save(model, preset("small"), tmp_path)
    assert same(run(str(tmp_path), clip[:30]), run(weights, clip[:30]))


@pytest.mark.parametrize("change,message", [("drop", "missing keys"),
                                            ("add", "unexpected keys")])
def test_weights_that_do_not_fit_are_refused(weights: str, tmp_path: Path, change: str,
                                             message: str) -> None:
    state_dict = torch.load(Path(weights) / "model.pt", weights_only=True)
    if change == "drop":
        del state_dict["face.out.weight"]
    else:
        state_dict["face.extra"] = torch.zeros(1)
    (tmp_path / "config.yaml").write_bytes((Path(weights) / "config.yaml").read_bytes())
    torch.save(state_dict, tmp_path / "model.pt")
    with pytest.raises(InvalidInput, match=message):
        create("diffusion", weights=str(tmp_path))


def test_a_bad_weights_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="needs weights"):
        create("diffusion")
    with pytest.raises(InvalidInput, match=re.escape(str(tmp_path.resolve() / "nope"))):
        create("diffusion", weights=str(tmp_path / "nope"))
    with pytest.raises(InvalidInput, match=re.escape(str(tmp_path.resolve())) + ".*config"):
        create("diffusion", weights=str(tmp_path))
    (tmp_path / "config.yaml").write_text("width: 32\nlayers: 3\n")
    with pytest.raises(InvalidInput, match="unknown setting.*layers"):
        create("diffusion", weights=str(tmp_path))


def test_missing_torch_names_the_extra(monkeypatch: pytest.MonkeyPatch, weights: str) -> None:
    for name in [n for n in sys.modules if n.startswith((
            "avatarflow_motion_gen.engines.diffusion", "avatarflow_motion_gen.models"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(MissingExtra, match=r"avatarflow\[neural\]"):
        create("diffusion", weights=weights)
    monkeypatch.undo()
    importlib.import_module("avatarflow_motion_gen.engines.diffusion")


def test_audio_guidance_changes_the_motion(weights: str, clip: np.ndarray) -> None:
    plain = run(weights, clip[:30], guidance=1.0)
    guided = run(weights, clip[:30], guidance=3.0)
    assert not np.array_equal(stack(plain, "head_offset"), stack(guided, "head_offset"))


def test_intensity_and_amplitude_scale_the_motion(weights: str, clip: np.ndarray) -> None:
    calm = run(weights, clip, Controls(expression_intensity=0.0, pose_amplitude=0.0))
    lively = run(weights, clip, Controls(expression_intensity=2.0, pose_amplitude=2.0))
    expr_calm, expr_lively = stack(calm, "expression"), stack(lively, "expression")
    assert np.abs(expr_calm[:, NON_BLINK]).mean() < np.abs(expr_lively[:, NON_BLINK]).mean()
    assert np.all(expr_calm[:, NON_BLINK] == 0.0) and np.all(stack(calm, "head_offset") == 0.0)
    assert np.all(stack(calm, "rotation") == 0.0) and np.all(stack(calm, "translation") == 0.0)
    assert np.abs(stack(lively, "rotation")).max() > 0.0
    # A still body holds its hands open at the wrists, exactly as the signal engine's does.
    rest = BODY_CANONICAL[list(WRISTS)][:, None] + HAND_REST
    assert all(np.array_equal(o.hands, rest) for o in calm)


def test_hand_coefficients_share_the_signal_engines_curl() -> None:
    np.testing.assert_allclose(HAND_BASIS[:, HAND_COMPONENTS.index("curl")], CURL_DELTA,
                               atol=1e-7)
    wrists = np.array([[0.4, 1.4, 0.0], [-0.4, 1.4, 0.0]], dtype=np.float32)
    curled = np.zeros((2, len(HAND_COMPONENTS)), dtype=np.float32)
    curled[:, 0] = 1.0
    np.testing.assert_allclose(hand_keypoints(wrists, curled),
                               wrists[:, None] + HAND_REST + CURL_DELTA, atol=1e-6)


def test_options_override_inference_settings(weights: str) -> None:
    eng = create("diffusion", weights=weights, steps=6, guidance=2)
    assert (eng.config.steps, eng.config.guidance, eng.sampler.timesteps[0]) == (6, 2.0, 999)
    with pytest.raises(InvalidInput, match="steps"):
        create("diffusion", weights=weights, steps="many")
    with pytest.raises(InvalidInput, match="unknown diffusion engine option"):
        create("diffusion", weights=weights, temperature=0.5)


def test_earlier_audio_shapes_later_windows_through_history(weights: str,
                                                            clip: np.ndarray) -> None:
    cfg = preset("small")
    changed = clip.copy()
    changed[: cfg.window] = clip[cfg.window: 2 * cfg.window]  # only the first window's audio
    a, b = run(weights, clip[:48]), run(weights, changed[:48])
    # Window 3 no longer sees that audio; what it gets is the history of generated motion.
    later = slice(3 * cfg.window, 4 * cfg.window)
    assert not np.array_equal(stack(a, "expression")[later], stack(b, "expression")[later])


def test_new_controls_apply_from_the_next_window(weights: str, clip: np.ndarray) -> None:
    eng = create("diffusion", weights=weights)
    steady, switched = (eng.open_session(FPS, Controls(seed=2), LAYOUT) for _ in range(2))
    before = switched.push(list(clip[:20]))
    assert len(before) == 16  # windows 0 and 1; window 2 waits for its look-ahead
    switched.set_controls(Controls(seed=2, emotion="happy"))
    after = switched.push(list(clip[20:])) + switched.flush()
    base = steady.push(list(clip)) + steady.flush()
    assert same(before, base[:16])
    assert not same(after, base[16:])


def test_barge_in_drops_pending_frames_and_keeps_the_history(weights: str,
                                                             clip: np.ndarray) -> None:
    eng = create("diffusion", weights=weights)
    changed = clip.copy()
    changed[:8] = clip[40:48]
    after = []
    for frames in (clip, changed):
        session = eng.open_session(FPS, Controls(), LAYOUT)
        assert len(session.push(list(frames[:13]))) == 8
        session.reset_audio()  # frames 8..12 never come out
        after.append(session.push(list(clip[13:40])) + session.flush())
    assert [o.frame for o in after[0]] == list(range(13, 40))
    # The same audio after the barge-in, a different motion before it: the history carried on.
    assert not same(after[0], after[1])


def test_reference_clip_and_appearance_steer_the_motion(weights: str, clip: np.ndarray) -> None:
    eng = create("diffusion", weights=weights)
    plain, styled = (eng.open_session(FPS, Controls(), LAYOUT) for _ in range(2))
    styled.set_reference(np.tile(np.linspace(0.0, 0.8, 8), (20, 1)))
    styled.set_appearance(np.ones(preset("small").appearance_dim))
    a, b = plain.push(list(clip[:20])), styled.push(list(clip[:20]))
    assert not np.array_equal(stack(a, "expression"), stack(b, "expression"))
    with pytest.raises(InvalidInput, match="appearance"):
        styled.set_appearance(np.ones(3))


def test_a_style_reference_from_session_start_reaches_the_network(weights: str,
                                                                   clip: np.ndarray) -> None:
    from avatarflow.contracts.style import StyleReference

    def expressions(ref: np.ndarray | None) -> np.ndarray:
        style = None if ref is None else StyleReference(ref.astype(np.float32), 25.0)
        msgs = [m.SessionStart(session_id=SID, fps=FPS, controls=Controls(seed=5), style=style),
                *features(clip[:30]), m.EndOfAudio(session_id=SID, index=30)]
        out = run_test(build_stage("diffusion", weights=weights), msgs)
        return stack(of_type(out, m.MotionFrame), "expression")

    ref = np.tile(np.linspace(0.0, 0.8, 8), (40, 1))
    plain, styled = expressions(None), expressions(ref)
    assert not np.allclose(plain, styled)
    np.testing.assert_array_equal(styled, expressions(ref))  # same reference and seed
    assert not np.array_equal(styled, expressions(ref[::-1] * 0.5))


def test_session_snapshot_restores_exactly(weights: str, clip: np.ndarray) -> None:
    eng = create("diffusion", weights=weights)
    whole = eng.open_session(FPS, Controls(seed=9), LAYOUT)
    want = whole.push(list(clip)) + whole.flush()
    session = eng.open_session(FPS, Controls(seed=9), LAYOUT)
    got = session.push(list(clip[:29]))  # mid-window, with pending look-ahead
    data = state.dumps(session)
    assert len(data) < 16_000 and b"torch" not in data
    loaded._LOADED.clear()  # another replica: the engine is loaded again from the weights
    restored = state.loads(data)
    got += restored.push(list(clip[29:])) + restored.flush()
    assert same(got, want)


def _stage_messages(frames: np.ndarray) -> list[m.Message]:
    feats = features(frames)
    return [start(seed=7, emotion="happy"), *feats[:25],
            m.ControlUpdate(session_id=SID, controls=Controls(seed=8, emotion="sad",
                                                              pose_amplitude=1.5)),
            *feats[25:50], m.Interrupt(session_id=SID), *feats[50:],
            m.EndOfAudio(session_id=SID, index=len(feats))]


def test_stage_snapshot_mid_stream_continues_exactly(weights: str, clip: np.ndarray) -> None:
    msgs = _stage_messages(clip[:70])
    whole = run_test(build_stage("diffusion", weights=weights), msgs)
    for k in (13, 27, 53, len(msgs) - 1):
        first = build_stage("diffusion", weights=weights)
        out = run_test(first, msgs[:k])
        data = first.snapshot(SID)
        assert data is not None and len(data) < 16_000
        fresh = build_stage("diffusion", weights=weights)
        fresh.restore(SID, data)
        out += run_test(fresh, msgs[k:])
        assert [type(x) for x in out] == [type(x) for x in whole]
        for x, y in zip(of_type(out, m.MotionFrame), of_type(whole, m.MotionFrame), strict=True):
            assert x.index == y.index and all(
                np.array_equal(getattr(x, f), getattr(y, f)) for f in FIELDS), k


@pytest.fixture(params=["signal", "diffusion"])
def engine_config(request: pytest.FixtureRequest, weights: str) -> dict:
    return {"engine": request.param, **({"weights": weights}
                                        if request.param == "diffusion" else {})}


def test_stage_emits_one_motion_frame_per_feature_frame(engine_config: dict,
                                                        clip: np.ndarray) -> None:
    feats = features(clip[:45], first=37)
    update = m.ControlUpdate(session_id=SID, controls=Controls(pose_amplitude=0.0))
    out = run_test(build_stage(**engine_config),
                   [start(), update, *feats, m.EndOfAudio(session_id=SID, index=82)])
    assert isinstance(out[0], m.SessionStart) and isinstance(out[-1], m.EndOfAudio)
    frames = of_type(out, m.MotionFrame)
    assert [f.index for f in frames] == [f.index for f in feats]
    assert [f.pts for f in frames] == [f.pts for f in feats]
    assert [f.traceparent for f in frames] == [f.traceparent for f in feats]
    assert all(np.all(f.rotation == 0.0) for f in frames)  # pose_amplitude 0 before features


def test_a_feature_layout_of_another_size_is_invalid_input(weights: str) -> None:
    eng = create("diffusion", weights=weights)
    with pytest.raises(InvalidInput, match="hubert768.*768 dims.*take 44"):
        eng.open_session(FPS, Controls(), "hubert768")
    with pytest.raises(InvalidInput, match="fps"):
        eng.open_session(25.0, Controls(), LAYOUT)
    bad = m.AudioFeatures(session_id=SID, features=np.zeros(41, np.float32), layout="mel40+zcr")
    out = run_test(build_stage("diffusion", weights=weights), [start(), bad])
    assert isinstance(out[-1], m.SessionError) and out[-1].category == "invalid_argument"
    session = eng.open_session(FPS, Controls(), LAYOUT)
    with pytest.raises(InvalidInput, match="shape"):
        session.push([np.zeros(44, np.float32), np.zeros(10, np.float32)])
    assert session.flush() == []  # the bad push left nothing behind
