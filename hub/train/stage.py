"""The contract between the common trainer and one training stage ("vae", "teacher", "student").

A stage says *what* to train; :class:`hub.train.trainer.Trainer` says *how* (devices, data
parallelism, accumulation, clipping, EMA, schedules, checkpoints, logs, export). A stage module
lives in ``hub/train/stages/<name>.py`` and defines exactly one :class:`Stage` subclass whose
``name`` is ``<name>``; the registry in :mod:`hub.train.stages` imports it lazily.

Lifecycle, per process (every rank does the same)::

    stage = MyStage()
    cfg = stage.presets["tiny"]                       # a RunConfig, then CLI overrides
    model = stage.build_model(cfg)                    # on CPU, seeded with cfg.train.seed
    dataset = stage.build_dataset(cfg, "train")
    groups = stage.optimizer_groups(model, cfg)      # {"main": [...], "critic": [...]}
    options = stage.group_options(cfg)                # per group lr / betas / update frequency
    for step in range(start, cfg.train.steps):
        for micro_batch in accumulation:
            out = stage.training_step(model, batch, step)
            # for every group g active at this step: backward out[f"loss/{g}"] into g's params
        # all-reduce grads across ranks, clip, optimizer step, LR schedule step, EMA of "main"
    metrics = stage.evaluate(model, cfg)              # rank 0, EMA weights, no_grad, eval mode
    stage.export(model, cfg, out_dir)                 # rank 0, EMA weights swapped in

Rules a stage follows:

* ``build_model`` returns one ``nn.Module`` holding everything the step needs: trainable parts and
  frozen parts (frozen parameters have ``requires_grad=False``; they are saved in training
  checkpoints but get no optimizer). The trainer moves it to the device; do not move it yourself.
* ``training_step`` receives the batch already moved to the device (tensors inside dicts, lists
  and tuples are moved; other values are passed through) and returns a dict with
  ``"loss/main"`` (a 0-dim tensor with grad) and ``"loss/<group>"`` for every other optimizer
  group that is active at ``step`` (see :meth:`Stage.group_active`). Any other entries (0-dim
  tensors or floats, e.g. ``"loss/l1"`` is fine too when ``l1`` is not a group name) are logged as
  averages. Losses are per-sample means, so that averaging over ranks and accumulation micro-steps
  equals one large batch.
* The step calls any sub-modules or methods of ``model`` it likes (``model.vae.encode(...)``);
  gradients are averaged across ranks by the trainer after backward, so nothing is wrapped in
  ``DistributedDataParallel`` and several backward passes per step (one per group) are fine.
  Each group's loss is back-propagated only into that group's parameters
  (``torch.autograd.backward(loss, inputs=params)``), so e.g. the generator loss never leaves
  gradients on the critic.
* Random numbers inside ``training_step`` come from torch's global generator, which the trainer
  seeds per rank and restores on resume: do not reseed it.
* Shapes are the project's (see docs/DESIGN.md): video ``float (B, 3, T, H, W)`` in [-1, 1], audio
  ``float32 (B, S)`` at 16 kHz.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

if TYPE_CHECKING:
    from hub.train.config import RunConfig

MAIN_GROUP = "main"


@dataclass(frozen=True)
class GroupOptions:
    """Per optimizer group settings; ``None`` means "use the value in ``cfg.train``".

    ``every``: the group is stepped on steps where ``step % every == offset`` (e.g. a DMD critic
    stepped every step and the generator ("main") every 5th step: ``{"main": GroupOptions(every=5)}``).
    ``schedule``: ``"cosine"`` (warmup then cosine decay, like ``train.lr_schedule``) or
    ``"constant"`` (warmup then flat), or None for ``train.lr_schedule``.
    """

    lr: float | None = None
    betas: tuple[float, float] | None = None
    weight_decay: float | None = None
    grad_clip: float | None = None
    warmup_steps: int | None = None
    schedule: str | None = None
    every: int = 1
    offset: int = 0

    def __post_init__(self) -> None:
        if self.every < 1 or not 0 <= self.offset < self.every:
            raise ValueError(f"GroupOptions: need every >= 1 and 0 <= offset < every, got "
                             f"every={self.every}, offset={self.offset}")
        if self.schedule not in (None, "cosine", "constant"):
            raise ValueError(f"GroupOptions.schedule={self.schedule!r}; accepted: 'cosine', 'constant'")

    def active(self, step: int) -> bool:
        """Whether the group takes an optimizer step at (0-based) ``step``."""
        return step % self.every == self.offset


class Stage(abc.ABC):
    """One training stage. Subclasses set ``name`` and ``presets`` and implement the abstract methods.

    ``presets`` maps preset names (at least ``"test"``: a config that trains in seconds on a CPU)
    to complete :class:`~hub.train.config.RunConfig` objects whose ``model`` and ``data`` are the
    stage's own dataclasses. The trainer deep-copies a preset before applying overrides.
    """

    name: ClassVar[str]
    presets: ClassVar[dict[str, "RunConfig"]]

    @abc.abstractmethod
    def build_model(self, cfg: "RunConfig") -> nn.Module:
        """Everything the step needs (trainable and frozen parts) as one module, on the CPU."""

    @abc.abstractmethod
    def build_dataset(self, cfg: "RunConfig", split: str) -> torch.utils.data.Dataset:
        """A map-style dataset for ``split`` (``"train"``; ``"val"`` only for evaluation).

        Items must be collatable by :meth:`collate_fn` (default: ``default_collate``). If the
        dataset has a ``set_epoch(epoch)`` method the trainer calls it before every epoch, so random
        crops/offsets can be a pure function of ``(seed, epoch, index)``. Raise a ``ValueError``
        naming the folder and the command that prepares it when data is missing.
        """

    @abc.abstractmethod
    def training_step(self, model: nn.Module, batch: Any, step: int) -> dict[str, torch.Tensor]:
        """Losses for one micro-batch: ``{"loss/main": ..., "loss/<group>": ..., "<other>": ...}``."""

    @abc.abstractmethod
    def export(self, model: nn.Module, cfg: "RunConfig", out_dir: str | os.PathLike) -> None:
        """Write the inference checkpoint (``hub.checkpoint.save_pretrained``) to ``out_dir``.

        Called on rank 0 with the EMA weights of the "main" group already loaded into ``model``.
        Save only what inference needs (e.g. the generator, not the critic or frozen teacher).
        """

    def optimizer_groups(self, model: nn.Module, cfg: "RunConfig") -> dict[str, list[nn.Parameter]]:
        """Trainable parameters per optimizer group; default: one ``"main"`` group with all of them.

        Groups must be disjoint and contain only parameters with ``requires_grad=True``; the EMA
        covers the ``"main"`` group.
        """
        return {MAIN_GROUP: [p for p in model.parameters() if p.requires_grad]}

    def group_options(self, cfg: "RunConfig") -> dict[str, GroupOptions]:
        """Per group overrides of the optimizer settings; groups not listed use ``cfg.train``."""
        return {}

    def group_active(self, group: str, step: int, cfg: "RunConfig") -> bool:
        """Whether ``group`` is stepped at ``step`` (so the step can skip computing its loss)."""
        return self.group_options(cfg).get(group, GroupOptions()).active(step)

    def collate_fn(self, cfg: "RunConfig") -> Callable[[list], Any] | None:
        """A custom ``collate_fn`` for the DataLoader, or None for ``default_collate``."""
        return None

    def evaluate(self, model: nn.Module, cfg: "RunConfig") -> dict[str, float]:
        """Cheap validation metrics (rank 0, EMA weights, ``no_grad``, eval mode); default none."""
        return {}
