"""Engine profiles: one name picks every stage's engine, weights and options from ONE weights
root, so an operator points all services at the same directory (``AVATARFLOW_PROFILE`` and
``AVATARFLOW_WEIGHTS_ROOT``, ``avatarflow demo --profile NAME --weights ROOT``).

A root is laid out as the publishers lay out their downloads; ``liveportrait-joyvasa`` follows
JoyVASA's ``pretrained_weights/``::

    JoyVASA/motion_generator/<checkpoint>.pt        jdh-algo/JoyVASA
    JoyVASA/motion_template/motion_template.pkl     jdh-algo/JoyVASA
    chinese-hubert-base/                            TencentGameMate/chinese-hubert-base
        (or TencentGameMate:chinese-hubert-base/, as JoyVASA's README names it)
    liveportrait/base_models/*.pth                  KwaiVGI/LivePortrait
    liveportrait/retargeting_models/stitching_retargeting_module.pth

This table is the one place that maps a root onto engine options; each engine family checks
its own files (``Check``) for ``avatarflow weights check``. Standard library only: engines
and checks are named by import path and imported when used.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avatarflow.contracts.errors import InvalidInput
from avatarflow.runtime import registry
from avatarflow.runtime.weights import FileReport

HUBERT_ZH = ("chinese-hubert-base", "TencentGameMate:chinese-hubert-base")


@dataclass(frozen=True)
class StageChoice:
    """A stage's engine and its options; ``paths`` are options whose value is a directory
    under the root, given as candidates (the first that exists wins; "" is the root)."""

    engine: str
    paths: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    options: Mapping[str, str | int | float | bool] = field(default_factory=dict)


@dataclass(frozen=True)
class Check:
    """An engine family's check of its files: ``function`` ("module:name") takes the
    directory ``path`` resolves to (plus ``options``) and returns a ``FileReport`` per file,
    paths relative to that directory."""

    name: str
    function: str
    path: tuple[str, ...] = ("",)
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    stages: Mapping[str, StageChoice]  # stages it does not name run their defaults
    checks: tuple[Check, ...]
    mode: str = ""  # the output mode its renderer is made for ("" = any)

    def directory(self, root: str | Path, candidates: tuple[str, ...]) -> Path:
        """The first candidate under ``root`` that exists, else the first one (whose
        absence the engine or check then reports)."""
        base = Path(root)
        for rel in candidates:
            if (base / rel).exists():
                return base / rel
        return base / candidates[0]

    def stage_options(self, stage: str, root: str | Path) -> tuple[str, dict[str, Any]]:
        """(engine, options) of ``stage`` under ``root``; ("", {}) for a stage left to its
        default."""
        choice = self.stages.get(stage)
        if choice is None:
            return "", {}
        options: dict[str, Any] = {k: str(self.directory(root, c)) for k, c in choice.paths.items()}
        options.update(choice.options)
        return choice.engine, options

    def check(self, root: str | Path) -> list[tuple[Check, list[FileReport]]]:
        """Every check's reports, paths relative to ``root``; a check that cannot run (its
        engine's package is not installed) reports that as an error."""
        out = []
        for c in self.checks:
            where = self.directory(root, c.path)
            rel = where.relative_to(root).as_posix() if where != Path(root) else ""
            try:
                module, _, name = c.function.partition(":")
                reports = getattr(importlib.import_module(module), name)(where, **c.options)
            except ImportError as exc:
                reports = [FileReport(path=".", found=False,
                                      error=f"cannot check: {exc} (install the engine's extra)")]
            for r in reports:
                r.path = f"{rel}/{r.path}".removesuffix("/.") if rel else r.path
                if not r.found and not r.error and not where.exists() and len(c.path) > 1:
                    r.error = "no folder " + " or ".join(f"{p}/" for p in c.path)
            out.append((c, reports))
        return out


PROFILES: dict[str, Profile] = {p.name: p for p in (
    Profile(
        "liveportrait-joyvasa",
        "JoyVASA motion (HuBERT audio) rendered by LivePortrait, head mode",
        stages={
            # JoyVASA runs its HuBERT inside the motion model, per window, with the encoder
            # weights of its own checkpoint: the audio-encoder passes 16 kHz audio on.
            "audio-encoder": StageChoice("pcm"),
            "motion-gen": StageChoice("joyvasa", paths={"weights": ("",)}),
            "renderer": StageChoice("neural", paths={"weights": ("liveportrait",)},
                                    options={"arch": "liveportrait"}),
        },
        checks=(
            Check("JoyVASA motion generator",
                  "avatarflow_motion_gen.engines.joyvasa.layout:check_weights"),
            Check("HuBERT audio model (JoyVASA's audio encoder)",
                  "avatarflow_audio_encoder.engines.ssl_layout:check_weights", HUBERT_ZH,
                  {"hidden_size": 768}),
            Check("LivePortrait renderer",
                  "avatarflow_renderer.engines.neural_layout:check_weights", ("liveportrait",)),
        ),
        mode="head",
    ),
)}


def profile(name: str) -> Profile:
    """The profile called ``name``; InvalidInput names the known ones otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        raise InvalidInput(f"unknown profile {name!r}; profiles: {', '.join(PROFILES)}"
                           ) from None


def environment(name: str, root: str | Path) -> dict[str, str]:
    """The variables that select profile ``name`` on ``root`` for every service."""
    profile(name)
    return {"AVATARFLOW_PROFILE": name, "AVATARFLOW_WEIGHTS_ROOT": str(Path(root).resolve())}


def validate(name: str, root: str | Path) -> Profile:
    """The profile, after checking that the root is a directory (not its files: that is
    ``avatarflow weights check``)."""
    p = profile(name)
    if not str(root):
        raise InvalidInput(f"profile {name!r} needs a weights root (AVATARFLOW_WEIGHTS_ROOT, "
                           "--weights)")
    if not Path(root).is_dir():
        raise InvalidInput(f"weights root {root} of profile {name!r} is not a directory")
    unknown = set(p.stages) - set(registry.STAGE_NAMES)
    if unknown:  # a table mistake, caught by the tests
        raise InvalidInput(f"profile {name!r} names unknown stages {sorted(unknown)}")
    return p
