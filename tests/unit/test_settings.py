"""Settings from the environment: engine choice and engine options are configuration only."""

from __future__ import annotations

import re

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


def _profile_env(root, **more: str) -> dict[str, str]:
    return {"AVATARFLOW_PROFILE": "liveportrait-joyvasa", "AVATARFLOW_WEIGHTS_ROOT": str(root),
            **more}


def test_a_profile_picks_every_stage_from_one_weights_root(tmp_path) -> None:
    env = _profile_env(tmp_path)
    got = {s: (Settings.load(s, environ=env).engine, Settings.load(s, environ=env).engine_kwargs())
           for s in ("audio-encoder", "motion-gen", "renderer", "refiner")}
    assert got == {
        "audio-encoder": ("pcm", {}),
        "motion-gen": ("joyvasa", {"weights": str(tmp_path)}),
        "renderer": ("neural", {"weights": str(tmp_path / "liveportrait"), "arch": "liveportrait"}),
        "refiner": ("", {})}
    # The gateway runs no engine: the profile does not concern it.
    assert Settings.load("gateway", environ=env).engine == ""


def test_explicit_stage_settings_win_over_the_profile(tmp_path) -> None:
    env = _profile_env(tmp_path, AVATARFLOW_RENDERER_ENGINE_OPTIONS="cache=4,arch=upperbody",
                       AVATARFLOW_RENDERER_WEIGHTS="/elsewhere",
                       AVATARFLOW_MOTION_GEN_ENGINE="signal")
    renderer = Settings.load("renderer", environ=env)
    assert renderer.engine == "neural"
    assert renderer.engine_kwargs() == {"weights": "/elsewhere", "arch": "upperbody", "cache": 4}
    # Another engine than the profile's takes nothing from it.
    motion = Settings.load("motion-gen", environ=env)
    assert (motion.engine, motion.engine_kwargs()) == ("signal", {})
    # A command-line override is explicit too.
    assert Settings.load("motion-gen", environ=_profile_env(tmp_path),
                         engine="diffusion").engine_kwargs() == {}


@pytest.mark.parametrize(("env", "message"), [
    ({"AVATARFLOW_PROFILE": "nope"}, "unknown profile 'nope'; profiles: liveportrait-joyvasa"),
    ({"AVATARFLOW_PROFILE": "liveportrait-joyvasa"}, "needs a weights root"),
    ({"AVATARFLOW_PROFILE": "liveportrait-joyvasa", "AVATARFLOW_WEIGHTS_ROOT": "/no/such/dir"},
     "weights root /no/such/dir of profile 'liveportrait-joyvasa' is not a directory"),
])
def test_a_bad_profile_stops_the_service_with_a_message(env: dict[str, str],
                                                        message: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)):
        Settings.load("renderer", environ=env)
