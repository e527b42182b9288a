"""FaceSync CCA sync model: synthetic recovery, file round trip, the shipped model on a real clip."""

import numpy as np
import pytest

from eval.metrics import EvalSample, compute_metric, get_metric
from eval.nets.facesync import (FaceSyncConfig, FaceSyncModel, audio_features, delay_audio, fit_facesync,
                                shift_recovery, video_features)
from hub import SAMPLES_PER_FRAME

CONFIG = FaceSyncConfig(audio_filters=12, audio_context=2, video_context=1, components=2, ridge=0.5)


def _synthetic_clip(seed: int, frames: int = 160, lag: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Speech-like bursts and a mouth whose opening follows the loudness ``lag`` frames later."""
    rng = np.random.default_rng(seed)
    loudness = np.convolve(rng.random(frames) ** 3, np.ones(3) / 3, mode="same")  # (T,)
    tone = np.sin(2 * np.pi * rng.uniform(200, 600) * np.arange(frames * SAMPLES_PER_FRAME) / 16000)
    audio = (np.repeat(loudness, SAMPLES_PER_FRAME) * (tone + 0.3 * rng.normal(size=tone.size))).astype(np.float32)
    opening = np.roll(loudness, lag)  # (T,)
    base = rng.uniform(80, 120, (68, 2))
    landmarks = np.tile(base, (frames, 1, 1))  # (T, 68, 2)
    landmarks[:, 45, 0] = landmarks[:, 36, 0] + 60.0  # eyes 60 px apart
    landmarks[:, 57:60, 1] += 25.0 * opening[:, None]  # lower lip moves down as the mouth opens
    landmarks[:, 65:68, 1] += 25.0 * opening[:, None]
    landmarks += rng.normal(scale=0.3, size=landmarks.shape)  # detector noise
    return audio, landmarks


def test_features_have_the_documented_shapes():
    audio, landmarks = _synthetic_clip(0, frames=50)
    a = audio_features(audio, 50, CONFIG)
    v = video_features(landmarks, CONFIG)
    assert a.shape == (50, 5 * 4 * 12) and v.shape == (50, 3 * 40)
    assert audio_features(audio, 10, CONFIG).shape[0] == 10  # never more frames than asked
    faceless = np.full((50, 68, 2), np.nan)
    with pytest.raises(ValueError, match="no face"):
        video_features(faceless, CONFIG)
    with pytest.raises(ValueError, match="at least one frame"):
        audio_features(audio[:100], 5, CONFIG)
    with pytest.raises(ValueError, match="ridge"):
        FaceSyncConfig(ridge=-1)


def test_fit_recovers_known_shifts_on_held_out_synthetic_clips():
    model = fit_facesync([_synthetic_clip(s) for s in range(6)], CONFIG)
    assert model.canonical_correlations[0] > 0.8
    held_out = [_synthetic_clip(s) for s in (10, 11, 12)]
    for audio, landmarks in held_out:
        assert model.sync(audio, landmarks)["offset"] == 0  # the training lag reads as in sync
    result = shift_recovery(model, held_out)
    assert result == {"relative_within_1": 1.0, "absolute_within_1": 1.0, "clips": 3}
    audio, landmarks = held_out[0]
    assert model.sync(delay_audio(audio, 4), landmarks)["offset"] == -4  # delayed audio: it lags
    unrelated = model.sync(_synthetic_clip(20)[0], landmarks)
    assert unrelated["conf"] < model.sync(audio, landmarks)["conf"]


def test_windowed_correlation_at_lag_zero():
    model = fit_facesync([_synthetic_clip(s) for s in range(6)], CONFIG)
    audio, landmarks = _synthetic_clip(10, frames=200)
    starts, values = model.windowed_correlation(audio, landmarks, 50)
    assert starts.tolist() == [0, 50, 100, 150] and (values > 0.5).all()
    _, unrelated = model.windowed_correlation(_synthetic_clip(20, frames=200)[0], landmarks, 50)
    assert abs(unrelated.mean()) < 0.2
    _, late = model.windowed_correlation(delay_audio(audio, 6), landmarks, 50)
    assert late.mean() < 0.5 * values.mean()  # out of sync loses the lag-0 correlation


def test_fit_needs_enough_frames():
    with pytest.raises(ValueError, match="frames for"):
        fit_facesync([_synthetic_clip(0, frames=40)], CONFIG)


def test_save_load_round_trip_and_wrong_file(tmp_path):
    from safetensors.numpy import save_file

    model = fit_facesync([_synthetic_clip(s) for s in range(6)], CONFIG, {"train_clips": ["a", "b", "c"]})
    path = model.save(tmp_path / "fs.safetensors")
    loaded = FaceSyncModel.load(path)
    assert loaded.config == CONFIG and loaded.report["train_clips"] == ["a", "b", "c"]
    np.testing.assert_array_equal(loaded.audio_projection, model.audio_projection)
    audio, landmarks = _synthetic_clip(5)
    assert loaded.sync(audio, landmarks) == model.sync(audio, landmarks)
    assert not list(tmp_path.glob(".*"))  # written atomically
    save_file({"x": np.zeros(3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a FaceSync model"):
        FaceSyncModel.load(tmp_path / "other.safetensors")


def test_missing_model_file_says_where_it_comes_from(tmp_path, monkeypatch):
    import dataclasses

    from eval.weights import FACESYNC_CCA, WeightsUnavailable, resolve_weight

    elsewhere = dataclasses.replace(FACESYNC_CCA, extra_dirs=(str(tmp_path),))  # not the repository's eval/assets
    monkeypatch.setenv("REST_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("REST_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("REST_DATA_DIR", str(tmp_path))
    with pytest.raises(WeightsUnavailable, match="fit-facesync") as error:
        resolve_weight(elsewhere)
    assert "fetch-weights" not in str(error.value)


def test_fit_command_refuses_a_folder_without_an_index(tmp_path, capsys):
    from eval.__main__ import main

    assert main(["fit-facesync", "--prepared", str(tmp_path), "--out", str(tmp_path / "m.safetensors")]) == 2
    assert "index.csv not found" in capsys.readouterr().err


def test_cross_validation_scores_the_grid(monkeypatch):
    from eval import fit_facesync as F

    clips = [{"id": f"c{s}", "identity": f"p{s % 4}", "audio": a, "landmarks": lm}
             for s, (a, lm) in enumerate(_synthetic_clip(s) for s in range(8))]
    assert F.cross_validate(clips, CONFIG) == pytest.approx(2.0)


def test_shipped_model_finds_known_shifts_on_a_real_clip(shared_data):
    """The committed eval/assets model on a real val clip (never fitted on): shifts are tracked."""
    from hub.media import read_video

    ok, reason = get_metric("av_facesync").available()
    assert ok, reason  # the model ships with the repository
    clip = read_video(shared_data / "clips" / "real3d_May_5s.mp4")
    sample = EvalSample(frames=clip.frames, audio=clip.audio, clip_id="may")
    base = compute_metric("av_facesync", sample)
    assert base["fs_corr"] > 0.2 and abs(base["fs_offset"]) <= 3
    assert base["fs_in_sync"] == float(abs(base["fs_offset"]) <= 1)
    for shift in (-6, 6):
        shifted = EvalSample(frames=clip.frames, audio=delay_audio(clip.audio, shift), clip_id="may")
        shifted.cache.update(sample.cache)  # same frames: reuse the landmarks
        got = compute_metric("av_facesync", shifted)["fs_offset"]
        assert abs(got - (base["fs_offset"] - shift)) <= 1, (shift, got, base)
    still = EvalSample(frames=np.repeat(clip.frames[:1], len(clip.frames), axis=0), audio=clip.audio)
    assert compute_metric("av_facesync", still)["fs_conf"] < base["fs_conf"]


def test_pooled_curves_script(shared_data, tmp_path, capsys):
    import importlib.util

    from hub import settings

    spec = importlib.util.spec_from_file_location("pooled", settings.REPO_ROOT / "scripts" / "facesync_pooled_curves.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main([str(tmp_path)]) == 2 and "outputs not found" in capsys.readouterr().err
    folder = tmp_path / "outputs" / "real"
    folder.mkdir(parents=True)
    (folder / "may.mp4").symlink_to(shared_data / "clips" / "real3d_May_5s.mp4")
    assert script.main([str(tmp_path)]) == 0
    rows = (tmp_path / "facesync_pooled_curves.csv").read_text().splitlines()
    assert rows[0].startswith("method,clips,lag-15") and rows[1].startswith("real,1,")
    curve = np.array([float(v) for v in rows[1].split(",")[2:]])  # (31,)
    assert abs(int(np.argmax(curve)) - 15) <= 3 and curve.max() > 0.2


def test_facesync_curve_of_a_real_clip_and_a_still(shared_data):
    from eval.benchmarks import facesync_curve
    from hub.media import read_video

    clip = read_video(shared_data / "clips" / "real3d_May_5s.mp4")
    times, values = facesync_curve(EvalSample(frames=clip.frames, audio=clip.audio), window_seconds=2.0)
    assert times.tolist() == [1.0, 3.0] and np.isfinite(values).all() and values.mean() > 0.1
    still = EvalSample(frames=np.repeat(clip.frames[:1], len(clip.frames), axis=0), audio=clip.audio)
    _, flat = facesync_curve(still, window_seconds=2.0)
    assert np.abs(flat).max() < 0.05
    with pytest.raises(ValueError, match="at least 10"):
        facesync_curve(EvalSample(frames=clip.frames[:50], audio=clip.audio[: 50 * 640]))
