"""Training stage ``student``: Asynchronous Streaming Distillation (ASD) of the streaming student.

``python -m hub.train student --preset tiny`` distils the bidirectional teacher
(``model.teacher_checkpoint``, trained by the ``teacher`` stage) into a few-step block-causal
student that streams with the ID-Context Cache. The student starts as a copy of the teacher.

What one training step does (per batch of windows of ``n`` chunks; equation numbers refer to
the comments in :func:`rollout_losses`):

1. The student's audio encoder turns the window's filterbank rows into tokens; the ID-Sink of the
   reference latent is written into a fresh ID-Context Cache (with gradients).
2. Self-Forcing rollout: chunk by chunk, exactly as at inference, the student denoises noise
   ``z_k`` in ``S = student_steps`` Euler steps against the cache. Only the last step carries
   gradients; its x0-prediction ``x_k = x_{t_last} - t_last v_student`` is the student's chunk (1).
   The clean chunk is then written into the cache at ``t = 0`` (no gradient), so chunk ``k + 1``
   is conditioned on the student's OWN past -- the distribution it meets when streaming.
   (1b) With ``context_noise = t_c > 0`` the chunk is written re-noised, ``(1 - t_c) x_k + t_c eps``,
   labelled ``t_c``: diffusion forcing's stabilisation, exactly what the engine does when streaming
   with ``sampling.context_noise = t_c`` (stored in the exported checkpoint). Measured with the
   H100 students and the teacher on 4 val clips, 4 s: without it the Context-Cache turns the face
   into a 4x4 grid of tiles within about a second; with t_c = 0.1 to 0.3 it does not.
3. Asynchronous supervision: the frozen non-streaming teacher solves the same noise ``z_k`` with
   ``T = teacher_steps`` Euler steps (classifier-free guidance ``teacher_guidance``), attending
   bidirectionally over a window made of the student's own past chunks at a LOW noise level
   ``t_c = teacher_context_t`` (``(1 - t_c) x_past + t_c eps'``; ``t_c = 0``: clean) and the current
   chunk NOISY (``t`` from 1 to 0): the per-chunk asynchronous schedule the teacher was trained
   for. Its result ``x*_k`` is the target (2). With ``t_c > 0`` the teacher treats the student's
   past as a noisy observation of real data rather than as ground truth, so artefacts the student
   made are not trusted and copied forward: the target pulls the rollout back to the data.
4. Loss: ``L = mean_k || x_k - stopgrad(x*_k) ||^2`` (3), regression onto the teacher's
   predictions on the student's own rollouts. (4b) With ``self_rollout_prob < 1`` a share of the
   steps uses the ground-truth past instead (teacher forcing).

Learning rate. The student starts next to its target (first-chunk loss about 0.01), so the step size
must be small: with Adam at lr 1e-4 and batch 4 (the first presets) the FIRST chunk's loss -- whose
target depends on no past -- climbed from 0.009 to 0.16 in 370 steps with pure self-rollouts (0.05
after 80 steps with context noise too), and even teacher forcing drifted to 0.02: noise-dominated
gradients, normalised by Adam, random-walk the weights. At lr 1e-5 (the presets now; Self-Forcing and
CausVid use 2e-6 for their generators) the losses stay level (2-core CPU, 897 steps, batch 4,
context noise 0.2: first-chunk loss 0.011 at step 10, 0.010 over the last 100 steps; mean over
chunks 0.012 -> 0.010). Measured on the 8 val clips (results/mini-real), this 40-minute CPU student did not beat the
shipped H100 student streamed with context noise 0.2 (PSNR 15.3 vs 16.2 dB); the no-ASD student of
the same recipe gave 15.0 dB.

Choice: regression onto teacher ODE solutions, not DMD. DMD needs an online critic (a second
network trained on student samples) and many more steps to converge than a CPU budget allows;
ODE regression has a fixed, deterministic target for a given noise and context, is stable from
the first step, and still removes the train/test mismatch because the context is the student's
own rollout. DMD can be added as another ``model.objective`` with a ``critic`` optimizer group.

The "no ASD" ablation (``model.context="ground_truth"``): identical except that both the cache and
the teacher's context hold the ground-truth chunks (teacher forcing), so the student never sees
its own errors during training.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from hub.diffusion import timestep_grid
from hub.models.rest import RestModel, SamplingConfig
from hub.pipeline import write_context
from hub.train.config import RunConfig, TrainConfig
from hub.train.stage import Stage
from hub.train.stages.teacher import (GeneratorDataConfig, GeneratorModelConfig, _test_model, generator_dataset,
                                      load_vae, resolve_path, rest_config)

CONTEXTS = ("self", "ground_truth")


@dataclass
class StudentModelConfig:
    """Distillation settings; the networks' sizes come from the teacher checkpoint."""

    teacher_checkpoint: str = "checkpoints/teacher-tiny"  # "" = a fresh teacher (tests only)
    context: str = "self"  # "self": ASD on own rollouts; "ground_truth": the no-ASD ablation
    student_steps: int = 2
    student_shift: float = 1.0
    teacher_steps: int = 4
    teacher_shift: float = 1.0
    teacher_guidance: float = 1.0
    # Noise level at which the teacher sees the rollout's past chunks (asynchronous schedule):
    # 0 = clean past; > 0 re-noises the student's own past to this t (see equation (2)).
    teacher_context_t: float = 0.0
    # Share of steps that roll out on the student's own past (context="self"); the other steps
    # use the ground-truth past (teacher forcing), which anchors the shared weights (see 4b).
    self_rollout_prob: float = 1.0
    # Noise level t_c at which rolled-out chunks enter the student's Context-Cache (0 = clean), and
    # the inference default stored with the exported checkpoint (``sampling.context_noise``), so the
    # student trains with the context it streams with (see equation (1b)).
    context_noise: float = 0.0
    train_audio_encoder: bool = True
    # Only used when teacher_checkpoint is "" (tests): the generator to build from scratch.
    fresh: GeneratorModelConfig = field(default_factory=_test_model)

    def __post_init__(self) -> None:
        if self.context not in CONTEXTS:
            raise ValueError(f"model.context={self.context!r}; accepted: {CONTEXTS}")
        if not 1 <= self.student_steps <= 8:
            raise ValueError(f"model.student_steps={self.student_steps}; accepted: 1..8")
        if self.teacher_steps < 1:
            raise ValueError(f"model.teacher_steps={self.teacher_steps}; must be >= 1")
        if not 0.0 <= self.self_rollout_prob <= 1.0:
            raise ValueError(f"model.self_rollout_prob={self.self_rollout_prob}; accepted: 0 to 1")
        if not 0.0 <= self.context_noise < 1.0:
            raise ValueError(f"model.context_noise={self.context_noise}; accepted: 0 <= t < 1")
        if not 0.0 <= self.teacher_context_t < 1.0:
            raise ValueError(f"model.teacher_context_t={self.teacher_context_t}; accepted: 0 <= t < 1")


class StudentTrainModel(nn.Module):
    """The trainable student and the frozen teacher (their autoencoder is shared and frozen)."""

    def __init__(self, student: RestModel, teacher: RestModel) -> None:
        super().__init__()
        self.student = student
        self.teacher = teacher
        self.teacher.requires_grad_(False)
        self.student.vae.requires_grad_(False)

    def train(self, mode: bool = True) -> "StudentTrainModel":
        super().train(mode)
        self.teacher.eval()
        self.student.vae.eval()
        return self


def load_teacher(model_cfg: StudentModelConfig) -> RestModel:
    if model_cfg.teacher_checkpoint:
        path = resolve_path(model_cfg.teacher_checkpoint)
        if not path.is_dir():
            raise ValueError(f"model.teacher_checkpoint={path} not found; train it with "
                             "`python -m hub.train teacher --preset tiny`")
        teacher = RestModel.from_pretrained(path)
        if teacher.config.role != "teacher":
            raise ValueError(f"{path} is a {teacher.config.role} checkpoint, not a teacher")
        return teacher
    vae = load_vae(model_cfg.fresh)
    return RestModel(rest_config(model_cfg.fresh, vae, "teacher"), vae=vae)


@torch.no_grad()
def teacher_target(teacher: RestModel, context: torch.Tensor | None, noise: torch.Tensor, tokens: torch.Tensor,
                   null_tokens: torch.Tensor, ref: torch.Tensor | None, steps: int, shift: float,
                   guidance: float, context_t: float = 0.0) -> torch.Tensor:
    """The teacher's ODE solution for the current chunk given the past (asynchronous schedule).

    Args:
        context: (B, C, k Fc, h, w) past chunks (clean latents) or None; noise: (B, C, Fc, h, w)
        at t = 1; tokens / null_tokens: (B, (k + 1) Fc, A, D) audio tokens of the context chunks
        and the current one; context_t: the noise level the past is shown at (0 = clean; else it is
        re-noised once, ``(1 - t_c) past + t_c eps'``, and labelled ``t_c``). Returns (B, C, Fc, h, w).
    """
    fc = noise.shape[2]
    k = 0 if context is None else context.shape[2] // fc
    if context is not None and context_t > 0:
        context = (1.0 - context_t) * context + context_t * torch.randn_like(context)
    grid = timestep_grid(steps, shift, device=noise.device)  # (steps + 1,)
    x = noise
    for i in range(steps):
        t_now, t_next = grid[i], grid[i + 1]
        t_chunks = torch.full((noise.shape[0], k + 1), float(context_t), device=noise.device)
        t_chunks[:, -1] = t_now
        x_in = x if context is None else torch.cat([context, x], dim=2)  # (B, C, (k + 1) Fc, h, w)
        v = teacher.dit(x_in, t_chunks, tokens, ref, mode="bidirectional")[:, :, -fc:]
        if guidance != 1.0:
            v_null = teacher.dit(x_in, t_chunks, null_tokens, ref, mode="bidirectional")[:, :, -fc:]
            v = v_null + guidance * (v - v_null)
        x = x + (t_next - t_now) * v
    return x


def rollout_losses(model: StudentTrainModel, batch: dict[str, torch.Tensor], cfg: RunConfig
                   ) -> tuple[torch.Tensor, dict[str, float]]:
    """One ASD (or teacher-forcing) rollout over a batch of windows; see the module docstring."""
    scfg: StudentModelConfig = cfg.model
    student, teacher = model.student, model.teacher
    dit, tdit = student.dit, teacher.dit
    fc = dit.config.chunk_latent_frames
    W = dit.config.context_chunks
    x_gt = batch["latents"]  # (B, C, T, h, w)
    B, T = x_gt.shape[0], x_gt.shape[2]
    n_chunks = T // fc
    c = cfg.data.context_latents
    use_sink = dit.config.use_id_sink
    ref = batch["ref"] if use_sink else None  # (B, C, 1, h, w)
    features = batch["features"]
    s_tokens = student.audio_encoder(features)[:, 1 + c: 1 + c + T]  # (B, T, A, D)
    with torch.no_grad():
        t_tokens = teacher.audio_encoder(features)[:, 1 + c: 1 + c + T]  # (B, T, A, D)
        t_null = teacher.audio_encoder.null_tokens(B, T)
    cache = dit.new_cache(B)
    if use_sink:
        dit.prefill_sink(cache, ref)  # ID-Sink K/V with gradients (1 pass per window)
    grid = timestep_grid(scfg.student_steps, scfg.student_shift, device=x_gt.device)  # (S + 1,)
    # (4b) This step rolls out on the student's own past (ASD) or, with probability
    # 1 - self_rollout_prob, on the ground-truth past (teacher forcing).
    draw = float(torch.rand(()))  # drawn in every mode, so the modes share their noise draws
    self_rollout = scfg.context == "self" and draw < scfg.self_rollout_prob
    own = []  # the context the rollout has produced: student chunks (self) or ground truth
    losses = []
    for k in range(n_chunks):
        frames = slice(k * fc, (k + 1) * fc)
        audio_k = s_tokens[:, frames]  # (B, Fc, A, D)
        noise = torch.randn_like(x_gt[:, :, frames])  # (B, C, Fc, h, w)
        # (1) Student: S - 1 Euler steps without gradient, the last one with gradient.
        x = noise
        with torch.no_grad():
            for i in range(scfg.student_steps - 1):
                v = dit.forward_chunk(x, grid[i].expand(B, 1), audio_k.detach(), cache)
                x = x + (grid[i + 1] - grid[i]) * v
        t_last = grid[scfg.student_steps - 1]
        v = dit.forward_chunk(x, t_last.expand(B, 1), audio_k, cache)  # (B, C, Fc, h, w)
        x_student = x - t_last * v  # x0-prediction = the Euler step to t = 0
        # (2) Teacher: clean past (the last W chunks of the rollout's context), noisy present.
        past = own[-W:] if W else []
        context = torch.cat(past, dim=2) if past else None
        ctx_frames = slice((k - len(past)) * fc, (k + 1) * fc)
        target = teacher_target(teacher, context, noise, t_tokens[:, ctx_frames], t_null[:, ctx_frames], ref,
                                scfg.teacher_steps, scfg.teacher_shift, scfg.teacher_guidance,
                                scfg.teacher_context_t)
        # (3) Regression onto the teacher's prediction.
        losses.append((x_student - target).pow(2).flatten(1).mean(1))  # (B,)
        chunk = x_student.detach() if self_rollout else x_gt[:, :, frames]
        own.append(chunk)
        with torch.no_grad():
            write_context(dit, cache, chunk, audio_k.detach(), scfg.context_noise)  # (1b)
        cache.detach_()
    per_chunk = torch.stack(losses, dim=1)  # (B, n)
    logs = {"loss/first_chunk": per_chunk[:, 0].mean().item(), "loss/last_chunk": per_chunk[:, -1].mean().item(),
            "rollout/self": float(self_rollout)}
    return per_chunk.mean(), logs


def _run(model_cfg: StudentModelConfig, data: GeneratorDataConfig, **train: Any) -> RunConfig:
    return RunConfig(train=TrainConfig(**train), model=model_cfg, data=data)


# What the shipped tiny students use (measured on the 2-core CPU, see the module docstring): the cache
# and the teacher's view of the past at t_c = 0.2.
TINY_CONTEXT = dict(context_noise=0.2, teacher_context_t=0.2)


def _tiny_cpu_run(model_cfg: StudentModelConfig) -> RunConfig:
    return _run(model_cfg, GeneratorDataConfig(chunks=6), steps=900, batch_size=4, lr=1e-5, warmup_steps=30,
                min_lr_ratio=0.2, weight_decay=0.01, ema_decay=0.99, num_workers=0, log_every=10, ckpt_every=50,
                device="cpu", progress_bar=False)


def _tiny_gpu_run(model_cfg: StudentModelConfig) -> RunConfig:
    return _run(model_cfg, GeneratorDataConfig(chunks=6), steps=20_000, batch_size=16, lr=1e-5, warmup_steps=100,
                min_lr_ratio=0.2, weight_decay=0.01, ema_decay=0.995, num_workers=2, log_every=20, ckpt_every=500,
                device="cuda", progress_bar=False)


class StudentStage(Stage):
    """ASD of the streaming student (see the module docstring)."""

    name: ClassVar[str] = "student"
    presets: ClassVar[dict[str, RunConfig]] = {
        # 2-core CPU (~40 min at 2.5 s per step): 6-chunk rollouts, batch 4, 2 student steps, 4 teacher steps.
        "tiny": _tiny_cpu_run(StudentModelConfig(**TINY_CONTEXT)),
        "tiny-noasd": _tiny_cpu_run(StudentModelConfig(context="ground_truth", **TINY_CONTEXT)),
        # One GPU, the tiny model: 6-chunk rollouts, batch 16; meant to run under train.time_limit_min.
        "tiny-gpu": _tiny_gpu_run(StudentModelConfig(**TINY_CONTEXT)),
        "tiny-gpu-noasd": _tiny_gpu_run(StudentModelConfig(context="ground_truth", **TINY_CONTEXT)),
        "base": _run(StudentModelConfig(teacher_checkpoint="checkpoints/teacher-base", student_steps=2,
                                        teacher_steps=16, teacher_guidance=2.0),
                     GeneratorDataConfig(prepared_dir="data/prepared_256", chunks=12),
                     steps=20_000, batch_size=8, lr=5e-5, warmup_steps=500, ema_decay=0.999,
                     precision="bf16", num_workers=4, ckpt_every=1000),
        "test": _run(StudentModelConfig(teacher_checkpoint="", teacher_steps=2),
                     GeneratorDataConfig(chunks=3, context_latents=2, refs_per_clip=2, samples_per_epoch=8),
                     steps=3, batch_size=2, lr=1e-3, ema_decay=0.0, num_workers=0, log_every=1, ckpt_every=2,
                     device="cpu", tensorboard=False, progress_bar=False),
    }

    def build_model(self, cfg: RunConfig) -> nn.Module:
        self.cfg = cfg
        teacher = load_teacher(cfg.model)
        student_cfg = dataclasses.replace(
            teacher.config, role="student",
            sampling=SamplingConfig(steps=cfg.model.student_steps, shift=cfg.model.student_shift,
                                    context_noise=cfg.model.context_noise))
        student = RestModel(student_cfg, vae=teacher.vae)
        student.load_state_dict(teacher.state_dict())  # (0) the student starts as the teacher
        if not cfg.model.train_audio_encoder:
            student.audio_encoder.requires_grad_(False)
        return StudentTrainModel(student, teacher)

    def build_dataset(self, cfg: RunConfig, split: str) -> torch.utils.data.Dataset:
        teacher = load_teacher(cfg.model)
        return generator_dataset(teacher.config, teacher.vae, cfg.data, split, cfg.train.seed)

    def training_step(self, model: nn.Module, batch: Any, step: int) -> dict[str, torch.Tensor]:
        loss, logs = rollout_losses(model, batch, self.cfg)
        return {"loss/main": loss, **logs}

    def optimizer_groups(self, model: nn.Module, cfg: RunConfig) -> dict[str, list[nn.Parameter]]:
        return {"main": [p for p in model.student.parameters() if p.requires_grad]}

    def export(self, model: nn.Module, cfg: RunConfig, out_dir: str | os.PathLike) -> None:
        model.student.save_pretrained(out_dir, dtype=torch.float16, extra={"trained": {
            "stage": self.name, "steps": cfg.train.steps, "context": cfg.model.context,
            "teacher_checkpoint": cfg.model.teacher_checkpoint, "student_steps": cfg.model.student_steps,
            "teacher_steps": cfg.model.teacher_steps, "context_noise": cfg.model.context_noise,
            "teacher_context_t": cfg.model.teacher_context_t, "self_rollout_prob": cfg.model.self_rollout_prob,
            "prepared_dir": cfg.data.prepared_dir,
            "splits": list(cfg.data.splits)}})
