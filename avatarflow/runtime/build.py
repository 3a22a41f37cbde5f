"""Stage construction from the registry, one way for both modes: the embedded pipeline builds
every stage with one shared in-memory avatar store, a stage service builds its own with a
Redis-backed one."""

from __future__ import annotations

import importlib
from typing import Any

from avatarflow.avatars.store import AvatarStore
from avatarflow.contracts.errors import InvalidInput
from avatarflow.runtime import registry
from avatarflow.runtime.stage import Stage


def build_stage(name: str, engine: str = "", *, store: AvatarStore | None = None,
                **options: Any) -> Stage:
    """Stage ``name`` with ``engine`` (empty = the stage's default) and engine ``options``.

    A stage that works on portraits (``StageSpec.avatars``) gets ``store``, or a fresh
    in-memory one; the others never see it.
    """
    spec = registry.stage(name)
    if spec.avatars:
        options["store"] = store if store is not None else AvatarStore()
    module = importlib.import_module(spec.package)
    stage: Stage = module.build_stage(engine or spec.engine, **options)
    return stage


def build_stages(engines: dict[str, str] | None = None,
                 options: dict[str, dict[str, Any]] | None = None) -> list[Stage]:
    """Every stage in pipeline order with its chosen engine (``engines`` by stage name, the
    defaults otherwise); the stages that work on portraits share one avatar store, so an
    analysis made by one is reused by the next."""
    unknown = set(engines or {}).union(options or {}) - set(registry.STAGE_NAMES)
    if unknown:
        raise InvalidInput(f"unknown stage(s) {sorted(unknown)}; "
                           f"stages: {list(registry.STAGE_NAMES)}")
    store = AvatarStore()
    return [build_stage(spec.name, (engines or {}).get(spec.name, ""), store=store,
                        **(options or {}).get(spec.name, {}))
            for spec in registry.PIPELINE]
