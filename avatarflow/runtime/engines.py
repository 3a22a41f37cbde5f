"""Engines selected by name: each service keeps a table of ``name -> "module:Class"`` and
imports the chosen one lazily, so a missing optional dependency fails with the extra to
install and switching engines is a config change only."""

from __future__ import annotations

import importlib
from typing import Any

from avatarflow.contracts.errors import InvalidInput, MissingExtra


def create(table: dict[str, str], kind: str, name: str, extra: str, **options: Any) -> Any:
    """Instantiates engine ``name`` of ``kind`` from ``table`` with ``options``."""
    if name not in table:
        raise InvalidInput(f"unknown {kind} engine {name!r}; choose one of {', '.join(table)}")
    module_name, _, cls_name = table[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise MissingExtra(exc.name or module_name, extra) from exc
    return getattr(module, cls_name)(**options)
