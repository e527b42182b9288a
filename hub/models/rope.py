"""3D rotary position embedding (time, y, x) for the A2V-DiT.

Each attention head's ``head_dim`` channels are split into three disjoint groups of rotary pairs::

    [ time (time_dims) | y (y_dims) | x (x_dims) ]

A token at (t, y, x) rotates pair ``i`` of each group by ``position * freq_i``. Because the groups
are disjoint, rotations compose: applying the spatial part first and the temporal part later (for
example when a cached key is re-positioned relative to the current chunk) equals applying both at
once. Rotary attention depends only on position differences, which is what lets the streaming path
use positions relative to the current chunk (bounded forever) and still equal the full forward.

Identity tokens (the ID-Sink) have no temporal position: their keys carry only the spatial part and
their temporal channels are zeroed (:func:`drop_time`), so a query's attention to the sink does not
depend on the query's temporal position.

Pairs are adjacent channels ``(2i, 2i + 1)``; angles are computed in float32 and cast to the tensor
dtype when applied.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RopeSplit:
    """Channel counts of the three rotary groups of one head (each even, summing to ``head_dim``)."""

    time_dims: int
    y_dims: int
    x_dims: int

    @property
    def head_dim(self) -> int:
        return self.time_dims + self.y_dims + self.x_dims


def rope_split(head_dim: int) -> RopeSplit:
    """Split ``head_dim`` into time / y / x groups: about a quarter for time, the rest shared by y, x.

    Raises ``ValueError`` unless ``head_dim`` is even and at least 8 (every group needs a pair).
    """
    if head_dim < 8 or head_dim % 2:
        raise ValueError(f"rotary head_dim must be even and >= 8, got {head_dim}")
    time_dims = 2 * (head_dim // 8)
    rest = head_dim - time_dims
    y_dims = 2 * (rest // 4)
    return RopeSplit(time_dims=time_dims, y_dims=y_dims, x_dims=rest - y_dims)


def _inverse_frequencies(dims: int, theta: float) -> torch.Tensor:
    """Standard rotary inverse frequencies for ``dims`` channels: ``theta ** (-2i / dims)``."""
    return theta ** (-torch.arange(0, dims, 2, dtype=torch.float64) / dims)  # (dims / 2,)


class Rope3D:
    """Angles for the (time, y, x) rotary groups of one head; holds no learned state.

    ``angles(t, y, x)`` gives per-token angles of shape ``(L, head_dim / 2)``; pass zeros for a
    group to leave it unrotated (``time_angles`` / ``space_angles`` do exactly that).
    """

    def __init__(self, head_dim: int, theta: float = 10_000.0) -> None:
        self.split = rope_split(head_dim)
        self.theta = float(theta)
        s = self.split
        self._freq_t = _inverse_frequencies(s.time_dims, self.theta).float()  # (time_dims / 2,)
        self._freq_y = _inverse_frequencies(s.y_dims, self.theta).float()  # (y_dims / 2,)
        self._freq_x = _inverse_frequencies(s.x_dims, self.theta).float()  # (x_dims / 2,)
        self._on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def _frequencies(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The three frequency vectors on ``device`` (copied there once)."""
        if device not in self._on_device:
            self._on_device[device] = (self._freq_t.to(device), self._freq_y.to(device), self._freq_x.to(device))
        return self._on_device[device]

    def angles(self, t: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Rotation angles of tokens at positions ``t``, ``y``, ``x`` (each ``(L,)``) -> ``(L, head_dim/2)``."""
        freq_t, freq_y, freq_x = self._frequencies(t.device)
        a_t = t.float()[:, None] * freq_t  # (L, time_dims / 2)
        a_y = y.float()[:, None] * freq_y  # (L, y_dims / 2)
        a_x = x.float()[:, None] * freq_x  # (L, x_dims / 2)
        return torch.cat([a_t, a_y, a_x], dim=-1)  # (L, head_dim / 2)

    def space_angles(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Angles of the spatial groups only (time group unrotated) -> ``(L, head_dim / 2)``."""
        return self.angles(torch.zeros_like(y), y, x)

    def time_angles(self, t: torch.Tensor) -> torch.Tensor:
        """Angles of the temporal group only (spatial groups unrotated) -> ``(L, head_dim / 2)``."""
        zeros = torch.zeros_like(t)
        return self.angles(t, zeros, zeros)

    def time_keep_mask(self, device: torch.device | None = None) -> torch.Tensor:
        """``(head_dim,)`` multiplier that zeroes the temporal channels and keeps the spatial ones."""
        keep = torch.ones(self.split.head_dim, device=device)
        keep[: self.split.time_dims] = 0.0
        return keep


def apply_rotary(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs of ``x`` (``(..., L, head_dim)``) by ``angles`` (``(L, head_dim/2)``)."""
    cos = angles.cos().to(x.dtype)  # (L, head_dim / 2)
    sin = angles.sin().to(x.dtype)  # (L, head_dim / 2)
    pairs = x.unflatten(-1, (-1, 2))  # (..., L, head_dim / 2, 2)
    x0, x1 = pairs[..., 0], pairs[..., 1]  # (..., L, head_dim / 2) each
    out = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1)  # (..., L, head_dim / 2, 2)
    return out.flatten(-2)  # (..., L, head_dim)


def drop_time(k: torch.Tensor, rope: Rope3D) -> torch.Tensor:
    """Zero the temporal rotary channels of keys ``k`` (``(..., head_dim)``): position-free sink keys."""
    return k * rope.time_keep_mask(k.device).to(k.dtype)  # (..., head_dim)
