"""The task-kind registry: every module of this package that declares ``KIND`` is a kind.

Adding a kind is one new module here (its fields, roles, checks and runner: base.py says what a
kind declares) and its test; validation (control/tasks.py), the runner (agent/runner.py), the
CLI, /control's reference-form frames and the page all read this registry.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from appliance.taskkinds.base import TaskKind

# A kind is addressed by its name in the reference form ({"command": "search", ...}) and in the
# stored spec; a kind named like a control command would make /control's frames ambiguous.
KIND_NAME = r"^[a-z][a-z0-9_]{0,31}$"


def _discover() -> dict[str, TaskKind[Any]]:
    found: dict[str, TaskKind[Any]] = {}
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module.name == "base" or module.name.startswith("_"):
            continue
        kind = getattr(importlib.import_module(f"{__name__}.{module.name}"), "KIND", None)
        if isinstance(kind, TaskKind):
            if kind.name in found:
                raise ValueError(f"task kind {kind.name!r} is declared twice")
            found[kind.name] = kind
    return found


KINDS: dict[str, TaskKind[Any]] = _discover()


def resumable() -> list[str]:
    return sorted(name for name, kind in KINDS.items() if kind.resumable)
