"""TAEF2 architecture: matches the shared state dicts, reconstructs a real portrait, perceptual distance."""

from __future__ import annotations

import pytest
import torch

from hub.models import taef2

torch.set_num_threads(1)


def _portrait(shared_data, size: int) -> torch.Tensor:
    cv2 = pytest.importorskip("cv2")
    path = sorted((shared_data / "portraits").glob("*.png"))[0]
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    side = min(image.shape[:2])
    top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
    image = cv2.resize(image[top:top + side, left:left + side], (size, size), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255  # (1, 3, S, S) in [0, 1]


def test_architecture_shapes_without_weights():
    enc, dec = taef2.build_encoder(), taef2.build_decoder()
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        z = enc(x)
        assert z.shape == (1, taef2.LATENT_CHANNELS, 4, 6)
        assert dec(z).shape == x.shape


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        taef2.load_encoder(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"0.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="not a TAEF2 state dict"):
        taef2.load_decoder(bad)


def test_pretrained_weights_load_strictly_and_reconstruct(shared_data):
    weights = shared_data / "weights"
    enc = taef2.load_encoder(weights / taef2.ENCODER_FILE)
    dec = taef2.load_decoder(weights / taef2.DECODER_FILE)
    x = _portrait(shared_data, 128)
    with torch.no_grad():
        recon = dec(enc(x)).clamp(0, 1)
    psnr = 10 * torch.log10(1 / ((recon - x) ** 2).mean())
    assert psnr > 28.0  # measured 32.7 dB at 128^2 (35.2 dB at 256^2) on this portrait


def test_perceptual_distance_orders_distortions(shared_data):
    perceptual = taef2.TAEF2Perceptual(taef2.load_encoder(shared_data / "weights" / taef2.ENCODER_FILE))
    assert not any(p.requires_grad for p in perceptual.parameters())
    x = _portrait(shared_data, 64) * 2 - 1
    torch.manual_seed(0)
    slight = (x + 0.02 * torch.randn_like(x)).clamp(-1, 1)
    heavy = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)
    blurred = torch.nn.functional.avg_pool2d(x, 4).repeat_interleave(4, -1).repeat_interleave(4, -2)
    with torch.no_grad():
        same = perceptual(x, x)
        d_slight, d_heavy, d_blur = perceptual(slight, x), perceptual(heavy, x), perceptual(blurred, x)
    assert float(same) == pytest.approx(0.0, abs=1e-6)
    assert float(d_slight) < float(d_heavy)
    assert float(d_slight) < float(d_blur)
    pred = x.clone().requires_grad_(True)
    perceptual(pred, blurred).sum().backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
