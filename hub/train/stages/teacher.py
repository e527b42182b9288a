"""Training stage ``teacher``: the bidirectional A2V-DiT with an asynchronous noise schedule.

``python -m hub.train teacher --preset tiny`` trains the audio encoder and the DiT on windows of
``data.chunks`` chunks from the latent corpus (:mod:`hub.data.latents`) of the prepared ``train``
clips (never ``val``; the ``motion`` clips are left out because their audio is not verified to be
the speech their mouths make). The video autoencoder is frozen and loaded from
``model.vae_checkpoint``.

Objective (rectified flow, :mod:`hub.diffusion`): per chunk ``k`` a noise level ``t_k``,
``x_t = (1 - t) x0 + t eps``, the DiT predicts ``v = eps - x0`` for every chunk of the window at
once, with bidirectional attention and the ID tokens of a reference frame from the same clip.
The loss is the mean squared velocity error over the noisy chunks.

Asynchronous noise schedule (``model.schedule``):
- ``independent``: i.i.d. logit-normal ``t`` per chunk (diffusion forcing);
- ``monotone``: the same draws sorted, later chunks noisier;
- ``synchronous``: one ``t`` for the whole window (the ablation: an ordinary video diffusion model);
- in every mode, with probability ``model.clean_prefix_prob`` a random prefix of the window is
  clean (``t = 0``) and excluded from the loss -- the "clean past, noisy present" configuration in
  which the teacher rolls long clips and supervises the streaming student (ASD).

Which one ships, and why (``scripts/teacher_schedule_ablation.py``,
``results/teacher-schedules/results.json``): three tiny teachers, 800 CPU steps each, same seeds,
EMA weights, velocity MSE on 8 val windows. With a clean past (the ASD case): independent 0.827,
monotone 0.797, synchronous 0.892; all chunks at one level: 0.972 / 0.944 / 0.996. The asynchronous
schedules beat the synchronous one where it matters (-7 to -11 % with a clean past); monotone edges
out independent by 3.6 %, one training seed each, so that gap is not established. The shipped
``teacher-tiny`` uses ``independent`` (trained before this measurement); monotone is the candidate
for the next teacher.

Classifier-free guidance: the audio tokens of a sample are replaced by the learned null tokens
with probability ``model.audio_drop_prob``.

Export writes a complete ``kind="rest"`` checkpoint (``role="teacher"``) with the autoencoder
included, so one folder generates video.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from hub import settings
from hub.audio import FEATURE_PRESETS
from hub.data.datasets import ClipIndex
from hub.data.latents import (ClipLatents, LatentWindowDataset, corpus_key, encode_clip, load_corpus,
                              save_corpus, silence_row)
from hub.diffusion import CHUNK_MODES, add_noise, chunk_timesteps, velocity_target
from hub.models.audio_encoder import AudioEncoderConfig
from hub.models.dit import DIT_PRESETS, DiTConfig
from hub.models.rest import RestConfig, RestModel, SamplingConfig
from hub.models.vae import VAE_PRESETS, CausalVideoVAE
from hub.train.config import RunConfig, TrainConfig
from hub.train.stage import Stage

logger = logging.getLogger(__name__)


@dataclass
class GeneratorModelConfig:
    """Model settings shared by the teacher and student stages."""

    vae_checkpoint: str = "checkpoints/vae-tiny"  # "" = a fresh VAE of preset ``vae_preset`` (tests)
    vae_preset: str = "tiny"
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    dit: DiTConfig = field(default_factory=lambda: dataclasses.replace(DIT_PRESETS["tiny"]))
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(steps=20, shift=1.0))
    schedule: str = "independent"
    clean_prefix_prob: float = 0.3
    audio_drop_prob: float = 0.1
    t_mean: float = 0.0  # logit-normal timestep distribution
    t_std: float = 1.0
    t_shift: float = 1.0

    def __post_init__(self) -> None:
        if self.schedule not in CHUNK_MODES:
            raise ValueError(f"model.schedule={self.schedule!r}; accepted: {CHUNK_MODES}")
        for name in ("clean_prefix_prob", "audio_drop_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"model.{name}={getattr(self, name)}; accepted: [0, 1]")


@dataclass
class GeneratorDataConfig:
    """Latent windows from the prepared clips."""

    prepared_dir: str = "data/prepared_128"
    splits: tuple[str, ...] = ("train",)
    chunks: int = 6  # chunks per training window
    context_latents: int = 8  # latent frames of audio context before the window
    refs_per_clip: int = 8
    samples_per_epoch: int = 0  # 0 = about one pass over the latent frames
    val_windows: int = 16


def resolve_path(path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else settings.REPO_ROOT / p


def load_vae(model_cfg: GeneratorModelConfig) -> CausalVideoVAE:
    if model_cfg.vae_checkpoint:
        path = resolve_path(model_cfg.vae_checkpoint)
        if not path.is_dir():
            raise ValueError(f"model.vae_checkpoint={path} not found; train it with "
                             "`python -m hub.train vae --preset tiny` or point to a VAE checkpoint folder")
        vae = CausalVideoVAE.from_pretrained(path)
        if not vae.has_latent_stats:
            raise ValueError(f"{path}: the VAE checkpoint has no latent statistics (export it with the vae stage)")
        return vae
    cfg = VAE_PRESETS[model_cfg.vae_preset]
    if cfg.latent_mean is None:
        cfg = dataclasses.replace(cfg, latent_mean=(0.0,) * cfg.latent_channels,
                                  latent_std=(1.0,) * cfg.latent_channels)
    return CausalVideoVAE(cfg)


def rest_config(model_cfg: GeneratorModelConfig, vae: CausalVideoVAE, role: str) -> RestConfig:
    """The generator's config; sizes fixed by the autoencoder (latent grid and channels, frames per
    latent frame) and by the DiT (audio token width and count) are taken from there."""
    dit = dataclasses.replace(model_cfg.dit, latent_channels=vae.config.latent_channels,
                              latent_size=vae.config.latent_size)
    audio = dataclasses.replace(model_cfg.audio, frames_per_token=vae.config.temporal_factor,
                                out_dim=dit.audio_dim, tokens_per_latent_frame=dit.audio_tokens_per_frame)
    return RestConfig(vae=vae.config, audio=audio, dit=dit, role=role, sampling=model_cfg.sampling)


def build_corpus(data: GeneratorDataConfig, feature_preset: str, vae: CausalVideoVAE,
                 splits: tuple[str, ...]) -> list[ClipLatents]:
    """Encode (or load from the cache next to the prepared clips) every clip of ``splits``."""
    from hub.data.decoded import read_clip_audio, read_clip_frames

    prepared = resolve_path(data.prepared_dir)
    if "val" in splits and any(s != "val" for s in splits):
        raise ValueError("data.splits mixes 'val' with training splits; val clips are never trained on")
    records = list(ClipIndex.load(prepared, splits, allow_val=splits == ("val",), require_audio=True))
    feature_cfg = FEATURE_PRESETS[feature_preset]
    ids = sorted(r.id for r in records)
    key = corpus_key(vae, ids, feature_cfg, data.refs_per_clip)
    cache = prepared / "latents" / f"corpus-{'-'.join(splits)}-{key}.safetensors"
    if cache.is_file():
        return load_corpus(cache)
    vae = vae.eval()
    corpus = []
    for record in sorted(records, key=lambda r: r.id):
        frames = read_clip_frames(record.path)[: record.frames]  # (T, S, S, 3)
        audio = read_clip_audio(record.audio_path)  # (N,) float32 16 kHz
        if frames.shape[1] != vae.config.image_size:
            raise ValueError(f"{record.path}: frames are {frames.shape[1]} px, the VAE takes "
                             f"{vae.config.image_size} px; use a folder prepared at that size")
        seed = int.from_bytes(record.id.encode()[:8].ljust(8, b"\0"), "little") % (2**32)
        latents, refs, features = encode_clip(vae, frames, audio, feature_cfg, data.refs_per_clip, seed)
        corpus.append(ClipLatents(record.id, latents, refs, features))
    save_corpus(corpus, cache)
    return corpus


class GeneratorTrainModel(nn.Module):
    """What the generator stages optimise: a RestModel whose autoencoder is frozen."""

    def __init__(self, rest: RestModel) -> None:
        super().__init__()
        self.rest = rest
        self.rest.vae.requires_grad_(False)
        self.rest.vae.eval()

    def train(self, mode: bool = True) -> "GeneratorTrainModel":
        super().train(mode)
        self.rest.vae.eval()  # frozen: always in eval mode
        return self


def audio_tokens_for_window(rest: RestModel, features: torch.Tensor, n_latents: int,
                            context_latents: int) -> torch.Tensor:
    """Encoder tokens of the window's latent frames: features (B, R Tw, F) -> (B, n, A, D)."""
    tokens = rest.audio_encoder(features)  # (B, 1 + c + n, A, D)
    return tokens[:, 1 + context_latents: 1 + context_latents + n_latents]


def make_window_dataset(rest_cfg: RestConfig, data: GeneratorDataConfig, corpus: list[ClipLatents],
                        seed: int) -> LatentWindowDataset:
    audio = rest_cfg.audio
    return LatentWindowDataset(
        corpus, n_latents=data.chunks * rest_cfg.dit.chunk_latent_frames,
        frames_per_latent=audio.frames_per_token, rows_per_frame=audio.rows_per_frame,
        context_latents=data.context_latents, lookahead_frames=audio.lookahead_frames,
        silence_row=silence_row(FEATURE_PRESETS[audio.feature_preset]), seed=seed,
        samples_per_epoch=data.samples_per_epoch or None)


def generator_dataset(rest_cfg: RestConfig, vae: CausalVideoVAE, data: GeneratorDataConfig, split: str,
                      seed: int) -> LatentWindowDataset:
    """Latent windows of ``split`` ("train" = ``data.splits``; "val" only for evaluation)."""
    splits = data.splits if split == "train" else (split,)
    corpus = build_corpus(data, rest_cfg.audio.feature_preset, vae, splits)
    return make_window_dataset(rest_cfg, data, corpus, seed=seed if split == "train" else 12345)


def sample_chunk_levels(model_cfg: GeneratorModelConfig, batch: int, n_chunks: int,
                        device: torch.device) -> torch.Tensor:
    """Per-chunk noise levels (B, n) of the configured asynchronous schedule, with clean prefixes."""
    t = chunk_timesteps(batch, n_chunks, model_cfg.schedule, "logit_normal", model_cfg.t_mean,
                        model_cfg.t_std, model_cfg.t_shift, device=device)  # (B, n)
    if n_chunks > 1 and model_cfg.clean_prefix_prob > 0:
        has_prefix = torch.rand(batch, device=device) < model_cfg.clean_prefix_prob  # (B,)
        prefix = torch.randint(1, n_chunks, (batch,), device=device)  # (B,) 1 .. n-1 clean chunks
        clean = (torch.arange(n_chunks, device=device)[None] < prefix[:, None]) & has_prefix[:, None]
        t = torch.where(clean, torch.zeros_like(t), t)
    return t


def flow_loss(rest: RestModel, batch: dict[str, torch.Tensor], model_cfg: GeneratorModelConfig,
              context_latents: int, mode: str = "bidirectional",
              t: torch.Tensor | None = None, drop_audio: bool = True) -> tuple[torch.Tensor, dict[str, float]]:
    """Velocity MSE over the noisy chunks of a batch of windows (see the module docstring)."""
    x0 = batch["latents"]  # (B, C, T, h, w)
    ref = batch["ref"] if rest.config.dit.use_id_sink else None  # (B, C, 1, h, w)
    fc = rest.config.dit.chunk_latent_frames
    B, T = x0.shape[0], x0.shape[2]
    n_chunks = T // fc
    tokens = audio_tokens_for_window(rest, batch["features"], T, context_latents)  # (B, T, A, D)
    if drop_audio and model_cfg.audio_drop_prob > 0:
        drop = rest.audio_encoder.drop_mask(B, model_cfg.audio_drop_prob, device=x0.device)
        tokens = rest.audio_encoder.mask_with_null(tokens, drop)
    if t is None:
        t = sample_chunk_levels(model_cfg, B, n_chunks, x0.device)  # (B, n)
    eps = torch.randn_like(x0)
    x_t = add_noise(x0, eps, t, chunk_size=fc)  # (B, C, T, h, w)
    v = rest.dit(x_t, t, tokens, ref, mode=mode)  # (B, C, T, h, w)
    noisy = (t > 0).repeat_interleave(fc, dim=1).to(v.dtype)[:, None, :, None, None]  # (B, 1, T, 1, 1)
    err = (v - velocity_target(x0, eps)).pow(2) * noisy  # (B, C, T, h, w)
    per_sample = err.flatten(1).sum(1) / (noisy.flatten(1).sum(1) * err[0, :, 0].numel()).clamp_min(1)
    return per_sample.mean(), {"noisy_fraction": float(noisy.mean())}


def _run(model_cfg: GeneratorModelConfig, data: GeneratorDataConfig, **train: Any) -> RunConfig:
    return RunConfig(train=TrainConfig(**train), model=model_cfg, data=data)


def _test_model() -> GeneratorModelConfig:
    vae = VAE_PRESETS["test"]
    audio = AudioEncoderConfig(dim=32, layers=2, frames_per_token=vae.temporal_factor, lookahead_frames=1,
                               tokens_per_latent_frame=2, out_dim=16)
    dit = dataclasses.replace(DIT_PRESETS["test"], latent_channels=vae.latent_channels,
                              latent_size=vae.latent_size)
    return GeneratorModelConfig(vae_checkpoint="", vae_preset="test", audio=audio, dit=dit,
                                sampling=SamplingConfig(steps=4))


def _tiny_model() -> GeneratorModelConfig:
    audio = AudioEncoderConfig(dim=128, layers=4, lookahead_frames=2, frames_per_token=4,
                               tokens_per_latent_frame=4, out_dim=256)
    return GeneratorModelConfig(audio=audio, dit=dataclasses.replace(DIT_PRESETS["tiny"]))


VAL_LEVELS = (0.25, 0.5, 0.75)  # the fixed noise levels of the validation


class TeacherStage(Stage):
    """Bidirectional teacher (see the module docstring)."""

    name: ClassVar[str] = "teacher"
    presets: ClassVar[dict[str, RunConfig]] = {
        # 2-core CPU budget (~25 min at ~0.35 s/step): 6-chunk windows (~1 s of video), batch 8.
        "tiny": _run(_tiny_model(), GeneratorDataConfig(),
                     steps=4000, batch_size=8, lr=4e-4, warmup_steps=100, min_lr_ratio=0.1,
                     weight_decay=0.01, ema_decay=0.995, num_workers=0, log_every=25, ckpt_every=250,
                     device="cpu", progress_bar=False),
        # One GPU, the tiny model: batch 32; meant to run under train.time_limit_min.
        "tiny-gpu": _run(_tiny_model(), GeneratorDataConfig(),
                         steps=60_000, batch_size=32, lr=4e-4, warmup_steps=300, min_lr_ratio=0.1,
                         weight_decay=0.01, ema_decay=0.999, num_workers=4, log_every=50, ckpt_every=2000,
                         eval_every=2000, device="cuda", progress_bar=False),
        # One GPU: 512^2 (base VAE), 12-chunk windows.
        "base": _run(GeneratorModelConfig(vae_checkpoint="checkpoints/vae-base", vae_preset="base",
                                          audio=AudioEncoderConfig(dim=512, layers=8, out_dim=768,
                                                                   tokens_per_latent_frame=8),
                                          dit=dataclasses.replace(DIT_PRESETS["base"])),
                     GeneratorDataConfig(prepared_dir="data/prepared_256", chunks=12),
                     steps=100_000, batch_size=16, lr=2e-4, warmup_steps=2000, weight_decay=0.01,
                     ema_decay=0.9995, precision="bf16", num_workers=4, ckpt_every=2000),
        # Seconds on a CPU (tests).
        "test": _run(_test_model(), GeneratorDataConfig(chunks=3, context_latents=2, refs_per_clip=2,
                                                        samples_per_epoch=8, val_windows=2),
                     steps=4, batch_size=2, lr=1e-3, ema_decay=0.0, num_workers=0, log_every=1,
                     ckpt_every=2, device="cpu", tensorboard=False, progress_bar=False),
    }

    role: ClassVar[str] = "teacher"

    def build_model(self, cfg: RunConfig) -> nn.Module:
        self.cfg = cfg  # training_step reads the model and data settings from here
        vae = load_vae(cfg.model)
        rest = RestModel(rest_config(cfg.model, vae, self.role), vae=vae)
        return GeneratorTrainModel(rest)

    def build_dataset(self, cfg: RunConfig, split: str) -> torch.utils.data.Dataset:
        vae = load_vae(cfg.model)
        return generator_dataset(rest_config(cfg.model, vae, self.role), vae, cfg.data, split, cfg.train.seed)

    def training_step(self, model: nn.Module, batch: Any, step: int) -> dict[str, torch.Tensor]:
        loss, logs = flow_loss(model.rest, batch, self.cfg.model, context_latents=self.cfg.data.context_latents)
        return {"loss/main": loss, **logs}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, cfg: RunConfig) -> dict[str, float]:
        """Velocity MSE on val windows at fixed noise levels (no audio dropout), per level and mean,
        and with a clean past (``val_v_mse_clean_past``)."""
        try:
            dataset = self.build_dataset(cfg, "val")
        except ValueError as exc:
            logger.info("no validation: %s", exc)
            return {}
        device = next(model.parameters()).device
        gen = torch.Generator().manual_seed(0)
        out: dict[str, float] = {}
        items = [dataset[i] for i in range(min(len(dataset), cfg.data.val_windows))]
        batch = {k: torch.stack([it[k] for it in items]).to(device) for k in items[0]}
        n_chunks = cfg.data.chunks

        def velocity_mse(level: float, clean_chunks: int) -> float:
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            t = torch.full((len(items), n_chunks), level, device=device)  # (B, n)
            t[:, :clean_chunks] = 0.0  # clean chunks are not scored
            loss, _ = flow_loss(model.rest, batch, cfg.model, cfg.data.context_latents,
                                mode="bidirectional", t=t, drop_audio=False)
            return float(loss)

        # Fixed seeds inside, and the training run's RNG state is left untouched.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            for level in VAL_LEVELS:
                out[f"val_v_mse_t{level}"] = velocity_mse(level, 0)
            out["val_v_mse"] = float(np.mean([out[f"val_v_mse_t{level}"] for level in VAL_LEVELS]))
            # The asynchronous case ASD and rolling generation rely on: the first half of the chunks
            # clean (t = 0), the rest at the level.
            clean_past = [velocity_mse(level, n_chunks // 2) for level in VAL_LEVELS]
            out["val_v_mse_clean_past"] = float(np.mean(clean_past))
        return out

    def export(self, model: nn.Module, cfg: RunConfig, out_dir: str | os.PathLike) -> None:
        model.rest.save_pretrained(out_dir, dtype=torch.float16, extra={"trained": {
            "stage": self.name, "steps": cfg.train.steps, "prepared_dir": cfg.data.prepared_dir,
            "splits": list(cfg.data.splits), "schedule": cfg.model.schedule,
            "vae_checkpoint": cfg.model.vae_checkpoint}})

