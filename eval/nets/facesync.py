"""FaceSync: a linear audio-visual sync model fitted here (CCA), for offsets without SyncNet.

Slaney & Covell, "FaceSync: A linear operator to measure synchronization of video facial images and
audio tracks", NIPS 2000: canonical correlation analysis (CCA) finds the linear projections of audio
features and of mouth features that correlate most on in-sync training video; the lag at which the
projections of a test clip correlate best is its audio-visual offset.

Features (one row per 40 ms video frame):

* audio: log mel filterbank (``python_speech_features.logfbank``: 25 ms windows, 10 ms hop,
  ``audio_filters`` bands) of the 16 kHz signal, normalised per clip (mean 0, std 1 per band), the 4
  windows of a frame side by side, with ``audio_context`` frames either side: ``(2c + 1) * 4 * bands``;
* video: dlib's 20 mouth points (48-67) minus their mean, divided by the outer-eye-corner distance,
  normalised per clip (removes the face's shape, keeps its motion), with ``video_context`` frames
  either side: ``(2c + 1) * 40``.

Fitting (:func:`fit_facesync`) solves the regularised CCA in closed form:
``W_a = C_aa^-1/2 U``, ``W_v = C_vv^-1/2 V`` with ``U S V^T = svd(C_aa^-1/2 C_av C_vv^-1/2)`` and
``C += ridge * mean(diag C) * I``. Scoring (:meth:`FaceSyncModel.sync`) correlates the ``components``
pairs of projections of a clip at lags -15..+15 frames, weighted by their canonical correlations:
the peak is ``corr``, its lag ``offset`` (positive: the audio leads the video, SyncNet's sign) and
peak minus median ``conf``.

The model is a few thousand numbers, saved as safetensors with its configuration and fit report in
the file's metadata (never a pickle). ``python -m eval fit-facesync`` refits it from prepared clips.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eval.metrics.landmarks import lagged_correlation
from hub import SAMPLE_RATE, SAMPLES_PER_FRAME

FBANK_WINDOW = 400  # 25 ms at 16 kHz
FBANK_HOP = 160  # 10 ms at 16 kHz: 4 filterbank rows per 40 ms video frame
ROWS_PER_FRAME = SAMPLES_PER_FRAME // FBANK_HOP
MOUTH_POINTS = slice(48, 68)


@dataclass(frozen=True)
class FaceSyncConfig:
    """Feature and fit settings (stored in the model file)."""

    audio_filters: int = 26
    audio_context: int = 3  # frames either side
    video_context: int = 2  # frames either side
    components: int = 3  # canonical pairs used for the offset
    ridge: float = 1.0  # C += ridge * mean(diag C) * I
    max_offset: int = 15  # frames searched either side

    def __post_init__(self) -> None:
        for name in ("audio_filters", "components", "max_offset"):
            if getattr(self, name) < 1:
                raise ValueError(f"FaceSyncConfig.{name}={getattr(self, name)}; accepted: >= 1")
        for name in ("audio_context", "video_context"):
            if getattr(self, name) < 0:
                raise ValueError(f"FaceSyncConfig.{name}={getattr(self, name)}; accepted: >= 0")
        if self.ridge < 0:
            raise ValueError(f"FaceSyncConfig.ridge={self.ridge}; accepted: >= 0")


def _standardise(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6)


def _with_context(rows: np.ndarray, context: int) -> np.ndarray:
    """Each row with its ``context`` neighbours either side (edge rows repeated); (n, (2c+1) * d)."""
    if context == 0:
        return rows
    n = len(rows)
    padded = np.pad(rows, ((context, context), (0, 0)), mode="edge")  # (n + 2c, d)
    return np.concatenate([padded[i:i + n] for i in range(2 * context + 1)], axis=1)


def audio_features(audio: np.ndarray, frames: int, config: FaceSyncConfig) -> np.ndarray:
    """Per-frame audio features of 16 kHz mono ``audio``; ``(n, D_a)`` float64, n = min(frames, M // 4)."""
    from python_speech_features import logfbank

    if len(audio) < SAMPLES_PER_FRAME:
        raise ValueError(f"FaceSync needs at least one frame of audio ({SAMPLES_PER_FRAME} samples), "
                         f"got {len(audio)}")
    padded = np.pad(np.asarray(audio, np.float64), (0, FBANK_WINDOW - FBANK_HOP))  # last window ends at S
    bands = logfbank(padded, SAMPLE_RATE, winlen=FBANK_WINDOW / SAMPLE_RATE, winstep=FBANK_HOP / SAMPLE_RATE,
                     nfilt=config.audio_filters)  # (M, bands), M = ceil(S / 160)
    n = min(frames, len(bands) // ROWS_PER_FRAME)
    rows = _standardise(bands[: n * ROWS_PER_FRAME])
    return _with_context(rows.reshape(n, ROWS_PER_FRAME * config.audio_filters), config.audio_context)


def video_features(landmarks: np.ndarray, config: FaceSyncConfig) -> np.ndarray:
    """Per-frame mouth features of dlib 68-point ``landmarks`` (T, 68, 2); ``(T, D_v)`` float64.

    Frames without a face take the clip's mean mouth (a flat stretch, never an invented motion).
    Raises ValueError when no frame has a face.
    """
    found = np.isfinite(landmarks).all(axis=(1, 2))  # (T,)
    if not found.any():
        raise ValueError("FaceSync: no face in any frame")
    eye_distance = np.linalg.norm(landmarks[:, 45] - landmarks[:, 36], axis=-1)  # (T,)
    mouth = landmarks[:, MOUTH_POINTS]  # (T, 20, 2)
    mouth = (mouth - mouth.mean(axis=1, keepdims=True)) / eye_distance[:, None, None]
    rows = mouth.reshape(len(mouth), -1)  # (T, 40)
    rows[~found] = rows[found].mean(axis=0)
    return _with_context(_standardise(rows), config.video_context)


@dataclass
class FaceSyncModel:
    """Fitted CCA projections and the feature settings they belong to."""

    config: FaceSyncConfig
    audio_mean: np.ndarray  # (D_a,)
    video_mean: np.ndarray  # (D_v,)
    audio_projection: np.ndarray  # (D_a, K)
    video_projection: np.ndarray  # (D_v, K)
    canonical_correlations: np.ndarray  # (K,) on the training frames
    report: dict[str, Any]

    @property
    def weights(self) -> np.ndarray:
        """Each canonical pair's weight in a score: its canonical correlation, normalised; (K,)."""
        return self.canonical_correlations / self.canonical_correlations.sum()

    def projections(self, audio: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Canonical audio and mouth signals of a clip: ``(n, K)`` each, n = frames with audio."""
        a = audio_features(audio, len(landmarks), self.config)  # (n, D_a)
        v = video_features(landmarks[: len(a)], self.config)  # (n, D_v)
        return (a - self.audio_mean) @ self.audio_projection, (v - self.video_mean) @ self.video_projection

    def lag_curve(self, audio: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """Canonical-correlation-weighted lagged correlation; ``(2 * max_offset + 1,)``."""
        a_proj, v_proj = self.projections(audio, landmarks)  # (n, K) each
        return sum(w * lagged_correlation(v_proj[:, k], a_proj[:, k], self.config.max_offset)
                   for k, w in enumerate(self.weights))

    def windowed_correlation(self, audio: np.ndarray, landmarks: np.ndarray,
                             window: int) -> tuple[np.ndarray, np.ndarray]:
        """In-sync (lag 0) weighted correlation per window of ``window`` frames.

        Unlike the peak over lags, lag 0 is not biased upwards by noise: a clip without sync
        scores about 0. Returns (window start frames (W,), correlations (W,)).
        """
        a_proj, v_proj = self.projections(audio, landmarks)  # (n, K) each
        starts = np.arange(0, len(a_proj) - window + 1, window)
        values = np.empty(len(starts))
        for i, start in enumerate(starts):
            a, v = a_proj[start:start + window], v_proj[start:start + window]  # (window, K)
            a, v = a - a.mean(axis=0), v - v.mean(axis=0)
            denom = np.sqrt((a ** 2).sum(axis=0) * (v ** 2).sum(axis=0))  # (K,)
            corr = np.divide((a * v).sum(axis=0), denom, out=np.zeros(len(denom)), where=denom > 0)
            values[i] = float(self.weights @ corr)
        return starts, values

    def sync(self, audio: np.ndarray, landmarks: np.ndarray) -> dict[str, float]:
        """``corr`` (peak), ``offset`` (frames, positive: audio leads) and ``conf`` (peak - median)."""
        curve = self.lag_curve(audio, landmarks)
        peak = int(np.argmax(curve))
        return {"corr": float(curve[peak]), "offset": float(peak - self.config.max_offset),
                "conf": float(curve[peak] - np.median(curve))}

    def save(self, path: str | Path) -> Path:
        """Write the model as one safetensors file (tensors + config and report as metadata), atomically."""
        from safetensors.numpy import save_file

        from hub.io_utils import atomic_path

        tensors = {"audio_mean": self.audio_mean, "video_mean": self.video_mean,
                   "audio_projection": self.audio_projection, "video_projection": self.video_projection,
                   "canonical_correlations": self.canonical_correlations}
        metadata = {"format": "facesync-cca-1", "config": json.dumps(asdict(self.config)),
                    "report": json.dumps(self.report)}
        out = Path(path)
        with atomic_path(out) as tmp:
            save_file({k: np.ascontiguousarray(v, np.float64) for k, v in tensors.items()}, str(tmp),
                      metadata=metadata)
        return out

    @classmethod
    def load(cls, path: str | Path) -> FaceSyncModel:
        """Read a file written by :meth:`save`; ValueError for anything else."""
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != "facesync-cca-1":
                raise ValueError(f"{Path(path).name}: not a FaceSync model file (format "
                                 f"{metadata.get('format')!r}, expected 'facesync-cca-1')")
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        config = FaceSyncConfig(**json.loads(metadata["config"]))
        return cls(config=config, report=json.loads(metadata.get("report", "{}")), **tensors)


_LOADED: dict[str, FaceSyncModel] = {}


def load_cached(path: str | Path) -> FaceSyncModel:
    """:meth:`FaceSyncModel.load`, once per path and process (metrics and curves share it)."""
    key = str(path)
    if key not in _LOADED:
        _LOADED[key] = FaceSyncModel.load(key)
    return _LOADED[key]


def _regularised(cov: np.ndarray, ridge: float) -> np.ndarray:
    return cov + ridge * np.trace(cov) / len(cov) * np.eye(len(cov))


def _inverse_sqrt(cov: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(cov)
    return vectors @ np.diag(np.clip(values, 1e-12, None) ** -0.5) @ vectors.T


def fit_facesync(clips: list[tuple[np.ndarray, np.ndarray]], config: FaceSyncConfig,
                 report: dict[str, Any] | None = None) -> FaceSyncModel:
    """Fit the CCA on in-sync ``(audio (S,), landmarks (T, 68, 2))`` pairs.

    Raises ValueError when there are fewer training frames than twice the feature count.
    """
    audio_rows, video_rows = [], []
    for audio, landmarks in clips:
        a = audio_features(audio, len(landmarks), config)  # (n, D_a)
        audio_rows.append(a)
        video_rows.append(video_features(landmarks[: len(a)], config))  # (n, D_v)
    a, v = np.concatenate(audio_rows), np.concatenate(video_rows)  # (N, D_a), (N, D_v)
    if len(a) < 2 * (a.shape[1] + v.shape[1]):
        raise ValueError(f"FaceSync fit: {len(a)} frames for {a.shape[1] + v.shape[1]} features; "
                         f"need at least {2 * (a.shape[1] + v.shape[1])}")
    audio_mean, video_mean = a.mean(axis=0), v.mean(axis=0)
    a, v = a - audio_mean, v - video_mean
    whiten_a = _inverse_sqrt(_regularised(a.T @ a / len(a), config.ridge))  # (D_a, D_a)
    whiten_v = _inverse_sqrt(_regularised(v.T @ v / len(v), config.ridge))  # (D_v, D_v)
    u, s, vt = np.linalg.svd(whiten_a @ (a.T @ v / len(a)) @ whiten_v)
    k = config.components
    return FaceSyncModel(config=config, audio_mean=audio_mean, video_mean=video_mean,
                         audio_projection=whiten_a @ u[:, :k], video_projection=whiten_v @ vt.T[:, :k],
                         canonical_correlations=s[:k].copy(), report=dict(report or {}, frames=len(a)))


def delay_audio(audio: np.ndarray, frames: int) -> np.ndarray:
    """``audio`` delayed by ``frames`` video frames (negative: advanced), same length, zero-filled."""
    shift = frames * SAMPLES_PER_FRAME
    if shift == 0:
        return audio
    out = np.zeros_like(audio)
    if shift > 0:
        out[shift:] = audio[:-shift]
    else:
        out[:shift] = audio[-shift:]
    return out


def shift_recovery(model: FaceSyncModel, clips: list[tuple[np.ndarray, np.ndarray]],
                   shifts: tuple[int, ...] = (-6, -3, 3, 6)) -> dict[str, float]:
    """How well the model finds known shifts: the audio of each clip delayed by each of ``shifts``.

    A delay of s frames should move the offset by -s. ``relative_within_1``: fraction of (clip,
    shift) where it moved by -s ± 1; ``absolute_within_1``: fraction of clips whose unshifted offset
    is within ±1 (in-sync clips read as 0).
    """
    relative, absolute = [], []
    for audio, landmarks in clips:
        base = model.sync(audio, landmarks)["offset"]
        absolute.append(abs(base) <= 1)
        for s in shifts:
            moved = model.sync(delay_audio(audio, s), landmarks)["offset"]
            relative.append(abs(moved - base + s) <= 1)
    return {"relative_within_1": float(np.mean(relative)), "absolute_within_1": float(np.mean(absolute)),
            "clips": len(clips)}
