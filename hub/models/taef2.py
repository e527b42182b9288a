"""TAEF2: the tiny FLUX.2 image autoencoder (madebyollin/taesd, MIT), rebuilt from its state dicts.

Layout (read from the key names and shapes of ``taef2_encoder.pth`` / ``taef2_decoder.pth``):
plain ``nn.Sequential`` nets of 64-channel 3x3 convs and residual ``Block``s
(``conv-ReLU-conv-ReLU-conv`` plus identity skip, then ReLU). The three blocks at the latent
resolution carry an extra ``pool`` branch (1x1 conv to 256 channels, GroupNorm(4), ReLU, 1x1 conv
back to 64) added to their input. The encoder maps an RGB image in [0, 1] to 32 channels at 1/8
resolution; the decoder maps them back (tanh soft clamp to +-3 on its input), output in [0, 1].

How this project uses it (decided by measurement, see ``VAEConfig.perceptual`` and the VAE stage):

- *Not* as an initialisation of :class:`hub.models.vae.CausalVideoVAE`: TAEF2 is 64 channels wide
  at full resolution and 8x spatial; its encoder alone costs ~1.9 GMAC per 128^2 frame, about 20x
  the whole tiny VAE's encoder, so its layers cannot be reused under the CPU budget, and its
  latent space (8x, 32 ch, per image) is not ours (16x, 4 frames per latent).
- *Not* as a distillation teacher, for the same latent-space mismatch.
- As a *perceptual feature extractor* (:class:`TAEF2Perceptual`), the documented substitute for
  LPIPS when the AlexNet backbone weights of ``lpips`` are not in the torch hub cache (they cannot
  be downloaded here). Features are taken after the first block (full resolution) and after each
  of the first two downsampling stages, unit-normalised per position like LPIPS, and compared with
  a mean squared distance. The measured numbers are in the VAE stage's docstring and report.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hub import settings

ENCODER_FILE = "taef2_encoder.pth"
DECODER_FILE = "taef2_decoder.pth"
LATENT_CHANNELS = 32
WIDTH = 64


def _conv(c_in: int, c_out: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=1, **kwargs)


class SoftClamp(nn.Module):
    """``3 * tanh(x / 3)``: keeps decoder inputs in (-3, 3)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class Block(nn.Module):
    """Residual block ``relu(conv3(x') + x')`` with ``x' = x + pool(x)`` when ``pooled``. ``(B, C, H, W)``."""

    def __init__(self, channels: int, pooled: bool = False) -> None:
        super().__init__()
        self.conv = nn.Sequential(_conv(channels, channels), nn.ReLU(), _conv(channels, channels), nn.ReLU(),
                                  _conv(channels, channels))
        self.pool = None
        if pooled:
            wide = 4 * channels
            self.pool = nn.Sequential(nn.Conv2d(channels, wide, 1, bias=False), nn.GroupNorm(4, wide), nn.ReLU(),
                                      nn.Conv2d(wide, channels, 1, bias=False))
        self.fuse = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)  # (B, C, H, W)
        return self.fuse(self.conv(x) + x)  # (B, C, H, W)


def build_encoder(latent_channels: int = LATENT_CHANNELS) -> nn.Sequential:
    """Image ``(B, 3, H, W)`` in [0, 1] -> latents ``(B, 32, H/8, W/8)``; indices match the state dict."""
    layers: list[nn.Module] = [_conv(3, WIDTH), Block(WIDTH)]
    for stage in range(3):
        pooled = stage == 2
        layers += [_conv(WIDTH, WIDTH, stride=2, bias=False)] + [Block(WIDTH, pooled) for _ in range(3)]
    layers.append(_conv(WIDTH, latent_channels))
    return nn.Sequential(*layers)


def build_decoder(latent_channels: int = LATENT_CHANNELS) -> nn.Sequential:
    """Latents ``(B, 32, h, w)`` -> image ``(B, 3, 8h, 8w)`` (clamp to [0, 1] yourself)."""
    layers: list[nn.Module] = [SoftClamp(), _conv(latent_channels, WIDTH), nn.ReLU()]
    layers += [Block(WIDTH, pooled=True) for _ in range(3)]
    for stage in range(3):
        layers += [nn.Upsample(scale_factor=2), _conv(WIDTH, WIDTH, bias=False)]
        layers += [Block(WIDTH) for _ in range(3 if stage < 2 else 1)]
    layers.append(_conv(WIDTH, 3))
    return nn.Sequential(*layers)


def find_weights(name: str) -> Path:
    """Path of a TAEF2 weight file in ``hub.settings.weights_dirs()``; ValueError if absent."""
    return settings.find_weight_file(name, "get it from https://github.com/madebyollin/taesd (MIT) and put it "
                                           "in one of those folders or set REST_WEIGHTS_DIR")


def _load(module: nn.Module, path: str | os.PathLike) -> nn.Module:
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"TAEF2 weights not found: {file}")
    state = torch.load(file, map_location="cpu", weights_only=True)
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{file}: not a TAEF2 state dict ({str(exc).splitlines()[0]})") from None
    return module.eval()


def load_encoder(path: str | os.PathLike | None = None) -> nn.Sequential:
    """The pretrained TAEF2 encoder (``path`` or ``taef2_encoder.pth`` in the weights folders)."""
    return _load(build_encoder(), path or find_weights(ENCODER_FILE))


def load_decoder(path: str | os.PathLike | None = None) -> nn.Sequential:
    """The pretrained TAEF2 decoder (``path`` or ``taef2_decoder.pth`` in the weights folders)."""
    return _load(build_decoder(), path or find_weights(DECODER_FILE))


class TAEF2Perceptual(nn.Module):
    """LPIPS-style distance on frozen TAEF2 encoder features (substitute when LPIPS is unavailable).

    ``forward(x, y)`` takes images ``(N, 3, H, W)`` in [-1, 1] and returns ``(N,)`` distances: for
    each tap, features are unit-normalised over channels, squared differences are summed over
    channels and averaged over positions; taps are averaged. Taps: after encoder layer 1 (full
    resolution), 5 (1/2) and 9 (1/4). ``taps`` selects a prefix-closed subset to save compute.
    """

    TAPS = (1, 5, 9)

    def __init__(self, encoder: nn.Sequential | None = None, taps: tuple[int, ...] = TAPS) -> None:
        super().__init__()
        if not taps or any(t not in self.TAPS for t in taps):
            raise ValueError(f"TAEF2Perceptual taps={taps}: accepted a non-empty subset of {self.TAPS}")
        encoder = encoder if encoder is not None else load_encoder()
        self.taps = tuple(sorted(taps))
        self.layers = nn.Sequential(*list(encoder)[: self.taps[-1] + 1])
        for param in self.parameters():
            param.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> TAEF2Perceptual:
        return super().train(False)  # always frozen, always eval

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = (x + 1) * 0.5  # (N, 3, H, W) in [0, 1], TAEF2's input range
        out = []
        for index, layer in enumerate(self.layers):
            h = layer(h)
            if index in self.taps:
                out.append(F.normalize(h, dim=1, eps=1e-8))  # (N, 64, H_i, W_i)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx, fy = self.features(x), self.features(y.detach())
        per_tap = [((a - b) ** 2).sum(1).mean((1, 2)) for a, b in zip(fx, fy)]  # each (N,)
        return torch.stack(per_tap).mean(0)  # (N,)
