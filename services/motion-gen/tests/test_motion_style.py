"""A speaking-style reference steers the signal engine and survives a crash takeover."""

from __future__ import annotations

import numpy as np
import pytest
from motion_gen_synth import FPS, LAYOUT, speech
from test_motion_signal import coef, run
from test_motion_snapshot import MAX_SNAPSHOT, _same
from test_motion_stage import SID, features

from avatarflow.contracts import messages as m
from avatarflow.contracts.controls import Controls
from avatarflow.contracts.motion import EXPR, EXPRESSIONS
from avatarflow.contracts.style import StyleReference
from avatarflow.dev.testing import of_type, run_test
from avatarflow_motion_gen import build_stage
from avatarflow_motion_gen.engines import create


def reference(seed: int = 0, **levels: tuple[float, float]) -> np.ndarray:
    """90 frames; ``name=(mean, spread)`` sets a coefficient's level and its range of motion."""
    rng = np.random.default_rng(seed)
    x = np.zeros((90, len(EXPRESSIONS)), dtype=np.float32)
    for name, (mean, spread) in levels.items():
        wave = np.sin(np.linspace(0.0, 12.0, len(x)) + rng.uniform(0, 6))
        x[:, EXPR[name]] = np.clip(mean + spread * np.sqrt(2.0) * wave, 0.0 if name ==
                                   "jaw_open" else -1.0, 1.0)
    return x


def styled(frames: np.ndarray, ref: np.ndarray | None, seed: int = 3) -> list:
    session = create("signal").open_session(FPS, Controls(seed=seed), LAYOUT)
    session.set_reference(ref)
    return session.push(list(frames))


def test_a_smiling_reference_smiles_more() -> None:
    sp = speech(10.0, seed=1)
    plain = coef(run(sp.features, Controls(seed=3)), "smile")
    smiling = coef(styled(sp.features, reference(smile=(0.5, 0.1), jaw_open=(0.27, 0.3))),
                   "smile")
    assert smiling.mean() > plain.mean() + 0.3


def test_jaw_range_follows_the_reference_and_silence_still_closes_the_mouth() -> None:
    sp = speech(20.0, seed=2)
    plain = coef(styled(sp.features, None), "jaw_open")
    small = coef(styled(sp.features, reference(jaw_open=(0.05, 0.03), smile=(0.4, 0.0))),
                 "jaw_open")
    wide = coef(styled(sp.features, reference(jaw_open=(0.4, 0.5))), "jaw_open")
    assert np.ptp(small) < 0.5 * np.ptp(plain)
    assert np.percentile(wide, 95) > np.percentile(plain, 95) + 0.1
    for jaw in (small, wide):
        assert np.mean(jaw[sp.silent] < 0.05) >= 0.95
        assert np.corrcoef(jaw, sp.envelope)[0, 1] >= 0.5


def test_no_reference_leaves_the_engine_as_it_was() -> None:
    sp = speech(4.0, seed=5)
    base = run(sp.features, Controls(seed=3))
    cleared = create("signal").open_session(FPS, Controls(seed=3), LAYOUT)
    cleared.set_reference(reference(smile=(0.5, 0.1)))
    cleared.set_reference(None)
    out = cleared.push(list(sp.features))
    assert all(np.array_equal(a.expression, b.expression) for a, b in zip(base, out, strict=True))


def _messages(ref: np.ndarray | None) -> list[m.Message]:
    feats = features(speech(4.0, seed=4).features)
    style = None if ref is None else StyleReference(ref, 30.0)
    return [m.SessionStart(session_id=SID, fps=FPS, controls=Controls(seed=7), style=style),
            *feats[:50], m.Interrupt(session_id=SID), *feats[50:],
            m.EndOfAudio(session_id=SID, index=len(feats))]


@pytest.mark.parametrize("k", [1, 2, 30, 80])
def test_the_style_survives_a_snapshot_and_restore(k: int) -> None:
    msgs = _messages(reference(smile=(0.6, 0.1), jaw_open=(0.1, 0.05)))
    whole = run_test(build_stage(), msgs)
    plain = run_test(build_stage(), _messages(None))
    smile = EXPR["smile"]
    assert (np.mean([f.expression[smile] for f in of_type(whole, m.MotionFrame)])
            > np.mean([f.expression[smile] for f in of_type(plain, m.MotionFrame)]) + 0.3)
    first = build_stage()
    out = run_test(first, msgs[:k])
    data = first.snapshot(SID)
    assert data is not None and len(data) < MAX_SNAPSHOT, len(data)
    fresh = build_stage()
    fresh.restore(SID, data)
    out += run_test(fresh, msgs[k:])
    assert _same(out, whole), f"the style was lost in a snapshot at message {k}"
