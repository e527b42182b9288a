"""Landmark signals, identity and drift: synthetic golden values and real shared clips."""

import numpy as np
import pytest

from eval.metrics import EvalSample, compute_metric
from eval.metrics import drift as DR
from eval.metrics import landmarks as L
from eval.nets.facesync import delay_audio as _shift_audio


def test_lagged_correlation_recovers_synthetic_shift():
    rng = np.random.default_rng(0)
    x = np.convolve(rng.normal(size=300), np.ones(3) / 3, mode="same")
    for k in (-6, -3, 0, 4):
        audio = np.roll(x, -k)           # audio leads by k: video[t] = audio[t - k]
        corr = L.lagged_correlation(x, audio, 15)
        assert np.argmax(corr) - 15 == k and corr.max() > 0.95


def test_lmd_golden_values():
    rng = np.random.default_rng(0)
    gt = rng.uniform(50, 200, (5, 68, 2))
    assert np.allclose(L.landmark_distance(gt, gt), 0)
    assert np.allclose(L.landmark_distance(gt + 7.0, gt), 0)  # centring removes translation
    moved = gt.copy()
    moved[:, 48:68, 0] += 2.0
    moved[:, 48:58, 0] += 2.0  # half the mouth points move 4 px, half 2 px: centred offsets +-1
    assert np.allclose(L.landmark_distance(moved, gt, "mouth"), 1.0)
    with pytest.raises(ValueError, match="region"):
        L.landmark_distance(gt, gt, "eyes")


def test_blinks_jitter_and_drift_on_synthetic_signals():
    ear = np.full(100, 0.3)
    ear[10:13] = 0.1      # a 3-frame blink
    ear[50:51] = 0.1      # a 1-frame dip is not a blink
    ear[80:84] = 0.12
    assert L.count_blinks(ear) == 2
    still = np.tile(np.random.default_rng(1).uniform(0, 100, (1, 68, 2)), (20, 1, 1))
    assert L.jitter_from_landmarks(still) == pytest.approx(0.0, abs=1e-12)
    shaky = still.copy()
    shaky[::2] += 1.0
    assert L.jitter_from_landmarks(shaky) > 0
    t = np.arange(150) / 2.5  # 2.5 Hz samples over 60 s
    curve = DR.drift_curve(0.9 - 0.001 * t, 2.5, window_seconds=2.0)
    assert curve.slope_per_min == pytest.approx(-0.06, rel=1e-6)
    assert len(curve.times) == 30


def test_flicker_mask_and_value():
    frames = np.zeros((3, 40, 40, 3), np.uint8)
    frames[1, :, :5] = 30            # background changes by 30 in a 5-column strip
    frames[:, 15:25, 15:25] = np.arange(3)[:, None, None, None] * 100   # the "face" changes a lot
    mask = L.static_mask((40, 40), np.array([[15.0, 15.0, 10.0, 10.0]]))
    assert not mask[20, 20] and mask[0, 0]
    expected = (5 * 40 * 30 * 2) / (mask.sum() * 2)  # up and down again, over 2 differences
    assert L.flicker_in_mask(frames, mask) == pytest.approx(expected)
    per_pair = L.flicker_per_pair(frames, np.tile([15.0, 15.0, 10.0, 10.0], (3, 1)))
    assert per_pair == pytest.approx([5 * 40 * 30 / mask.sum()] * 2)


@pytest.fixture(scope="module")
def may_clip(shared_data):
    from hub.media import read_video

    clip = read_video(shared_data / "clips" / "real3d_May_5s.mp4")
    return clip.frames, clip.audio


def test_av_landmark_sync_recovers_known_audio_shifts(may_clip):
    frames, audio = may_clip
    sample = EvalSample(frames=frames, audio=audio, clip_id="may")
    base = compute_metric("av_landmark_sync", sample)
    assert base["av_corr"] > 0.2
    for shift in (-6, -3, 3, 6):
        shifted = EvalSample(frames=frames, audio=_shift_audio(audio, shift), clip_id="may")
        shifted.cache.update(sample.cache)  # same frames: reuse the landmarks
        got = compute_metric("av_landmark_sync", shifted)["av_offset"]
        # delaying the audio by `shift` frames lowers the offset (audio leads less) by `shift`
        assert abs(got - (base["av_offset"] - shift)) <= 1, (shift, got, base)


def test_identity_and_motion_metrics_on_real_clip(may_clip, shared_data):
    from hub.media import read_image

    frames, audio = may_clip
    own = EvalSample(frames=frames[:50], audio=audio[: 50 * 640], reference=frames[60].copy())
    other = EvalSample(frames=frames[:50], reference=read_image(shared_data / "portraits" / "hallo_1.jpg"))
    same = compute_metric("id_sim_dlib", own)
    diff = compute_metric("id_sim_dlib", other)
    assert same["id_sim_dlib_face_frames"] == 1.0
    assert same["id_sim_dlib"] > diff["id_sim_dlib"] + 0.02
    blinks = compute_metric("blink_rate", own)
    assert 0 <= blinks["blinks_per_min"] < 120 and 0.1 < blinks["ear_mean"] < 0.5
    head = compute_metric("head_motion", own)
    assert all(np.isfinite(v) for v in head.values()) and head["yaw_std"] < 30
    gt = EvalSample(frames=frames[:50], ground_truth=frames[:50])
    assert compute_metric("lmd", gt) == pytest.approx(0.0, abs=1e-9)
    off = EvalSample(frames=frames[:50], ground_truth=frames[2:52])
    assert compute_metric("lmd", off) > 0


def test_csim_pipeline_with_duck_typed_embedder(may_clip):
    """The alignment + cosine path; ArcFace weights are not available here."""
    from eval.nets.arcface import ARCFACE_TEMPLATE, align_face

    frames, _ = may_clip
    img = np.zeros((112, 112, 3), np.uint8)
    img[50:54, 36:40] = 255
    assert (align_face(img, ARCFACE_TEMPLATE) == img).all()  # the template maps onto itself

    class MeanColour:
        def embed(self, crops):
            return crops.reshape(len(crops), -1, 3).mean(axis=1) + 1.0

    sample = EvalSample(frames=frames[:10], reference=frames[0].copy())
    scores = compute_metric("csim", sample, model=MeanColour())
    assert scores["csim_face_frames"] == 1.0 and 0.99 < scores["csim"] <= 1.0 + 1e-12


def test_motionless_mouth_has_no_offset():
    from eval.metrics.landmarks import av_sync_from_signals

    energy = np.random.default_rng(0).standard_normal(200)
    out = av_sync_from_signals(np.ones(200), energy)
    assert out["av_corr"] == 0.0 and out["av_conf"] == 0.0 and np.isnan(out["av_offset"])
