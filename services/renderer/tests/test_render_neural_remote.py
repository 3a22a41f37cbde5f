"""The "neural" engine with ``triton_url``: only the keypoint part of the network is built
and loaded here (the generator runs on Triton; tests/integration/test_triton.py renders
through a real server)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from neural_testkit import (
    FILES,
    motion,
    one_thread,  # noqa: F401 - an autouse fixture
    randomise,
    synthetic_avatar,
    tiny_weights,
)

from avatarflow.contracts.errors import Unavailable
from avatarflow.dev.net import free_port
from avatarflow_renderer.engines import create
from avatarflow_renderer.engines.neural_net import RendererNetwork, UpperBodyNetwork
from avatarflow_renderer.models import liveportrait as lp
from avatarflow_renderer.models.upperbody import UpperBodyConfig, UpperBodyRenderer

pytest.importorskip("tritonclient")
GENERATOR_FILES = ("appearance_feature_extractor", "warping_module", "spade_generator")


def _refuse(self, *args, **kwargs):
    """Stands in for a generator module's constructor: building one fails the test."""
    raise AssertionError(f"{type(self).__name__} was built on the renderer pod")


def nowhere() -> str:
    return f"127.0.0.1:{free_port()}"


def test_liveportrait_on_triton_builds_only_the_keypoint_part(tmp_path, monkeypatch):
    here = create("neural", weights=str(tiny_weights()))
    weights = tmp_path / "liveportrait"
    shutil.copytree(tiny_weights(), weights)
    for name in GENERATOR_FILES:  # the generator's checkpoints are not even read
        (weights / FILES[name]).unlink()
    with monkeypatch.context() as patch:
        for cls in (lp.AppearanceEncoder, lp.FeatureWarper, lp.SpadeGenerator):
            patch.setattr(cls, "__init__", _refuse)
        remote = create("neural", weights=str(weights), triton_url=nowhere())
    assert not isinstance(remote.network, RendererNetwork)
    assert sorted(remote.network.parts) == ["eye", "lip", "motion", "stitching"]

    # The keypoints are computed here, as the in-process engine computes them.
    avatar = synthetic_avatar("k", seed=4)
    frame = motion(expr={"jaw_open": 0.6}, rotation=(0.1, -0.2, 0.0), scale=1.1)
    source, expected = remote.sources.get(avatar), here.sources.get(avatar)
    assert torch.equal(source.kp, expected.kp)
    ours, _ = remote.driver.drive([avatar], [source], [frame])
    theirs, _ = here.driver.drive([avatar], [expected], [frame])
    assert torch.equal(ours, theirs)

    with pytest.raises(Unavailable) as info:  # no Triton at that address
        remote.render(avatar, frame)
    assert info.value.retryable
    remote.close()
    here.close()


def test_upperbody_on_triton_reads_only_the_config(tmp_path, monkeypatch):
    model = UpperBodyRenderer(UpperBodyConfig.preset("small"))
    randomise(model, seed=1)
    full = UpperBodyNetwork.save(model, tmp_path / "full")
    weights = tmp_path / "config-only"
    weights.mkdir()
    shutil.copy(full / "config.yaml", weights / "config.yaml")
    monkeypatch.setattr(UpperBodyRenderer, "__init__", _refuse)
    remote = create("neural", weights=str(weights), arch="upperbody", triton_url=nowhere())
    assert not isinstance(remote.network, RendererNetwork)
    assert (remote.network.source_size, remote.network.num_kp) == ((64, 96), 62)
    avatar = synthetic_avatar("u", "upper-body", 256, 384)
    kp, hands = remote.driver.drive([avatar], [remote.sources.get(avatar)],
                                    [motion(hand_shift=(0.0, -1.0))])
    assert kp.shape == (1, 62, 3) and hands.shape == (1, 3, 96, 64)
    assert np.isfinite(kp.numpy()).all() and float(hands.max()) == 1.0
    remote.close()
