"""Inference checkpoints: a folder with ``config.json`` and ``model.safetensors``.

Every model class exposes ``from_pretrained(path)`` built on :func:`load_pretrained`. Only
safetensors are read, so loading a checkpoint never unpickles anything.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, TypeVar

import torch

from hub.io_utils import atomic_path, atomic_write_text

ConfigT = TypeVar("ConfigT")

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def save_pretrained(model: torch.nn.Module, config: Any, directory: str | os.PathLike,
                    kind: str, extra: dict | None = None, dtype: torch.dtype | None = None) -> Path:
    """Write ``config.json`` (``{"kind": kind, "config": asdict(config), **extra}``) and weights.

    ``dtype=torch.float16`` stores floating-point weights in half precision (half the size);
    :func:`load_state` copies them into the model's own (float32) parameters.
    """
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu()
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        state[name] = tensor.contiguous()
    with atomic_path(out / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp))
    payload = {"kind": kind, "config": dataclasses.asdict(config), **(extra or {})}
    atomic_write_text(out / CONFIG_NAME, json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return out


def read_config(directory: str | os.PathLike, kind: str) -> dict:
    """The parsed ``config.json`` of a checkpoint folder, checked to be of ``kind``."""
    path = Path(directory)
    cfg_file = path / CONFIG_NAME
    if not cfg_file.is_file() or not (path / WEIGHTS_NAME).is_file():
        raise ValueError(f"{path}: not a checkpoint folder (expected {CONFIG_NAME} and {WEIGHTS_NAME})")
    payload = json.loads(cfg_file.read_text())
    if payload.get("kind") != kind:
        raise ValueError(f"{path}: checkpoint is of kind {payload.get('kind')!r}, expected {kind!r}")
    return payload


def config_from_dict(config_cls: type[ConfigT], values: dict) -> ConfigT:
    """Build a dataclass config from a dict, refusing unknown keys (no silent defaults)."""
    names = {field.name for field in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown {config_cls.__name__} fields: {unknown}; known: {sorted(names)}")
    return config_cls(**values)


def load_state(directory: str | os.PathLike, model: torch.nn.Module, strict: bool = True) -> None:
    """Load ``model.safetensors`` from ``directory`` into ``model``."""
    from safetensors.torch import load_file

    state = load_file(str(Path(directory) / WEIGHTS_NAME))
    model.load_state_dict(state, strict=strict)
