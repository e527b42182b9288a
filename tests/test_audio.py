"""Incremental filterbank features: streaming == offline on real speech, framing, scaling."""

from __future__ import annotations

import numpy as np
import pytest

from hub import SAMPLES_PER_FRAME
from hub.audio import (
    FEATURE_PRESETS,
    FeatureConfig,
    FeatureStream,
    as_float_samples,
    features_for,
    features_for_frames,
)

SPEECH_16K_MONO = "speech/joyvasa_001.wav"  # 16 kHz mono int16 in the shared data


@pytest.fixture(scope="module")
def speech(shared_data) -> np.ndarray:
    """About 4 s of real speech as int16 (N,)."""
    from scipy.io import wavfile

    rate, pcm = wavfile.read(shared_data / SPEECH_16K_MONO)
    assert rate == 16_000 and pcm.ndim == 1 and pcm.dtype == np.int16
    return pcm[16_000:80_000]


def _push_in_pieces(stream: FeatureStream, signal: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    outs, pos = [], 0
    while pos < signal.size:
        kind = rng.integers(4)
        size = [1, 160, int(rng.integers(2, 40)), int(rng.integers(41, 3000))][kind]
        outs.append(stream.push(signal[pos:pos + size]))
        pos += size
    return outs


@pytest.mark.parametrize("preset", sorted(FEATURE_PRESETS))
def test_streaming_equals_offline_random_pieces(speech, preset):
    cfg = FEATURE_PRESETS[preset]
    signal = speech[:40_000].astype(np.float32) / 32768.0
    offline = features_for(signal, cfg)
    assert offline.shape == (signal.size // cfg.hop_samples, cfg.n_filters)
    for seed in range(2):
        stream = FeatureStream(cfg)
        outs = _push_in_pieces(stream, signal, np.random.default_rng(seed))
        assert all(o.dtype == np.float32 and o.shape[1] == cfg.n_filters for o in outs)
        streamed = np.concatenate(outs)
        assert streamed.shape == offline.shape
        np.testing.assert_allclose(streamed, offline, rtol=0, atol=1e-5)


def test_prefix_features_are_prefix_of_features(speech):
    full = features_for(speech)
    for cut in (399, 400, 641, 12_345, 30_000):
        prefix = features_for(speech[:cut])
        assert prefix.shape[0] == cut // 160
        np.testing.assert_allclose(prefix, full[: prefix.shape[0]], rtol=0, atol=1e-5)


def test_matches_python_speech_features_on_padded_signal(speech):
    """Same numbers as calling python_speech_features on the left-padded whole signal."""
    from python_speech_features import fbank

    cfg = FeatureConfig()
    x = speech.astype(np.float64) / 32768.0
    padded = np.concatenate((np.zeros(cfg.win_samples - cfg.hop_samples), x))
    energies, _ = fbank(padded, 16_000, 0.025, 0.01, cfg.n_filters, cfg.n_fft, 0, 8000,
                        cfg.preemphasis, winfunc=np.hamming)
    n_rows = x.size // cfg.hop_samples
    expected = (np.log(np.maximum(energies[:n_rows], cfg.log_floor)) - cfg.norm_mean) / cfg.norm_std
    np.testing.assert_allclose(features_for(speech), expected, rtol=0, atol=1e-5)


def test_row_is_the_causal_window_ending_at_its_hop(speech):
    """Row i is computed from samples [(i+1)*hop - win, (i+1)*hop) only (hand-computed FFT)."""
    from python_speech_features.base import get_filterbanks

    cfg = FeatureConfig()
    x = speech.astype(np.float64) / 32768.0
    emph = x - cfg.preemphasis * np.concatenate(([0.0], x[:-1]))
    bank = get_filterbanks(cfg.n_filters, cfg.n_fft, 16_000, 0, 8000)
    rows = features_for(speech)
    for i in (3, 77, 200):
        end = (i + 1) * cfg.hop_samples
        window = emph[end - cfg.win_samples:end] * np.hamming(cfg.win_samples)
        power = np.abs(np.fft.rfft(window, cfg.n_fft)) ** 2 / cfg.n_fft
        expected = (np.log(np.maximum(bank @ power, cfg.log_floor)) - cfg.norm_mean) / cfg.norm_std
        np.testing.assert_allclose(rows[i], expected, rtol=0, atol=1e-5)


def test_four_rows_per_video_frame_and_frame_helper(speech):
    cfg = FeatureConfig()
    assert cfg.rows_per_frame == 4 and cfg.rows_per_second == 100
    assert features_for(speech[: 7 * SAMPLES_PER_FRAME]).shape[0] == 28
    rows = features_for_frames(speech[:1000], n_frames=3)  # shorter audio: zero-padded
    assert rows.shape == (12, cfg.n_filters)
    np.testing.assert_allclose(rows[:6], features_for(speech[:1000])[:6], atol=1e-6)
    assert features_for_frames(speech, n_frames=5).shape == (20, cfg.n_filters)


def test_flush_pads_partial_hop(speech):
    stream = FeatureStream()
    head = stream.push(speech[:1_000])  # 6 complete rows, 40 samples pending
    tail = stream.flush()
    assert head.shape[0] == 6 and tail.shape[0] == 1
    np.testing.assert_allclose(np.concatenate((head, tail)), features_for(speech[:1_000], pad_end=True), atol=1e-6)
    with pytest.raises(ValueError, match="reset"):
        stream.push(speech[:10])
    with pytest.raises(ValueError, match="twice"):
        stream.flush()
    stream.reset()
    assert stream.push(speech[:160]).shape[0] == 1


def test_int_and_float_inputs_scale_identically(speech):
    as_float = speech.astype(np.float32) / 32768.0
    np.testing.assert_allclose(features_for(speech), features_for(as_float), atol=1e-5)
    as_int32 = speech.astype(np.int32) << 16
    np.testing.assert_allclose(features_for(as_int32), features_for(speech), atol=1e-5)


def test_normalisation_constants_fit_real_speech(speech):
    rows = features_for(speech)
    assert abs(float(rows.mean())) < 0.6
    assert 0.6 < float(rows.std()) < 1.5


def test_silence_is_finite_and_constant():
    rows = features_for(np.zeros(3_200, dtype=np.float32))
    cfg = FeatureConfig()
    np.testing.assert_allclose(rows, (np.log(cfg.log_floor) - cfg.norm_mean) / cfg.norm_std, rtol=1e-6)


def test_bad_inputs_raise_value_errors():
    with pytest.raises(ValueError, match=r"shape \(N,\)"):
        as_float_samples(np.zeros((10, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="dtype"):
        as_float_samples(np.zeros(10, dtype=np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        as_float_samples(np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="hop_samples"):
        FeatureConfig(hop_samples=150)
    with pytest.raises(ValueError, match="empty"):
        FeatureStream(FeatureConfig(n_filters=80, n_fft=512))
    with pytest.raises(ValueError, match="n_frames"):
        features_for_frames(np.zeros(10, dtype=np.float32), -1)
