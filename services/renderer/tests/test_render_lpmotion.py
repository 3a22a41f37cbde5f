"""Motion in LivePortrait's space (``MotionFrame.liveportrait``, what JoyVASA generates) drives
the neural renderer as JoyVASA's own LivePortrait pipeline does, relative to the session's
first such frame, which survives barge-in and session takeover.

``fixtures/joyvasa_drive.npz`` holds what JoyVASA's ``LivePortraitPipeline.execute`` (its public
code, run outside this repository with the tiny random weights of ``neural_testkit``) handed to
``warp_decode`` for seven random motion frames, under its inference config's defaults and under
the flags its ``inference.py`` runs with; plus the source keypoint info it computed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from neural_testkit import (
    motion,
    one_thread,  # noqa: F401 - an autouse fixture
    randomise,
    synthetic_avatar,
    tiny_weights,
)

from avatarflow.avatars.store import AvatarStore
from avatarflow.contracts import messages as m
from avatarflow.contracts.errors import InvalidInput
from avatarflow.dev.testing import of_type, run_test
from avatarflow_renderer import build_stage
from avatarflow_renderer.engines import create
from avatarflow_renderer.engines import neural_kp as kpm
from avatarflow_renderer.engines import neural_lpmotion as lpm
from avatarflow_renderer.engines.neural_drive import LivePortraitSource
from avatarflow_renderer.engines.neural_keypoint_net import KeypointNetwork
from avatarflow_renderer.engines.neural_net import UpperBodyNetwork
from avatarflow_renderer.models.upperbody import UpperBodyConfig, UpperBodyRenderer

FIXTURE = Path(__file__).parent / "fixtures" / "joyvasa_drive.npz"
TOL = 1e-5


def block(seed: int, yaw: float = 0.0) -> m.LivePortraitMotion:
    g = np.random.default_rng(seed)
    return m.LivePortraitMotion(exp=g.normal(0, 0.02, (21, 3)).astype(np.float32),
                                scale=float(1 + g.normal(0, 0.03)),
                                t=g.normal(0, 0.01, 3).astype(np.float32),
                                pitch=float(g.uniform(-5, 5)), yaw=yaw, roll=0.0)


def lp_frame(session: str, index: int, lp: m.LivePortraitMotion | None) -> m.MotionFrame:
    return dataclasses.replace(motion(session, index), liveportrait=lp)


@pytest.mark.parametrize("drive", ["joyvasa", "joyvasa-cli"])
def test_driving_keypoints_equal_joyvasas_own(drive):
    f = dict(np.load(FIXTURE))
    net = KeypointNetwork.load(tiny_weights())
    t = {k: torch.from_numpy(v) for k, v in f.items()}
    info = {"kp": t["src_kp"], "exp": t["src_exp"], "pitch": t["src_pitch"],
            "yaw": t["src_yaw"], "roll": t["src_roll"], "t": t["src_t"], "scale": t["src_scale"]}
    x_s = kpm.source_keypoints(info)
    flags = lpm.drive_named(drive)
    source = LivePortraitSource(
        kp=x_s, canonical=info["kp"], expression=info["exp"],
        rot=kpm.rotation(info["pitch"], info["yaw"], info["roll"]), scale=info["scale"],
        shift=info["t"], lip=float(f["src_lip_ratio"]), eyes=(0.3, 0.3),
        lip_closed=lpm.lip_closing_delta(net, x_s, float(f["src_lip_ratio"]), flags))
    blocks = [m.LivePortraitMotion(exp=f["exp"][i], scale=float(f["scale"][i]), t=f["t"][i],
                                   pitch=float(f["pitch"][i]), yaw=float(f["yaw"][i]),
                                   roll=float(f["roll"][i])) for i in range(len(f["exp"]))]
    ours = lpm.driving_keypoints(net, [source] * len(blocks), blocks, [blocks[0]] * len(blocks),
                                 flags)
    expected = t[f"kp_driving_{drive.replace('-', '_')}"]
    assert float((x_s - t["x_s"]).abs().max()) < TOL
    assert (source.lip_closed is not None) == (drive == "joyvasa")  # the source mouth is open
    worst = float((ours - expected).abs().max())
    print(f"driving keypoints vs JoyVASA's pipeline ({drive}): max abs diff {worst:.2e}, "
          f"reference std {float(expected.std()):.3f}")
    assert worst <= TOL


@pytest.fixture(scope="module")
def stage():
    store = AvatarStore()
    store.put(synthetic_avatar("lp", seed=2))
    s = build_stage("neural", store=store, weights=str(tiny_weights()))
    yield s
    s.close()


def start(session: str) -> m.SessionStart:
    return m.SessionStart(session_id=session, avatar_id="lp", mode="head", width=512,
                          height=512)


def images(out: list[m.Message]) -> list[np.ndarray]:
    return [f.image.rgb().astype(np.int16) for f in of_type(out, m.RenderedFrame)]


def test_block_drives_the_picture(stage):
    b0, b1 = block(0), block(1, yaw=12.0)
    out = run_test(stage, [start("a"), lp_frame("a", 0, b0), lp_frame("a", 1, b1),
                           lp_frame("a", 2, None), lp_frame("a", 3, b0)])
    first, moved, plain, back = images(out)
    assert first.shape == (512, 512, 3)
    assert np.abs(moved - plain).max() > 10  # the block changes the picture
    assert np.array_equal(first, back)  # the anchor's own motion renders as the first frame
    # A frame without the block renders as it always did.
    assert np.array_equal(plain, stage.engine.render(stage.session("a"), lp_frame("a", 2, None))
                          .astype(np.int16))
    # The runner saves the session once its anchor is set, and not for every frame after.
    assert stage.state_changed_by(lp_frame("a", 3, b0))
    assert not stage.state_changed_by(lp_frame("a", 4, b1))


def test_anchor_survives_takeover_and_barge_in(stage):
    b0, b1, b2 = block(0), block(1, yaw=8.0), block(2, yaw=-8.0)
    whole = images(run_test(stage, [start("w"), lp_frame("w", 0, b0), lp_frame("w", 1, b1),
                                    m.Interrupt(session_id="w"), lp_frame("w", 2, b2)]))
    run_test(stage, [start("t"), lp_frame("t", 0, b0), lp_frame("t", 1, b1)])
    data = stage.snapshot("t")
    assert data is not None and len(data) < 2000
    other = build_stage("neural", store=stage.store, weights=str(tiny_weights()))
    try:
        other.restore("t", data)
        taken = images(run_test(other, [lp_frame("t", 2, b2)]))
    finally:
        other.close()
    assert np.array_equal(taken[0], whole[2])
    # Anchored at b1 instead, the same motion is another picture: the anchor is what was kept.
    later = images(run_test(stage, [start("x"), lp_frame("x", 0, b1), lp_frame("x", 1, b2)]))
    assert np.abs(later[1] - whole[2]).max() > 10


def test_batch_of_block_and_hybrid_frames_equals_one_by_one(stage):
    engine = stage.engine
    avatar = stage.store.get(stage.session("a").key)
    items = [(avatar, lp_frame("p", 5, block(3, yaw=5.0))), (avatar, lp_frame("q", 5, None)),
             (avatar, lp_frame("r", 5, block(4)))]
    anchors = [block(0), None, None]
    batched = engine.frames(items, anchors)
    single = torch.cat([engine.frames([it], [a]) for it, a in zip(items, anchors, strict=True)])
    assert float((batched - single).abs().max()) < 1e-5


def test_keypoints_on_triton_path_are_the_local_ones(tmp_path):
    pytest.importorskip("tritonclient")
    from avatarflow.dev.net import free_port

    here = create("neural", weights=str(tiny_weights()))
    remote = create("neural", weights=str(tiny_weights()),
                    triton_url=f"127.0.0.1:{free_port()}")
    avatar = synthetic_avatar("k", seed=4)
    frame, anchor = lp_frame("s", 3, block(5, yaw=6.0)), block(6)
    ours, _ = remote.driver.drive([avatar], [remote.sources.get(avatar)], [frame], [anchor])
    theirs, _ = here.driver.drive([avatar], [here.sources.get(avatar)], [frame], [anchor])
    assert torch.equal(ours, theirs)
    remote.close()
    here.close()


def test_upperbody_ignores_the_block(tmp_path):
    model = UpperBodyRenderer(UpperBodyConfig.preset("small"))
    randomise(model, seed=5)
    engine = create("neural", weights=str(UpperBodyNetwork.save(model, tmp_path)),
                    arch="upperbody")
    avatar = synthetic_avatar("u", mode="upper-body", width=512, height=768)
    with_block = engine.render(avatar, lp_frame("u", 0, block(7, yaw=10.0)), block(0))
    assert np.array_equal(with_block, engine.render(avatar, lp_frame("u", 0, None)))
    engine.close()


def test_drive_option_is_checked():
    with pytest.raises(InvalidInput, match="unknown liveportrait_drive 'joy': one of joyvasa"):
        create("neural", weights=str(tiny_weights()), liveportrait_drive="joy")
