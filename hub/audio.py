"""Incremental log mel filterbank features for 16 kHz speech (streaming == offline).

Features are log mel filterbank energies computed with ``python_speech_features`` (its
``fbank``: framing, power spectrum, triangular mel filters), with three project choices:

* **Causal framing.** Row ``i`` is the ``win_samples`` window that *ends* at the end of hop ``i``:
  samples ``[(i + 1) * hop - win, (i + 1) * hop)``, with zeros before the start of the signal.
  So ``N`` samples give exactly ``N // hop`` rows, a video frame of 640 samples gives exactly
  ``rows_per_frame = 4`` rows, and the rows of video frame ``j`` (rows ``4j .. 4j + 3``) are
  complete as soon as the audio of frame ``j`` is: the framing adds no latency. Only complete
  windows are ever emitted (``python_speech_features`` would zero-pad a trailing partial window;
  we never hand it one), and offline features are defined as the same complete rows.
* **Fixed scaling.** Input is float in [-1, 1]; int16 input is divided by 32768 (int32 by 2**31)
  on the way in. Pre-emphasis ``y[n] = x[n] - a x[n - 1]`` (``x[-1] = 0``) carries its one sample
  of state across pieces. A Hamming window is applied. ``log`` uses a floor (``log_floor``) so
  digital silence maps to a finite value instead of ``log(eps) = -36``.
* **Global normalisation.** ``(log_fbank - norm_mean) / norm_std`` with two constants of the
  config (measured once on the shared speech corpus; see :func:`measure_normalisation`). There is
  no per-utterance normalisation: it would make early rows depend on later audio.

Shapes: a stream or signal of ``N`` samples yields features ``float32 (N // hop, n_filters)``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from collections.abc import Iterable

import numpy as np

from hub import SAMPLE_RATE, SAMPLES_PER_FRAME


@dataclass(frozen=True)
class FeatureConfig:
    """Log mel filterbank settings; every size used downstream derives from these fields.

    Defaults: 25 ms windows (400 samples) every 10 ms (160 samples) -> 100 rows per second,
    4 rows per 25 fps video frame, 80 mel filters over 0-8 kHz.
    """

    sample_rate: int = SAMPLE_RATE
    win_samples: int = 400  # 25 ms
    hop_samples: int = 160  # 10 ms
    n_filters: int = 80
    n_fft: int = 1024  # 512 leaves the lowest of 80 filters empty; 1024 fills all of them
    low_hz: float = 0.0
    high_hz: float = 8000.0
    preemphasis: float = 0.97  # 0 disables it
    log_floor: float = 1e-10  # power floor before the log: log(1e-10) = -23.0
    # Measured with measure_normalisation() on the 40 files of shared/data/speech (resampled to
    # 16 kHz with scipy's resample_poly, first channel; 7.0 minutes, 42k rows), default settings.
    norm_mean: float = -11.30
    norm_std: float = 4.41

    def __post_init__(self) -> None:
        if self.sample_rate != SAMPLE_RATE:
            raise ValueError(f"FeatureConfig.sample_rate={self.sample_rate}: only {SAMPLE_RATE} Hz is supported")
        if self.hop_samples <= 0 or SAMPLES_PER_FRAME % self.hop_samples:
            raise ValueError(
                f"FeatureConfig.hop_samples={self.hop_samples}: must divide the {SAMPLES_PER_FRAME} "
                "samples of a video frame (e.g. 160 = 10 ms, 4 rows per frame)"
            )
        if not self.hop_samples <= self.win_samples <= self.n_fft:
            raise ValueError(
                f"FeatureConfig: need hop_samples <= win_samples <= n_fft, got "
                f"{self.hop_samples}, {self.win_samples}, {self.n_fft}"
            )
        if not 0.0 <= self.low_hz < self.high_hz <= self.sample_rate / 2:
            raise ValueError(
                f"FeatureConfig: need 0 <= low_hz < high_hz <= {self.sample_rate / 2}, got "
                f"{self.low_hz}, {self.high_hz}"
            )
        if not 0.0 <= self.preemphasis < 1.0:
            raise ValueError(f"FeatureConfig.preemphasis={self.preemphasis}: accepted range is [0, 1)")
        if self.log_floor <= 0 or self.norm_std <= 0:
            raise ValueError("FeatureConfig: log_floor and norm_std must be positive")

    @property
    def rows_per_frame(self) -> int:
        """Feature rows per 25 fps video frame (4 with the defaults)."""
        return SAMPLES_PER_FRAME // self.hop_samples

    @property
    def rows_per_second(self) -> float:
        return self.sample_rate / self.hop_samples


FEATURE_PRESETS: dict[str, FeatureConfig] = {
    "fbank80": FeatureConfig(),
    "fbank40": FeatureConfig(n_filters=40, n_fft=512, norm_mean=-10.39, norm_std=4.44),
}


def as_float_samples(samples: np.ndarray, name: str = "samples") -> np.ndarray:
    """Return ``samples`` as float64 ``(N,)`` in [-1, 1] scale.

    Accepts a 1-D float array (taken as already in [-1, 1]) or int16 / int32 PCM (divided by
    32768 / 2**31). Anything else is a ``ValueError``.
    """
    arr = np.asarray(samples)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected mono samples of shape (N,), got shape {arr.shape}")
    if arr.dtype == np.int16:
        return arr.astype(np.float64) / 32768.0
    if arr.dtype == np.int32:
        return arr.astype(np.float64) / 2147483648.0
    if np.issubdtype(arr.dtype, np.floating):
        out = arr.astype(np.float64)
        if not np.all(np.isfinite(out)):
            raise ValueError(f"{name}: contains NaN or inf")
        return out
    raise ValueError(f"{name}: dtype {arr.dtype} not accepted; use float32/float64 in [-1, 1], int16 or int32")


class FeatureStream:
    """Incremental feature extractor: push audio pieces of any size, get the new complete rows.

    Example::

        stream = FeatureStream()
        for piece in pieces:               # float32 (n,) at 16 kHz, any n >= 0
            rows = stream.push(piece)      # float32 (m, n_filters), m >= 0
        rows = stream.flush()              # rows of the trailing partial hop, zero-padded

    The concatenation of all ``push`` outputs equals ``features_for(whole signal)``, and after
    ``flush`` it equals ``features_for(whole signal, pad_end=True)``.
    """

    def __init__(self, config: FeatureConfig | None = None) -> None:
        from python_speech_features.base import get_filterbanks

        self.config = config or FeatureConfig()
        cfg = self.config
        bank = get_filterbanks(cfg.n_filters, cfg.n_fft, cfg.sample_rate, cfg.low_hz, cfg.high_hz)
        empty = int((bank.sum(axis=1) == 0).sum())
        if empty:
            raise ValueError(
                f"FeatureConfig: {empty} of n_filters={cfg.n_filters} mel filters are empty with "
                f"n_fft={cfg.n_fft}; use fewer filters or a larger n_fft"
            )
        self.reset()

    def reset(self) -> None:
        """Forget all audio: the next push starts a new signal."""
        cfg = self.config
        # Pre-emphasised samples not yet fully consumed, starting with the zero left context that
        # makes row 0 the window ending at sample hop - 1.
        self._pending = np.zeros(cfg.win_samples - cfg.hop_samples, dtype=np.float64)  # (P,)
        self._last_sample = 0.0  # x[n - 1] for pre-emphasis
        self.samples_pushed = 0
        self.rows_emitted = 0
        self._flushed = False

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Add audio; return the feature rows completed by it, ``float32 (m, n_filters)``."""
        if self._flushed:
            raise ValueError("FeatureStream.push after flush: call reset() to start a new signal")
        x = as_float_samples(samples)  # (n,)
        if x.size == 0:
            return np.zeros((0, self.config.n_filters), dtype=np.float32)
        a = self.config.preemphasis
        previous = np.concatenate(([self._last_sample], x[:-1]))  # (n,)
        emphasised = x - a * previous  # (n,)
        self._last_sample = float(x[-1])
        self.samples_pushed += x.size
        self._pending = np.concatenate((self._pending, emphasised))  # (P + n,)
        return self._emit_complete()

    def flush(self) -> np.ndarray:
        """Zero-pad the trailing partial hop (if any) and return its row; ends the signal."""
        if self._flushed:
            raise ValueError("FeatureStream.flush called twice: call reset() to start a new signal")
        cfg = self.config
        rows_wanted = -(-self.samples_pushed // cfg.hop_samples)  # ceil
        missing = rows_wanted - self.rows_emitted
        assert 0 <= missing <= 1, "at most one partial hop can be pending"
        out = np.zeros((0, cfg.n_filters), dtype=np.float32)
        if missing:
            need = cfg.win_samples - self._pending.size
            self._pending = np.concatenate((self._pending, np.zeros(need)))  # (win,)
            out = self._emit_complete()
        self._flushed = True
        return out

    def _emit_complete(self) -> np.ndarray:
        cfg = self.config
        available = self._pending.size
        if available < cfg.win_samples:
            return np.zeros((0, cfg.n_filters), dtype=np.float32)
        m = (available - cfg.win_samples) // cfg.hop_samples + 1
        span = (m - 1) * cfg.hop_samples + cfg.win_samples
        rows = _log_fbank(self._pending[:span], cfg)  # (m, F)
        self._pending = self._pending[m * cfg.hop_samples:]
        self.rows_emitted += m
        return rows


def _log_fbank(emphasised: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Normalised log mel energies of exactly ``m`` complete windows, ``float32 (m, F)``.

    ``emphasised`` has length ``(m - 1) * hop + win``, so python_speech_features pads nothing.
    """
    from python_speech_features.base import fbank

    energies, _ = fbank(
        emphasised,
        samplerate=cfg.sample_rate,
        winlen=cfg.win_samples / cfg.sample_rate,
        winstep=cfg.hop_samples / cfg.sample_rate,
        nfilt=cfg.n_filters,
        nfft=cfg.n_fft,
        lowfreq=cfg.low_hz,
        highfreq=cfg.high_hz,
        preemph=0.0,  # applied by the caller, with state across pieces
        winfunc=np.hamming,
    )  # (m, F)
    logs = np.log(np.maximum(energies, cfg.log_floor))  # (m, F)
    return ((logs - cfg.norm_mean) / cfg.norm_std).astype(np.float32)


def features_for(samples: np.ndarray, config: FeatureConfig | None = None, pad_end: bool = False) -> np.ndarray:
    """Offline features of a whole signal: ``float32 (N // hop, n_filters)``.

    The rows are exactly those a :class:`FeatureStream` emits for the same samples, whatever the
    piece sizes. With ``pad_end=True`` a trailing partial hop is zero-padded into one more row
    (``ceil(N / hop)`` rows), as :meth:`FeatureStream.flush` does.
    """
    stream = FeatureStream(config)
    rows = stream.push(samples)  # (N // hop, F)
    if pad_end:
        rows = np.concatenate((rows, stream.flush()))  # (ceil(N / hop), F)
    return rows


def features_for_frames(samples: np.ndarray, n_frames: int, config: FeatureConfig | None = None) -> np.ndarray:
    """Features for exactly ``n_frames`` video frames: ``float32 (n_frames * rows_per_frame, F)``.

    Audio shorter than ``n_frames`` frames is zero-padded at the end (silence); longer audio is
    cut. Used by training and offline generation, where a clip of ``T`` frames needs ``4 T`` rows.
    """
    cfg = config or FeatureConfig()
    if n_frames < 0:
        raise ValueError(f"n_frames={n_frames}: must be >= 0")
    x = as_float_samples(samples)
    want = n_frames * SAMPLES_PER_FRAME
    x = np.concatenate((x[:want], np.zeros(max(0, want - x.size))))  # (want,)
    return features_for(x, cfg)


def measure_normalisation(signals: Iterable[np.ndarray], config: FeatureConfig | None = None) -> tuple[float, float]:
    """Global ``(mean, std)`` of the un-normalised log energies over 16 kHz ``signals``.

    How ``norm_mean`` / ``norm_std`` of :class:`FeatureConfig` were obtained; call it to
    recompute them for other settings. All rows of all signals count equally.
    """
    cfg = replace(config or FeatureConfig(), norm_mean=0.0, norm_std=1.0)
    total, total_sq, count = 0.0, 0.0, 0
    for signal in signals:
        rows = features_for(signal, cfg).astype(np.float64)  # (m, F)
        total += rows.sum()
        total_sq += np.square(rows).sum()
        count += rows.size
    if count == 0:
        raise ValueError("measure_normalisation: no complete feature rows in the given signals")
    mean = total / count
    return float(mean), float(np.sqrt(max(total_sq / count - mean * mean, 0.0)))
