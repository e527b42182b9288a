"""FVD, VideoGPT variant: the I3D port's state_dict layout and loader, VideoGPT's preprocessing
(short-side bilinear resize, centre crop, [-0.5, 0.5]) against closed-form golden values, the
registry entry, and the real ``i3d_pretrained_400.pt`` where the resolver finds it (skipped with
the reason otherwise).

Stand-in weights are random tensors saved exactly as the real file is (a plain ``state_dict`` of
``InceptionI3d(400, in_channels=3)`` written by ``torch.save``).
"""

import json

import numpy as np
import pytest
import torch

from eval.__main__ import main
from eval.metrics import EvalSample, get_metric
from eval.metrics import distribution as D
from eval.nets import i3d_videogpt as V
from eval.weights import I3D_VIDEOGPT, WeightsUnavailable, resolve_weight, weight_status

torch.set_num_threads(1)


def _random_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights with plausible batch-norm statistics, so activations stay finite and varied."""
    torch.manual_seed(seed)
    net = V.InceptionI3d(400, in_channels=3)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net.state_dict()


@pytest.fixture(scope="module")
def standin_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("i3d") / "i3d_pretrained_400.pt"
    torch.save(_random_state_dict(), path)
    return path


@pytest.fixture(scope="module")
def standin_net(standin_file):
    return V.load_i3d_videogpt(standin_file)


def _clip(t: int = 16, h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


# --- (a) the port and its loader -------------------------------------------------------------

def test_state_dict_layout_is_videogpts():
    state = V.InceptionI3d(400, in_channels=3).state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["Conv3d_1a_7x7.conv3d.weight"] == (64, 3, 7, 7, 7)
    assert shapes["Conv3d_1a_7x7.bn.running_var"] == (64,)
    assert shapes["Conv3d_2c_3x3.conv3d.weight"] == (192, 64, 3, 3, 3)
    assert shapes["Mixed_3b.b1b.conv3d.weight"] == (128, 96, 3, 3, 3)
    assert shapes["Mixed_4f.b3b.conv3d.weight"] == (128, 528, 1, 1, 1)
    assert shapes["Mixed_5c.b0.bn.weight"] == (384,)
    assert shapes["logits.conv3d.weight"] == (400, 1024, 1, 1, 1)
    assert shapes["logits.conv3d.bias"] == (400,)
    assert "logits.bn.weight" not in shapes and "Conv3d_1a_7x7.conv3d.bias" not in shapes
    assert not any(k.startswith(("end_points.", "module.")) for k in shapes)
    # 16 end points (no parameters in the 4 max pools), 57 Unit3D with batch norm + the logits head
    assert len({k.split(".")[0] for k in shapes}) == 13
    assert len(shapes) == 57 * 6 + 2
    n_params = sum(v.numel() for k, v in state.items() if not k.endswith("num_batches_tracked"))
    assert n_params == 12_711_824  # float32: about 50.8 MB, the size of the published file


def test_loader_round_trip_gives_deterministic_400d_features(standin_file, standin_net):
    saved = torch.load(standin_file, map_location="cpu", weights_only=True)
    loaded = standin_net.state_dict()
    assert list(saved) == list(loaded)
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    assert not standin_net.training
    clip = _clip()
    frames = np.concatenate([clip, clip, clip[:8]])  # 40 frames: two identical 16-frame clips
    feats = D.fvd_videogpt_features(EvalSample(frames=frames), detector=standin_net)  # one batch of 2
    assert feats.shape == (2, 400) and feats.dtype == np.float64 and np.isfinite(feats).all()
    assert np.ptp(feats[0]) > 0
    np.testing.assert_array_equal(feats[0], feats[1])
    again = V.i3d_videogpt_features(standin_net, clip[None], batch=1)  # a second pass, batch of 1
    np.testing.assert_allclose(again[0], feats[0], rtol=0, atol=1e-6)
    info = get_metric("fvd_videogpt")
    assert info.level == "set" and info.extract is D.fvd_videogpt_features and info.fn is D.fvd_videogpt


def test_loader_accepts_legacy_format_and_missing_batch_norm_counters(tmp_path):
    state = _random_state_dict(1)
    trimmed = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "i3d_pretrained_400.pt"
    torch.save(trimmed, path, _use_new_zipfile_serialization=False)
    net = V.load_i3d_videogpt(path)
    assert torch.equal(net.state_dict()["Mixed_5c.b0.conv3d.weight"], state["Mixed_5c.b0.conv3d.weight"])


def test_loader_rejects_wrong_files_with_the_file_name(tmp_path):
    state = _random_state_dict(2)
    cases = {
        "prefixed.pt": {f"module.{k}": v for k, v in state.items()},
        "no_head.pt": {k: v for k, v in state.items() if not k.startswith("logits.")},
        "classes600.pt": {**state, "logits.conv3d.weight": torch.zeros(600, 1024, 1, 1, 1),
                          "logits.conv3d.bias": torch.zeros(600)},
    }
    for name, bad in cases.items():
        torch.save(bad, tmp_path / name)
        with pytest.raises(ValueError, match=rf"{name}: not the state_dict of VideoGPT's InceptionI3d"):
            V.load_i3d_videogpt(tmp_path / name)
    with pytest.raises(ValueError, match="wrong shape 2"):
        V.load_i3d_videogpt(tmp_path / "classes600.pt")
    with pytest.raises(ValueError, match="missing 2 .*logits.conv3d"):
        V.load_i3d_videogpt(tmp_path / "no_head.pt")
    (tmp_path / "page.pt").write_text("<!DOCTYPE html><html>Google Drive</html>")
    with pytest.raises(ValueError, match="page.pt: not a torch state_dict file"):
        V.load_i3d_videogpt(tmp_path / "page.pt")
    torch.save({"net": torch.nn.Linear(2, 2)}, tmp_path / "pickled_module.pt")  # needs unpickling code
    with pytest.raises(ValueError, match="pickled_module.pt: not a torch state_dict file readable with weights_only"):
        V.load_i3d_videogpt(tmp_path / "pickled_module.pt")


# --- (b) preprocessing: golden values ---------------------------------------------------------

def test_resize_target_follows_videogpt_arithmetic():
    assert V.videogpt_resize_size(48, 64) == (224, 299)   # 64 * 224/48 = 298.67 -> ceil
    assert V.videogpt_resize_size(64, 48) == (299, 224)
    assert V.videogpt_resize_size(240, 320) == (224, 299)
    assert V.videogpt_resize_size(224, 224) == (224, 224)
    assert V.videogpt_resize_size(100, 100) == (225, 224)  # VideoGPT's float quirk: 224.00000000000003


def _ramp_clip(h: int, w: int, t: int = 16) -> np.ndarray:
    """R = 2x + 2y + frame index, G = 255 - (2x + 2y), B = 10: linear in x and y, so bilinear
    resizing is exact (up to float32) away from the clamped borders."""
    y, x = np.mgrid[0:h, 0:w]
    base = 2 * x + 2 * y
    frames = np.empty((t, h, w, 3), np.uint8)
    for k in range(t):
        frames[k] = np.stack([base + k, 255 - base, np.full_like(base, 10)], axis=-1)
    return frames


def _source_coords(out_size: int, resized: int, in_size: int, start: int) -> np.ndarray:
    """Source pixel coordinate of each cropped output pixel (align_corners=False, clamped)."""
    j = np.arange(out_size) + start
    return np.clip((j + 0.5) * in_size / resized - 0.5, 0, in_size - 1)


def test_landscape_short_side_resize_and_centre_crop_golden():
    clip = _ramp_clip(48, 64)                                   # H=48 < W=64
    out = V.videogpt_preprocess(clip[None]).numpy()             # (1, 3, 16, 224, 224)
    assert out.shape == (1, 3, 16, 224, 224) and out.dtype == np.float32
    # short side 48 -> 224 (nothing cropped vertically); long side 64 -> 299, crop from (299-224)//2 = 37
    ys = _source_coords(224, 224, 48, 0)[:, None]
    xs = _source_coords(224, 299, 64, 37)[None, :]
    base = 2 * xs + 2 * ys                                      # (224, 224)
    for k in (0, 7, 15):
        np.testing.assert_allclose(out[0, 0, k], (base + k) / 255 - 0.5, atol=2e-5)
        np.testing.assert_allclose(out[0, 1, k], (255 - base) / 255 - 0.5, atol=2e-5)
        np.testing.assert_allclose(out[0, 2, k], 10 / 255 - 0.5, atol=1e-6)
    # the crop spans source x 7.53 .. 55.26 (a squash to 224x224 would span 0 .. 63)
    assert xs[0, 0] == pytest.approx(37.5 * 64 / 299 - 0.5) and xs[0, -1] == pytest.approx(260.5 * 64 / 299 - 0.5)
    # a crop one resized column off (or a squash) is 0.21 source px away: 0.0017 in output units
    for wrong_start in (36, 38):
        wrong = 2 * _source_coords(224, 299, 64, wrong_start)[None, :] + 2 * ys
        assert np.abs(out[0, 1, 0] - ((255 - wrong) / 255 - 0.5)).max() > 1e-3


def test_portrait_is_the_transpose_of_landscape():
    clip = _ramp_clip(48, 64)
    landscape = V.videogpt_preprocess(clip[None]).numpy()
    portrait = V.videogpt_preprocess(np.ascontiguousarray(clip.transpose(0, 2, 1, 3))[None]).numpy()
    np.testing.assert_allclose(portrait, landscape.transpose(0, 1, 2, 4, 3), atol=1e-6)


def test_value_range_is_minus_half_to_half():
    extremes = np.zeros((2, 16, 48, 64, 3), np.uint8)
    extremes[1] = 255
    out = V.videogpt_preprocess(extremes)
    assert torch.all(out[0] == -0.5)
    torch.testing.assert_close(out[1], torch.full_like(out[1], 0.5), rtol=0, atol=1e-6)  # float32 weights
    noisy = V.videogpt_preprocess(_clip(seed=4)[None])
    assert noisy.min() >= -0.5 and noisy.max() <= 0.5 and noisy.std() > 0.1
    with pytest.raises(ValueError, match="uint8"):
        V.videogpt_preprocess(_clip().astype(np.float32)[None])


# --- (c) registry, weights spec, `python -m eval list` -----------------------------------------

@pytest.fixture()
def no_weights(tmp_path, monkeypatch):
    """No shared data, empty cache, REST_WEIGHTS_DIR in tmp: i3d_pretrained_400.pt is missing."""
    monkeypatch.setenv("REST_DATA_DIR", str(tmp_path / "no-shared-data"))
    monkeypatch.setenv("REST_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("REST_WEIGHTS_DIR", str(tmp_path / "weights"))
    (tmp_path / "weights").mkdir()
    return tmp_path / "weights"


def test_list_reports_fvd_videogpt_unavailable_with_the_file_name(no_weights, capsys):
    assert main(["list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    row = rows["fvd_videogpt"]
    assert row["available"] is False and row["level"] == "set" and row["kind"] == "quality"
    assert row["needs_reference_video"] is True and row["higher_is_better"] is False
    assert "i3d_pretrained_400.pt" in row["reason"] and "1mQK8KD8G6UWRa5t87SRMm5PVXtlpneJT" in row["reason"]
    assert [w["filename"] for w in row["weights"]] == ["i3d_pretrained_400.pt"]
    assert "centre crop" in row["variant"] and "[-0.5, 0.5]" in row["variant"]
    assert "StyleGAN-V" in rows["fvd"]["variant"]  # the default FVD is unchanged
    assert main(["list", "--kind", "quality"]) == 0
    text = capsys.readouterr().out
    assert "fvd_videogpt" in text and "i3d_pretrained_400.pt" in text


def test_fvd_stays_the_default_of_the_benchmark():
    from eval.benchmarks import BENCHMARKS

    defaults = BENCHMARKS["mini-real"].default_metrics
    assert "fvd" in defaults and "fvd_videogpt" not in defaults


def test_weight_spec_checks_the_torch_save_format(no_weights):
    path = no_weights / "i3d_pretrained_400.pt"
    path.write_text("<html>Google Drive - virus scan warning</html>")  # what a failed Drive download gives
    ok, reason = weight_status(I3D_VIDEOGPT)
    assert not ok and "not a torch.save file" in reason
    torch.save({"w": torch.zeros(2)}, path, _use_new_zipfile_serialization=False)
    assert resolve_weight(I3D_VIDEOGPT) == path
    torch.save({"w": torch.zeros(2)}, path)
    assert resolve_weight(I3D_VIDEOGPT) == path
    path.unlink()
    with pytest.raises(WeightsUnavailable, match="i3d_pretrained_400.pt not found"):
        resolve_weight(I3D_VIDEOGPT)


# --- (d) the real weights, where present ------------------------------------------------------

def test_real_i3d_pretrained_400():
    ok, reason = get_metric("fvd_videogpt").available()
    if not ok:
        pytest.skip(f"fvd_videogpt unavailable: {reason}")
    info = get_metric("fvd_videogpt")
    rng = np.random.default_rng(0)
    # a smoothly moving bar, and the same frames with noise: a different distribution of clips
    x = np.arange(64)
    frames = np.stack([np.broadcast_to(((np.abs(x - (2 * k) % 64 - 8) < 6) * 200 + 30)[None, :, None],
                                       (48, 64, 3)) for k in range(48)]).astype(np.uint8)
    noisy = np.clip(frames + rng.normal(0, 60, frames.shape), 0, 255).astype(np.uint8)
    real = info.extract(EvalSample(frames=frames))
    fake = info.extract(EvalSample(frames=noisy))
    assert real.shape == fake.shape == (3, 400) and np.isfinite(real).all() and np.isfinite(fake).all()
    assert np.abs(real - fake).max() > 1e-3
    same = info.fn([real], [real])
    assert np.isfinite(same) and abs(same) < 1.0  # as for the other FVD; few clips: singular covariances
    assert info.fn([fake], [real]) > 1.0
