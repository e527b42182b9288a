"""A tiny regression stage that exercises every trainer feature in seconds on a CPU.

Model: an MLP regressor (the exported part) plus an optional "critic" head trained on its own
optimizer group every ``critic_every`` steps. Data: a fixed random teacher MLP, with per-(epoch,
index) label noise, so data order, epochs and RNG restore are all visible in the weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hub.checkpoint import config_from_dict, load_state, read_config, save_pretrained
from hub.train.config import RunConfig, TrainConfig
from hub.train.stage import GroupOptions, Stage

KIND = "toy-regressor"


@dataclass
class ToyModelConfig:
    in_dim: int = 8
    hidden: int = 16
    out_dim: int = 2
    critic: bool = False  # add a second optimizer group ("critic")
    critic_every: int = 2
    input_noise: float = 0.0  # Gaussian noise on inputs inside the step (uses torch's global RNG)


@dataclass
class ToyDataConfig:
    num_samples: int = 64
    label_noise: float = 0.05  # deterministic per (seed, epoch, index)
    seed: int = 0


class ToyRegressor(nn.Module):
    """MLP ``(B, in_dim) -> (B, out_dim)``; the inference model of the toy stage."""

    def __init__(self, cfg: ToyModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.net = nn.Sequential(nn.Linear(cfg.in_dim, cfg.hidden), nn.GELU(), nn.Linear(cfg.hidden, cfg.out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, out_dim)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> "ToyRegressor":
        payload = read_config(directory, KIND)
        model = cls(config_from_dict(ToyModelConfig, payload["config"]))
        load_state(directory, model)
        return model


class ToyTrainModel(nn.Module):
    """Regressor plus an optional critic head ``(B, out_dim) -> (B, out_dim)``."""

    def __init__(self, cfg: ToyModelConfig) -> None:
        super().__init__()
        self.regressor = ToyRegressor(cfg)
        self.critic = nn.Linear(cfg.out_dim, cfg.out_dim) if cfg.critic else None


class ToyDataset(torch.utils.data.Dataset):
    """``{"x": (in_dim,), "y": (out_dim,)}``; labels from a fixed random MLP plus per-epoch noise."""

    def __init__(self, model_cfg: ToyModelConfig, data_cfg: ToyDataConfig, split: str) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"toy dataset split {split!r}; accepted: train, val")
        g = torch.Generator().manual_seed(data_cfg.seed)
        w1 = torch.randn(model_cfg.in_dim, 8, generator=g)
        w2 = torch.randn(8, model_cfg.out_dim, generator=g) / 8**0.5
        g_split = torch.Generator().manual_seed(data_cfg.seed + (0 if split == "train" else 1) + 1)
        self.x = torch.randn(data_cfg.num_samples, model_cfg.in_dim, generator=g_split)  # (N, in_dim)
        self.y = torch.tanh(self.x @ w1) @ w2  # (N, out_dim)
        self.noise = data_cfg.label_noise
        self.seed = data_cfg.seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(hash((self.seed, self.epoch, index)) % 2**62)
        noise = torch.randn(self.y.shape[1], generator=g) * self.noise  # (out_dim,)
        return {"x": self.x[index], "y": self.y[index] + noise}


class ToyStage(Stage):
    name = "toy"
    presets = {
        "test": RunConfig(
            train=TrainConfig(steps=8, batch_size=4, lr=1e-2, warmup_steps=2, ema_decay=0.9, num_workers=0,
                              log_every=2, ckpt_every=4, tensorboard=False, progress_bar=False, device="cpu"),
            model=ToyModelConfig(), data=ToyDataConfig()),
        "tiny": RunConfig(
            train=TrainConfig(steps=200, batch_size=16, lr=3e-3, warmup_steps=20, ema_decay=0.99, num_workers=0,
                              log_every=20, ckpt_every=100),
            model=ToyModelConfig(hidden=64, critic=True), data=ToyDataConfig(num_samples=1024)),
    }

    def build_model(self, cfg: RunConfig) -> nn.Module:
        return ToyTrainModel(cfg.model)

    def build_dataset(self, cfg: RunConfig, split: str) -> torch.utils.data.Dataset:
        return ToyDataset(cfg.model, cfg.data, split)

    def optimizer_groups(self, model: nn.Module, cfg: RunConfig) -> dict[str, list[nn.Parameter]]:
        groups = {"main": list(model.regressor.parameters())}
        if model.critic is not None:
            groups["critic"] = list(model.critic.parameters())
        return groups

    def group_options(self, cfg: RunConfig) -> dict[str, GroupOptions]:
        if not cfg.model.critic:
            return {}
        return {"critic": GroupOptions(every=cfg.model.critic_every, schedule="constant")}

    def training_step(self, model: nn.Module, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        x, y = batch["x"], batch["y"]  # (B, in_dim), (B, out_dim)
        cfg = model.regressor.cfg
        if cfg.input_noise > 0:
            x = x + cfg.input_noise * torch.randn_like(x)
        pred = model.regressor(x)  # (B, out_dim)
        out = {"loss/main": F.mse_loss(pred, y)}
        if model.critic is not None:
            # The critic learns the residual of the (detached) prediction.
            out["loss/critic"] = F.mse_loss(model.critic(pred.detach()), y - pred.detach())
        return out

    def evaluate(self, model: nn.Module, cfg: RunConfig) -> dict[str, float]:
        data = ToyDataset(cfg.model, cfg.data, "val")
        device = next(model.parameters()).device
        pred = model.regressor(data.x.to(device))  # (N, out_dim)
        return {"mse": float(F.mse_loss(pred, data.y.to(device)))}

    def export(self, model: nn.Module, cfg: RunConfig, out_dir: str | os.PathLike) -> None:
        save_pretrained(model.regressor, cfg.model, out_dir, kind=KIND)
