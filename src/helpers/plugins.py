"""Registrations that higher layers make with the generic ones, loaded on first need.

The generic registries (tasks, prompt templates and graders in `helpers.evaluation`, model
sources in `helpers.backend`) import nothing above them; the packages that extend them (the
organisms) are named here, by module path, and imported the first time a registry is asked for
something it lacks. Other packages add theirs with the `rl_circuitry.plugins` entry point.
"""

from __future__ import annotations

import importlib
import importlib.metadata

PLUGINS: list[str] = ["helpers.organisms.task"]
ENTRY_POINT_GROUP = "rl_circuitry.plugins"
_loaded: list[bool] = []


def load() -> None:
    """Import every plugin module once (each registers itself on import)."""
    if _loaded:
        return
    _loaded.append(True)
    names = list(PLUGINS)
    names += [ep.value for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)]
    for name in dict.fromkeys(names):
        importlib.import_module(name)
