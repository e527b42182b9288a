"""Rectified-flow (flow matching) utilities: noising, timestep sampling, schedules, samplers.

Convention (as in SD3 / Wan): ``t = 0`` is data and ``t = 1`` is pure noise,

    x_t = (1 - t) x0 + t eps,            eps ~ N(0, I)
    v   = dx_t / dt = eps - x0           (what the network predicts)

so sampling integrates ``dx/dt = v(x, t)`` from ``t = 1`` down to ``t = 0``. Tensors are latents
``(B, C, T, h, w)``; timesteps are floats in [0, 1], one per sample ``(B,)`` or one per temporal
chunk ``(B, n_chunks)`` for the asynchronous (diffusion-forcing) schedules, a chunk being
``chunk_size`` consecutive latent frames.

Pure torch, no I/O. Every random draw takes an optional ``torch.Generator``.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
from torch import Tensor

TimestepKind = Literal["logit_normal", "uniform"]
ChunkMode = Literal["independent", "monotone", "synchronous"]
CHUNK_MODES: tuple[str, ...] = ("independent", "monotone", "synchronous")

# v = velocity_fn(x_t (B, C, T, h, w), t (B,)) -> (B, C, T, h, w)
VelocityFn = Callable[[Tensor, Tensor], Tensor]


# ---------------------------------------------------------------------------------------------
# Timesteps
# ---------------------------------------------------------------------------------------------

def shift_timesteps(t: Tensor, shift: float) -> Tensor:
    """Resolution/time shift ``t' = s t / (1 + (s - 1) t)``; ``s > 1`` moves mass towards noise.

    Keeps 0 -> 0 and 1 -> 1 and is monotone for any ``s > 0``; ``s = 1`` is the identity.
    """
    if shift <= 0:
        raise ValueError(f"shift={shift}: must be > 0 (1 = no shift)")
    if shift == 1.0:
        return t
    return shift * t / (1.0 + (shift - 1.0) * t)


def sample_timesteps(
    shape: tuple[int, ...] | torch.Size,
    kind: TimestepKind = "logit_normal",
    mean: float = 0.0,
    std: float = 1.0,
    shift: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Training timesteps in [0, 1] of the given ``shape`` (float32).

    ``kind="logit_normal"``: ``t = sigmoid(mean + std * n)``, ``n ~ N(0, 1)`` (SD3);
    ``kind="uniform"``: ``t ~ U(0, 1)``. Then the shift of :func:`shift_timesteps`.
    """
    if kind == "logit_normal":
        if std <= 0:
            raise ValueError(f"std={std}: must be > 0")
        normal = torch.randn(shape, generator=generator, device=device)
        t = torch.sigmoid(mean + std * normal)
    elif kind == "uniform":
        t = torch.rand(shape, generator=generator, device=device)
    else:
        raise ValueError(f"kind={kind!r}: accepted are 'logit_normal' and 'uniform'")
    return shift_timesteps(t, shift)


def chunk_timesteps(
    batch: int,
    n_chunks: int,
    mode: ChunkMode = "independent",
    kind: TimestepKind = "logit_normal",
    mean: float = 0.0,
    std: float = 1.0,
    shift: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Per-chunk noise levels ``(B, n_chunks)`` for training on ``n_chunks`` temporal chunks.

    Modes:
      * ``"independent"``: i.i.d. per chunk (diffusion forcing).
      * ``"monotone"``: the same i.i.d. draws sorted along the chunks, so a later chunk is never
        less noisy than an earlier one (``t[:, k] <= t[:, k + 1]``), the order a streaming
        denoiser meets at inference.
      * ``"synchronous"``: one draw per sample shared by all chunks (the ordinary, ablation case).
    Each marginal draw follows :func:`sample_timesteps` (``kind``, ``mean``, ``std``, ``shift``).
    """
    if batch < 1 or n_chunks < 1:
        raise ValueError(f"chunk_timesteps: batch={batch} and n_chunks={n_chunks} must be >= 1")
    if mode == "independent":
        return sample_timesteps((batch, n_chunks), kind, mean, std, shift, generator, device)
    if mode == "monotone":
        t = sample_timesteps((batch, n_chunks), kind, mean, std, shift, generator, device)  # (B, K)
        return torch.sort(t, dim=1).values  # (B, K)
    if mode == "synchronous":
        t = sample_timesteps((batch, 1), kind, mean, std, shift, generator, device)  # (B, 1)
        return t.expand(batch, n_chunks).contiguous()  # (B, K)
    raise ValueError(f"mode={mode!r}: accepted are {', '.join(CHUNK_MODES)}")


def expand_timesteps(t: Tensor, x: Tensor, chunk_size: int = 1) -> Tensor:
    """Broadcastable noise levels for latents ``x (B, C, T, h, w)``: shape ``(B, 1, T, 1, 1)``.

    ``t`` is ``(B,)`` (one level per sample) or ``(B, n_chunks)`` with ``n_chunks * chunk_size
    == T`` (one level per chunk of ``chunk_size`` latent frames, repeated over its frames).
    """
    if x.dim() != 5:
        raise ValueError(f"latents: expected (B, C, T, h, w), got shape {tuple(x.shape)}")
    batch, _, frames = x.shape[:3]
    if t.dim() == 1:
        if t.shape[0] != batch:
            raise ValueError(f"timesteps: shape {tuple(t.shape)} does not match batch {batch}")
        return t.to(x.dtype).view(batch, 1, 1, 1, 1).expand(batch, 1, frames, 1, 1)  # (B, 1, T, 1, 1)
    if t.dim() == 2:
        if chunk_size < 1 or t.shape[0] != batch or t.shape[1] * chunk_size != frames:
            raise ValueError(
                f"timesteps: shape {tuple(t.shape)} with chunk_size={chunk_size} does not cover "
                f"latents of batch {batch} and {frames} frames (need (B, T / chunk_size))"
            )
        per_frame = t.to(x.dtype).repeat_interleave(chunk_size, dim=1)  # (B, T)
        return per_frame.view(batch, 1, frames, 1, 1)  # (B, 1, T, 1, 1)
    raise ValueError(f"timesteps: expected shape (B,) or (B, n_chunks), got {tuple(t.shape)}")


# ---------------------------------------------------------------------------------------------
# Noising, targets, loss
# ---------------------------------------------------------------------------------------------

def add_noise(x0: Tensor, eps: Tensor, t: Tensor, chunk_size: int = 1) -> Tensor:
    """``x_t = (1 - t) x0 + t eps`` for latents ``(B, C, T, h, w)``; ``t`` as in :func:`expand_timesteps`."""
    if x0.shape != eps.shape:
        raise ValueError(f"add_noise: x0 {tuple(x0.shape)} and eps {tuple(eps.shape)} differ in shape")
    tt = expand_timesteps(t, x0, chunk_size)  # (B, 1, T, 1, 1)
    return (1.0 - tt) * x0 + tt * eps  # (B, C, T, h, w)


def velocity_target(x0: Tensor, eps: Tensor) -> Tensor:
    """The regression target ``v = eps - x0`` (independent of ``t``)."""
    return eps - x0


def x0_from_velocity(x_t: Tensor, v: Tensor, t: Tensor, chunk_size: int = 1) -> Tensor:
    """Data estimate ``x0 = x_t - t v``."""
    return x_t - expand_timesteps(t, x_t, chunk_size) * v


def eps_from_velocity(x_t: Tensor, v: Tensor, t: Tensor, chunk_size: int = 1) -> Tensor:
    """Noise estimate ``eps = x_t + (1 - t) v``."""
    return x_t + (1.0 - expand_timesteps(t, x_t, chunk_size)) * v


def flow_matching_loss(model_pred: Tensor, x0: Tensor, eps: Tensor, weights: Tensor | None = None) -> Tensor:
    """Mean squared error between the predicted velocity and ``eps - x0`` (a scalar).

    ``weights`` (optional) multiply the per-element squared error before the mean: shape
    ``(B,)`` per sample, ``(B, T)`` per latent frame (e.g. zero for context frames that are not
    trained), or anything broadcastable to the latents.
    """
    if model_pred.shape != x0.shape or eps.shape != x0.shape:
        raise ValueError(
            f"flow_matching_loss: shapes differ: pred {tuple(model_pred.shape)}, x0 {tuple(x0.shape)}, "
            f"eps {tuple(eps.shape)}"
        )
    err = (model_pred.float() - velocity_target(x0, eps).float()).square()  # (B, C, T, h, w)
    if weights is None:
        return err.mean()
    w = weights.to(err.dtype)
    if x0.dim() == 5 and w.dim() == 1:
        w = w.view(-1, 1, 1, 1, 1)  # (B, 1, 1, 1, 1)
    elif x0.dim() == 5 and w.dim() == 2:
        w = w.view(w.shape[0], 1, w.shape[1], 1, 1)  # (B, 1, T, 1, 1)
    try:
        return (err * w).mean()
    except RuntimeError as exc:
        raise ValueError(
            f"flow_matching_loss: weights of shape {tuple(weights.shape)} do not broadcast to "
            f"{tuple(x0.shape)}; use (B,), (B, T) or a broadcastable shape"
        ) from exc


# ---------------------------------------------------------------------------------------------
# Samplers (diffusers scheduler contract: set_timesteps, timesteps, step)
# ---------------------------------------------------------------------------------------------

def timestep_grid(n_steps: int, shift: float = 1.0, device: torch.device | str | None = None) -> Tensor:
    """``n_steps + 1`` noise levels from 1 down to 0: ``shift(linspace(1, 0, n + 1))`` (float32)."""
    if n_steps < 1:
        raise ValueError(f"n_steps={n_steps}: must be >= 1")
    return shift_timesteps(torch.linspace(1.0, 0.0, n_steps + 1, device=device), shift)


class FlowEulerSampler:
    """First-order sampler: ``x_{i+1} = x_i + (t_{i+1} - t_i) v(x_i, t_i)``.

    Usage (diffusers style)::

        sampler.set_timesteps(n, shift=3.0)
        for t in sampler.timesteps:
            x = sampler.step(model(x, t), t, x)

    ``timesteps`` holds the ``n`` levels at which the model is evaluated; ``sigmas`` the
    ``n + 1`` levels including the final 0. Exact for any ``n`` when ``v`` is constant along the
    path (a perfectly trained rectified flow on a single pair).
    """

    order = 1

    def __init__(self) -> None:
        self.sigmas: Tensor | None = None
        self.timesteps: Tensor | None = None
        self.step_index = 0

    def set_timesteps(self, n_steps: int, shift: float = 1.0, device: torch.device | str | None = None) -> None:
        """Prepare ``n_steps`` steps from t = 1 to t = 0 on the shifted grid."""
        self.sigmas = timestep_grid(n_steps, shift, device)  # (n + 1,)
        self.timesteps = self.sigmas[:-1].clone()  # (n,)
        self.step_index = 0

    @property
    def num_model_evals(self) -> int:
        return 0 if self.timesteps is None else len(self.timesteps)

    def _check_call(self, t: Tensor | float) -> None:
        if self.timesteps is None:
            raise ValueError(f"{type(self).__name__}.step before set_timesteps")
        if self.step_index >= len(self.timesteps):
            raise ValueError(f"{type(self).__name__}.step: all {len(self.timesteps)} steps done; call set_timesteps again")
        expected = float(self.timesteps[self.step_index])
        got = float(torch.as_tensor(t).reshape(-1)[0])
        if abs(got - expected) > 1e-6:
            raise ValueError(
                f"{type(self).__name__}.step: t={got:.6f} is not the next timestep {expected:.6f}; "
                "iterate sampler.timesteps in order"
            )

    def step(self, v: Tensor, t: Tensor | float, x: Tensor) -> Tensor:
        """One Euler step from the current level to the next; returns the new ``x``."""
        self._check_call(t)
        assert self.sigmas is not None
        t_now, t_next = self.sigmas[self.step_index], self.sigmas[self.step_index + 1]
        self.step_index += 1
        return x + (t_next - t_now).to(x.dtype) * v


class FlowHeunSampler(FlowEulerSampler):
    """Second-order (Heun / trapezoidal) sampler, two model evaluations per step.

    ``timesteps`` lists every evaluation, as diffusers' Heun scheduler does:
    ``[t_0, t_1, t_1, t_2, ..., t_{n-1}, t_n]``: at each even call ``step`` stores ``v(x_i, t_i)``
    and returns the Euler prediction at ``t_{i+1}``; at the following odd call (``v`` evaluated at
    that prediction) it returns ``x_i + (t_{i+1} - t_i) (v_i + v') / 2``. The last evaluation is
    at ``t = 0``, which is well defined for rectified flow.
    """

    order = 2

    def set_timesteps(self, n_steps: int, shift: float = 1.0, device: torch.device | str | None = None) -> None:
        grid = timestep_grid(n_steps, shift, device)  # (n + 1,)
        self.sigmas = grid
        self.timesteps = torch.stack((grid[:-1], grid[1:]), dim=1).reshape(-1)  # (2n,)
        self.step_index = 0
        self._x_start: Tensor | None = None
        self._v_start: Tensor | None = None

    def step(self, v: Tensor, t: Tensor | float, x: Tensor) -> Tensor:
        """First (predictor) or second (corrector) half of a Heun step; returns the new ``x``."""
        self._check_call(t)
        assert self.sigmas is not None
        i, second = divmod(self.step_index, 2)
        dt = (self.sigmas[i + 1] - self.sigmas[i]).to(x.dtype)
        self.step_index += 1
        if not second:
            self._x_start, self._v_start = x, v
            return x + dt * v  # Euler prediction at t_{i+1}
        assert self._x_start is not None and self._v_start is not None
        out = self._x_start + dt * 0.5 * (self._v_start + v)
        self._x_start = self._v_start = None
        return out


SAMPLERS: dict[str, type[FlowEulerSampler]] = {"euler": FlowEulerSampler, "heun": FlowHeunSampler}


def guided_velocity(cond_fn: VelocityFn, uncond_fn: VelocityFn, scale: float) -> VelocityFn:
    """Classifier-free guidance: ``v = v_uncond + scale (v_cond - v_uncond)``.

    ``scale = 1`` returns ``cond_fn`` itself (one evaluation per step); ``scale = 0`` is the
    unconditional model.
    """
    if scale == 1.0:
        return cond_fn

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        v_uncond = uncond_fn(x, t)
        return v_uncond + scale * (cond_fn(x, t) - v_uncond)

    return velocity


@torch.no_grad()
def sample(
    velocity_fn: VelocityFn,
    x_T: Tensor,
    n_steps: int,
    sampler: str | FlowEulerSampler = "euler",
    shift: float = 1.0,
    guidance: float = 1.0,
    uncond_fn: VelocityFn | None = None,
) -> Tensor:
    """Integrate from noise ``x_T`` (at t = 1) to data (t = 0) in ``n_steps`` sampler steps.

    ``velocity_fn(x, t)`` gets ``x`` of the shape of ``x_T`` and ``t (B,)``; with
    ``guidance != 1`` it is the conditional model and ``uncond_fn`` the unconditional one,
    combined by :func:`guided_velocity`. Deterministic given ``x_T`` (draw it with a seeded
    ``torch.Generator``).
    """
    if isinstance(sampler, str):
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler={sampler!r}: accepted are {', '.join(SAMPLERS)}")
        sampler = SAMPLERS[sampler]()
    if guidance != 1.0 and uncond_fn is None:
        raise ValueError(f"guidance={guidance} needs uncond_fn (the unconditional velocity)")
    fn = guided_velocity(velocity_fn, uncond_fn, guidance) if uncond_fn is not None else velocity_fn
    sampler.set_timesteps(n_steps, shift, device=x_T.device)
    assert sampler.timesteps is not None
    x = x_T
    for t in sampler.timesteps:
        t_batch = t.to(x.dtype).expand(x.shape[0])  # (B,)
        x = sampler.step(fn(x, t_batch), t, x)
    return x
