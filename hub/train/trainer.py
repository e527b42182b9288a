"""The common trainer: one loop for every stage, from one CPU process to many GPU nodes.

Per optimizer step: ``grad_accum`` micro-batches, each group's loss back-propagated into its own
parameters, gradients averaged over ranks, clipped, one optimizer + LR-schedule step per group,
EMA of the "main" group. Checkpoints hold everything needed to continue *exactly* (model,
optimizers, schedulers, EMA, step, per-rank RNG states, epoch and position in the epoch) and are
written atomically; SIGTERM / first Ctrl-C finish the current step, save and return.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import pickle
import random
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from hub.io_utils import atomic_path, atomic_write_text
from hub.train import distributed as dist_utils
from hub.train.config import RunConfig, config_diff, config_from_dict, config_to_dict, validate_train_config
from hub.train.metrics_log import MetricsLogger
from hub.train.stage import MAIN_GROUP, GroupOptions, Stage

logger = logging.getLogger("hub.train")

CKPT_DIR = "checkpoints"
CKPT_PATTERN = re.compile(r"^step_(\d{8})\.pt$")
RUN_CONFIG_NAME = "config.json"
EXPORT_DIR = "export"
CKPT_FORMAT = 1


# ----------------------------------------------------------------------------------------------
# Small pieces: LR schedule, EMA, RNG state, sampler


_TIME_FIT_AFTER = 20  # steps run before the step time is measured (the last half of them is timed)
_TIME_FIT_MARGIN = 0.93  # share of the remaining time given to steps (the rest: checkpoints, eval, export)


def lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the base LR at 0-based optimizer ``step``: linear warmup, then cosine or flat."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class EMA:
    """Exponential moving average of a set of named parameters (fp32 shadows on their device)."""

    def __init__(self, named_params: list[tuple[str, nn.Parameter]], decay: float) -> None:
        self.decay = decay
        self.params = dict(named_params)
        self.shadow = {name: p.detach().clone().float() for name, p in named_params}

    @torch.no_grad()
    def update(self) -> None:
        """shadow <- decay * shadow + (1 - decay) * param."""
        shadows = list(self.shadow.values())
        params = [p.detach().float() for p in self.params.values()]
        torch._foreach_lerp_(shadows, params, 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: t.detach().cpu() for name, t in self.shadow.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != set(self.shadow):
            raise ValueError("checkpoint EMA does not cover the same parameters as the model's main group")
        for name, t in state.items():
            self.shadow[name].copy_(t)

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Temporarily load the EMA weights into the parameters (restored on exit)."""
        backup = {name: p.detach().clone() for name, p in self.params.items()}
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(self.shadow[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, p in self.params.items():
                    p.copy_(backup[name])


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """This process's generator states as tensors/primitives (loadable with ``weights_only``)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate((state["python"][0], tuple(state["python"][1]), state["python"][2]))
    name, key, *rest = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed python/numpy from the worker's torch seed."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


class ResumableDistributedSampler(DistributedSampler):
    """``DistributedSampler`` that yields ``(epoch, index)`` keys and can start mid-epoch.

    The per-epoch permutation depends only on ``(seed, epoch)``, not on the world size; rank ``r``
    takes positions ``r, r + W, ...`` of it. ``set_start(n)`` skips the first ``n`` *global*
    positions, so resuming after ``b`` batches of ``B`` per rank uses ``n = b * B * W``.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed,
                         drop_last=True)
        self.start = 0

    def set_start(self, global_position: int) -> None:
        self.start = global_position

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.dataset), generator=g).tolist()[: self.total_size]  # type: ignore[arg-type]
        mine = order[self.start + self.rank: self.total_size: self.num_replicas]
        return iter([(self.epoch, i) for i in mine])

    def __len__(self) -> int:
        return max(0, (self.total_size - self.start) // self.num_replicas)


class EpochKeyedDataset(Dataset):
    """Wraps a dataset so items are fetched by ``(epoch, index)``; calls ``set_epoch`` when it changes.

    Works inside persistent DataLoader workers (each holds its own copy and cache).
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self._epoch: int | None = None

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        if epoch != self._epoch and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        self._epoch = epoch
        return self.dataset[index]


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Move tensors inside (nested) dicts, lists and tuples to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        moved = [move_to_device(v, device) for v in batch]
        return type(batch)(moved) if isinstance(batch, list) else tuple(moved)
    return batch


# ----------------------------------------------------------------------------------------------
# Checkpoint files


def checkpoint_path(run_dir: str | os.PathLike, step: int) -> Path:
    return Path(run_dir) / CKPT_DIR / f"step_{step:08d}.pt"


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temp files of an interrupted save are ignored)."""
    folder = Path(run_dir) / CKPT_DIR
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if CKPT_PATTERN.match(p.name)]
    return sorted(found, key=lambda p: int(CKPT_PATTERN.match(p.name).group(1)))  # type: ignore[union-attr]


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A training checkpoint (tensors and primitives only; ``weights_only=True``)."""
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != CKPT_FORMAT:
        raise ValueError(f"{path}: not a hub.train checkpoint (format {CKPT_FORMAT})")
    return state


def find_resume_checkpoint(run_dir: str | os.PathLike) -> tuple[Path, dict[str, Any]] | None:
    """The latest checkpoint of ``run_dir`` that loads, falling back to older ones; None if none."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return path, load_checkpoint(path)
        except (RuntimeError, EOFError, ValueError, OSError, pickle.UnpicklingError) as exc:
            logger.warning("skipping unreadable checkpoint %s (%s)", path, exc)
    return None


def read_run_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``config.json`` a run wrote: ``{"stage", "preset", "config", ...}``."""
    path = Path(run_dir) / RUN_CONFIG_NAME
    if not path.is_file():
        raise ValueError(f"{run_dir}: not a training run folder (no {RUN_CONFIG_NAME})")
    return json.loads(path.read_text())


# ----------------------------------------------------------------------------------------------
# Trainer


@dataclass
class TrainResult:
    """What a call to :meth:`Trainer.fit` ended with."""

    run_dir: Path
    step: int
    stopped_early: bool
    stop_signal: int | None
    export_dir: Path | None
    metrics: dict[str, float]


class Trainer:
    """Trains ``stage`` with ``cfg`` into ``run_dir``; call :meth:`fit` on every rank.

    ``resume``: None (fresh run; refuses a folder that already has checkpoints), ``"auto"`` (the
    latest complete checkpoint in ``run_dir`` if any, else fresh) or a checkpoint file / run folder.
    ``on_step(step)`` is called on every rank after each completed optimizer step (tests, hooks).
    """

    def __init__(self, stage: Stage, cfg: RunConfig, run_dir: str | os.PathLike, resume: str | None = None,
                 preset: str = "", on_step: Callable[[int], None] | None = None) -> None:
        validate_train_config(cfg.train)
        self.stage = stage
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.preset = preset
        self.on_step = on_step
        self._stop_signal: int | None = None

    # -- public -----------------------------------------------------------------------------

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """Ask the loop to finish the current step, save a checkpoint and return."""
        self._stop_signal = signum

    def fit(self) -> TrainResult:
        tc = self.cfg.train
        info = dist_utils.init_distributed(tc.device)
        self.info = info
        main = info.is_main
        file_handler = self._start_run_folder() if main else None
        handlers = self._install_signal_handlers()
        try:
            return self._fit(info)
        finally:
            self._restore_signal_handlers(handlers)
            if file_handler is not None:
                logging.getLogger("hub").removeHandler(file_handler)
                file_handler.close()

    # -- setup ------------------------------------------------------------------------------

    def _start_run_folder(self) -> logging.Handler:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.run_dir / "train.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        hub_logger = logging.getLogger("hub")
        hub_logger.addHandler(handler)
        if hub_logger.level == logging.NOTSET or hub_logger.level > logging.INFO:
            hub_logger.setLevel(logging.INFO)
        return handler

    def _write_run_config(self, world_size: int) -> None:
        path = self.run_dir / RUN_CONFIG_NAME
        if path.is_file():
            try:
                old = config_from_dict(self.cfg, json.loads(path.read_text())["config"])
                for key, (before, after) in config_diff(old, self.cfg).items():
                    logger.warning("config changed on resume: %s %r -> %r", key, before, after)
            except (ValueError, KeyError) as exc:
                logger.warning("previous %s not comparable (%s)", path, exc)
        payload = {"stage": self.stage.name, "preset": self.preset, "world_size": world_size,
                   "torch": torch.__version__, "config": config_to_dict(self.cfg)}
        atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum: int, frame: Any) -> None:
            if signum == signal.SIGINT and self._stop_signal is not None:
                raise KeyboardInterrupt  # second Ctrl-C: stop now, no checkpoint
            logger.warning("signal %d received: finishing the step, saving a checkpoint, then stopping",
                           signum)
            self._stop_signal = signum

        old = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            old[sig] = signal.signal(sig, handler)
        return old

    @staticmethod
    def _restore_signal_handlers(old: dict[int, Any]) -> None:
        for sig, handler in old.items():
            signal.signal(sig, handler)

    def _build_optimizers(self, model: nn.Module) -> None:
        tc = self.cfg.train
        groups = self.stage.optimizer_groups(model, self.cfg)
        if MAIN_GROUP not in groups:
            raise ValueError(f"stage {self.stage.name!r}: optimizer_groups must include {MAIN_GROUP!r}")
        options = self.stage.group_options(self.cfg)
        unknown = sorted(set(options) - set(groups))
        if unknown:
            raise ValueError(f"stage {self.stage.name!r}: group_options for unknown groups {unknown}")
        seen: set[int] = set()
        names = {id(p): n for n, p in model.named_parameters()}
        for group, params in groups.items():
            if not params:
                raise ValueError(f"stage {self.stage.name!r}: optimizer group {group!r} is empty")
            for p in params:
                if id(p) in seen or not p.requires_grad or id(p) not in names:
                    raise ValueError(f"stage {self.stage.name!r}: group {group!r} has a parameter that is "
                                     "shared with another group, frozen, or not part of the model")
                seen.add(id(p))
        self.groups = groups
        self.total_steps = tc.steps  # lowered by train.time_limit_min once the step time is measured
        self.options = {g: options.get(g, GroupOptions()) for g in groups}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LambdaLR] = {}
        for group, params in groups.items():
            opt = self.options[group]
            wd = tc.weight_decay if opt.weight_decay is None else opt.weight_decay
            param_groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": wd},
                            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
            param_groups = [pg for pg in param_groups if pg["params"]]
            optimizer = torch.optim.AdamW(param_groups, lr=tc.lr if opt.lr is None else opt.lr,
                                          betas=tuple(tc.betas if opt.betas is None else opt.betas),
                                          eps=tc.eps)
            warmup = tc.warmup_steps if opt.warmup_steps is None else opt.warmup_steps
            schedule = tc.lr_schedule if opt.schedule is None else opt.schedule

            def factor(step: int, warmup: int = warmup, schedule: str = schedule) -> float:
                return lr_factor(step, warmup, self.total_steps, schedule, tc.min_lr_ratio)

            self.optimizers[group] = optimizer
            self.schedulers[group] = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        main_ids = {id(p) for p in groups[MAIN_GROUP]}
        self.ema = (EMA([(n, p) for n, p in model.named_parameters() if id(p) in main_ids], tc.ema_decay)
                    if tc.ema_decay > 0 else None)

    def _resume_state(self) -> tuple[Path, dict[str, Any]] | None:
        ckpts = list_checkpoints(self.run_dir)
        if self.resume is None:
            if ckpts:
                raise ValueError(f"run folder {self.run_dir} already holds checkpoints; pass --resume auto "
                                 "to continue it, or choose another --out / train.run_name")
            return None
        if self.resume == "auto":
            return find_resume_checkpoint(self.run_dir)
        path = Path(self.resume)
        if path.is_dir():
            found = find_resume_checkpoint(path)
            if found is None:
                raise ValueError(f"--resume {path}: no complete checkpoint in {path / CKPT_DIR}")
            return found
        if not path.is_file():
            raise ValueError(f"--resume {path}: not a checkpoint file or run folder")
        return path, load_checkpoint(path)

    # -- the loop ---------------------------------------------------------------------------

    def _fit(self, info: dist_utils.DistInfo) -> TrainResult:
        tc = self.cfg.train
        device = info.device
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if tc.precision == "bf16" and device.type != "cuda":
            logger.warning("train.precision='bf16' runs fp32 on %s (bf16 autocast is CUDA only)", device)
        use_bf16 = tc.precision == "bf16" and device.type == "cuda"

        # 1. Model (same seed on every rank, then broadcast from rank 0 as DDP does).
        seed_everything(tc.seed)
        model = self.stage.build_model(self.cfg).to(device)
        model.train()
        dist_utils.broadcast_module(model)
        self._build_optimizers(model)

        # 2. Data.
        dataset = self.stage.build_dataset(self.cfg, "train")
        sampler = ResumableDistributedSampler(dataset, info.world_size, info.rank, tc.seed)
        per_rank = sampler.num_samples
        if per_rank // tc.batch_size < 1:
            raise ValueError(f"stage {self.stage.name!r}: the training set has {len(dataset)} samples, fewer "
                             f"than one batch ({tc.batch_size} per process x {info.world_size} processes)")

        # 3. Resume or start fresh.
        found = self._resume_state()
        if info.is_main:
            self._write_run_config(info.world_size)
        step, epoch, batch_in_epoch = 0, 0, 0
        seed_everything(tc.seed + info.rank)
        if found is not None:
            path, state = found
            step, epoch, batch_in_epoch = self._load_state(state, model, info)
            logger.info("resumed from %s at step %d (epoch %d, batch %d)", path, step, epoch, batch_in_epoch)
        dist_utils.barrier()
        metrics_log = MetricsLogger(self.run_dir, enabled=info.is_main, tensorboard=tc.tensorboard,
                                    resume_step=step)  # drops rows an interrupted attempt logged later
        n_params = sum(p.numel() for p in model.parameters())
        n_train = sum(p.numel() for ps in self.groups.values() for p in ps)
        logger.info("stage %s: %.2fM parameters (%.2fM trainable in groups %s), %d training samples, "
                    "%d process(es) on %s, global batch %d", self.stage.name, n_params / 1e6, n_train / 1e6,
                    list(self.groups), len(dataset), info.world_size, device,
                    tc.batch_size * tc.grad_accum * info.world_size)

        # 4. Batches: (epoch, position) advance as batches are consumed; the loader is recreated
        #    only to start an epoch at a given position.
        position = {"epoch": epoch, "batch": batch_in_epoch}
        keyed = EpochKeyedDataset(dataset)
        collate = self.stage.collate_fn(self.cfg)

        loader_gen = torch.Generator()
        loader_gen.manual_seed(tc.seed * 1000 + info.rank)
        loader = DataLoader(keyed, batch_size=tc.batch_size, sampler=sampler, drop_last=True,
                            num_workers=tc.num_workers, collate_fn=collate, pin_memory=device.type == "cuda",
                            worker_init_fn=seed_worker, generator=loader_gen,
                            persistent_workers=tc.num_workers > 0)  # workers (and their caches) live on

        def batches() -> Iterator[Any]:
            while True:
                sampler.set_epoch(position["epoch"])
                sampler.set_start(position["batch"] * tc.batch_size * info.world_size)
                for batch in loader:
                    position["batch"] += 1
                    yield batch
                position["epoch"] += 1
                position["batch"] = 0

        data_iter = batches()
        autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext
        progress = None
        if info.is_main and tc.progress_bar:
            from tqdm.auto import tqdm

            progress = tqdm(total=self.total_steps, initial=step, unit="step", dynamic_ncols=True, smoothing=0.1)

        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}
        t_start = time.perf_counter()
        t_window, data_time, window_steps = time.perf_counter(), 0.0, 0
        last_metrics: dict[str, float] = {}
        stopped_early = False
        fit_at = step + _TIME_FIT_AFTER if tc.time_limit_min > 0 else -1
        try:
            while step < self.total_steps:
                active = [g for g in self.groups if self.options[g].active(step)]
                for g in active:
                    self.optimizers[g].zero_grad(set_to_none=True)
                for _ in range(tc.grad_accum):
                    t0 = time.perf_counter()
                    batch = move_to_device(next(data_iter), device)
                    data_time += time.perf_counter() - t0
                    with autocast():
                        out = self.stage.training_step(model, batch, step)
                    for i, g in enumerate(active):
                        key = f"loss/{g}"
                        if key not in out:
                            raise ValueError(f"stage {self.stage.name!r}: training_step returned no {key!r} at "
                                             f"step {step} (group {g!r} is active); got {sorted(out)}")
                        torch.autograd.backward(out[key].float() / tc.grad_accum, inputs=self.groups[g],
                                                retain_graph=i < len(active) - 1)
                    for key, value in out.items():
                        v = value.detach().float() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
                        sums[key] = sums.get(key, 0.0) + v.to(device)
                        counts[key] = counts.get(key, 0) + 1
                for g in active:
                    params = self.groups[g]
                    dist_utils.average_gradients(params)
                    clip = tc.grad_clip if self.options[g].grad_clip is None else self.options[g].grad_clip
                    if clip > 0:
                        norm = torch.nn.utils.clip_grad_norm_(params, clip)
                        sums[f"grad_norm/{g}"] = sums.get(f"grad_norm/{g}", 0.0) + norm.detach().float()
                        counts[f"grad_norm/{g}"] = counts.get(f"grad_norm/{g}", 0) + 1
                    self.optimizers[g].step()
                step_lrs = {g: self.schedulers[g].get_last_lr()[0] for g in self.groups}  # used this step
                for g in self.groups:
                    self.schedulers[g].step()
                if self.ema is not None and MAIN_GROUP in active:
                    self.ema.update()
                step += 1
                window_steps += 1
                if progress is not None:
                    progress.update(1)

                if step == fit_at - _TIME_FIT_AFTER // 2:
                    t_fit = time.perf_counter()  # the first steps (warm-up, compilation) are not timed
                if step == fit_at:
                    self._fit_to_time_limit(step, (time.perf_counter() - t_fit) / (_TIME_FIT_AFTER // 2),
                                            time.perf_counter() - t_start, progress)
                if step % tc.log_every == 0 or step == self.total_steps:
                    last_metrics = self._reduce_log(sums, counts, step)
                    dt = time.perf_counter() - t_window
                    samples = window_steps * tc.grad_accum * tc.batch_size * info.world_size
                    last_metrics.update({"perf/samples_per_s": samples / dt, "perf/step_s": dt / window_steps,
                                         "perf/data_wait_frac": data_time / dt, "epoch": float(position["epoch"])})
                    last_metrics.update({f"lr/{g}": lr for g, lr in step_lrs.items()})
                    if device.type == "cuda":
                        last_metrics["perf/max_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
                    metrics_log.log(step, last_metrics, time.perf_counter() - t_start)
                    if progress is not None:
                        progress.set_postfix(loss=f"{last_metrics.get('loss/main', float('nan')):.4g}",
                                             lr=f"{last_metrics[f'lr/{MAIN_GROUP}']:.2e}")
                    sums, counts = {}, {}
                    t_window, data_time, window_steps = time.perf_counter(), 0.0, 0
                if step % tc.ckpt_every == 0 or step == self.total_steps:
                    self._save(model, step, position, info)
                if tc.eval_every and step % tc.eval_every == 0 and step < self.total_steps:
                    metrics_log.log(step, self._evaluate(model, info), time.perf_counter() - t_start)
                if self.on_step is not None:
                    self.on_step(step)
                check_stop = info.world_size == 1 or step % 10 == 0
                if check_stop and step < self.total_steps and dist_utils.any_rank(self._stop_signal is not None, device):
                    if step % tc.ckpt_every != 0:
                        self._save(model, step, position, info)
                    stopped_early = True
                    logger.info("stopped at step %d; continue with --resume auto", step)
                    break
        finally:
            if progress is not None:
                progress.close()

        export_dir = None
        if not stopped_early:
            eval_metrics = self._evaluate(model, info)
            if eval_metrics:
                metrics_log.log(step, eval_metrics, time.perf_counter() - t_start)
                last_metrics.update(eval_metrics)
            if tc.export_at_end:
                export_dir = self.run_dir / EXPORT_DIR
                if info.is_main:
                    self._export(model, export_dir)
                dist_utils.barrier()
        metrics_log.close()
        return TrainResult(run_dir=self.run_dir, step=step, stopped_early=stopped_early,
                           stop_signal=self._stop_signal if stopped_early else None, export_dir=export_dir,
                           metrics=last_metrics)

    def _fit_to_time_limit(self, step: int, step_s: float, elapsed_s: float, progress: Any) -> None:
        """Lower the run's total steps so that it ends inside ``train.time_limit_min``.

        The LR schedule (warmup + cosine) is then laid over the lowered total, so a run cut by time
        still decays its learning rate properly instead of stopping at a high LR.  Every rank
        agrees on the measured step time (max over ranks).
        """
        tc = self.cfg.train
        step_s = max(float(v) for v in dist_utils.gather_objects(step_s))
        remaining_s = tc.time_limit_min * 60.0 - elapsed_s
        fitted = step + max(0, int(remaining_s * _TIME_FIT_MARGIN / max(step_s, 1e-9)))
        if fitted < self.total_steps:
            logger.info("time limit %.1f min: %.3f s/step measured, total steps lowered from %d to %d",
                        tc.time_limit_min, step_s, self.total_steps, fitted)
            self.total_steps = fitted
            if progress is not None:
                progress.total = fitted
                progress.refresh()

    def _reduce_log(self, sums: dict[str, torch.Tensor], counts: dict[str, int], step: int) -> dict[str, float]:
        if not sums:
            return {}
        keys = sorted(sums)
        local = torch.stack([sums[k] / counts[k] for k in keys])  # (K,)
        values = dist_utils.all_reduce_mean(local).tolist()
        out = dict(zip(keys, values))
        for key, value in out.items():
            if key.startswith("loss/") and not math.isfinite(value):
                raise FloatingPointError(f"non-finite {key}={value} at step {step}; lower train.lr, check "
                                         "the data, or resume from an earlier checkpoint")
        return out

    def _evaluate(self, model: nn.Module, info: dist_utils.DistInfo) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if info.is_main:
            was_training = model.training
            model.eval()
            swap = self.ema.swapped_in() if self.ema is not None else contextlib.nullcontext()
            with swap, torch.no_grad():
                metrics = {f"eval/{k}": float(v) for k, v in self.stage.evaluate(model, self.cfg).items()}
            model.train(was_training)
        dist_utils.barrier()
        return metrics

    def _export(self, model: nn.Module, out_dir: Path) -> None:
        swap = self.ema.swapped_in() if self.ema is not None else contextlib.nullcontext()
        cfg = self.cfg
        if self.total_steps != cfg.train.steps:  # a time limit lowered it: exports record what ran
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=self.total_steps))
        with swap:
            self.stage.export(model, cfg, out_dir)
        logger.info("exported inference checkpoint to %s", out_dir)

    # -- checkpoints ------------------------------------------------------------------------

    def _save(self, model: nn.Module, step: int, position: dict[str, int], info: dist_utils.DistInfo) -> None:
        rngs = dist_utils.gather_objects(rng_state())
        if info.is_main:
            state = {
                "format": CKPT_FORMAT,
                "stage": self.stage.name,
                "step": step,
                "epoch": position["epoch"],
                "batch_in_epoch": position["batch"],
                "batch_size": self.cfg.train.batch_size,
                "world_size": info.world_size,
                "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "optimizers": {g: o.state_dict() for g, o in self.optimizers.items()},
                "schedulers": {g: s.state_dict() for g, s in self.schedulers.items()},
                "ema": self.ema.state_dict() if self.ema is not None else {},
                "rng": rngs,
            }
            path = checkpoint_path(self.run_dir, step)
            with atomic_path(path) as tmp:
                torch.save(state, tmp)
            for old in list_checkpoints(self.run_dir)[: -self.cfg.train.keep_checkpoints]:
                old.unlink()
            logger.info("saved checkpoint %s", path)
        dist_utils.barrier()

    def _load_state(self, state: dict[str, Any], model: nn.Module,
                    info: dist_utils.DistInfo) -> tuple[int, int, int]:
        if state["stage"] != self.stage.name:
            raise ValueError(f"checkpoint is from stage {state['stage']!r}, not {self.stage.name!r}")
        model.load_state_dict(state["model"])
        if set(state["optimizers"]) != set(self.optimizers):
            raise ValueError(f"checkpoint optimizer groups {sorted(state['optimizers'])} differ from the "
                             f"stage's {sorted(self.optimizers)}")
        for g, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][g])
            self.schedulers[g].load_state_dict(state["schedulers"][g])
        if self.ema is not None:
            if state["ema"]:
                self.ema.load_state_dict(state["ema"])
            else:
                logger.warning("checkpoint has no EMA; starting the EMA from the current weights")
                self.ema = EMA(list(self.ema.params.items()), self.ema.decay)
        epoch, batch = state["epoch"], state["batch_in_epoch"]
        same_layout = state["world_size"] == info.world_size and state["batch_size"] == self.cfg.train.batch_size
        if same_layout:
            set_rng_state(state["rng"][info.rank])
        else:
            consumed = batch * state["batch_size"] * state["world_size"]
            batch = consumed // (self.cfg.train.batch_size * info.world_size)
            seed_everything(self.cfg.train.seed + info.rank + 7919 * state["step"])
            logger.warning("resuming with a different world size or batch size (%d x %d -> %d x %d): data "
                           "position approximated and RNG reseeded; the run is not bitwise reproducible",
                           state["world_size"], state["batch_size"], info.world_size, self.cfg.train.batch_size)
        return int(state["step"]), int(epoch), int(batch)


# ----------------------------------------------------------------------------------------------
# Export from a run folder


def export_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike,
               checkpoint: str | os.PathLike | None = None) -> Path:
    """Rebuild a run's model from ``config.json`` + its latest (or given) checkpoint and export it.

    Uses the EMA weights when the checkpoint has them.
    """
    from hub.train.stages import get_stage

    saved = read_run_config(run_dir)
    stage = get_stage(saved["stage"])
    preset = saved.get("preset") or next(iter(stage.presets))
    if preset not in stage.presets:
        raise ValueError(f"{run_dir}: preset {preset!r} is not a preset of stage {stage.name!r}")
    cfg = config_from_dict(stage.presets[preset], saved["config"])
    if checkpoint is None:
        found = find_resume_checkpoint(run_dir)
        if found is None:
            raise ValueError(f"{run_dir}: no complete checkpoint in {Path(run_dir) / CKPT_DIR}")
        _, state = found
    else:
        state = load_checkpoint(checkpoint)
    model = stage.build_model(cfg)
    model.load_state_dict(state["model"])
    model.eval()
    if state["ema"]:
        named = dict(model.named_parameters())
        with torch.no_grad():
            for name, tensor in state["ema"].items():
                named[name].copy_(tensor)
    out = Path(out_dir)
    stage.export(model, cfg, out)
    return out
