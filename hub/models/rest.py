"""The whole REST generator in one module: video autoencoder + audio encoder + A2V-DiT.

A REST checkpoint is one folder (``config.json`` + ``model.safetensors``, kind ``"rest"``) holding
all three parts, so a stream needs nothing else. The same class serves the bidirectional
teacher (``role="teacher"``) and the block-causal streaming student (``role="student"``): they
differ only in weights and in how they are sampled (see :mod:`hub.pipeline`).

Latent time layout (shared by the three parts; see docs/DESIGN.md): video frame 0 is latent frame
0 alone, latent frame ``k >= 1`` covers video frames ``1 + (k - 1) f_t .. k f_t``; one streaming
chunk is ``dit.chunk_latent_frames`` latent frames. The reference image takes the place of video
frame 0: it is encoded alone into the clean ID latent that every chunk attends to (the ID-Sink),
and it primes the causal decoder, so that generated chunks continue from it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from hub.checkpoint import config_from_dict, load_state, read_config, save_pretrained
from hub.models.audio_encoder import AudioEncoder, AudioEncoderConfig
from hub.models.dit import A2VDiT, DiTConfig
from hub.models.vae import CausalVideoVAE, VAEConfig

ROLES = ("teacher", "student")


@dataclass
class SamplingConfig:
    """Default sampling settings stored with a checkpoint (the engine and CLI may override them)."""

    steps: int = 4  # denoising steps per chunk
    shift: float = 1.0  # timestep shift of the sampling grid
    guidance: float = 1.0  # audio classifier-free guidance scale (1 = off)
    sampler: str = "euler"  # "euler" | "heun"
    # Noise level t_c at which each generated chunk enters the Context-Cache (0 = clean). The chunk
    # is re-noised once, ``(1 - t_c) x0 + t_c eps``, and written with the label ``t_c`` (diffusion
    # forcing's stabilisation: the model treats its own past as a noisy observation of real data).
    context_noise: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.context_noise < 1.0:
            raise ValueError(f"SamplingConfig.context_noise={self.context_noise}; accepted: 0 <= t < 1")
        if self.steps < 1:
            raise ValueError(f"SamplingConfig.steps={self.steps}; must be >= 1")
        if self.sampler not in ("euler", "heun"):
            raise ValueError(f"SamplingConfig.sampler={self.sampler!r}; accepted: 'euler', 'heun'")
        if self.shift <= 0:
            raise ValueError(f"SamplingConfig.shift={self.shift}; must be > 0")


@dataclass
class RestConfig:
    """Configuration of a complete generator; sizes of the parts must agree (checked)."""

    vae: VAEConfig = field(default_factory=VAEConfig)
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    dit: DiTConfig = field(default_factory=DiTConfig)
    role: str = "teacher"
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"RestConfig.role={self.role!r}; accepted: {ROLES}")
        v, a, d = self.vae, self.audio, self.dit
        problems = []
        if d.latent_channels != v.latent_channels:
            problems.append(f"dit.latent_channels={d.latent_channels} != vae.latent_channels={v.latent_channels}")
        if d.latent_size != v.latent_size:
            problems.append(f"dit.latent_size={d.latent_size} != vae latent size {v.latent_size}")
        if a.frames_per_token != v.temporal_factor:
            problems.append(f"audio.frames_per_token={a.frames_per_token} != vae.temporal_factor={v.temporal_factor}")
        if a.out_dim != d.audio_dim:
            problems.append(f"audio.out_dim={a.out_dim} != dit.audio_dim={d.audio_dim}")
        if a.tokens_per_latent_frame != d.audio_tokens_per_frame:
            problems.append(f"audio.tokens_per_latent_frame={a.tokens_per_latent_frame} != "
                            f"dit.audio_tokens_per_frame={d.audio_tokens_per_frame}")
        if problems:
            raise ValueError("RestConfig parts disagree: " + "; ".join(problems))

    @property
    def frames_per_chunk(self) -> int:
        """Video frames produced per streaming chunk."""
        return self.vae.temporal_factor * self.dit.chunk_latent_frames

    @property
    def image_size(self) -> int:
        return self.vae.image_size

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "RestConfig":
        parts = {
            "vae": VAEConfig, "audio": AudioEncoderConfig, "dit": DiTConfig, "sampling": SamplingConfig,
        }
        unknown = sorted(set(values) - set(parts) - {"role"})
        if unknown:
            raise ValueError(f"unknown RestConfig fields: {unknown}")
        kwargs = {name: config_from_dict(kind, values[name]) for name, kind in parts.items() if name in values}
        return cls(role=values.get("role", "teacher"), **kwargs)


class RestModel(nn.Module):
    """Video autoencoder (frozen in generator training), audio encoder and A2V-DiT."""

    def __init__(self, config: RestConfig, vae: CausalVideoVAE | None = None) -> None:
        super().__init__()
        self.config = config
        self.vae = vae if vae is not None else CausalVideoVAE(config.vae)
        self.audio_encoder = AudioEncoder(config.audio)
        self.dit = A2VDiT(config.dit)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> "RestModel":
        """Load a ``kind="rest"`` checkpoint folder (config.json + model.safetensors)."""
        payload = read_config(directory, kind="rest")
        model = cls(RestConfig.from_dict(payload["config"]))
        load_state(directory, model)
        return model.to(map_location).eval()

    def save_pretrained(self, directory: str | os.PathLike, extra: dict | None = None,
                        dtype: torch.dtype | None = None) -> Path:
        """Write the checkpoint folder; ``extra`` (e.g. training provenance) goes into config.json;
        ``dtype=torch.float16`` halves the file (the shipped checkpoints are stored so)."""
        return save_pretrained(self, self.config, directory, kind="rest", extra=extra, dtype=dtype)

    @property
    def device(self) -> torch.device:
        return self.dit.patch_embed.weight.device

