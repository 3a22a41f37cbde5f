"""The service registry is the one list of services: the pipeline it declares is connected end
to end, every declared package, engine, server and extra exists, and stages are built from it
the same way embedded and distributed."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import pytest

from avatarflow.cli.serve import MODULES, entry_point
from avatarflow.contracts.errors import InvalidInput
from avatarflow.runtime import registry
from avatarflow.runtime.build import build_stage, build_stages
from avatarflow.runtime.registry import AUDIO, FRAMES, PIPELINE, SERVICES
from avatarflow.telemetry import tracing

ROOT = Path(__file__).resolve().parents[2]


def test_the_pipeline_turns_audio_into_frames() -> None:
    topics = [PIPELINE[0].input, *(spec.output for spec in PIPELINE)]
    assert topics[0] == AUDIO and topics[-1] == FRAMES
    assert [spec.input for spec in PIPELINE[1:]] == [spec.output for spec in PIPELINE[:-1]]
    assert len(set(topics)) == len(topics)  # no stage reads what a later one writes


def test_services_are_distinct() -> None:
    for field in ("name", "package", "port", "metrics_port"):
        values = [getattr(s, field) for s in SERVICES]
        assert len(set(values)) == len(values), field
    assert len({spec.group for spec in PIPELINE}) == len(PIPELINE)


@pytest.mark.parametrize("spec", SERVICES, ids=lambda s: s.name)
def test_each_declaration_points_at_what_exists(spec: registry.ServiceSpec) -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert spec.extra in extras
    assert tracing.SPAN_NAMES[spec.name] == spec.span and spec.span
    assert MODULES[spec.name] == spec.server
    assert callable(entry_point(spec.name))
    if isinstance(spec, registry.StageSpec):
        package = importlib.import_module(spec.package)
        assert callable(package.build_stage)
        engines = importlib.import_module(f"{spec.package}.engines").ENGINES
        assert spec.engine in engines


def test_unknown_names_say_which_exist() -> None:
    with pytest.raises(InvalidInput, match="audio-encoder, motion-gen"):
        registry.stage("gateway")
    with pytest.raises(InvalidInput, match="gateway, audio-encoder"):
        registry.service("mixer")
    with pytest.raises(InvalidInput, match="unknown stage"):
        build_stages({"mixer": "x"})


def test_stages_that_work_on_portraits_share_one_store_when_embedded() -> None:
    stages = build_stages()
    try:
        assert [type(s).__module__.split(".")[0] for s in stages] == [
            spec.package for spec in PIPELINE]
        stores = {id(s.store) for s, spec in zip(stages, PIPELINE, strict=True) if spec.avatars}
        assert len(stores) == 1
        assert not any(hasattr(s, "store") for s, spec in zip(stages, PIPELINE, strict=True)
                       if not spec.avatars)
    finally:
        for s in stages:
            s.close()


def test_an_unknown_engine_names_the_stages_engines() -> None:
    with pytest.raises(InvalidInput, match="choose one of warp"):
        build_stage("renderer", "nerf")
