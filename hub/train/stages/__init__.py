"""Registry of training stages, imported lazily by name.

Each entry maps a stage name to the module that defines it; the module must define exactly one
:class:`hub.train.stage.Stage` subclass whose ``name`` equals the key (any class name). Modules are
imported only when their stage is asked for, so a stage that is missing or broken never stops the
others from running.
"""

from __future__ import annotations

import importlib
import inspect

from hub.train.stage import Stage

STAGES: dict[str, str] = {
    "toy": "hub.train.stages.toy",
    "vae": "hub.train.stages.vae",
    "teacher": "hub.train.stages.teacher",
    "student": "hub.train.stages.student",
}


def available_stages() -> list[str]:
    """Registered stage names (whether or not their modules import)."""
    return sorted(STAGES)


def get_stage(name: str) -> Stage:
    """A fresh instance of the stage called ``name``."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; accepted: {', '.join(available_stages())}")
    module_name = STAGES[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"stage {name!r}: cannot import {module_name} ({exc})") from exc
    found = [obj for _, obj in inspect.getmembers(module, inspect.isclass)
             if issubclass(obj, Stage) and obj is not Stage and obj.__module__ == module.__name__
             and not inspect.isabstract(obj) and getattr(obj, "name", None) == name]
    if len(found) != 1:
        raise ValueError(f"stage {name!r}: {module_name} must define exactly one Stage subclass with "
                         f"name = {name!r}, found {len(found)}")
    return found[0]()
