"""Flow matching: noising identities, timestep schedules, Euler/Heun samplers, guidance, seeds."""

from __future__ import annotations

import pytest
import torch

from hub.diffusion import (
    FlowEulerSampler,
    FlowHeunSampler,
    add_noise,
    chunk_timesteps,
    eps_from_velocity,
    expand_timesteps,
    flow_matching_loss,
    guided_velocity,
    sample,
    sample_timesteps,
    shift_timesteps,
    timestep_grid,
    velocity_target,
    x0_from_velocity,
)

torch.set_num_threads(1)


def _latents(seed: int, shape=(2, 3, 4, 5, 6)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)


def test_add_noise_endpoints_and_velocity_identities():
    x0, eps = _latents(0)
    t = torch.tensor([0.3, 0.85], dtype=torch.float64)
    torch.testing.assert_close(add_noise(x0, eps, torch.zeros(2, dtype=torch.float64)), x0)
    torch.testing.assert_close(add_noise(x0, eps, torch.ones(2, dtype=torch.float64)), eps)
    x_t = add_noise(x0, eps, t)
    v = velocity_target(x0, eps)
    torch.testing.assert_close(x0_from_velocity(x_t, v, t), x0)
    torch.testing.assert_close(eps_from_velocity(x_t, v, t), eps)
    # v is the time derivative of the path
    h = 1e-6
    derivative = (add_noise(x0, eps, t + h) - add_noise(x0, eps, t - h)) / (2 * h)
    torch.testing.assert_close(derivative, v, atol=1e-6, rtol=0)


def test_add_noise_per_chunk_levels():
    x0, eps = _latents(1)  # T = 4 latent frames
    t = torch.tensor([[0.1, 0.9], [0.5, 0.2]], dtype=torch.float64)  # (B, 2 chunks) of 2 frames
    x_t = add_noise(x0, eps, t, chunk_size=2)
    for b in range(2):
        for frame in range(4):
            level = t[b, frame // 2]
            torch.testing.assert_close(x_t[b, :, frame], (1 - level) * x0[b, :, frame] + level * eps[b, :, frame])
    assert expand_timesteps(t, x0, chunk_size=2).shape == (2, 1, 4, 1, 1)
    with pytest.raises(ValueError, match="chunk_size"):
        add_noise(x0, eps, t, chunk_size=1)
    with pytest.raises(ValueError, match=r"\(B,\) or \(B, n_chunks\)"):
        add_noise(x0, eps, torch.zeros(2, 4, 1))
    with pytest.raises(ValueError, match="differ"):
        add_noise(x0, eps[:1], t, chunk_size=2)


def test_flow_matching_loss_and_weights():
    x0, eps = _latents(2)
    target = eps - x0
    assert flow_matching_loss(target, x0, eps).item() == pytest.approx(0.0, abs=1e-12)
    pred = target.clone()
    pred[:, :, 3] += 2.0  # error only in latent frame 3
    assert flow_matching_loss(pred, x0, eps).item() == pytest.approx(4.0 / 4, rel=1e-6)
    per_frame = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0]])  # ignore frame 3
    assert flow_matching_loss(pred, x0, eps, per_frame).item() == pytest.approx(0.0, abs=1e-12)
    per_sample = torch.tensor([1.0, 3.0])
    assert flow_matching_loss(pred, x0, eps, per_sample).item() == pytest.approx((1 + 3) / 2 * 1.0, rel=1e-6)
    with pytest.raises(ValueError, match="broadcast"):
        flow_matching_loss(pred, x0, eps, torch.ones(3, 7))


def test_shift_formula():
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    torch.testing.assert_close(shift_timesteps(t, 3.0), torch.tensor([0.0, 0.5, 0.75, 1.0]))
    torch.testing.assert_close(shift_timesteps(t, 1.0), t)
    assert torch.all(shift_timesteps(t[1:3], 0.5) < t[1:3])
    with pytest.raises(ValueError, match="shift"):
        shift_timesteps(t, 0.0)


def test_sample_timesteps_ranges_shift_and_seed():
    shape = (4000,)
    base = sample_timesteps(shape, generator=torch.Generator().manual_seed(0))
    assert base.shape == shape and base.min() >= 0 and base.max() <= 1
    assert base.median().item() == pytest.approx(0.5, abs=0.05)  # logit-normal(0, 1)
    shifted = sample_timesteps(shape, shift=3.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(shifted, shift_timesteps(base, 3.0))
    assert shifted.mean() > base.mean() + 0.1
    moved = sample_timesteps(shape, mean=1.0, generator=torch.Generator().manual_seed(0))
    assert moved.median().item() == pytest.approx(torch.sigmoid(torch.tensor(1.0)).item(), abs=0.05)
    uniform = sample_timesteps(shape, kind="uniform", generator=torch.Generator().manual_seed(0))
    assert uniform.mean().item() == pytest.approx(0.5, abs=0.03)
    with pytest.raises(ValueError, match="kind"):
        sample_timesteps(shape, kind="cosine")


def test_chunk_schedules():
    seed = torch.Generator().manual_seed
    independent = chunk_timesteps(64, 5, "independent", generator=seed(1))
    monotone = chunk_timesteps(64, 5, "monotone", generator=seed(1))
    synchronous = chunk_timesteps(64, 5, "synchronous", generator=seed(1))
    for t in (independent, monotone, synchronous):
        assert t.shape == (64, 5) and t.min() >= 0 and t.max() <= 1
    assert torch.all(monotone[:, 1:] >= monotone[:, :-1])  # later chunks are noisier
    torch.testing.assert_close(monotone, independent.sort(dim=1).values)
    assert torch.all(synchronous == synchronous[:, :1])
    assert not torch.all(independent[:, 1:] >= independent[:, :-1])
    assert (independent.std(dim=1) > 0).all()
    torch.testing.assert_close(chunk_timesteps(64, 5, "independent", generator=seed(1)), independent)
    assert not torch.equal(chunk_timesteps(64, 5, "independent", generator=seed(2)), independent)
    with pytest.raises(ValueError, match="mode"):
        chunk_timesteps(2, 3, "random")
    with pytest.raises(ValueError, match="n_chunks"):
        chunk_timesteps(2, 0)


def _point_mass_velocity(x0: torch.Tensor):
    """Exact rectified-flow velocity when the data is the single point x0: v = (x - x0) / t."""
    return lambda x, t: (x - x0) / t.view(-1, 1, 1, 1, 1)


@pytest.mark.parametrize("n_steps,shift", [(1, 1.0), (3, 1.0), (10, 3.0)])
def test_euler_reaches_x0_exactly_on_straight_paths(n_steps, shift):
    x0, noise = _latents(3)
    out = sample(_point_mass_velocity(x0), noise, n_steps, "euler", shift=shift)
    torch.testing.assert_close(out, x0, atol=1e-12, rtol=0)


def _gaussian_velocity(mu: float, s: float):
    """Exact velocity for data ~ N(mu, s^2): curved trajectories x(t) = (1-t) mu + sigma(t) z."""

    def velocity(x, t):
        t = t.view(-1, 1, 1, 1, 1)
        var = (1 - t) ** 2 * s**2 + t**2
        return -mu + (t - (1 - t) * s**2) / var * (x - (1 - t) * mu)

    return velocity


def test_heun_more_accurate_than_euler_on_curved_flow():
    mu, s = 1.5, 0.2
    _, z = _latents(4)
    exact = mu + s * z  # the ODE maps z at t = 1 to mu + s z at t = 0
    errors = {}
    for name in ("euler", "heun"):
        out = sample(_gaussian_velocity(mu, s), z, 8, name)
        errors[name] = (out - exact).abs().max().item()
    assert errors["heun"] < errors["euler"] / 5
    assert sample(_gaussian_velocity(mu, s), z, 64, "heun").sub(exact).abs().max().item() < 1e-3


def test_sampler_contract():
    euler, heun = FlowEulerSampler(), FlowHeunSampler()
    euler.set_timesteps(4, shift=2.0)
    heun.set_timesteps(4, shift=2.0)
    grid = timestep_grid(4, 2.0)
    torch.testing.assert_close(euler.timesteps, grid[:-1])
    torch.testing.assert_close(heun.timesteps, grid[[0, 1, 1, 2, 2, 3, 3, 4]])
    assert euler.num_model_evals == 4 and heun.num_model_evals == 8
    assert grid[0] == 1.0 and grid[-1] == 0.0 and torch.all(grid[1:] < grid[:-1])
    x = torch.zeros(1, 1, 1, 1, 1)
    with pytest.raises(ValueError, match="next timestep"):
        euler.step(x, euler.timesteps[1], x)
    for t in euler.timesteps:
        x = euler.step(torch.ones_like(x), t, x)
    torch.testing.assert_close(x, -torch.ones_like(x))  # integral of dx/dt = 1 from 1 to 0
    with pytest.raises(ValueError, match="steps done"):
        euler.step(x, 0.0, x)
    with pytest.raises(ValueError, match="before set_timesteps"):
        FlowEulerSampler().step(x, 1.0, x)


def test_guidance_combines_cond_and_uncond():
    cond = lambda x, t: torch.full_like(x, 3.0)  # noqa: E731
    uncond = lambda x, t: torch.full_like(x, 1.0)  # noqa: E731
    x = torch.zeros(2, 1, 1, 1, 1)
    t = torch.ones(2)
    assert guided_velocity(cond, uncond, 2.5)(x, t).unique().item() == pytest.approx(1 + 2.5 * 2)
    assert guided_velocity(cond, uncond, 1.0) is cond
    out = sample(cond, x, 4, "euler", guidance=2.5, uncond_fn=uncond)
    torch.testing.assert_close(out, torch.full_like(x, -6.0))  # constant v = 6 over t in [1, 0]
    with pytest.raises(ValueError, match="uncond_fn"):
        sample(cond, x, 4, guidance=2.0)
    with pytest.raises(ValueError, match="sampler"):
        sample(cond, x, 4, "dpm")


def test_same_seed_same_sample():
    torch.manual_seed(0)
    net = torch.nn.Conv3d(3, 3, 1)

    def velocity(x, t):
        return net(x) * t.view(-1, 1, 1, 1, 1)

    def run(seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return sample(velocity, torch.randn(2, 3, 2, 4, 4, generator=g), 5, "heun", shift=3.0)

    torch.testing.assert_close(run(7), run(7), atol=0, rtol=0)
    assert not torch.allclose(run(7), run(8))
