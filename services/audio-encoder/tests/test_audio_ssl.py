"""Engines "hubert" and "wav2vec2" on tiny random checkpoints saved to a temporary directory."""

from __future__ import annotations

import json
import math
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_audio_stage import _chunks
from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model

from avatarflow.contracts import messages as m
from avatarflow.contracts.errors import InvalidInput, MissingExtra
from avatarflow.dev.testing import of_type, run_test
from avatarflow_audio_encoder import build_stage, engines
from avatarflow_audio_encoder.engines import ssl

torch.set_num_threads(1)
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
TOL = dict(rtol=1e-5, atol=1e-5)  # the module's promise for chunked == whole
LOOKAHEAD = 1280  # 80 ms at 16 kHz


@pytest.fixture(scope="module")
def hubert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("hubert")
    HubertModel(HubertConfig(**TINY)).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def w2v_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wav2vec2 whose CNN has biases, so its output depends on loudness unless normalised."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("wav2vec2")
    config = Wav2Vec2Config(**TINY, conv_bias=True, feat_extract_norm="layer",
                            do_stable_layer_norm=True)
    Wav2Vec2Model(config).save_pretrained(path)
    _preprocessor(path, True)
    return path


def _preprocessor(path: Path, normalize: bool) -> None:
    (path / "preprocessor_config.json").write_text(json.dumps(
        {"feature_extractor_type": "Wav2Vec2FeatureExtractor", "sampling_rate": 16000,
         "do_normalize": normalize}))


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _speech(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """Voiced bursts (150 Hz and harmonics, 3 Hz on/off) over faint noise, as int16."""
    t = np.arange(round(sr * seconds)) / sr
    voice = sum(np.sin(2 * np.pi * 150 * h * t) / h for h in (1, 2, 3))
    noise = np.random.default_rng(seed).standard_normal(t.size) * 0.02
    return (6000 * (voice * (np.sin(2 * np.pi * 3 * t) > 0) + noise)).astype(np.int16)


def _stream(engine: ssl.SSLEngine, chunks: list[np.ndarray], sr: int = 16000,
            fps: float = 30.0) -> np.ndarray:
    s = engine.open_session(sr, fps)
    out = [f for c in chunks for f in s.push(c)] + s.flush()
    return np.stack(out)


def _split(pcm: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    cuts = np.cumsum(sizes)
    return np.split(pcm, cuts[cuts < pcm.size])


@pytest.mark.parametrize("kind", ["hubert", "wav2vec2"])
@pytest.mark.parametrize(("fps", "seconds"), [(30.0, 1.0), (30.0, 0.77), (25.0, 1.3),
                                              (25.0, 0.05)])
def test_one_hidden_size_vector_per_video_frame(kind: str, fps: float, seconds: float,
                                                hubert_dir: Path, w2v_dir: Path) -> None:
    engine = engines.create(kind, weights=str(hubert_dir if kind == "hubert" else w2v_dir))
    assert (engine.dim, engine.layout, engine.names) == (32, f"{kind}32", ())
    feats = _stream(engine, [_speech(seconds)], fps=fps)
    assert feats.shape == (math.ceil(round(seconds * fps, 6)), 32)
    assert feats.dtype == np.float32 and np.isfinite(feats).all()


@pytest.mark.parametrize("kind", ["hubert", "wav2vec2"])
@pytest.mark.parametrize(("fps", "block"), [(30.0, 2), (25.0, 3), (60.0, 1)])
def test_any_chunking_gives_the_whole_clip_frames(kind: str, fps: float, block: int,
                                                  hubert_dir: Path, w2v_dir: Path) -> None:
    engine = engines.create(kind, weights=str(hubert_dir if kind == "hubert" else w2v_dir),
                            block=block, context_ms=300)
    pcm = _speech(1.23)
    whole = _stream(engine, [pcm], fps=fps)
    odd = np.random.default_rng(3).integers(1, 900, size=200).tolist()
    for chunks in (_split(pcm, [320] * 200), _split(pcm, odd)):
        np.testing.assert_allclose(_stream(engine, chunks, fps=fps), whole, **TOL)
    assert not np.allclose(whole[5], whole[15])  # speech and silence differ


def test_frames_before_a_divergence_are_identical(hubert_dir: Path) -> None:
    """A frame reads at most one block and 80 ms past its end: streams that share that much
    audio agree on it, and it is emitted once that audio has arrived."""
    engine = engines.create("hubert", weights=str(hubert_dir), block=2)
    shared = _speech(1.0)
    a = np.concatenate((shared, _speech(0.5, seed=1)))
    b = np.concatenate((shared, _speech(0.5, seed=2) // 3))
    fa, fb = _stream(engine, [a]), _stream(engine, [b])
    settled = [i for i in range(len(fa)) if round((i // 2 + 1) * 2 * 16000 / 30) + LOOKAHEAD
               <= shared.size]
    assert len(settled) == 26
    np.testing.assert_allclose(fa[settled], fb[settled], **TOL)
    assert not np.allclose(fa[len(settled) + 2:], fb[len(settled) + 2:], **TOL)
    s = engine.open_session(16000, 30.0)
    assert len(s.push(shared)) == len(settled)


def test_same_audio_same_features_across_engines(hubert_dir: Path) -> None:
    pcm = _speech(0.8)
    one = engines.create("hubert", weights=str(hubert_dir))
    other = engines.create("hubert", weights=str(hubert_dir) + "/")
    assert np.array_equal(_stream(one, [pcm]), _stream(other, [pcm]))
    assert not np.array_equal(_stream(one, [pcm]), _stream(one, [pcm // 2 + 300]))


def test_layer_choice_and_learned_layer_weights(hubert_dir: Path, tmp_path: Path) -> None:
    pcm = _speech(0.6)

    def feats(path: Path, layers: str) -> np.ndarray:
        return _stream(engines.create("hubert", weights=str(path), layers=layers), [pcm])

    weighted, last, first = (feats(hubert_dir, x) for x in ("weighted", "last", "0"))
    assert not np.allclose(weighted, last, atol=1e-3)
    assert not np.allclose(weighted, first, atol=1e-3)
    np.testing.assert_allclose(weighted, (first + feats(hubert_dir, "1") + last) / 3, atol=1e-5)
    peaked_last = _copy(hubert_dir, tmp_path / "npy")
    np.save(peaked_last / "layer_weights.npy", np.array([-40.0, -40.0, 40.0]))
    np.testing.assert_allclose(feats(peaked_last, "weighted"), last, atol=1e-5)
    assert np.array_equal(feats(peaked_last, "0"), first)  # the file only weights "weighted"
    peaked_first = _copy(hubert_dir, tmp_path / "pt")
    torch.save(torch.tensor([40.0, -40.0, -40.0]), peaked_first / "layer_weights.pt")
    np.testing.assert_allclose(feats(peaked_first, "weighted"), first, atol=1e-5)
    np.save(_copy(hubert_dir, tmp_path / "bad") / "layer_weights.npy", np.zeros(5))
    with pytest.raises(InvalidInput, match="3 finite logits"):
        engines.create("hubert", weights=str(tmp_path / "bad"))


def test_a_saved_and_reloaded_checkpoint_gives_identical_features(hubert_dir: Path,
                                                                  tmp_path: Path) -> None:
    HubertModel.from_pretrained(hubert_dir, local_files_only=True).save_pretrained(tmp_path)
    pcm = _speech(0.7)
    assert np.array_equal(_stream(engines.create("hubert", weights=str(hubert_dir)), [pcm]),
                          _stream(engines.create("hubert", weights=str(tmp_path)), [pcm]))


def test_normalising_checkpoints_ignore_loudness(w2v_dir: Path, tmp_path: Path) -> None:
    raw = _copy(w2v_dir, tmp_path / "raw")
    _preprocessor(raw, False)
    pcm = (_speech(0.8) // 2) * 2  # even, so halving is exact
    for path, same in ((w2v_dir, True), (raw, False)):
        engine = engines.create("wav2vec2", weights=str(path))
        loud, quiet = _stream(engine, [pcm]), _stream(engine, [pcm // 2])
        assert np.allclose(loud, quiet, atol=1e-3) == same


def test_8khz_audio_is_resampled(hubert_dir: Path) -> None:
    engine = engines.create("hubert", weights=str(hubert_dir))
    narrow = _stream(engine, [_hum(1.0, 8000)], sr=8000)
    assert narrow.shape == (30, 32)
    chunked = _stream(engine, _split(_hum(1.0, 8000), [160] * 50), sr=8000)
    np.testing.assert_allclose(chunked, narrow, **TOL)
    wide = _stream(engine, [_hum(1.0, 16000)])  # the same sound: nothing above 4 kHz
    other = _stream(engine, [_speech(1.0)])
    assert np.abs(narrow - wide).max() < 0.1 * np.abs(other - wide).max()


def _hum(seconds: float, sr: int) -> np.ndarray:
    """Band-limited: two tones under a slow smooth swell, as int16."""
    t = np.arange(round(sr * seconds)) / sr
    tones = np.sin(2 * np.pi * 220 * t) + 0.5 * np.sin(2 * np.pi * 660 * t)
    return (5000 * tones * np.sin(np.pi * t / seconds) ** 2).astype(np.int16)


def test_options_are_checked(hubert_dir: Path, w2v_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="lookahead_ms.*0..80, got 81"):
        engines.create("hubert", weights=str(hubert_dir), lookahead_ms=81)
    with pytest.raises(InvalidInput, match="needs option 'weights'"):
        engines.create("hubert")
    with pytest.raises(InvalidInput, match=re.escape(f"'{tmp_path / 'nope'}' is not a directory")):
        engines.create("hubert", weights=str(tmp_path / "nope"))
    with pytest.raises(InvalidInput, match=re.escape(f"no loadable model config in {tmp_path}")):
        engines.create("wav2vec2", weights=str(tmp_path))
    with pytest.raises(InvalidInput, match="holds a 'hubert' model but engine 'wav2vec2'"):
        engines.create("wav2vec2", weights=str(hubert_dir))
    with pytest.raises(InvalidInput, match="holds a 'wav2vec2' model but engine 'hubert'"):
        engines.create("hubert", weights=str(w2v_dir))
    (tmp_path / "config.json").write_text((hubert_dir / "config.json").read_text())
    with pytest.raises(InvalidInput, match="cannot load the hubert model"):
        engines.create("hubert", weights=str(tmp_path))
    with pytest.raises(InvalidInput, match="'layers' must be .* 0..2, got '7'"):
        engines.create("hubert", weights=str(hubert_dir), layers="7")
    with pytest.raises(InvalidInput, match="float16 needs a cuda device"):
        engines.create("hubert", weights=str(hubert_dir), dtype="float16")


def test_missing_torch_or_transformers_names_the_neural_extra(
        hubert_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, ssl.__name__)
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingExtra, match=r"avatarflow\[neural\]"):
        engines.create("hubert", weights=str(hubert_dir))


def _session(sr: int = 16000, fps: float = 30.0) -> list[m.Message]:
    chunks = _chunks("s", 1.0, sr)
    return [m.SessionStart(session_id="s", sample_rate=sr, fps=fps), *chunks[:20],
            m.Interrupt(session_id="s", index=9), *chunks[20:], m.EndOfAudio(session_id="s")]


def test_the_stage_emits_hubert_features(hubert_dir: Path) -> None:
    msgs = _session(48000, 25.0)
    del msgs[21]  # no interrupt
    out = run_test(build_stage("hubert", weights=str(hubert_dir)), msgs)
    frames = of_type(out, m.AudioFeatures)
    assert [f.index for f in frames] == list(range(25))
    assert all(f.layout == "hubert32" and f.features.shape == (32,)
               and f.features.dtype == np.float32 and f.pts == f.index / 25.0 for f in frames)
    assert isinstance(out[-1], m.EndOfAudio) and out[-1].index == 25


def test_a_restored_session_continues_exactly(hubert_dir: Path) -> None:
    msgs = _session()

    def stage() -> object:
        return build_stage("hubert", weights=str(hubert_dir), context_ms=200)

    def features(out: list[m.Message]) -> list[tuple[int, np.ndarray]]:
        return [(f.index, f.features) for f in of_type(out, m.AudioFeatures)]

    whole = features(run_test(stage(), msgs))
    for k in (1, 12, 21, 22, len(msgs) - 2):
        first = stage()
        out = run_test(first, msgs[:k])
        data = first.snapshot("s")
        assert data is not None and len(data) < 4 * 16000 * 0.45 + 4000, (k, len(data))
        ssl.load.cache_clear()  # a replica that has not loaded the model yet
        fresh = stage()
        fresh.restore("s", data)
        out += run_test(fresh, msgs[k:])
        got = features(out)
        assert [i for i, _ in got] == [i for i, _ in whole]
        assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got, whole, strict=True)), k
