"""Settings from the environment: engine choice and engine options are configuration only."""

from __future__ import annotations

import pytest

from avatarflow.contracts.errors import InvalidInput
from avatarflow.runtime.settings import Settings


def test_engine_options_come_from_the_service_prefix_and_are_typed() -> None:
    env = {"AVATARFLOW_MOTION_GEN_ENGINE": "diffusion",
           "AVATARFLOW_MOTION_GEN_WEIGHTS": "/models/motion",
           "AVATARFLOW_DEVICE": "cuda:0",
           "AVATARFLOW_MOTION_GEN_ENGINE_OPTIONS": "steps=6, guidance=2.5,preset=full,fp=true"}
    s = Settings.load("motion-gen", environ=env)
    assert s.engine == "diffusion"
    assert s.engine_kwargs() == {"weights": "/models/motion", "device": "cuda:0", "steps": 6,
                                 "guidance": 2.5, "preset": "full", "fp": True}
    # Another service sees the shared device but not motion-gen's own settings.
    other = Settings.load("renderer", environ=env)
    assert other.engine == "" and other.engine_kwargs() == {"device": "cuda:0"}


def test_nothing_set_passes_no_options() -> None:
    assert Settings.load("renderer", environ={}).engine_kwargs() == {}


def test_a_malformed_engine_option_names_itself() -> None:
    s = Settings.load("renderer", environ={"AVATARFLOW_ENGINE_OPTIONS": "steps"})
    with pytest.raises(InvalidInput, match="'steps' is not name=value"):
        s.engine_kwargs()
