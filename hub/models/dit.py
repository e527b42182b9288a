"""A2V-DiT: the audio-to-video diffusion transformer of REST (teacher and streaming student).

One network, three attention patterns and one cached inference path:

- ``mode="bidirectional"`` (teacher): every chunk token attends to every chunk of the window and to
  the ID-Sink.
- ``mode="block_causal"`` (student training): chunk ``k`` attends to the sink and to chunks
  ``max(0, k - W) .. k``.
- ``mode="teacher_forcing"`` (the "no ASD" baseline): clean ground-truth chunks are run at ``t = 0``
  beside the noisy ones; noisy chunk ``k`` attends to the sink, to CLEAN chunks ``max(0, k - W) ..
  k - 1`` and to itself; clean chunks attend block-causally among themselves.
- Streaming (student inference, Self-Forcing rollouts): ``new_cache`` -> ``prefill_sink`` -> per chunk
  ``forward_chunk`` (reads the cache) and ``write_chunk`` (appends to it). With the same inputs it
  equals the ``block_causal`` forward (``teacher_forcing`` when clean chunks are written).

Tokens. Latent frames ``(B, C, T, h, w)`` are cut into ``p x p`` patches: ``N = (h / p) * (w / p)``
tokens per latent frame, ``F = chunk_latent_frames`` frames per chunk. The reference latent
``(B, C, 1, h, w)`` gives the ``N`` ID tokens (the ID-Sink); they pass through the same blocks at
``t = 0`` and attend only to themselves, so their per-layer keys/values depend on the reference alone.

Conditioning. adaLN-Zero (DiT) modulation per CHUNK from that chunk's noise level ``t`` in ``[0, 1]``
(0 = clean), so chunks can sit at different noise levels (diffusion forcing / asynchronous schedules).
Audio enters by cross-attention from each latent frame's tokens to that frame's own ``A`` audio tokens.

Positions. 3D rotary (time, y, x; :mod:`hub.models.rope`). Chunk tokens rotate by their latent-frame
index; sink keys carry only the spatial part (temporal channels zeroed), so attention to the sink is
independent of the query's time. Rotary attention depends on position differences only, so the
streaming path places the current chunk at chunk position ``min(k, W)`` and its cached context
relative to it: positions stay bounded on unbounded streams and the outputs equal the full forward.

Receptive field. As with any layer-wise KV cache, ``W`` bounds what one LAYER sees; through ``depth``
layers a chunk's output depends on up to ``depth * W`` earlier chunks (the cached keys of chunk
``k - W`` were themselves computed from chunks ``k - 2W .. k - W``). The full ``block_causal`` forward
uses the same per-layer mask, which is why the two agree exactly.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from hub import checkpoint
from hub.models.kv_cache import IDContextCache
from hub.models.rope import Rope3D, apply_rotary, drop_time

Mode = Literal["bidirectional", "block_causal", "teacher_forcing"]
MODES: tuple[str, ...] = ("bidirectional", "block_causal", "teacher_forcing")
CHECKPOINT_KIND = "dit"


@dataclass
class DiTConfig:
    """Sizes and switches of the A2V-DiT; every other size is derived from these.

    ``latent_channels``/``latent_size`` must match the video autoencoder's latent grid and
    ``audio_dim``/``audio_tokens_per_frame`` the audio encoder's tokens per latent frame.
    """

    latent_channels: int = 16  # C
    latent_size: int = 8  # h = w of the latent grid
    patch_size: int = 1  # p in {1, 2}
    dim: int = 256
    depth: int = 6
    heads: int = 4
    mlp_ratio: float = 4.0
    audio_dim: int = 256  # Da
    audio_tokens_per_frame: int = 4  # A
    chunk_latent_frames: int = 1  # F: latent frames per streaming chunk
    context_chunks: int = 4  # W: Context-Cache window in chunks (0 = no Context-Cache)
    use_id_sink: bool = True  # False: no identity tokens (ablation)
    max_chunks: int = 12  # longest bidirectional (teacher) window in chunks
    qk_norm: bool = True
    rope_theta: float = 10_000.0
    timestep_freq_dim: int = 256
    timestep_scale: float = 1000.0  # t in [0, 1] is embedded as t * scale (DiT frequencies)

    def __post_init__(self) -> None:
        if self.patch_size not in (1, 2):
            raise ValueError(f"DiTConfig.patch_size must be 1 or 2, got {self.patch_size}")
        if self.latent_size < 1 or self.latent_size % self.patch_size:
            raise ValueError(f"DiTConfig.latent_size {self.latent_size} must be a positive multiple "
                             f"of patch_size {self.patch_size}")
        if self.heads < 1 or self.dim % self.heads:
            raise ValueError(f"DiTConfig.dim {self.dim} must be divisible by heads {self.heads}")
        if self.head_dim < 8 or self.head_dim % 2:
            raise ValueError(f"DiTConfig head_dim = dim / heads must be even and >= 8, got {self.head_dim}")
        for name in ("latent_channels", "depth", "audio_dim", "audio_tokens_per_frame",
                     "chunk_latent_frames", "max_chunks", "timestep_freq_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"DiTConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.timestep_freq_dim % 2:
            raise ValueError(f"DiTConfig.timestep_freq_dim must be even, got {self.timestep_freq_dim}")
        if self.context_chunks < 0:
            raise ValueError(f"DiTConfig.context_chunks must be >= 0, got {self.context_chunks}")
        if self.mlp_ratio <= 0:
            raise ValueError(f"DiTConfig.mlp_ratio must be > 0, got {self.mlp_ratio}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def grid(self) -> int:
        """Tokens per side of one latent frame: ``latent_size / patch_size``."""
        return self.latent_size // self.patch_size

    @property
    def tokens_per_frame(self) -> int:
        return self.grid * self.grid

    @property
    def tokens_per_chunk(self) -> int:
        return self.tokens_per_frame * self.chunk_latent_frames

    @property
    def sink_tokens(self) -> int:
        """ID tokens per stream: one latent frame of patches, or 0 without an ID-Sink."""
        return self.tokens_per_frame if self.use_id_sink else 0


DIT_PRESETS: dict[str, DiTConfig] = {
    # Unit tests: a 4x4 latent grid, two blocks, runs in milliseconds.
    "test": DiTConfig(latent_channels=4, latent_size=4, patch_size=1, dim=32, depth=2, heads=2,
                      mlp_ratio=2.0, audio_dim=16, audio_tokens_per_frame=2, chunk_latent_frames=1,
                      context_chunks=2, max_chunks=8, timestep_freq_dim=32),
    # CPU real-time at 128^2: an 8x8 latent grid in 2x2 patches = 16 tokens per 160 ms chunk
    # (patch 1 made teacher training ~4x slower on the 2-core CPU for no gain we could afford).
    "tiny": DiTConfig(latent_channels=32, latent_size=8, patch_size=2, dim=256, depth=6, heads=4,
                      mlp_ratio=4.0, audio_dim=256, audio_tokens_per_frame=4, chunk_latent_frames=1,
                      context_chunks=4, max_chunks=12),
    # GPU model at 512^2 (16x16 latent grid).
    "base": DiTConfig(latent_channels=64, latent_size=16, patch_size=1, dim=1024, depth=16, heads=16,
                      mlp_ratio=4.0, audio_dim=768, audio_tokens_per_frame=8, chunk_latent_frames=1,
                      context_chunks=8, max_chunks=16),
}


def dit_config(preset: str, **overrides) -> DiTConfig:
    """A copy of ``DIT_PRESETS[preset]`` with ``overrides`` applied (validated)."""
    if preset not in DIT_PRESETS:
        raise ValueError(f"unknown DiT preset {preset!r}; known: {sorted(DIT_PRESETS)}")
    names = {f.name for f in dataclasses.fields(DiTConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown DiTConfig fields {unknown}; known: {sorted(names)}")
    return dataclasses.replace(DIT_PRESETS[preset], **overrides)


# ---------------------------------------------------------------------------------------- layers
def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation ``x * (1 + scale) + shift``; all ``(B, L, D)``."""
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    """Noise level ``t`` in ``[0, 1]`` -> ``(..., dim)``: sinusoidal features of ``t * scale`` + MLP."""

    def __init__(self, dim: int, freq_dim: int, scale: float) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.scale = scale
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = (t.float() * self.scale)[..., None] * freqs  # (..., half)
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (..., freq_dim)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))  # (..., dim)


class SelfAttention(nn.Module):
    """Projections of the rotary self-attention; the attention itself is assembled by the block."""

    def __init__(self, dim: int, heads: int, qk_norm: bool) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.RMSNorm(dim // heads, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(dim // heads, eps=1e-6) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x`` (B, L, D) -> q, k, v (B, H, L, hd), q and k normalised (before any rotary)."""
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)  # (B, H, L, hd) each
        return self.q_norm(q), self.k_norm(k), v


class CrossAttention(nn.Module):
    """Each latent frame's tokens attend to that frame's own audio tokens (no mask needed)."""

    def __init__(self, dim: int, heads: int, qk_norm: bool) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.q_norm = nn.RMSNorm(dim // heads, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(dim // heads, eps=1e-6) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """``x`` (B, Fr, N, D) frame tokens, ``audio`` (B, Fr, A, D) -> (B, Fr, N, D)."""
        B, Fr, N, D = x.shape
        q = self.q(x).unflatten(-1, (self.heads, -1)).transpose(2, 3)  # (B, Fr, H, N, hd)
        k, v = self.kv(audio).unflatten(-1, (2, self.heads, -1)).permute(3, 0, 1, 4, 2, 5)  # (B, Fr, H, A, hd)
        q, k, v = self.q_norm(q).flatten(0, 1), self.k_norm(k).flatten(0, 1), v.flatten(0, 1)  # (B * Fr, H, ., hd)
        out = F.scaled_dot_product_attention(q, k, v).unflatten(0, (B, Fr))  # (B, Fr, H, N, hd)
        return self.proj(out.transpose(2, 3).reshape(B, Fr, N, D))  # (B, Fr, N, D)


@dataclass
class _Positions:
    """Rotary angles of the tokens of one pass, ``(L, hd / 2)`` each, plus the sink token count.

    ``space`` rotates the spatial groups only, ``time`` the temporal group only; queries use
    ``space + time``. The first ``n_sink`` tokens are ID tokens (temporal key channels dropped).
    """

    space: torch.Tensor
    time: torch.Tensor
    n_sink: int


@dataclass
class _Prefix:
    """Keys/values attended to before the pass's own tokens (streaming): ``(B, H, Lp, hd)`` each."""

    k: torch.Tensor
    v: torch.Tensor


class DiTBlock(nn.Module):
    """adaLN-Zero block: rotary self-attention -> audio cross-attention -> MLP.

    Self-attention and MLP are modulated per token group (each chunk's own ``t``); the cross-attention
    applies to frame tokens only (not to ID tokens).
    """

    def __init__(self, cfg: DiTConfig, rope: Rope3D) -> None:
        super().__init__()
        d = cfg.dim
        self.rope = rope
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(d, cfg.heads, cfg.qk_norm)
        self.norm_cross = nn.LayerNorm(d, eps=1e-6)
        self.cross = CrossAttention(d, cfg.heads, cfg.qk_norm)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        hidden = int(d * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, d))
        self.adaLN = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))

    def forward(self, x: torch.Tensor, cond: torch.Tensor, group: torch.Tensor, audio: torch.Tensor | None,
                pos: _Positions, mask: torch.Tensor | None, prefix: _Prefix | None = None,
                kv_only: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One block over ``L`` tokens.

        Args:
            x: (B, L, D) tokens; the first ``pos.n_sink`` are ID tokens, the rest frame tokens in
                frame-major order (N tokens per latent frame).
            cond: (B, G, D) conditioning per token group; ``group`` (L,) maps tokens to groups.
            audio: (B, Fr, A, D) projected audio tokens of the Fr frames in ``x`` (None if no frames).
            pos: rotary angles of the L tokens.
            mask: (L, Lp + L) boolean attention mask (True = attend) or None for full attention.
            prefix: cached keys/values (already positioned) attended before the tokens' own.
            kv_only: compute only this block's keys/values and return ``x`` unchanged (the last
                layer of a cache write needs nothing else).

        Returns:
            x (B, L, D); keys (B, H, L, hd) after qk-norm with only the SPATIAL rotary applied (ID keys
            with temporal channels zeroed): what the ID-Context Cache stores; values (B, H, L, hd).
        """
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN(cond)[:, group].chunk(6, dim=-1)  # (B, L, D)

        # 1. Self-attention with 3D rotary positions.
        q, k, v = self.attn.project(modulate(self.norm1(x), shift1, scale1))  # (B, H, L, hd)
        k_space = apply_rotary(k, pos.space)  # (B, H, L, hd)
        if pos.n_sink:
            k_space = torch.cat([drop_time(k_space[:, :, : pos.n_sink], self.rope),
                                 k_space[:, :, pos.n_sink:]], dim=2)  # (B, H, L, hd)
        if kv_only:
            return x, k_space, v
        q = apply_rotary(q, pos.space + pos.time)  # (B, H, L, hd)
        k_att = apply_rotary(k_space, pos.time)  # (B, H, L, hd)
        v_att = v
        if prefix is not None:
            k_att = torch.cat([prefix.k, k_att], dim=2)  # (B, H, Lp + L, hd)
            v_att = torch.cat([prefix.v, v], dim=2)  # (B, H, Lp + L, hd)
        o = F.scaled_dot_product_attention(q, k_att, v_att, attn_mask=mask)  # (B, H, L, hd)
        x = x + gate1 * self.attn.proj(o.transpose(1, 2).flatten(2))  # (B, L, D)

        # 2. Audio cross-attention: each latent frame's tokens to its own audio tokens.
        if audio is not None:
            frames = x[:, pos.n_sink:]  # (B, Fr * N, D)
            B, Fr = audio.shape[:2]
            h = self.norm_cross(frames).unflatten(1, (Fr, -1))  # (B, Fr, N, D)
            frames = frames + self.cross(h, audio).flatten(1, 2)  # (B, Fr * N, D)
            x = torch.cat([x[:, : pos.n_sink], frames], dim=1)  # (B, L, D)

        # 3. MLP.
        x = x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))  # (B, L, D)
        return x, k_space, v


class FinalLayer(nn.Module):
    """adaLN (shift, scale) + linear to ``p * p * C`` values per token."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(cfg.dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(cfg.dim, cfg.patch_size ** 2 * cfg.latent_channels)
        self.adaLN = nn.Sequential(nn.SiLU(), nn.Linear(cfg.dim, 2 * cfg.dim))

    def forward(self, x: torch.Tensor, cond: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        """``x`` (B, L, D), ``cond`` (B, G, D), ``group`` (L,) -> (B, L, p * p * C)."""
        shift, scale = self.adaLN(cond)[:, group].chunk(2, dim=-1)  # (B, L, D)
        return self.linear(modulate(self.norm(x), shift, scale))  # (B, L, p * p * C)


# ---------------------------------------------------------------------------------------- model
class A2VDiT(nn.Module):
    """Audio-to-video diffusion transformer predicting the flow-matching velocity ``v = eps - x0``.

    See the module docstring for the attention modes, the ID-Sink and the streaming path.
    """

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = cfg = config
        patch_dim = cfg.patch_size ** 2 * cfg.latent_channels
        self.rope = Rope3D(cfg.head_dim, cfg.rope_theta)
        self.patch_embed = nn.Linear(patch_dim, cfg.dim)
        self.id_embed = nn.Parameter(torch.zeros(cfg.dim))  # marks ID tokens (added to the reference patches)
        self.t_embed = TimestepEmbedder(cfg.dim, cfg.timestep_freq_dim, cfg.timestep_scale)
        self.audio_proj = nn.Linear(cfg.audio_dim, cfg.dim)
        self.audio_pos = nn.Parameter(torch.zeros(cfg.audio_tokens_per_frame, cfg.dim))  # (A, D)
        self.blocks = nn.ModuleList(DiTBlock(cfg, self.rope) for _ in range(cfg.depth))
        self.final = FinalLayer(cfg)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """All initialisation in one place (DiT): Xavier linears, zeroed adaLN and output layers."""
        def _basic(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        self.apply(_basic)
        nn.init.normal_(self.id_embed, std=0.02)
        nn.init.normal_(self.audio_pos, std=0.02)
        for layer in (self.t_embed.mlp[0], self.t_embed.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN[-1].weight)  # adaLN-Zero: every block starts as the identity
            nn.init.zeros_(block.adaLN[-1].bias)
            nn.init.zeros_(block.cross.proj.weight)
            nn.init.zeros_(block.cross.proj.bias)
        nn.init.zeros_(self.final.adaLN[-1].weight)
        nn.init.zeros_(self.final.adaLN[-1].bias)
        nn.init.zeros_(self.final.linear.weight)  # zero output at initialisation
        nn.init.zeros_(self.final.linear.bias)

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write ``config.json`` (kind ``"dit"``) and ``model.safetensors`` to ``directory``."""
        checkpoint.save_pretrained(self, self.config, directory, kind=CHECKPOINT_KIND)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> "A2VDiT":
        """Load a model written by :meth:`save_pretrained` (safetensors only, nothing unpickled)."""
        payload = checkpoint.read_config(directory, CHECKPOINT_KIND)
        model = cls(checkpoint.config_from_dict(DiTConfig, payload["config"]))
        checkpoint.load_state(directory, model)
        return model.to(map_location)

    # ------------------------------------------------------------------ tokens
    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """Latents (B, C, T, h, w) -> embedded tokens (B, T * N, D), frame-major, rows then columns."""
        B, C, T, h, w = x.shape
        p, g = self.config.patch_size, self.config.grid
        x = x.reshape(B, C, T, g, p, g, p).permute(0, 2, 3, 5, 4, 6, 1)  # (B, T, g, g, p, p, C)
        return self.patch_embed(x.reshape(B, T * g * g, p * p * C))  # (B, T * N, D)

    def unpatchify(self, tokens: torch.Tensor, frames: int) -> torch.Tensor:
        """(B, T * N, p * p * C) -> latents (B, C, T, h, w)."""
        B = tokens.shape[0]
        p, g, C = self.config.patch_size, self.config.grid, self.config.latent_channels
        x = tokens.reshape(B, frames, g, g, p, p, C).permute(0, 6, 1, 2, 4, 3, 5)  # (B, C, T, g, p, g, p)
        return x.reshape(B, C, frames, g * p, g * p)  # (B, C, T, h, w)

    def _frame_positions(self, frame_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Temporal index per latent frame (Fr,) -> (t, y, x)-rotary ``(space, time)`` angles of its tokens."""
        g = self.config.grid
        rows = torch.arange(g, device=frame_index.device)
        ys = rows.repeat_interleave(g).repeat(frame_index.numel())  # (Fr * N,)
        xs = rows.repeat(g).repeat(frame_index.numel())  # (Fr * N,)
        ts = frame_index.repeat_interleave(g * g)  # (Fr * N,)
        return self.rope.space_angles(ys, xs), self.rope.time_angles(ts)  # (Fr * N, hd / 2) each

    def _positions(self, frame_index: torch.Tensor, n_sink: int) -> _Positions:
        """Angles of ``n_sink`` ID tokens (no time) followed by the tokens of frames ``frame_index``."""
        space, time = self._frame_positions(frame_index)
        if n_sink:
            sink_space, sink_time = self._frame_positions(frame_index.new_zeros(1))
            space = torch.cat([sink_space, space])  # (Ns + Fr * N, hd / 2)
            time = torch.cat([torch.zeros_like(sink_time), time])  # (Ns + Fr * N, hd / 2)
        return _Positions(space=space, time=time, n_sink=n_sink)

    def _embed_audio(self, audio: torch.Tensor) -> torch.Tensor:
        """Audio tokens (B, Fr, A, Da) -> (B, Fr, A, D)."""
        return self.audio_proj(audio.to(self.audio_pos.dtype)) + self.audio_pos  # (B, Fr, A, D)

    def _embed_ref(self, ref: torch.Tensor) -> torch.Tensor:
        """Reference latent (B, C, 1, h, w) -> ID tokens (B, N, D)."""
        return self.patchify(ref.to(self.id_embed.dtype)) + self.id_embed  # (B, N, D)

    # ------------------------------------------------------------------ checks
    def _check_latent(self, name: str, x: torch.Tensor, frames: int | None = None) -> None:
        cfg = self.config
        expect = f"(B, {cfg.latent_channels}, T, {cfg.latent_size}, {cfg.latent_size})"
        if x.ndim != 5 or x.shape[1] != cfg.latent_channels or x.shape[3:] != (cfg.latent_size, cfg.latent_size):
            raise ValueError(f"A2VDiT: {name} must have shape {expect}, got {tuple(x.shape)}")
        if frames is not None and x.shape[2] != frames:
            raise ValueError(f"A2VDiT: {name} must have {frames} latent frame(s), got {x.shape[2]}")

    def _check_inputs(self, x: torch.Tensor, t: torch.Tensor, audio: torch.Tensor,
                      ref: torch.Tensor | None) -> int:
        """Validate the inputs of one pass; returns the number of chunks."""
        cfg = self.config
        self._check_latent("x", x)
        B, T = x.shape[0], x.shape[2]
        if T % cfg.chunk_latent_frames:
            raise ValueError(f"A2VDiT: x has {T} latent frames, not a multiple of chunk_latent_frames "
                             f"{cfg.chunk_latent_frames}")
        n_chunks = T // cfg.chunk_latent_frames
        if t.shape != (B, n_chunks):
            raise ValueError(f"A2VDiT: t must have shape (B, n_chunks) = {(B, n_chunks)}, got {tuple(t.shape)}")
        want_audio = (B, T, cfg.audio_tokens_per_frame, cfg.audio_dim)
        if tuple(audio.shape) != want_audio:
            raise ValueError(f"A2VDiT: audio must have shape (B, T, A, Da) = {want_audio}, got {tuple(audio.shape)}")
        if cfg.use_id_sink:
            if ref is None:
                raise ValueError("A2VDiT: ref (B, C, 1, h, w) is required when use_id_sink is True")
            self._check_latent("ref", ref, frames=1)
            if ref.shape[0] != B:
                raise ValueError(f"A2VDiT: ref batch {ref.shape[0]} != x batch {B}")
        elif ref is not None:
            raise ValueError("A2VDiT: ref must be None when use_id_sink is False (no ID-Sink)")
        return n_chunks

    # ------------------------------------------------------------------ masks
    def attention_mask(self, mode: Mode, n_chunks: int, window: int | None = None,
                       device: torch.device | str | None = None) -> torch.Tensor:
        """Boolean (L, L) mask (True = attend) over ``[ID tokens | (clean chunks |) chunks]``.

        ``L = Ns + n_chunks * Tc`` (``Ns + 2 * n_chunks * Tc`` for ``teacher_forcing``, clean first).
        """
        cfg = self.config
        W = cfg.context_chunks if window is None else window
        Tc, Ns = cfg.tokens_per_chunk, cfg.sink_tokens
        chunk = torch.arange(n_chunks, device=device).repeat_interleave(Tc)  # (n * Tc,)
        kinds = [torch.full((Ns,), -1, device=device), chunk]  # chunk index per token, -1 for ID tokens
        clean = [torch.zeros(Ns, dtype=torch.bool, device=device), torch.zeros_like(chunk, dtype=torch.bool)]
        if mode == "teacher_forcing":
            kinds.insert(1, chunk)
            clean.insert(1, torch.ones_like(chunk, dtype=torch.bool))
        c = torch.cat(kinds)  # (L,)
        is_clean = torch.cat(clean)  # (L,)
        is_sink = c < 0
        qc, kc = c[:, None], c[None, :]  # (L, 1), (1, L)
        sink_key = is_sink[None, :].expand(c.numel(), -1)  # (L, L)
        if mode == "bidirectional":
            frame_ok = ~is_sink[None, :]
        elif mode == "block_causal":
            frame_ok = (kc <= qc) & (kc >= qc - W)
        elif mode == "teacher_forcing":
            clean_q, clean_k = is_clean[:, None], is_clean[None, :]
            past_clean = clean_k & (kc >= qc - W) & ((kc <= qc) & clean_q | (kc < qc) & ~clean_q)
            own_noisy = ~clean_k & ~clean_q & (kc == qc)
            frame_ok = past_clean | own_noisy
        else:
            raise ValueError(f"A2VDiT: unknown mode {mode!r}; accepted: {MODES}")
        mask = sink_key | (frame_ok & ~is_sink[:, None] & ~is_sink[None, :])  # ID tokens see only ID tokens
        return mask  # (L, L)

    # ------------------------------------------------------------------ full forward
    def forward(self, x: torch.Tensor, t: torch.Tensor, audio: torch.Tensor, ref: torch.Tensor | None = None,
                mode: Mode = "bidirectional", window: int | None = None,
                clean_context: torch.Tensor | None = None) -> torch.Tensor:
        """Velocity prediction for a window of chunks.

        Args:
            x: (B, C, T, h, w) noisy latent frames, ``T = n_chunks * chunk_latent_frames``.
            t: (B, n_chunks) noise level per chunk in [0, 1] (0 = clean).
            audio: (B, T, A, Da) audio tokens per latent frame (null tokens for classifier-free guidance).
            ref: (B, C, 1, h, w) clean reference latent (the ID tokens); None iff ``use_id_sink`` is False.
            mode: "bidirectional" (teacher), "block_causal" (student) or "teacher_forcing".
            window: Context-Cache window W in chunks for "block_causal"/"teacher_forcing"
                (default ``config.context_chunks``; 0 = a chunk sees only itself and the sink).
            clean_context: (B, C, T, h, w) clean ground-truth chunks, required for "teacher_forcing".

        Returns:
            v: (B, C, T, h, w) velocity prediction for ``x``.
        """
        cfg = self.config
        if mode not in MODES:
            raise ValueError(f"A2VDiT: unknown mode {mode!r}; accepted: {MODES}")
        n_chunks = self._check_inputs(x, t, audio, ref)
        if window is not None and (mode == "bidirectional" or window < 0):
            raise ValueError(f"A2VDiT: window must be >= 0 and only with block_causal/teacher_forcing, "
                             f"got window={window} with mode={mode!r}")
        if mode == "bidirectional" and n_chunks > cfg.max_chunks:
            raise ValueError(f"A2VDiT: bidirectional window of {n_chunks} chunks exceeds max_chunks {cfg.max_chunks}")
        if (clean_context is not None) != (mode == "teacher_forcing"):
            raise ValueError("A2VDiT: clean_context is required for mode='teacher_forcing' and only there")
        if clean_context is not None and clean_context.shape != x.shape:
            raise ValueError(f"A2VDiT: clean_context must have the shape of x {tuple(x.shape)}, "
                             f"got {tuple(clean_context.shape)}")

        B, T = x.shape[0], x.shape[2]
        Ns, N, Fc = cfg.sink_tokens, cfg.tokens_per_frame, cfg.chunk_latent_frames
        frame_index = torch.arange(T, device=x.device)  # (T,)
        tokens = [self.patchify(x.to(self.patch_embed.weight.dtype))]  # [(B, T * N, D)]
        t_groups = [t]  # noise level per token group
        audio_tokens = self._embed_audio(audio)  # (B, T, A, D)
        if mode == "teacher_forcing":
            tokens.insert(0, self.patchify(clean_context.to(self.patch_embed.weight.dtype)))
            t_groups.insert(0, torch.zeros_like(t))
            frame_index = torch.cat([frame_index, frame_index])  # (2T,)
            audio_tokens = torch.cat([audio_tokens, audio_tokens], dim=1)  # (B, 2T, A, D)
        if Ns:
            tokens.insert(0, self._embed_ref(ref))
            t_groups.insert(0, t.new_zeros(B, 1))
        h = torch.cat(tokens, dim=1)  # (B, L, D)
        t_all = torch.cat(t_groups, dim=1)  # (B, G)
        cond = self.t_embed(t_all)  # (B, G, D)
        chunk_groups = torch.arange(t_all.shape[1] - (1 if Ns else 0), device=x.device) + (1 if Ns else 0)
        group = torch.cat([torch.zeros(Ns, dtype=torch.long, device=x.device),
                           chunk_groups.repeat_interleave(Fc * N)])  # (L,)
        pos = self._positions(frame_index, Ns)
        mask = self.attention_mask(mode, n_chunks, window, device=x.device)  # (L, L)
        if bool(mask.all()):
            mask = None
        for block in self.blocks:
            h, _, _ = block(h, cond, group, audio_tokens, pos, mask)  # (B, L, D)
        out_tokens = slice(h.shape[1] - T * N, h.shape[1])  # the (noisy) chunk tokens come last
        out = self.final(h[:, out_tokens], cond, group[out_tokens])  # (B, T * N, p * p * C)
        return self.unpatchify(out, T).to(x.dtype)  # (B, C, T, h, w)

    # ------------------------------------------------------------------ streaming
    def new_cache(self, batch_size: int, device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None, window: int | None = None,
                  use_sink: bool = True) -> IDContextCache:
        """A preallocated ID-Context Cache for ``batch_size`` streams.

        ``window`` (chunks) defaults to ``config.context_chunks``; the sink region is empty when
        ``use_id_sink`` is False or ``use_sink=False`` (the inference-time "no ID-Sink" ablation of
        a model trained with one). ``device``/``dtype`` default to the model's.
        """
        cfg = self.config
        param = self.patch_embed.weight
        return IDContextCache(depth=cfg.depth, batch_size=batch_size, heads=cfg.heads, head_dim=cfg.head_dim,
                              sink_tokens=cfg.sink_tokens if use_sink else 0, chunk_tokens=cfg.tokens_per_chunk,
                              chunk_latent_frames=cfg.chunk_latent_frames,
                              window=cfg.context_chunks if window is None else window,
                              device=param.device if device is None else device,
                              dtype=param.dtype if dtype is None else dtype)

    def _check_cache(self, cache: IDContextCache, batch: int) -> None:
        cfg = self.config
        if cache.depth != cfg.depth or cache.chunk_tokens != cfg.tokens_per_chunk \
                or cache.sink_tokens not in (0, cfg.sink_tokens):
            raise ValueError("A2VDiT: cache was built for another model config; use model.new_cache(...)")
        if cache.batch_size != batch:
            raise ValueError(f"A2VDiT: cache batch size {cache.batch_size} != input batch {batch}")

    def prefill_sink(self, cache: IDContextCache, ref: torch.Tensor) -> None:
        """Compute the ID tokens' keys/values of every layer from ``ref`` (B, C, 1, h, w) once per stream."""
        cfg = self.config
        if not cfg.use_id_sink:
            raise ValueError("A2VDiT: prefill_sink needs use_id_sink=True (this model has no ID-Sink)")
        self._check_latent("ref", ref, frames=1)
        self._check_cache(cache, ref.shape[0])
        h = self._embed_ref(ref)  # (B, Ns, D)
        cond = self.t_embed(ref.new_zeros(ref.shape[0], 1))  # (B, 1, D)
        group = torch.zeros(cfg.sink_tokens, dtype=torch.long, device=ref.device)  # (Ns,)
        space, _ = self._frame_positions(torch.zeros(1, dtype=torch.long, device=ref.device))
        pos = _Positions(space=space, time=torch.zeros_like(space), n_sink=cfg.sink_tokens)
        keys, values = [], []
        for layer, block in enumerate(self.blocks):
            last = layer == cfg.depth - 1
            h, k, v = block(h, cond, group, None, pos, None, kv_only=last)  # (B, Ns, D), (B, H, Ns, hd) x 2
            keys.append(k)
            values.append(v)
        cache.store_sink(torch.stack(keys), torch.stack(values))  # (depth, B, H, Ns, hd)

    def _run_chunk(self, x_chunk: torch.Tensor, t: torch.Tensor, audio: torch.Tensor, cache: IDContextCache,
                   collect: bool) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """One chunk against the cache (read only).

        Returns the final tokens (B, Tc, D), the conditioning (B, 1, D) and, if ``collect``, the
        per-layer keys/values (B, H, Tc, hd) to store (then the tokens skip the last block's rest).
        """
        cfg = self.config
        Fc = cfg.chunk_latent_frames
        self._check_latent("x_chunk", x_chunk, frames=Fc)
        B = x_chunk.shape[0]
        self._check_cache(cache, B)
        if t.shape != (B, 1):
            raise ValueError(f"A2VDiT: chunk t must have shape (B, 1) = {(B, 1)}, got {tuple(t.shape)}")
        want_audio = (B, Fc, cfg.audio_tokens_per_frame, cfg.audio_dim)
        if tuple(audio.shape) != want_audio:
            raise ValueError(f"A2VDiT: chunk audio must have shape {want_audio}, got {tuple(audio.shape)}")
        if cache.has_sink and not cache.sink_filled:
            raise ValueError("A2VDiT: the cache's ID-Sink is empty; call model.prefill_sink(cache, ref) first")

        # Positions relative to the window: context chunks at 0..n-1, this chunk at n (bounded by W).
        ctx_frames, cur_frames = cache.time_positions()  # (n, Fc), (Fc,)
        pos = self._positions(cur_frames, 0)
        ctx_time = self._frame_positions(ctx_frames.flatten())[1]  # (n * Tc, hd / 2)
        h = self.patchify(x_chunk.to(self.patch_embed.weight.dtype))  # (B, Tc, D)
        cond = self.t_embed(t)  # (B, 1, D)
        group = torch.zeros(h.shape[1], dtype=torch.long, device=h.device)  # (Tc,)
        audio_tokens = self._embed_audio(audio)  # (B, Fc, A, D)
        keys, values = [], []
        for layer, block in enumerate(self.blocks):
            ctx_k, ctx_v = cache.context(layer)  # (B, H, n * Tc, hd)
            prefix_k = [apply_rotary(ctx_k, ctx_time)]
            prefix_v = [ctx_v]
            if cache.has_sink:
                sink_k, sink_v = cache.sink(layer)  # (B, H, Ns, hd)
                prefix_k.insert(0, sink_k)
                prefix_v.insert(0, sink_v)
            prefix = _Prefix(k=torch.cat(prefix_k, dim=2).to(h.dtype), v=torch.cat(prefix_v, dim=2).to(h.dtype))
            kv_only = collect and layer == cfg.depth - 1  # a write needs only the last layer's K/V
            h, k, v = block(h, cond, group, audio_tokens, pos, None, prefix, kv_only)  # (B, Tc, D), (B, H, Tc, hd) x 2
            if collect:
                keys.append(k)
                values.append(v)
        return h, cond, keys, values

    def forward_chunk(self, x_chunk: torch.Tensor, t: torch.Tensor, audio: torch.Tensor,
                      cache: IDContextCache) -> torch.Tensor:
        """Velocity for one chunk attending to the ID-Sink, the cached context and itself (no write).

        Args:
            x_chunk: (B, C, Fc, h, w) noisy chunk, ``Fc = chunk_latent_frames``.
            t: (B, 1) its noise level in [0, 1].
            audio: (B, Fc, A, Da) its audio tokens.
            cache: from :meth:`new_cache`, sink prefilled when ``use_id_sink``.

        Returns:
            v: (B, C, Fc, h, w).
        """
        h, cond, _, _ = self._run_chunk(x_chunk, t, audio, cache, collect=False)  # (B, Tc, D), (B, 1, D)
        group = torch.zeros(h.shape[1], dtype=torch.long, device=h.device)  # (Tc,)
        out = self.final(h, cond, group)  # (B, Tc, p * p * C)
        return self.unpatchify(out, self.config.chunk_latent_frames).to(x_chunk.dtype)  # (B, C, Fc, h, w)

    def write_chunk(self, cache: IDContextCache, x_chunk: torch.Tensor, t: torch.Tensor,
                    audio: torch.Tensor) -> None:
        """Run a chunk (usually the clean generated chunk at ``t = 0``) and append its K/V to the cache.

        Shapes as in :meth:`forward_chunk`. Evicts the oldest chunk once ``window`` are cached, then
        advances ``cache.chunk_index``. With ``window == 0`` only advances (nothing is ever read).
        """
        if cache.window == 0:
            self._check_latent("x_chunk", x_chunk, frames=self.config.chunk_latent_frames)
            self._check_cache(cache, x_chunk.shape[0])
            cache.advance()
            return
        _, _, keys, values = self._run_chunk(x_chunk, t, audio, cache, collect=True)
        cache.store_chunk(torch.stack(keys), torch.stack(values))  # (depth, B, H, Tc, hd)
        cache.advance()
