"""Metric registry: each metric is a small pure function plus the metadata it is reported with.

Two levels of metric:

* clip metrics: ``fn(sample, **params) -> float | dict[str, float]`` on one :class:`EvalSample`;
* set metrics (FID, FVD): a per-clip ``extract(sample, **params) -> np.ndarray (N, D)`` and a
  set-level ``fn(generated_features, reference_features) -> float`` over the features of all clips.

Every entry carries its kind, direction, inputs, weight files, variant string and an
``available()`` check that returns ``(ok, reason)`` without running the metric.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eval.weights import WeightSpec, weight_status

KINDS = ("quality", "sync", "identity", "motion", "latency")
LEVELS = ("clip", "set")

MetricValue = float | dict[str, float]
Check = Callable[[], tuple[bool, str]]


@dataclass
class EvalSample:
    """One generated clip and what it is compared against.

    Attributes:
        frames: generated frames, uint8 (T, H, W, 3) RGB at 25 fps.
        audio: driving audio, float32 (S,) mono 16 kHz in [-1, 1], or None.
        reference: the reference (identity) image, uint8 (H, W, 3) RGB, or None.
        ground_truth: real frames for full-reference metrics, uint8 (T', H', W', 3), or None.
        clip_id: name used in results.
        cache: per-sample intermediate results shared by metrics (face tracks, landmarks); keyed by
            the producer's name and parameters. Never part of a result.
    """

    frames: np.ndarray
    audio: np.ndarray | None = None
    reference: np.ndarray | None = None
    ground_truth: np.ndarray | None = None
    clip_id: str = ""
    cache: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_frames(self.frames, "frames")
        if self.ground_truth is not None:
            check_frames(self.ground_truth, "ground_truth")
        if self.audio is not None:
            audio = np.asarray(self.audio)
            if audio.ndim != 1 or not np.issubdtype(audio.dtype, np.floating):
                raise ValueError(f"audio: expected float (S,) mono 16 kHz, got {audio.dtype} {audio.shape}")
        if self.reference is not None:
            ref = self.reference
            if ref.dtype != np.uint8 or ref.ndim != 3 or ref.shape[2] != 3:
                raise ValueError(f"reference: expected uint8 (H, W, 3), got {ref.dtype} {ref.shape}")


def check_frames(frames: np.ndarray, name: str) -> None:
    """Raise ValueError unless ``frames`` is uint8 (T, H, W, 3) with T >= 1."""
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 \
            or frames.shape[3] != 3 or frames.shape[0] < 1:
        got = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
        raise ValueError(f"{name}: expected uint8 (T, H, W, 3) RGB frames, got {got}")


def module_check(*modules: str) -> Check:
    """A check that the named Python modules can be imported (without importing them)."""
    def check() -> tuple[bool, str]:
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        if missing:
            return False, f"missing Python packages: {', '.join(missing)} (pip install -r requirements.txt)"
        return True, "ok"
    return check


@dataclass(frozen=True)
class MetricInfo:
    """A registered metric and its metadata."""

    name: str
    kind: str
    fn: Callable[..., Any]
    higher_is_better: bool
    description: str
    variant: str
    level: str = "clip"
    extract: Callable[..., np.ndarray] | None = None
    needs_reference_video: bool = False
    needs_audio: bool = False
    needs_reference_image: bool = False
    weights: tuple[WeightSpec, ...] = ()
    checks: tuple[Check, ...] = ()
    outputs: tuple[str, ...] = ()
    directions: tuple[tuple[str, bool | None], ...] = ()
    unit: str = ""

    def direction(self, output: str | None = None) -> bool | None:
        """Whether higher is better for one output; None for informational outputs (offsets)."""
        overrides = dict(self.directions)
        if output is not None and output in overrides:
            return overrides[output]
        return self.higher_is_better

    @property
    def arrow(self) -> str:
        """The table mark: ↑ when higher is better, else ↓."""
        return "↑" if self.higher_is_better else "↓"

    def available(self) -> tuple[bool, str]:
        """(True, details) when every package and weight file is present, else (False, reason)."""
        details = []
        for check in self.checks:
            ok, reason = check()
            if not ok:
                return False, reason
            if reason != "ok":
                details.append(reason)
        for spec in self.weights:
            ok, reason = weight_status(spec)
            if not ok:
                return False, reason
            details.append(f"{spec.filename}: {reason}")
        return True, "; ".join(details) if details else "no weights needed"

    def check_inputs(self, sample: EvalSample) -> None:
        """Raise ValueError when ``sample`` lacks an input this metric needs."""
        if self.needs_audio and sample.audio is None:
            raise ValueError(f"metric {self.name} needs the driving audio; sample {sample.clip_id!r} has none")
        if self.needs_reference_image and sample.reference is None:
            raise ValueError(f"metric {self.name} needs the reference image; sample {sample.clip_id!r} has none")
        if self.needs_reference_video and self.level == "clip" and sample.ground_truth is None:
            raise ValueError(f"metric {self.name} needs ground-truth frames; sample {sample.clip_id!r} has none")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready metadata (used by ``python -m eval list --json`` and result files)."""
        ok, reason = self.available()
        return {
            "name": self.name, "kind": self.kind, "level": self.level,
            "higher_is_better": self.higher_is_better, "variant": self.variant,
            "description": self.description, "needs_reference_video": self.needs_reference_video,
            "needs_audio": self.needs_audio, "needs_reference_image": self.needs_reference_image,
            "outputs": list(self.outputs) or [self.name], "unit": self.unit,
            "directions": {o: self.direction(o) for o in (self.outputs or (self.name,))},
            "weights": [{"name": w.name, "filename": w.filename, "url": w.url, "sha256": w.sha256,
                         "license": w.license} for w in self.weights],
            "available": ok, "reason": reason,
        }


_REGISTRY: dict[str, MetricInfo] = {}


def register_metric(*, name: str, kind: str, higher_is_better: bool, description: str, variant: str,
                    needs_reference_video: bool = False, needs_audio: bool = False,
                    needs_reference_image: bool = False, weights: list[WeightSpec] | None = None,
                    requires: list[str] | None = None, checks: list[Check] | None = None,
                    outputs: list[str] | None = None, directions: dict[str, bool | None] | None = None,
                    unit: str = "", level: str = "clip", extract: Callable[..., np.ndarray] | None = None
                    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator that registers a metric function under ``name`` and returns it unchanged.

    ``requires`` names Python modules checked by ``available()``; ``checks`` adds custom checks.
    ``directions`` overrides ``higher_is_better`` per output (None: informational, e.g. an offset).
    For ``level="set"`` give ``extract`` (per-clip features) and decorate the set-level score.
    """
    if kind not in KINDS:
        raise ValueError(f"metric {name}: kind {kind!r} is not one of {KINDS}")
    if level not in LEVELS:
        raise ValueError(f"metric {name}: level {level!r} is not one of {LEVELS}")
    if (level == "set") != (extract is not None):
        raise ValueError(f"metric {name}: set metrics need extract=..., clip metrics must not have it")

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY:
            raise ValueError(f"metric {name} is registered twice")
        all_checks = ([module_check(*requires)] if requires else []) + list(checks or [])
        _REGISTRY[name] = MetricInfo(
            name=name, kind=kind, fn=fn, higher_is_better=higher_is_better, description=description,
            variant=variant, level=level, extract=extract,
            needs_reference_video=needs_reference_video, needs_audio=needs_audio,
            needs_reference_image=needs_reference_image, weights=tuple(weights or ()),
            checks=tuple(all_checks), outputs=tuple(outputs or ()),
            directions=tuple((directions or {}).items()), unit=unit)
        return fn

    return decorate


def _load_all() -> None:
    """Import every metric module so that its registrations run (cheap: heavy imports are lazy)."""
    from eval.metrics import distribution, drift, identity, landmarks, quality, sync  # noqa: F401


def get_metric(name: str) -> MetricInfo:
    """The registered metric ``name``; ValueError listing the known names otherwise."""
    _load_all()
    if name not in _REGISTRY:
        raise ValueError(f"unknown metric {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def list_metrics(kind: str | None = None) -> list[MetricInfo]:
    """All registered metrics (optionally of one kind), sorted by kind then name."""
    _load_all()
    infos = [m for m in _REGISTRY.values() if kind is None or m.kind == kind]
    return sorted(infos, key=lambda m: (KINDS.index(m.kind), m.name))


def compute_metric(name: str, sample: EvalSample, **params: Any) -> MetricValue:
    """Run a clip metric on one sample after checking its inputs (set metrics: use extract/fn)."""
    info = get_metric(name)
    if info.level != "clip":
        raise ValueError(f"metric {name} is a set metric: call extract() per clip and fn() on the set")
    info.check_inputs(sample)
    return info.fn(sample, **params)
