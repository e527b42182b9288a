"""Metrics with standard pretrained weights, on a real clip: they run where the weights are present
(REST_WEIGHTS_DIR, the shared weights folder or the cache) and are skipped with the reason otherwise.

Expectations are the published behaviour of these networks on real footage, with wide margins:
SyncNet finds the real audio offset near 0 with clear confidence, ArcFace and LPIPS rate a clip
as close to its own frames, FID/FVD of a set against itself is about 0.
"""

import numpy as np
import pytest

from eval.metrics import get_metric
from eval.metrics.registry import EvalSample, compute_metric

CLIP = "clips/hdtf_aoc_wda.mp4"


def _require(name: str) -> None:
    ok, reason = get_metric(name).available()
    if not ok:
        pytest.skip(f"{name} unavailable: {reason}")


@pytest.fixture(scope="module")
def real_sample(shared_data):
    from hub.face import crop_reference
    from hub.media import read_video

    clip = read_video(shared_data / CLIP, max_seconds=4.0)
    frames = clip.frames[:100]
    return EvalSample(frames=frames, audio=clip.audio[: len(frames) * 640], reference=crop_reference(frames[0], 256),
                      ground_truth=frames, clip_id="hdtf_aoc_wda")


def test_lse_on_real_footage(real_sample):
    _require("lse")
    out = compute_metric("lse", real_sample)
    assert abs(out["lse_offset"]) <= 3 and out["lse_c"] > 1.0 and out["lse_d"] < 12


def test_csim_of_a_clip_with_its_own_frame(real_sample):
    _require("csim")
    assert compute_metric("csim", real_sample)["csim"] > 0.5


def test_lpips_of_identical_frames_is_zero(real_sample):
    _require("lpips")
    assert compute_metric("lpips", real_sample) == pytest.approx(0.0, abs=1e-3)


@pytest.mark.parametrize("name", ["fid", "fvd"])
def test_distribution_metric_of_a_set_against_itself(real_sample, name):
    _require(name)
    info = get_metric(name)
    features = info.extract(real_sample)
    value = info.fn([features], [features])
    assert np.isfinite(value) and abs(value) < 1.0
