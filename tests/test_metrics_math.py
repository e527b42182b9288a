"""Golden values for the metric math: Fréchet distance, PSNR/SSIM, FID/FVD with stand-in networks."""

import numpy as np
import pytest
import torch

from eval.metrics import EvalSample, compute_metric, get_metric
from eval.metrics import distribution as D
from eval.weights import WeightsUnavailable

torch.set_num_threads(1)


def test_frechet_of_diagonal_gaussians_matches_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = rng.uniform(0.5, 2, 6), rng.uniform(0.5, 2, 6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert D.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-9)


def test_frechet_of_full_covariances_matches_eigen_sqrt():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    s1, s2 = a @ a.T + np.eye(5), b @ b.T + np.eye(5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    # Tr sqrt(S1 S2) = sum of sqrt of eigenvalues of S1^1/2 S2 S1^1/2 (symmetric, PSD)
    w, v = np.linalg.eigh(s1)
    root1 = v @ np.diag(np.sqrt(w)) @ v.T
    tr_sqrt = np.sum(np.sqrt(np.linalg.eigvalsh(root1 @ s2 @ root1)))
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert D.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    assert D.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-6)


def test_frechet_of_features_and_singular_covariance():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 3))
    y = rng.normal(loc=1.0, size=(400, 3))
    # means differ by about 1 per dimension, covariances about I: FD about 3
    assert D.frechet_of_features(x, y) == pytest.approx(3.0, abs=0.5)
    assert D.frechet_of_features([x[:200], x[200:]], x) == pytest.approx(0.0, abs=1e-8)
    few = rng.normal(size=(3, 8))  # rank-deficient covariances: must stay finite
    assert np.isfinite(D.frechet_of_features(few, few + 0.1))
    with pytest.raises(ValueError, match="at least 2"):
        D.feature_statistics(x[:1])


def _frames(t=4, h=32, w=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def test_psnr_ssim_against_scikit_image_and_golden_value():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    gt = _frames()
    gen = np.clip(gt.astype(int) + np.random.default_rng(1).integers(-20, 21, gt.shape), 0, 255).astype(np.uint8)
    s = EvalSample(frames=gen, ground_truth=gt)
    want_psnr = np.mean([peak_signal_noise_ratio(a, b, data_range=255) for a, b in zip(gt, gen)])
    want_ssim = np.mean([structural_similarity(a, b, channel_axis=2, data_range=255) for a, b in zip(gt, gen)])
    assert compute_metric("psnr", s) == pytest.approx(want_psnr, rel=1e-12)
    assert compute_metric("ssim", s) == pytest.approx(want_ssim, rel=1e-12)
    # a constant error of 10 grey levels: PSNR = 10 log10(255^2 / 100)
    flat = np.full((2, 8, 8, 3), 100, np.uint8)
    assert compute_metric("psnr", EvalSample(frames=flat + 10, ground_truth=flat)) == pytest.approx(
        10 * np.log10(255 ** 2 / 100), abs=1e-9)
    with pytest.raises(ValueError, match="ground-truth"):
        compute_metric("psnr", EvalSample(frames=gen))
    with pytest.raises(ValueError, match="differ"):
        compute_metric("ssim", EvalSample(frames=gen[:3], ground_truth=gt))


def test_lpips_without_backbone_is_unavailable_not_random(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("REST_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("REST_DATA_DIR", str(tmp_path / "none"))
    monkeypatch.delenv("REST_WEIGHTS_DIR", raising=False)
    info = get_metric("lpips")
    from eval.metrics.quality import load_lpips

    with pytest.raises(WeightsUnavailable, match="alexnet-owt-7be5be79.pth"):
        load_lpips(tmp_path / "absent.pth")
    ok, reason = info.available()
    if not ok:
        assert "alexnet-owt-7be5be79.pth" in reason


def test_lpips_with_standin_backbone_file(tmp_path):
    """The backbone loader maps torchvision AlexNet keys into lpips (random stand-in weights)."""
    import hashlib

    import torchvision

    from eval import weights as W
    from eval.metrics import quality as Q

    path = tmp_path / "alexnet-owt-7be5be79.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    spec = W.WeightSpec(name="alexnet", filename=path.name, url="x",
                        sha256_prefix=hashlib.sha256(path.read_bytes()).hexdigest()[:8])
    monkey = pytest.MonkeyPatch()
    monkey.setattr(Q, "ALEXNET_LPIPS", spec)
    try:
        model = Q.load_lpips(path)
    finally:
        monkey.undo()
    state = torch.load(path, weights_only=True)
    assert torch.equal(model.net.slice1[0].weight, state["features.0.weight"])
    a = _frames(2, 64, 64)
    d_same = Q.lpips_frames(a, a, model)
    d_diff = Q.lpips_frames(a, _frames(2, 64, 64, seed=5), model)
    assert np.allclose(d_same, 0, atol=1e-6) and (d_diff > 0).all()


def test_fid_with_standin_inception_file(tmp_path):
    from eval.nets.inception_fid import FIDInceptionV3, load_fid_inception

    torch.manual_seed(0)
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(FIDInceptionV3().net.state_dict(), path)  # same keys as the pytorch-fid file
    model = load_fid_inception(path)
    assert "fc.weight" in model.net.state_dict() and model.net.fc.out_features == 1008
    feats = D.fid_features(EvalSample(frames=_frames(3, 64, 64)), model=model)
    assert feats.shape == (3, 2048) and np.isfinite(feats).all()
    with pytest.raises(ValueError, match="pytorch-fid"):
        torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "bad.pth")
        load_fid_inception(tmp_path / "bad.pth")


class _StandinI3D(torch.nn.Module):
    """Same call signature and output as StyleGAN-V's TorchScript detector."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3, 400)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        if rescale:
            x = x / 127.5 - 1
        if resize:
            b, c, t, h, w = x.shape
            x = torch.nn.functional.interpolate(x.transpose(1, 2).reshape(b * t, c, h, w), size=(224, 224),
                                                mode="bilinear", align_corners=False).reshape(b, t, c, 224, 224)
            x = x.transpose(1, 2)
        return self.proj(x.mean(dim=(2, 3, 4)))


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_fvd_with_standin_torchscript(tmp_path):
    from eval.nets.i3d import load_i3d_torchscript

    torch.manual_seed(0)
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.save(torch.jit.script(_StandinI3D()), str(path))
    detector = load_i3d_torchscript(path)
    frames = _frames(40, 32, 32)
    feats = D.fvd_features(EvalSample(frames=frames), detector=detector)
    assert feats.shape == (2, 400)  # two non-overlapping 16-frame clips
    other = D.fvd_features(EvalSample(frames=_frames(40, 32, 32, seed=3)), detector=detector)
    info = get_metric("fvd")
    assert info.level == "set" and info.extract is D.fvd_features
    score = info.fn([feats, other], [other, feats])
    assert score == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="at least 16"):
        D.video_clips(frames[:10])


def test_tiling_is_one_for_a_repeated_tile_and_near_zero_for_noise():
    from eval.metrics.quality import tiling, tiling_frames
    from eval.metrics.registry import EvalSample

    rng = np.random.default_rng(0)
    tile = rng.integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    tiled = np.tile(tile, (1, 4, 4, 1))  # (3, 128, 128, 3): a 4x4 grid of the same block
    np.testing.assert_allclose(tiling_frames(tiled), 1.0, atol=1e-5)
    noise = rng.integers(0, 255, (3, 128, 128, 3), dtype=np.uint8)
    assert np.abs(tiling_frames(noise)).max() < 0.02
    frames = np.concatenate([noise] * 10 + [tiled] * 9)  # 30 noise frames, then 27 tiled ones
    values = tiling(EvalSample(clip_id="c", frames=frames))
    assert values["tiling_last_1s"] == pytest.approx(1.0, abs=1e-5)
    assert values["tiling"] == pytest.approx(27 / 57, abs=0.02)
    with pytest.raises(ValueError, match="too small"):
        tiling_frames(noise[:, :6, :6])
