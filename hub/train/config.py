"""Run configuration: ``RunConfig(train, model, data)``, typed ``key.sub=value`` overrides, files.

``train`` is the trainer's :class:`TrainConfig`; ``model`` and ``data`` are each stage's own
dataclasses. Overrides and config files are parsed with the *field's* declared type
(bool/int/float/str/tuple/Optional/nested dataclass); an unknown key is a ``ValueError`` listing
the valid ones, so a typo never silently trains the wrong thing.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRECISIONS = ("fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")
LR_SCHEDULES = ("cosine", "constant")


@dataclass
class TrainConfig:
    """Trainer settings shared by every stage.

    Global batch = ``batch_size * grad_accum * world_size`` samples per optimizer step. ``steps``
    counts optimizer steps. LR: linear warmup over ``warmup_steps`` then cosine decay to
    ``lr * min_lr_ratio`` at ``steps`` (or flat with ``lr_schedule="constant"``).
    ``ema_decay=0`` disables the EMA (export then uses the raw weights).
    """

    steps: int = 1000
    batch_size: int = 8  # per process
    grad_accum: int = 1
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0  # AdamW; never applied to 1-D parameters (biases, norms)
    warmup_steps: int = 0
    lr_schedule: str = "cosine"
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0  # max global grad norm per group; 0 disables
    ema_decay: float = 0.999
    seed: int = 0
    precision: str = "fp32"  # "bf16": autocast on CUDA only; CPU always runs fp32
    device: str = "auto"
    num_workers: int = 2
    log_every: int = 10
    ckpt_every: int = 500
    eval_every: int = 0  # 0: evaluate only at the end
    keep_checkpoints: int = 3
    out_dir: str = "runs"
    run_name: str = ""  # default "<stage>-<preset>"
    tensorboard: bool = True
    progress_bar: bool = True
    export_at_end: bool = True
    time_limit_min: float = 0.0  # > 0: after 20 steps, lower `steps` so the run ends in this time


@dataclass
class RunConfig:
    """A complete, resolved run: trainer settings plus the stage's model and data dataclasses."""

    train: TrainConfig = field(default_factory=TrainConfig)
    model: Any = None
    data: Any = None


def validate_train_config(cfg: TrainConfig) -> None:
    """Raise a ``ValueError`` naming the first invalid ``train.*`` setting."""
    positive = ("steps", "batch_size", "grad_accum", "log_every", "ckpt_every", "keep_checkpoints")
    for name in positive:
        if getattr(cfg, name) < 1:
            raise ValueError(f"train.{name}={getattr(cfg, name)}; must be >= 1")
    for name in ("warmup_steps", "num_workers", "eval_every", "seed"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"train.{name}={getattr(cfg, name)}; must be >= 0")
    if not cfg.lr > 0:
        raise ValueError(f"train.lr={cfg.lr}; must be > 0")
    if not 0 <= cfg.ema_decay < 1:
        raise ValueError(f"train.ema_decay={cfg.ema_decay}; accepted: 0 (off) or 0 < decay < 1")
    if not 0 <= cfg.min_lr_ratio <= 1:
        raise ValueError(f"train.min_lr_ratio={cfg.min_lr_ratio}; accepted: 0 to 1")
    if cfg.grad_clip < 0 or cfg.weight_decay < 0:
        raise ValueError("train.grad_clip and train.weight_decay must be >= 0")
    if len(cfg.betas) != 2 or not all(0 <= b < 1 for b in cfg.betas):
        raise ValueError(f"train.betas={cfg.betas}; accepted: two values in [0, 1)")
    for name, value, accepted in (("precision", cfg.precision, PRECISIONS), ("device", cfg.device, DEVICES),
                                  ("lr_schedule", cfg.lr_schedule, LR_SCHEDULES)):
        if value not in accepted:
            raise ValueError(f"train.{name}={value!r}; accepted: {', '.join(accepted)}")


# ----------------------------------------------------------------------------------------------
# Typed parsing


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def _parse_bool(text: str, key: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{key}={text!r}: expected a bool (true/false/1/0/yes/no)")


def parse_value(text: str, tp: Any, key: str) -> Any:
    """Parse the command-line string ``text`` as type ``tp`` (the dataclass field's type)."""
    optional, tp = _is_optional(tp)
    if optional and text.strip().lower() in ("none", "null"):
        return None
    origin = typing.get_origin(tp)
    if tp is bool:
        return _parse_bool(text, key)
    if tp is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{key}={text!r}: expected an integer") from None
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{key}={text!r}: expected a number") from None
    if tp is str or tp is Any:
        return text
    if origin in (tuple, list):
        args = typing.get_args(tp)
        inner = text.strip()
        if inner[:1] in "([" and inner[-1:] in ")]":
            inner = inner[1:-1]
        parts = [p.strip() for p in inner.split(",") if p.strip()]
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(parts) != len(args):
                raise ValueError(f"{key}={text!r}: expected {len(args)} comma-separated values")
            return tuple(parse_value(p, a, key) for p, a in zip(parts, args))
        elem = args[0] if args else str
        values = [parse_value(p, elem, key) for p in parts]
        return tuple(values) if origin is tuple else values
    raise ValueError(f"{key}: fields of type {tp} cannot be set from the command line")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert a JSON/YAML value against the field type (int -> float, list -> tuple)."""
    optional, tp = _is_optional(tp)
    if value is None:
        if optional or tp is Any:
            return None
        raise ValueError(f"{key}: null is not accepted here (type {tp})")
    if isinstance(value, str) and tp is not str and tp is not Any:
        return parse_value(value, tp, key)
    origin = typing.get_origin(tp)
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{key}={value!r}: expected a bool")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key}={value!r}: expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key}={value!r}: expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{key}={value!r}: expected a string")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}={value!r}: expected a list")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ValueError(f"{key}={value!r}: expected {len(args)} values")
            return tuple(_coerce(v, a, key) for v, a in zip(value, args))
        elem = args[0] if args else Any
        items = [_coerce(v, elem, key) for v in value]
        return tuple(items) if origin is tuple else items
    return value


def _valid_keys(obj: Any, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            keys.extend(_valid_keys(value, f"{prefix}{f.name}."))
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def _locate(cfg: Any, dotted: str) -> tuple[Any, str, Any]:
    """(parent dataclass, field name, field type) for a dotted key, or a ValueError listing keys."""
    parts = dotted.split(".")
    node = cfg
    for depth, part in enumerate(parts):
        names = {f.name for f in dataclasses.fields(node)}
        if part not in names:
            where = ".".join(parts[:depth]) or "the config"
            valid = _valid_keys(node, ".".join(parts[:depth]) + "." if depth else "")
            raise ValueError(f"unknown config key {dotted!r} (no {part!r} in {where}); valid keys: "
                             + ", ".join(valid))
        if depth == len(parts) - 1:
            return node, part, _field_types(type(node))[part]
        node = getattr(node, part)
        if not dataclasses.is_dataclass(node):
            raise ValueError(f"config key {dotted!r}: {'.'.join(parts[:depth + 1])} is not a section")
    raise AssertionError("unreachable")


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """Return a copy of ``cfg`` with ``key.sub=value`` overrides applied (typed, validated)."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r}: expected key.sub=value, e.g. train.lr=3e-4")
        parent, name, tp = _locate(cfg, key.strip())
        if dataclasses.is_dataclass(getattr(parent, name)):
            raise ValueError(f"config key {key!r} is a section; set one of its fields instead")
        _set_field(parent, name, parse_value(text, tp, key.strip()))
    return _revalidated(cfg)


def merge_dict(cfg: RunConfig, values: dict, prefix: str = "") -> RunConfig:
    """Return a copy of ``cfg`` with a nested dict (from JSON/YAML) merged in, typed and checked."""
    cfg = copy.deepcopy(cfg)
    _merge_into(cfg, values, prefix)
    return _revalidated(cfg)


def _set_field(parent: Any, name: str, value: Any) -> None:
    """Set a field on a (deep-copied) config, frozen dataclasses included; see :func:`_revalidated`."""
    object.__setattr__(parent, name, value)


def _revalidated(node: Any) -> Any:
    """Rebuild every nested dataclass through its constructor, so ``__post_init__`` checks see the
    overridden values (fields set with :func:`_set_field` bypass them)."""
    if not dataclasses.is_dataclass(node) or isinstance(node, type):
        return node
    changes = {f.name: _revalidated(getattr(node, f.name)) for f in dataclasses.fields(node) if f.init}
    return dataclasses.replace(node, **changes)


def _merge_into(node: Any, values: dict, prefix: str) -> None:
    if not isinstance(values, dict):
        raise ValueError(f"{prefix or 'config'}: expected a mapping, got {type(values).__name__}")
    for name, value in values.items():
        dotted = f"{prefix}{name}"
        parent, field_name, tp = _locate(node, name)
        current = getattr(parent, field_name)
        if dataclasses.is_dataclass(current):
            _merge_into(current, value, dotted + ".")
        else:
            _set_field(parent, field_name, _coerce(value, tp, dotted))


def load_config_file(path: str | os.PathLike) -> dict:
    """Read a ``.json`` or ``.yaml``/``.yml`` config file into a nested dict."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"--config {file}: file not found")
    text = file.read_text()
    if file.suffix == ".json":
        data = json.loads(text)
    elif file.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(f"--config {file}: reading YAML needs PyYAML (pip install pyyaml)") from None
        data = yaml.safe_load(text) or {}
    else:
        raise ValueError(f"--config {file}: accepted extensions: .json, .yaml, .yml")
    if not isinstance(data, dict):
        raise ValueError(f"--config {file}: top level must be a mapping with train/model/data")
    return data


def resolve_config(preset: RunConfig, config_file: str | os.PathLike | None = None,
                   overrides: list[str] | None = None) -> RunConfig:
    """Preset, then the config file, then ``key=value`` overrides; validated."""
    cfg = copy.deepcopy(preset)
    if config_file is not None:
        cfg = merge_dict(cfg, load_config_file(config_file))
    cfg = apply_overrides(cfg, list(overrides or []))
    validate_train_config(cfg.train)
    return cfg


def config_to_dict(cfg: RunConfig) -> dict:
    """A JSON-ready nested dict of the config."""
    return dataclasses.asdict(cfg)


def config_from_dict(preset: RunConfig, values: dict) -> RunConfig:
    """Rebuild a saved config on top of a preset of the same stage (types come from the preset)."""
    return merge_dict(preset, values)


def config_diff(a: RunConfig, b: RunConfig) -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose values differ between two configs, with (a, b) values."""
    flat_a, flat_b = _flatten(config_to_dict(a)), _flatten(config_to_dict(b))
    return {k: (flat_a.get(k), flat_b.get(k)) for k in sorted(set(flat_a) | set(flat_b))
            if flat_a.get(k) != flat_b.get(k)}


def _flatten(values: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return out
