"""Compact causal video autoencoder: REST's latent space, with exact streaming encode/decode.

Time layout (docs/DESIGN.md): a clip of ``T = 1 + n * f_t`` frames maps to ``1 + n`` latent frames.
Latent frame 0 encodes video frame 0 alone; latent frame ``k >= 1`` encodes video frames
``1 + (k - 1) * f_t ... k * f_t``. Internally frame 0 is repeated ``f_t - 1`` times in front, so
every latent frame covers one group of ``f_t`` frames; the decoder drops the ``f_t - 1`` repeated
frames it rebuilds for latent frame 0.

Architecture (a causal relative of TAESD / TAEHV, no normalisation layers so that streaming is
exact and cheap):

- Encoder, per video frame: pixel-unshuffle by 2, a 3x3 stem, then ``log2(f_s)`` stages of
  residual blocks, each but the first starting with a stride-2 conv. The lowest-resolution
  ``temporal_stages`` stages use *causal temporal blocks*: their first conv sees the current frame's
  features concatenated with the previous frame's (a causal temporal kernel of size 2; frame 0 sees
  zeros). A temporal pool folds each group of ``f_t`` frames into channels (1x1 conv), a few
  temporal blocks run at the latent rate, and a 3x3 conv gives the Gaussian's mean and log-variance.
- Decoder, per latent frame: a 3x3 conv, temporal blocks at the latent rate, a temporal grow
  (1x1 conv to ``f_t`` times the channels, split into frames), then per video frame: stages of
  residual blocks joined by 1x1-conv + pixel-shuffle upsampling, and a final 3x3 conv + pixel
  shuffle to RGB. The expensive full-resolution layers are avoided entirely.

The only cross-frame state is the previous frame's input of every temporal block, so a
:class:`StreamingDecoder` / :class:`StreamingEncoder` carries one tensor per temporal block and
chunked processing equals full-sequence processing up to float rounding.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from hub import checkpoint

CHECKPOINT_KIND = "vae"
INIT_LOGVAR = -6.0  # initial posterior log-variance (see VideoEncoder)


@dataclass
class VAEConfig:
    """Sizes, loss weights and latent statistics of a :class:`CausalVideoVAE`.

    ``enc_channels`` lists encoder widths from high to low resolution, ``dec_channels`` decoder
    widths from low to high resolution; both have ``log2(spatial_factor)`` entries. The encoder's
    stage ``i`` works at ``H / 2**(i + 1)``, the decoder's stage ``i`` at ``h * 2**i``.
    """

    image_size: int = 128  # training resolution (the model itself is fully convolutional)
    latent_channels: int = 32  # C
    spatial_factor: int = 16  # f_s, a power of two >= 2
    temporal_factor: int = 4  # f_t
    enc_channels: tuple[int, ...] = (24, 48, 96, 128)
    enc_blocks: tuple[int, ...] = (1, 1, 1, 1)
    dec_channels: tuple[int, ...] = (128, 96, 48, 24)
    dec_blocks: tuple[int, ...] = (1, 1, 1, 1)
    latent_blocks: int = 1  # temporal blocks at the latent frame rate (encoder and decoder each)
    temporal_stages: int = 2  # lowest-resolution stages whose blocks mix time causally
    # Loss weights (used by hub/train/stages/vae.py).
    kl_weight: float = 1e-6
    l1_weight: float = 1.0
    mse_weight: float = 1.0
    perceptual_weight: float = 0.0
    perceptual: str = "none"  # "none" | "taef2" | "lpips"
    adversarial_weight: float = 0.0
    # Per-channel statistics of the posterior mean on training data (None until measured).
    latent_mean: tuple[float, ...] | None = None
    latent_std: tuple[float, ...] | None = None

    PERCEPTUAL_CHOICES: ClassVar[tuple[str, ...]] = ("none", "taef2", "lpips")

    def __post_init__(self) -> None:
        for name in ("enc_channels", "enc_blocks", "dec_channels", "dec_blocks"):
            setattr(self, name, tuple(int(v) for v in getattr(self, name)))
        for name in ("latent_mean", "latent_std"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, tuple(float(v) for v in value))
        f_s, f_t = self.spatial_factor, self.temporal_factor
        if f_s < 2 or f_s & (f_s - 1):
            raise ValueError(f"VAEConfig.spatial_factor={f_s}: expected a power of two >= 2")
        if f_t < 1:
            raise ValueError(f"VAEConfig.temporal_factor={f_t}: expected an integer >= 1")
        if self.image_size % f_s:
            raise ValueError(f"VAEConfig.image_size={self.image_size} is not divisible by spatial_factor={f_s}")
        stages = self.num_stages
        for name in ("enc_channels", "enc_blocks", "dec_channels", "dec_blocks"):
            if len(getattr(self, name)) != stages:
                raise ValueError(f"VAEConfig.{name} has {len(getattr(self, name))} entries; "
                                 f"spatial_factor={f_s} needs log2(f_s)={stages}")
        if not 0 <= self.temporal_stages <= stages:
            raise ValueError(f"VAEConfig.temporal_stages={self.temporal_stages}: expected 0..{stages}")
        if self.perceptual not in self.PERCEPTUAL_CHOICES:
            raise ValueError(f"VAEConfig.perceptual={self.perceptual!r}: expected one of {self.PERCEPTUAL_CHOICES}")
        for name in ("latent_mean", "latent_std"):
            value = getattr(self, name)
            if value is not None and len(value) != self.latent_channels:
                raise ValueError(f"VAEConfig.{name} has {len(value)} entries, expected latent_channels="
                                 f"{self.latent_channels}")
        if (self.latent_mean is None) != (self.latent_std is None):
            raise ValueError("VAEConfig.latent_mean and latent_std must be given together")
        if self.latent_std is not None and min(self.latent_std) <= 0:
            raise ValueError("VAEConfig.latent_std entries must be > 0")

    @property
    def num_stages(self) -> int:
        return int(math.log2(self.spatial_factor))

    @property
    def latent_size(self) -> int:
        """Spatial side ``h = w`` of the latents at ``image_size``."""
        return self.image_size // self.spatial_factor

    def compression(self, height: int | None = None, width: int | None = None) -> float:
        """Pixels per latent value: ``(3 * H * W * f_t) / (C * h * w)``."""
        height = height or self.image_size
        width = width or self.image_size
        h, w = height // self.spatial_factor, width // self.spatial_factor
        return (3 * height * width * self.temporal_factor) / (self.latent_channels * h * w)

    def num_latent_frames(self, num_frames: int) -> int:
        """Latent frames for ``num_frames = 1 + n * f_t`` video frames (ValueError otherwise)."""
        if num_frames < 1 or (num_frames - 1) % self.temporal_factor:
            raise ValueError(f"{num_frames} video frames: expected 1 + n * {self.temporal_factor} frames (n >= 0)")
        return 1 + (num_frames - 1) // self.temporal_factor

    def num_video_frames(self, num_latent_frames: int) -> int:
        """Video frames decoded from ``1 + n`` latent frames: ``1 + n * f_t``."""
        return 1 + (num_latent_frames - 1) * self.temporal_factor


VAE_PRESETS: dict[str, VAEConfig] = {
    # 128^2 faces on a 2-core CPU: f_s 16, f_t 4, C 32 -> 96 pixels per latent value.
    "tiny": VAEConfig(),
    # 256^2 on a GPU, REST-like compression: f_s 32, f_t 4, C 64 -> 192 pixels per latent value.
    "base": VAEConfig(
        image_size=256, latent_channels=64, spatial_factor=32, temporal_factor=4,
        enc_channels=(32, 64, 128, 256, 384), enc_blocks=(1, 2, 2, 2, 2),
        dec_channels=(384, 256, 128, 64, 32), dec_blocks=(2, 2, 2, 2, 1),
        latent_blocks=2, temporal_stages=3, perceptual="taef2", perceptual_weight=0.1,
    ),
    # A few thousand parameters for unit tests; identity latent statistics.
    "test": VAEConfig(
        image_size=32, latent_channels=4, spatial_factor=8, temporal_factor=2,
        enc_channels=(8, 8, 16), enc_blocks=(1, 1, 1), dec_channels=(16, 8, 8), dec_blocks=(1, 1, 1),
        latent_blocks=1, temporal_stages=2, latent_mean=(0.0,) * 4, latent_std=(1.0,) * 4,
    ),
}


def vae_config(preset: str, **overrides) -> VAEConfig:
    """A copy of ``VAE_PRESETS[preset]`` with ``overrides`` applied (ValueError on unknown names)."""
    if preset not in VAE_PRESETS:
        raise ValueError(f"unknown VAE preset {preset!r}; expected one of {sorted(VAE_PRESETS)}")
    return dataclasses.replace(VAE_PRESETS[preset], **overrides)


# ----------------------------------------------------------------------------------------------
# Building blocks. Activations travel as (B * T, C, H, W) with B and T passed alongside, so every
# spatial op is a plain 2D op over frames and only temporal blocks look across frames.


class CausalState:
    """Cross-chunk state of a network: the previous frame's input of every temporal block.

    ``past[i]`` is ``None`` before the first chunk (block ``i`` then sees zeros), else a tensor
    ``(B, C_i, H_i, W_i)``.
    """

    def __init__(self, num_slots: int) -> None:
        self.past: list[torch.Tensor | None] = [None] * num_slots

    def reset(self) -> None:
        self.past = [None] * len(self.past)


class ResBlock(nn.Module):
    """``x + conv(act(conv([x_t, x_{t-1}])))``; with ``temporal=False`` the first conv sees ``x_t`` only.

    Input/output ``(B * T, C, H, W)``. A temporal block reads frame ``t - 1`` of the same call, or
    for the first frame of a chunk the stored past (zeros at the start of a sequence).
    """

    def __init__(self, channels: int, temporal: bool) -> None:
        super().__init__()
        self.temporal = temporal
        self.slot = -1  # index into CausalState.past, assigned by the owning network
        self.conv1 = nn.Conv2d(channels * (2 if temporal else 1), channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # every block starts as the identity
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, batch: int, state: CausalState | None) -> torch.Tensor:
        inp = x
        if self.temporal:
            frames = x.unflatten(0, (batch, -1))  # (B, T, C, H, W)
            stored = state.past[self.slot] if state is not None else None
            first = torch.zeros_like(frames[:, :1]) if stored is None else stored.unsqueeze(1)  # (B, 1, C, H, W)
            past = torch.cat([first, frames[:, :-1]], dim=1)  # (B, T, C, H, W)
            if state is not None:
                state.past[self.slot] = frames[:, -1].detach()  # (B, C, H, W)
            inp = torch.cat([frames, past], dim=2).flatten(0, 1)  # (B * T, 2C, H, W)
        return x + self.conv2(F.silu(self.conv1(inp)))  # (B * T, C, H, W)


class TemporalPool(nn.Module):
    """Fold each group of ``factor`` consecutive frames into one: ``(B * T, C) -> (B * T / f, C)``."""

    def __init__(self, channels: int, factor: int) -> None:
        super().__init__()
        self.factor = factor
        self.proj = nn.Conv2d(channels * factor, channels, 1)

    def forward(self, x: torch.Tensor, batch: int) -> torch.Tensor:
        frames = x.unflatten(0, (batch, -1))  # (B, T, C, H, W)
        b, t, c, h, w = frames.shape
        assert t % self.factor == 0, "temporal pool needs whole groups of frames"
        grouped = frames.reshape(b * t // self.factor, self.factor * c, h, w)  # (B * N, f * C, H, W)
        return self.proj(grouped)  # (B * N, C, H, W)


class TemporalGrow(nn.Module):
    """Unfold each frame into ``factor`` frames: ``(B * N, C, H, W) -> (B * N * f, C, H, W)``."""

    def __init__(self, channels: int, factor: int) -> None:
        super().__init__()
        self.factor = factor
        self.proj = nn.Conv2d(channels, channels * factor, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return self.proj(x).reshape(n * self.factor, c, h, w)  # (B * N * f, C, H, W)


class Stage(nn.Module):
    """Optional resampling followed by residual blocks."""

    def __init__(self, resample: nn.Module, channels: int, blocks: int, temporal: bool) -> None:
        super().__init__()
        self.resample = resample
        self.blocks = nn.ModuleList(ResBlock(channels, temporal) for _ in range(blocks))

    def forward(self, x: torch.Tensor, batch: int, state: CausalState | None) -> torch.Tensor:
        x = self.resample(x)
        for block in self.blocks:
            x = block(x, batch, state)
        return x


def _upsample(c_in: int, c_out: int) -> nn.Module:
    """1x1 conv to ``4 * c_out`` channels and pixel shuffle: ``(c_in, H, W) -> (c_out, 2H, 2W)``."""
    return nn.Sequential(nn.Conv2d(c_in, 4 * c_out, 1), nn.PixelShuffle(2))


def _assign_slots(module: nn.Module) -> int:
    """Number the temporal blocks of ``module`` in forward order; returns how many there are."""
    count = 0
    for sub in module.modules():
        if isinstance(sub, ResBlock) and sub.temporal:
            sub.slot = count
            count += 1
    return count


class VideoEncoder(nn.Module):
    """Frames ``(B, f_t * N, 3, H, W)`` (whole groups, frame-major) -> moments ``(B * N, 2C, h, w)``."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        ch, stages = cfg.enc_channels, cfg.num_stages
        self.stem = nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(12, ch[0], 3, padding=1))
        self.stages = nn.ModuleList()
        for i in range(stages):
            resample = nn.Identity() if i == 0 else nn.Conv2d(ch[i - 1], ch[i], 3, stride=2, padding=1)
            temporal = i >= stages - cfg.temporal_stages
            self.stages.append(Stage(resample, ch[i], cfg.enc_blocks[i], temporal))
        self.pool = TemporalPool(ch[-1], cfg.temporal_factor)
        self.latent_blocks = nn.ModuleList(ResBlock(ch[-1], True) for _ in range(cfg.latent_blocks))
        self.head = nn.Conv2d(ch[-1], 2 * cfg.latent_channels, 3, padding=1)
        # Start with a narrow posterior (std e^-3 ~ 0.05): unit-variance sampling noise at
        # initialisation would drown the signal and stall the first thousand steps.
        nn.init.constant_(self.head.bias[cfg.latent_channels:], INIT_LOGVAR)
        self.num_slots = _assign_slots(self)

    def forward(self, frames: torch.Tensor, state: CausalState | None = None) -> torch.Tensor:
        batch = frames.shape[0]
        x = self.stem(frames.flatten(0, 1))  # (B * T, c0, H/2, W/2)
        for stage in self.stages:
            x = stage(x, batch, state)  # (B * T, c_i, H / 2**(i+1), W / 2**(i+1))
        x = self.pool(x, batch)  # (B * N, c_last, h, w)
        for block in self.latent_blocks:
            x = block(x, batch, state)
        return self.head(F.silu(x))  # (B * N, 2C, h, w)


class VideoDecoder(nn.Module):
    """Latents ``(B * N, C, h, w)`` -> frames ``(B * N * f_t, 3, H, W)`` (raw, not clamped)."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        ch, stages = cfg.dec_channels, cfg.num_stages
        self.temporal_factor = cfg.temporal_factor
        self.stem = nn.Conv2d(cfg.latent_channels, ch[0], 3, padding=1)
        self.latent_blocks = nn.ModuleList(ResBlock(ch[0], True) for _ in range(cfg.latent_blocks))
        self.grow = TemporalGrow(ch[0], cfg.temporal_factor)
        self.stages = nn.ModuleList()
        for i in range(stages):
            resample = nn.Identity() if i == 0 else _upsample(ch[i - 1], ch[i])
            self.stages.append(Stage(resample, ch[i], cfg.dec_blocks[i], i < cfg.temporal_stages))
        self.head = nn.Sequential(nn.SiLU(), nn.Conv2d(ch[-1], 12, 3, padding=1), nn.PixelShuffle(2))
        self.num_slots = _assign_slots(self)

    def forward(self, latents: torch.Tensor, batch: int, state: CausalState | None = None) -> torch.Tensor:
        x = self.stem(latents)  # (B * N, c0, h, w)
        for block in self.latent_blocks:
            x = block(x, batch, state)
        x = self.grow(x)  # (B * N * f_t, c0, h, w)
        for stage in self.stages:
            x = stage(x, batch, state)  # (B * T, c_i, h * 2**i, w * 2**i)
        return self.head(x)  # (B * T, 3, H, W)


# ----------------------------------------------------------------------------------------------


class CausalVideoVAE(nn.Module):
    """Causal video VAE with ``f_s`` spatial and ``f_t`` temporal compression into ``C`` channels.

    Video tensors are ``(B, 3, T, H, W)`` in [-1, 1] with ``T = 1 + n * f_t`` and ``H, W``
    divisible by ``f_s``; latents are ``(B, C, 1 + n, H / f_s, W / f_s)``.
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = VideoEncoder(config)
        self.decoder = VideoDecoder(config)
        c = config.latent_channels
        self.register_buffer("latent_mean", torch.zeros(c), persistent=False)
        self.register_buffer("latent_std", torch.ones(c), persistent=False)
        if config.latent_mean is not None:
            self.set_latent_stats(torch.tensor(config.latent_mean), torch.tensor(config.latent_std))

    # -- checkpoints ----------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> CausalVideoVAE:
        """Load a folder written by :meth:`save_pretrained` (``config.json`` + ``model.safetensors``)."""
        payload = checkpoint.read_config(directory, CHECKPOINT_KIND)
        model = cls(checkpoint.config_from_dict(VAEConfig, payload["config"]))
        checkpoint.load_state(directory, model)
        return model.to(map_location).eval()

    def save_pretrained(self, directory: str | os.PathLike, extra: dict | None = None,
                        dtype: torch.dtype | None = None) -> None:
        """Write ``config.json`` (kind ``vae``, with the latent statistics) and ``model.safetensors``.

        ``dtype=torch.float16`` stores half-precision weights (half the size; :meth:`from_pretrained`
        loads them into float32; measured reconstruction PSNR unchanged to 1e-4 dB for ``tiny``).
        """
        checkpoint.save_pretrained(self, self.config, directory, CHECKPOINT_KIND, extra=extra, dtype=dtype)

    # -- shape checks ---------------------------------------------------------------------------

    def _check_frames(self, frames: torch.Tensor, name: str) -> None:
        if frames.ndim != 5 or frames.shape[1] != 3:
            raise ValueError(f"{name}: expected a video tensor (B, 3, T, H, W), got shape {tuple(frames.shape)}")
        f_s = self.config.spatial_factor
        if frames.shape[-2] % f_s or frames.shape[-1] % f_s:
            raise ValueError(f"{name}: height and width {tuple(frames.shape[-2:])} must be divisible by "
                             f"spatial_factor={f_s}")

    def _check_latents(self, latents: torch.Tensor, name: str) -> None:
        c = self.config.latent_channels
        if latents.ndim != 5 or latents.shape[1] != c:
            raise ValueError(f"{name}: expected latents (B, {c}, T_lat, h, w), got shape {tuple(latents.shape)}")

    # -- core paths -----------------------------------------------------------------------------

    def _pad_first(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 1 + n f_t, H, W)`` -> frame-major ``(B, (1 + n) f_t, 3, H, W)`` with frame 0 repeated."""
        frames = video.transpose(1, 2)  # (B, T, 3, H, W)
        head = frames[:, :1].expand(-1, self.config.temporal_factor - 1, -1, -1, -1)  # (B, f_t - 1, 3, H, W)
        return torch.cat([head, frames], dim=1)  # (B, (1 + n) f_t, 3, H, W)

    def _moments(self, frames: torch.Tensor, state: CausalState | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame-major groups ``(B, N f_t, 3, H, W)`` -> mean, logvar ``(B, C, N, h, w)`` each."""
        batch = frames.shape[0]
        moments = self.encoder(frames, state)  # (B * N, 2C, h, w)
        moments = moments.unflatten(0, (batch, -1)).transpose(1, 2)  # (B, 2C, N, h, w)
        mean, logvar = moments.chunk(2, dim=1)  # (B, C, N, h, w) each
        return mean, logvar.clamp(-30.0, 20.0)

    def _frames(self, latents: torch.Tensor, state: CausalState | None) -> torch.Tensor:
        """Latents ``(B, C, N, h, w)`` -> raw frames ``(B, 3, N f_t, H, W)`` (no frame dropped)."""
        batch = latents.shape[0]
        flat = latents.transpose(1, 2).flatten(0, 1)  # (B * N, C, h, w)
        frames = self.decoder(flat, batch, state)  # (B * N * f_t, 3, H, W)
        return frames.unflatten(0, (batch, -1)).transpose(1, 2)  # (B, 3, N f_t, H, W)

    @staticmethod
    def _sample(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)

    # -- public API -----------------------------------------------------------------------------

    def forward(self, video: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training path: ``video (B, 3, T, H, W)`` -> (reconstruction ``(B, 3, T, H, W)`` raw, not
        clamped; posterior mean and logvar ``(B, C, 1 + n, h, w)``)."""
        self._check_frames(video, "video")
        self.config.num_latent_frames(video.shape[2])
        mean, logvar = self._moments(self._pad_first(video), None)
        latents = self._sample(mean, logvar) if sample else mean
        recon = self._frames(latents, None)[:, :, self.config.temporal_factor - 1:]  # (B, 3, T, H, W)
        return recon, mean, logvar

    def encode(self, video: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """``video (B, 3, 1 + n f_t, H, W)`` in [-1, 1] -> latents ``(B, C, 1 + n, H/f_s, W/f_s)``:
        the posterior mean, or with ``sample=True`` a draw from the diagonal Gaussian."""
        self._check_frames(video, "video")
        self.config.num_latent_frames(video.shape[2])
        mean, logvar = self._moments(self._pad_first(video), None)
        return self._sample(mean, logvar) if sample else mean

    def encode_image(self, image: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """``image (B, 3, H, W)`` in [-1, 1] -> latents ``(B, C, 1, H/f_s, W/f_s)``."""
        if image.ndim != 4:
            raise ValueError(f"image: expected (B, 3, H, W), got shape {tuple(image.shape)}")
        return self.encode(image.unsqueeze(2), sample=sample)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """``latents (B, C, 1 + n, h, w)`` -> video ``(B, 3, 1 + n f_t, h f_s, w f_s)`` in [-1, 1]."""
        self._check_latents(latents, "latents")
        frames = self._frames(latents, None)[:, :, self.config.temporal_factor - 1:]  # (B, 3, 1 + n f_t, H, W)
        return frames.clamp(-1.0, 1.0)

    def start_decode(self) -> StreamingDecoder:
        """A fresh streaming decoder; its first chunk must begin with latent frame 0."""
        return StreamingDecoder(self)

    def start_encode(self, sample: bool = False) -> StreamingEncoder:
        """A fresh streaming encoder; its first chunk must begin with video frame 0."""
        return StreamingEncoder(self, sample=sample)

    # -- latent normalisation -------------------------------------------------------------------

    @property
    def has_latent_stats(self) -> bool:
        return self.config.latent_mean is not None

    def set_latent_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Store per-channel ``mean`` and ``std`` (each ``(C,)``) in the buffers and the config."""
        c = self.config.latent_channels
        if mean.shape != (c,) or std.shape != (c,):
            raise ValueError(f"latent stats: expected mean and std of shape ({c},), got "
                             f"{tuple(mean.shape)} and {tuple(std.shape)}")
        if not torch.all(std > 0):
            raise ValueError("latent stats: std must be > 0 in every channel")
        self.latent_mean.copy_(mean)
        self.latent_std.copy_(std)
        self.config.latent_mean = tuple(float(v) for v in mean)
        self.config.latent_std = tuple(float(v) for v in std)

    def _stats(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.has_latent_stats:
            raise ValueError("this VAE has no latent statistics (config.latent_mean is None); load a "
                             "trained checkpoint or call set_latent_stats(mean, std)")
        self._check_latents(latents, "latents")
        shape = (1, -1, 1, 1, 1)
        return self.latent_mean.view(shape).to(latents), self.latent_std.view(shape).to(latents)

    def normalize(self, latents: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, h, w)`` VAE latents -> ~zero-mean, unit-variance latents for the diffusion model."""
        mean, std = self._stats(latents)
        return (latents - mean) / std

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`."""
        mean, std = self._stats(latents)
        return latents * std + mean


@torch.no_grad()
def measure_latent_stats(latents: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std over a list of latents ``(B, C, T, h, w)`` (float64 accumulation)."""
    if not latents:
        raise ValueError("measure_latent_stats: no latents given")
    total = None
    count = 0
    for z in latents:
        flat = z.transpose(0, 1).reshape(z.shape[1], -1).double()  # (C, B * T * h * w)
        sums = torch.stack([flat.sum(1), (flat * flat).sum(1)])  # (2, C)
        total = sums if total is None else total + sums
        count += flat.shape[1]
    mean = total[0] / count
    var = (total[1] / count - mean * mean).clamp_min(1e-12)
    return mean.float(), var.sqrt().float()


class StreamingDecoder:
    """Decodes latents chunk by chunk with the causal state carried between calls.

    Concatenating the outputs of ``decode`` over a sequence equals :meth:`CausalVideoVAE.decode` on
    the whole sequence (up to float rounding).
    """

    def __init__(self, model: CausalVideoVAE) -> None:
        self.model = model
        self.state = CausalState(model.decoder.num_slots)
        self.latent_frames_seen = 0

    def reset(self) -> None:
        self.state.reset()
        self.latent_frames_seen = 0

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """``latents (B, C, k, h, w)`` -> frames ``(B, 3, k f_t, H, W)`` in [-1, 1]; the chunk that holds
        latent frame 0 gives ``1 + (k - 1) f_t`` frames."""
        self.model._check_latents(latents, "latents")
        if latents.shape[2] == 0:
            raise ValueError("latents: empty chunk (k = 0 latent frames)")
        frames = self.model._frames(latents, self.state)  # (B, 3, k f_t, H, W)
        if self.latent_frames_seen == 0:
            frames = frames[:, :, self.model.config.temporal_factor - 1:]
        self.latent_frames_seen += latents.shape[2]
        return frames.clamp(-1.0, 1.0)


class StreamingEncoder:
    """Encodes video frames chunk by chunk; frames are buffered until a latent frame is complete.

    Concatenating the outputs of ``encode`` equals :meth:`CausalVideoVAE.encode` on the whole
    video (up to float rounding). With ``sample=True`` each latent is drawn from the posterior.
    """

    def __init__(self, model: CausalVideoVAE, sample: bool = False) -> None:
        self.model = model
        self.sample = sample
        self.state = CausalState(model.encoder.num_slots)
        self.pending: torch.Tensor | None = None  # (B, k < f_t, 3, H, W) frames not yet encoded
        self.frames_seen = 0

    def reset(self) -> None:
        self.state.reset()
        self.pending = None
        self.frames_seen = 0

    @property
    def pending_frames(self) -> int:
        """Frames received but not yet part of an emitted latent frame."""
        return 0 if self.pending is None else self.pending.shape[1]

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """``frames (B, 3, k, H, W)`` -> latents ``(B, C, m, h, w)`` for every latent frame completed
        so far (``m`` may be 0). Video frame 0 alone completes latent frame 0."""
        self.model._check_frames(frames, "frames")
        if frames.shape[2] == 0:
            raise ValueError("frames: empty chunk (k = 0 frames)")
        f_t = self.model.config.temporal_factor
        if self.frames_seen == 0:
            major = self.model._pad_first(frames)  # (B, f_t - 1 + k, 3, H, W)
        else:
            major = frames.transpose(1, 2)  # (B, k, 3, H, W)
        self.frames_seen += frames.shape[2]
        if self.pending is not None:
            major = torch.cat([self.pending, major], dim=1)
        whole = major.shape[1] - major.shape[1] % f_t
        self.pending = major[:, whole:] if whole < major.shape[1] else None
        c, f_s = self.model.config.latent_channels, self.model.config.spatial_factor
        if whole == 0:
            b, _, _, height, width = frames.shape
            return frames.new_zeros(b, c, 0, height // f_s, width // f_s)
        mean, logvar = self.model._moments(major[:, :whole], self.state)
        return CausalVideoVAE._sample(mean, logvar) if self.sample else mean
