"""Identity drift over a long stream: identity similarity to the reference as a function of time."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eval.metrics.faces import dlib_models_check
from eval.metrics.identity import DLIB_FRAME_STRIDE, dlib_identity_curve
from eval.metrics.registry import EvalSample, register_metric
from hub import FPS

DRIFT_WINDOW_SECONDS = 2.0


@dataclass(frozen=True)
class DriftCurve:
    """Per-window identity similarity.

    Attributes:
        times: (W,) window centres in seconds.
        similarity: (W,) mean similarity in each window (NaN: no face in the window).
        slope_per_min: least-squares slope of similarity over time, per minute.
    """

    times: np.ndarray
    similarity: np.ndarray
    slope_per_min: float


def drift_curve(similarities: np.ndarray, sample_rate_hz: float,
                window_seconds: float = DRIFT_WINDOW_SECONDS) -> DriftCurve:
    """Window a (N,) per-sample similarity series (NaN allowed) sampled at ``sample_rate_hz``."""
    per_window = max(1, int(round(window_seconds * sample_rate_hz)))
    n_windows = int(np.ceil(len(similarities) / per_window))
    sims = np.full(n_windows, np.nan)
    for w in range(n_windows):
        chunk = similarities[w * per_window:(w + 1) * per_window]
        if np.isfinite(chunk).any():
            sims[w] = np.nanmean(chunk)
    times = (np.arange(n_windows) + 0.5) * per_window / sample_rate_hz
    good = np.isfinite(sims)
    if good.sum() < 2:
        raise ValueError(f"identity drift needs faces in at least 2 windows of {window_seconds} s, got {good.sum()}")
    slope = np.polyfit(times[good] / 60.0, sims[good], 1)[0]
    return DriftCurve(times=times, similarity=sims, slope_per_min=float(slope))


@register_metric(name="identity_drift", kind="identity", higher_is_better=True, needs_reference_image=True,
                 requires=["dlib", "face_recognition_models"], checks=[dlib_models_check],
                 outputs=["drift_slope_per_min", "id_first_window", "id_last_window", "id_min_window"],
                 variant=f"dlib descriptor cosine to the reference, every {DLIB_FRAME_STRIDE}th frame, "
                         f"{DRIFT_WINDOW_SECONDS:g} s windows, least-squares slope",
                 description="Identity similarity over time: slope per minute (negative: drifting away) "
                             "and first/last/min window values.")
def identity_drift(sample: EvalSample, window_seconds: float = DRIFT_WINDOW_SECONDS) -> dict[str, float]:
    """Identity drift summary of one (long) clip."""
    curve = drift_curve(dlib_identity_curve(sample, DLIB_FRAME_STRIDE), FPS / DLIB_FRAME_STRIDE, window_seconds)
    good = curve.similarity[np.isfinite(curve.similarity)]
    return {"drift_slope_per_min": curve.slope_per_min, "id_first_window": float(good[0]),
            "id_last_window": float(good[-1]), "id_min_window": float(good.min())}
