"""Engine profiles: the table names real stages, engines and checks; a profile resolves a
weights root the way JoyVASA's README lays it out; the audio model folder's check reads
checkpoints as transformers does and names what does not fit."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest

from avatarflow.contracts.errors import InvalidInput
from avatarflow.runtime import profiles, registry

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")


@pytest.mark.parametrize("name", sorted(profiles.PROFILES))
def test_a_profile_names_real_stages_and_checks(name: str) -> None:
    p = profiles.PROFILES[name]
    assert set(p.stages) <= set(registry.STAGE_NAMES)
    for check in p.checks:
        module, _, function = check.function.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), check.function
    for stage, choice in p.stages.items():
        table = importlib.import_module(f"{registry.stage(stage).package}.engines").ENGINES
        if choice.engine not in table:
            pytest.skip(f"{stage} engine {choice.engine!r} is not registered yet")


def test_the_first_existing_folder_is_chosen(tmp_path: Path) -> None:
    p = profiles.profile("liveportrait-joyvasa")
    names = profiles.HUBERT_ZH
    assert p.directory(tmp_path, names) == tmp_path / "chinese-hubert-base"  # none exists
    (tmp_path / "TencentGameMate:chinese-hubert-base").mkdir()  # JoyVASA README's name
    assert p.directory(tmp_path, names) == tmp_path / "TencentGameMate:chinese-hubert-base"
    assert p.stage_options("renderer", tmp_path) == (
        "neural", {"weights": str(tmp_path / "liveportrait"), "arch": "liveportrait"})
    assert p.stage_options("refiner", tmp_path) == ("", {})


def test_environment_and_validation(tmp_path: Path) -> None:
    env = profiles.environment("liveportrait-joyvasa", tmp_path)
    assert env == {"AVATARFLOW_PROFILE": "liveportrait-joyvasa",
                   "AVATARFLOW_WEIGHTS_ROOT": str(tmp_path.resolve())}
    with pytest.raises(InvalidInput, match="unknown profile 'x'; profiles: liveportrait-joyvasa"):
        profiles.environment("x", tmp_path)
    with pytest.raises(InvalidInput, match="is not a directory"):
        profiles.validate("liveportrait-joyvasa", tmp_path / "absent")


def _hubert_folder(root: Path, hidden: int, *, head: bool, old_norm: bool) -> Path:
    """A tiny HuBERT folder; ``head``: keys prefixed ``hubert.`` plus an ``lm_head`` (as a
    CTC checkpoint); ``old_norm``: weight norm saved as weight_g / weight_v."""
    config = transformers.HubertConfig(
        hidden_size=hidden, num_hidden_layers=1, num_attention_heads=4, intermediate_size=32,
        conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    model = transformers.HubertModel(config)
    state = {}
    for key, value in model.state_dict().items():
        if old_norm:
            key = key.replace("parametrizations.weight.original0", "weight_g").replace(
                "parametrizations.weight.original1", "weight_v")
        state[("hubert." if head else "") + key] = value
    if head:
        state["lm_head.weight"] = torch.zeros(10, hidden)
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps(config.to_dict()))
    torch.save(state, root / "pytorch_model.bin")
    return root


def test_audio_folder_check_reads_checkpoints_as_transformers_does(tmp_path: Path) -> None:
    from avatarflow_audio_encoder.engines.ssl_layout import check_weights

    folder = _hubert_folder(tmp_path / "wav", 64, head=True, old_norm=True)
    (report,) = check_weights(folder, hidden_size=64)
    assert report.ok and report.path == "pytorch_model.bin" and report.parameters > 0


def test_audio_folder_check_names_a_wrong_width_and_missing_weights(tmp_path: Path) -> None:
    from avatarflow_audio_encoder.engines.ssl_layout import check_weights

    folder = _hubert_folder(tmp_path / "wav", 64, head=False, old_norm=False)
    config, weights = check_weights(folder, hidden_size=768)
    assert config.mismatched == ["hidden_size: file 64, network 768"] and weights.ok
    (folder / "pytorch_model.bin").unlink()
    config, weights = check_weights(folder, hidden_size=768)
    assert not weights.found
    assert weights.path == "model.safetensors or pytorch_model.bin"
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (config,) = check_weights(folder)
    assert re.search("model_type 'bert'; expected one of hubert, wav2vec2", config.error)


def test_the_local_cluster_passes_the_profile_to_every_service(tmp_path: Path) -> None:
    from avatarflow.dev.cluster import LocalCluster

    cluster = LocalCluster(profile="liveportrait-joyvasa", weights_root=tmp_path,
                           env={"AVATARFLOW_RENDERER_ENGINE_OPTIONS": "cache=2"},
                           log_dir=tmp_path / "logs")
    assert cluster.env == {"AVATARFLOW_PROFILE": "liveportrait-joyvasa",
                           "AVATARFLOW_WEIGHTS_ROOT": str(tmp_path.resolve()),
                           "AVATARFLOW_RENDERER_ENGINE_OPTIONS": "cache=2"}
    with pytest.raises(InvalidInput, match="is not a directory"):  # before any process starts
        LocalCluster(profile="liveportrait-joyvasa", weights_root=tmp_path / "absent")


@pytest.mark.parametrize("command", ["up", "demo"])
def test_weights_without_a_profile_is_refused(command: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from avatarflow.cli.main import main

    args = ["--image", "x.png", "--audio", "x.wav", "--out", "x.mp4"] if command == "demo" else []
    assert main([command, *args, "--weights", str(tmp_path)]) == 2
    assert "--weights is the root of a profile: name it with --profile" in capsys.readouterr().err
