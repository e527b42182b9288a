"""Training stage ``vae``: the causal video autoencoder (``python -m hub.train vae --preset tiny``).

Data: windows of ``data.num_frames = 1 + n * f_t`` frames from the prepared 25 fps face clips of
the ``train`` and ``motion`` splits (``python -m hub.data prepare ... --out data/prepared_128
--size 128`` writes ``index.csv``; ``val`` clips are never used for training), plus the shared
portraits face-cropped with :func:`hub.face.crop_reference` and turned into short clips by a slow
random pan. Training uses random ``data.crop_size`` crops (the model is fully convolutional) and
horizontal flips; evaluation uses whole frames of the val clips.

Losses, per sample: ``l1 * |x - x'| + mse * (x - x')^2`` (means over pixels), a perceptual term
(LPIPS when its AlexNet backbone weights are in the torch hub cache, otherwise the TAEF2 feature
distance of :mod:`hub.models.taef2`), ``kl_weight * KL(q(z|x) || N(0, I))`` (mean over latent
values) and an optional hinge-GAN term from a small patch critic in its own optimizer group
``critic``.

Measured on the 2-core CPU (tiny preset, 128^2): TAEF2 perceptual forward+backward costs about
1.6 s per 8 frames, while the whole VAE step costs about 0.06-0.08 s per frame; adding it would
more than halve the number of steps in the ~30 minute CPU budget, so ``tiny`` trains without a
perceptual term (``perceptual="none"``) and ``base`` (GPU) uses TAEF2 features.

Export measures the per-channel latent mean/std on ``data.stats_windows`` training windows and
stores them in the checkpoint's config so :meth:`CausalVideoVAE.normalize` gives ~unit variance.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hub import settings
from hub.models.vae import VAE_PRESETS, CausalVideoVAE, VAEConfig, measure_latent_stats
from hub.train.config import RunConfig, TrainConfig
from hub.train.stage import MAIN_GROUP, GroupOptions, Stage

logger = logging.getLogger(__name__)

CRITIC_GROUP = "critic"
TRAIN_SPLITS = ("train", "motion")


@dataclass
class VAEDataConfig:
    """Where the training clips come from and how windows are cut."""

    prepared_dir: str = "data/prepared_128"  # relative paths are relative to the repository root
    splits: tuple[str, ...] = TRAIN_SPLITS
    num_frames: int = 5  # frames per training window, 1 + n * f_t
    crop_size: int = 64  # random square crop for training; 0 = whole frames
    hflip: bool = True
    portraits: bool = True  # add the shared portraits (face-cropped) as panning clips
    portraits_file: str = ""  # a .npy uint8 (P, S, S, 3) of crops made by load_portraits (machines without the data)
    portrait_repeat: int = 4  # each portrait appears this many times per epoch
    portrait_pan: int = 16  # pixels the view pans over a portrait window
    eval_frames: int = 17  # frames per validation window
    eval_windows: int = 8  # validation windows used by evaluate()
    stats_windows: int = 64  # training windows encoded to measure latent statistics at export


# ----------------------------------------------------------------------------------------------
# Data


def resolve_dir(path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else settings.REPO_ROOT / p


def read_index(prepared_dir: Path, splits: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of ``prepared_dir/index.csv`` whose split is in ``splits``."""
    index = prepared_dir / "index.csv"
    if not index.is_file():
        raise ValueError(f"{index} not found; prepare the clips first: python -m hub.data prepare --src "
                         f"<shared data>/manifest.csv --out {prepared_dir} --size <N>")
    with open(index, newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["split"] in splits]
    if "val" in splits and any(s != "val" for s in splits):
        raise ValueError("data.splits mixes 'val' with training splits; val clips are never trained on")
    if not rows:
        raise ValueError(f"{index}: no clips of split {list(splits)}")
    return rows


def load_clips(prepared_dir: Path, rows: list[dict[str, str]], size: int) -> list[np.ndarray]:
    """Decoded frames ``uint8 (T, size, size, 3)`` of every row (resized if the folder differs)."""
    import cv2

    from hub.data.decoded import read_clip_frames

    clips = []
    for row in rows:
        path = Path(row["path"])
        path = path if path.is_absolute() else prepared_dir / path
        frames = read_clip_frames(path)  # (T, S, S, 3)
        if frames.shape[1:3] != (size, size):
            frames = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])
        clips.append(frames)
    return clips


def load_portraits(size: int) -> np.ndarray:
    """Face crops ``uint8 (P, size, size, 3)`` of the shared portraits, cached in ``cache_dir()``.

    Portraits where no face is found are left out (logged).
    """
    from hub.face import FaceAnalyzer, crop_reference

    folder = settings.data_dir(required=True) / "portraits"
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp"})
    key = hashlib.sha256("|".join(f"{p.name}:{p.stat().st_size}" for p in files).encode()).hexdigest()[:16]
    cache = settings.cache_dir() / f"vae_portraits_{size}_{key}.npy"
    if cache.is_file():
        return np.load(cache)
    crops, skipped = [], []
    with FaceAnalyzer(blendshapes=False) as analyzer:
        for path in files:
            try:
                crops.append(crop_reference(path, size, analyzer=analyzer))
            except ValueError as exc:
                skipped.append(f"{path.name} ({exc})")
    if skipped:
        logger.info("portraits without a usable face, left out: %s", "; ".join(skipped))
    stack = np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)
    from hub.io_utils import atomic_path

    with atomic_path(cache, suffix=".npy") as tmp:
        np.save(tmp, stack)
    return stack


def load_portrait_crops(path: Path, size: int) -> np.ndarray:
    """Crops saved by :func:`load_portraits` (``uint8 (P, size, size, 3)``), checked."""
    if not path.is_file():
        raise ValueError(f"data.portraits_file={path} not found (it is the .npy load_portraits caches)")
    crops = np.load(path, allow_pickle=False)
    if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1:] != (size, size, 3):
        raise ValueError(f"data.portraits_file={path}: expected uint8 (P, {size}, {size}, 3), got "
                         f"{crops.dtype} {crops.shape}")
    return crops


def to_video_tensor(frames: np.ndarray) -> torch.Tensor:
    """``uint8 (T, H, W, 3)`` -> ``float (3, T, H, W)`` in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float().div(127.5).sub(1.0)


class VAEWindowDataset(torch.utils.data.Dataset):
    """Windows of ``num_frames`` frames from in-memory clips and panning portrait clips.

    Item: ``{"video": float (3, T, S, S)}`` in [-1, 1] with ``S = crop_size`` (or the full size).
    Window offsets, crops, flips and pans are a pure function of ``(seed, epoch, index)``.
    """

    def __init__(self, clips: list[np.ndarray], portraits: np.ndarray | None, num_frames: int,
                 crop_size: int = 0, hflip: bool = False, portrait_repeat: int = 1, portrait_pan: int = 0,
                 seed: int = 0, random: bool = True) -> None:
        self.clips = [c for c in clips if c.shape[0] >= num_frames]
        if not self.clips and (portraits is None or len(portraits) == 0):
            raise ValueError(f"no clip has at least {num_frames} frames and there are no portraits")
        self.portraits = portraits if portraits is not None else np.zeros((0, 1, 1, 3), np.uint8)
        self.num_frames, self.crop_size, self.hflip = num_frames, crop_size, hflip
        self.portrait_repeat, self.portrait_pan = portrait_repeat, portrait_pan
        self.seed, self.random, self.epoch = seed, random, 0
        self.windows = [(c, k) for c, clip in enumerate(self.clips) for k in range(clip.shape[0] // num_frames)]
        self.num_portrait_items = len(self.portraits) * portrait_repeat

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.windows) + self.num_portrait_items

    def _generator(self, index: int) -> torch.Generator:
        return torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index)

    def _randint(self, gen: torch.Generator, high: int) -> int:
        return int(torch.randint(0, high, (1,), generator=gen)) if self.random and high > 1 else 0

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        gen = self._generator(index)
        t = self.num_frames
        if index < len(self.windows):
            c, k = self.windows[index]
            clip = self.clips[c]
            slack = clip.shape[0] - (clip.shape[0] // t) * t
            start = k * t + self._randint(gen, slack + 1)
            frames = clip[start:start + t]  # (T, S, S, 3)
        else:
            frames = self._portrait_clip(self.portraits[(index - len(self.windows)) % len(self.portraits)], gen)
        size = frames.shape[1]
        crop = self.crop_size or size
        if crop < size:
            top, left = self._randint(gen, size - crop + 1), self._randint(gen, size - crop + 1)
            frames = frames[:, top:top + crop, left:left + crop]
        if self.hflip and self._randint(gen, 2):
            frames = frames[:, :, ::-1]
        return {"video": to_video_tensor(frames)}  # (3, T, crop, crop)

    def _portrait_clip(self, image: np.ndarray, gen: torch.Generator) -> np.ndarray:
        """A window of ``num_frames`` frames panning linearly across a slightly zoomed portrait."""
        import cv2

        size, pan = image.shape[0], self.portrait_pan
        zoomed = cv2.resize(image, (size + pan, size + pan), interpolation=cv2.INTER_LINEAR)
        (y0, x0), (y1, x1) = [(self._randint(gen, pan + 1), self._randint(gen, pan + 1)) for _ in range(2)]
        frames = []
        for i in range(self.num_frames):
            a = i / max(1, self.num_frames - 1)
            y, x = round(y0 + a * (y1 - y0)), round(x0 + a * (x1 - x0))
            frames.append(zoomed[y:y + size, x:x + size])
        return np.stack(frames)  # (T, S, S, 3)


# ----------------------------------------------------------------------------------------------
# Model: the VAE plus the frozen perceptual net and the optional critic


class PatchCritic(nn.Module):
    """Per-frame patch discriminator: ``(N, 3, H, W)`` -> logits ``(N, 1, H/8, W/8)``."""

    def __init__(self, width: int = 32, layers: int = 3) -> None:
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(3, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        c = width
        for _ in range(layers - 1):
            mods += [nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), nn.GroupNorm(8, 2 * c), nn.LeakyReLU(0.2)]
            c *= 2
        mods.append(nn.Conv2d(c, 1, 3, padding=1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LPIPSDistance(nn.Module):
    """``lpips.LPIPS(net="alex")`` as ``(N, 3, H, W), (N, 3, H, W) -> (N,)``; frozen."""

    def __init__(self) -> None:
        super().__init__()
        import lpips

        self.net = lpips.LPIPS(net="alex", verbose=False)
        for param in self.parameters():
            param.requires_grad_(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(x, y).flatten()


def lpips_unavailable_reason() -> str | None:
    """Why LPIPS(alex) cannot be built here, or None when its backbone weights are cached."""
    try:
        import lpips  # noqa: F401
        import torchvision  # noqa: F401
    except ImportError as exc:
        return f"lpips/torchvision not importable ({exc})"
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    if not list(checkpoints.glob("alexnet-*.pth")):
        return (f"AlexNet ImageNet weights (alexnet-owt-*.pth) are not in {checkpoints} and cannot be "
                "downloaded here")
    return None


def build_perceptual(kind: str) -> nn.Module | None:
    """The frozen perceptual distance for ``VAEConfig.perceptual``; "lpips" falls back to TAEF2."""
    if kind == "none":
        return None
    if kind == "lpips":
        reason = lpips_unavailable_reason()
        if reason is None:
            return LPIPSDistance()
        logger.warning("LPIPS unavailable (%s); using the TAEF2 feature distance instead", reason)
    from hub.models.taef2 import TAEF2Perceptual

    return TAEF2Perceptual()


class VAETrainModel(nn.Module):
    """What the ``vae`` step needs: ``vae`` (trained), ``perceptual`` (frozen), ``critic`` (optional)."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.vae = CausalVideoVAE(cfg)
        self.perceptual = build_perceptual(cfg.perceptual) if cfg.perceptual_weight > 0 else None
        self.critic = PatchCritic() if cfg.adversarial_weight > 0 else None


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mean, exp(logvar)) || N(0, 1))`` averaged over all but the batch dim: ``(B,)``."""
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)  # (B, C, N, h, w)
    return kl.flatten(1).mean(1)


def psnr_db(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of tensors in [-1, 1] (peak-to-peak 2), per sample: ``(B,)``."""
    mse = (pred.clamp(-1, 1) - target).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-10))


# ----------------------------------------------------------------------------------------------


def _run(model_cfg: VAEConfig, data: VAEDataConfig, **train: Any) -> RunConfig:
    return RunConfig(train=TrainConfig(**train), model=model_cfg, data=data)


class VAEStage(Stage):
    """The causal video VAE stage (see the module docstring)."""

    name: ClassVar[str] = "vae"
    presets: ClassVar[dict[str, RunConfig]] = {
        # A shared 2-core CPU, ~30 minutes: 64^2 crops of 9-frame windows, batch 6. Throughput there
        # varies with the load (0.15-1 steps/s measured), so the LR is constant after warm-up with a
        # short-horizon EMA: the run can be stopped (SIGTERM) at the time budget and exported.
        "tiny": _run(dataclasses.replace(VAE_PRESETS["tiny"]), VAEDataConfig(num_frames=9),
                     steps=3000, batch_size=6, lr=8e-4, warmup_steps=50, lr_schedule="constant",
                     weight_decay=0.0, ema_decay=0.99, num_workers=0, log_every=10, ckpt_every=100,
                     device="cpu", progress_bar=False),
        # One GPU, the tiny model: whole 128^2 frames, batch 16, cosine schedule. Meant to run under
        # train.time_limit_min (the schedule is refitted to the time; 8 min on an H100 here).
        "tiny-gpu": _run(dataclasses.replace(VAE_PRESETS["tiny"]), VAEDataConfig(num_frames=9, crop_size=0),
                         steps=60_000, batch_size=16, lr=8e-4, warmup_steps=200, min_lr_ratio=0.05,
                         weight_decay=0.0, ema_decay=0.999, num_workers=6, log_every=50, ckpt_every=2000,
                         device="cuda", progress_bar=False),
        # One GPU: 256^2 clips, 9-frame windows, TAEF2 perceptual term.
        "base": _run(dataclasses.replace(VAE_PRESETS["base"]),
                     VAEDataConfig(prepared_dir="data/prepared_256", num_frames=9, crop_size=256),
                     steps=60_000, batch_size=8, lr=4e-4, warmup_steps=1000, ema_decay=0.999,
                     precision="bf16", num_workers=4, ckpt_every=2000, eval_every=5000),
        # Seconds on a CPU (tests): the test VAE on a tiny prepared folder.
        "test": _run(dataclasses.replace(VAE_PRESETS["test"], latent_mean=None, latent_std=None),
                     VAEDataConfig(num_frames=5, crop_size=16, portraits=False, eval_frames=5, eval_windows=2,
                                   stats_windows=4),
                     steps=4, batch_size=2, lr=1e-3, ema_decay=0.0, num_workers=0, log_every=1, ckpt_every=2,
                     device="cpu", tensorboard=False, progress_bar=False),
    }

    def build_model(self, cfg: RunConfig) -> nn.Module:
        model_cfg: VAEConfig = cfg.model
        model_cfg.num_latent_frames(cfg.data.num_frames)  # ValueError unless 1 + n * f_t
        model_cfg.num_latent_frames(cfg.data.eval_frames)
        crop = cfg.data.crop_size
        if crop and crop % model_cfg.spatial_factor:
            raise ValueError(f"data.crop_size={crop} must be a multiple of model.spatial_factor="
                             f"{model_cfg.spatial_factor}")
        return VAETrainModel(dataclasses.replace(model_cfg))

    def _clips(self, cfg: RunConfig, splits: tuple[str, ...]) -> list[np.ndarray]:
        prepared = resolve_dir(cfg.data.prepared_dir)
        return load_clips(prepared, read_index(prepared, splits), cfg.model.image_size)

    def build_dataset(self, cfg: RunConfig, split: str) -> torch.utils.data.Dataset:
        data: VAEDataConfig = cfg.data
        size = cfg.model.image_size
        if split == "train":
            if "val" in data.splits:
                raise ValueError("data.splits must not contain 'val': val clips are never trained on")
            if not data.portraits:
                portraits = None
            elif data.portraits_file:
                portraits = load_portrait_crops(resolve_dir(data.portraits_file), size)
            else:
                portraits = load_portraits(size)
            return VAEWindowDataset(self._clips(cfg, data.splits), portraits, data.num_frames, data.crop_size,
                                    data.hflip, data.portrait_repeat, data.portrait_pan, seed=cfg.train.seed)
        if split == "val":
            return VAEWindowDataset(self._clips(cfg, ("val",)), None, data.eval_frames, random=False)
        raise ValueError(f"split={split!r}; accepted: 'train', 'val'")

    def optimizer_groups(self, model: nn.Module, cfg: RunConfig) -> dict[str, list[nn.Parameter]]:
        groups = {MAIN_GROUP: list(model.vae.parameters())}
        if model.critic is not None:
            groups[CRITIC_GROUP] = list(model.critic.parameters())
        return groups

    def group_options(self, cfg: RunConfig) -> dict[str, GroupOptions]:
        return {CRITIC_GROUP: GroupOptions(betas=(0.5, 0.9))} if cfg.model.adversarial_weight > 0 else {}

    def training_step(self, model: nn.Module, batch: Any, step: int) -> dict[str, torch.Tensor]:
        cfg: VAEConfig = model.vae.config
        video = batch["video"]  # (B, 3, T, S, S)
        recon, mean, logvar = model.vae(video, sample=True)  # (B, 3, T, S, S), (B, C, N, s, s) x2
        diff = recon - video
        l1 = diff.abs().flatten(1).mean(1)  # (B,)
        mse = diff.pow(2).flatten(1).mean(1)  # (B,)
        kl = kl_divergence(mean, logvar)  # (B,)
        loss = cfg.l1_weight * l1 + cfg.mse_weight * mse + cfg.kl_weight * kl  # (B,)
        out: dict[str, torch.Tensor] = {"loss/l1": l1.mean().detach(), "loss/mse": mse.mean().detach(),
                                        "loss/kl": kl.mean().detach()}
        frames_pred = recon.transpose(1, 2).flatten(0, 1)  # (B * T, 3, S, S)
        frames_true = video.transpose(1, 2).flatten(0, 1)  # (B * T, 3, S, S)
        if model.perceptual is not None:
            # One random frame per sample keeps the frozen net's cost bounded.
            b, t = video.shape[0], video.shape[2]
            pick = torch.randint(0, t, (b,), device=video.device) + torch.arange(b, device=video.device) * t
            perc = model.perceptual(frames_pred[pick], frames_true[pick])  # (B,)
            loss = loss + cfg.perceptual_weight * perc
            out["loss/perceptual"] = perc.mean().detach()
        if model.critic is not None:
            for param in model.critic.parameters():
                param.requires_grad_(False)
            adv = -model.critic(frames_pred).flatten(1).mean(1).unflatten(0, (video.shape[0], -1)).mean(1)  # (B,)
            for param in model.critic.parameters():
                param.requires_grad_(True)
            loss = loss + cfg.adversarial_weight * adv
            out["loss/adversarial"] = adv.mean().detach()
            real = model.critic(frames_true)  # (B * T, 1, s, s)
            fake = model.critic(frames_pred.detach())
            hinge = F.relu(1 - real).flatten(1).mean(1) + F.relu(1 + fake).flatten(1).mean(1)  # (B * T,)
            out[f"loss/{CRITIC_GROUP}"] = hinge.mean()
        out[f"loss/{MAIN_GROUP}"] = loss.mean()
        out["psnr_db"] = psnr_db(recon.detach(), video).mean()
        return out

    @torch.no_grad()
    def evaluate(self, model: nn.Module, cfg: RunConfig) -> dict[str, float]:
        """Mean PSNR (dB) of full-frame reconstructions on the first ``data.eval_windows`` val windows."""
        dataset = self.build_dataset(cfg, "val")
        device = next(model.vae.parameters()).device
        scores = []
        for i in range(min(len(dataset), cfg.data.eval_windows)):
            video = dataset[i]["video"][None].to(device)  # (1, 3, T, H, W)
            scores.append(float(psnr_db(model.vae.decode(model.vae.encode(video)), video)[0]))
        return {"psnr_db": float(np.mean(scores))} if scores else {}

    @torch.no_grad()
    def export(self, model: nn.Module, cfg: RunConfig, out_dir: str | os.PathLike) -> None:
        """Measure latent statistics on training windows (whole frames), then save the VAE."""
        vae: CausalVideoVAE = model.vae
        data: VAEDataConfig = cfg.data
        was_training = vae.training
        vae.eval()
        windows = VAEWindowDataset(self._clips(cfg, data.splits), None, data.num_frames, seed=cfg.train.seed)
        device = next(vae.parameters()).device
        step = max(1, len(windows) // data.stats_windows)
        latents = [vae.encode(windows[i]["video"][None].to(device)).cpu()
                   for i in range(0, len(windows), step)][: data.stats_windows]
        mean, std = measure_latent_stats(latents)
        vae.set_latent_stats(mean, std)
        vae.save_pretrained(out_dir, extra={"latent_stats": {"windows": len(latents), "splits": list(data.splits),
                                                              "prepared_dir": data.prepared_dir}})
        vae.train(was_training)
