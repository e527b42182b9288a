"""Causal audio encoder: filterbank rows -> A tokens per video latent frame, offline or streaming.

Time layout (``R = rows_per_frame = 4`` feature rows per 25 fps video frame, ``f_t =
frames_per_token`` video frames per latent frame, ``L = lookahead_frames``):

1. Video frame ``j`` owns feature rows ``R j .. R j + R - 1`` (with :mod:`hub.audio`'s causal
   framing those rows are complete exactly when the audio of frame ``j`` is).
2. A frame embedding sees the rows of frames ``j - (k - 1) .. j + L``: one look-ahead
   convolution with ``L`` frames of right context, then strictly causal residual blocks
   (depthwise dilated convolutions + MLP). So the representation of frame ``j`` depends on audio up
   to the end of frame ``j + L`` and on nothing later: the encoder's look-ahead is exactly
   ``L`` frames (``lookahead_ms = 40 L``), whatever the depth.
3. Latent frames follow the causal video latent layout of the VAE: latent frame 0 is video frame
   0 alone, latent frame ``k >= 1`` is video frames ``1 + (k - 1) f_t .. k f_t``. Frame 0 is
   preceded by ``f_t - 1`` learned "before start" embeddings so that every latent frame groups
   ``f_t`` frame embeddings; one head maps each group to ``A`` tokens of width ``D``.

So ``T`` video frames (``N = R T`` rows) give ``T_lat = 1 + (T - 1) // f_t`` latent frames
(trailing frames that do not complete a latent frame only serve as look-ahead). Latent frame
``k`` can be emitted once ``R (k f_t + L + 1)`` rows have arrived (:meth:`AudioEncoder.rows_needed`).
Offline, look-ahead beyond the end of the input is zero (the convolution's padding); the
streaming path's :meth:`AudioEncoderStream.flush` does the same, so streaming == offline.

Classifier-free guidance: a learned null embedding replaces the tokens of dropped samples
(:meth:`AudioEncoder.null_tokens`, :meth:`AudioEncoder.drop_mask`, :meth:`AudioEncoder.mask_with_null`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hub import FPS
from hub.audio import FEATURE_PRESETS, FeatureConfig


@dataclass(frozen=True)
class AudioEncoderConfig:
    """Sizes of the audio encoder. ``feature_preset`` names the :data:`hub.audio.FEATURE_PRESETS`
    entry the encoder was trained on; ``n_features`` / ``rows_per_frame`` must match it."""

    feature_preset: str = "fbank80"
    n_features: int = 80  # F, filterbank rows' width
    rows_per_frame: int = 4  # R, feature rows per video frame (100 Hz / 25 fps)
    dim: int = 256  # hidden width
    layers: int = 6  # causal residual blocks
    kernel_size: int = 3  # frames, for the look-ahead conv's past part and the causal blocks
    max_dilation: int = 8  # block i uses dilation 2 ** i, cycling after max_dilation
    mlp_ratio: int = 4
    dropout: float = 0.0
    lookahead_frames: int = 2  # L video frames of future audio (80 ms)
    frames_per_token: int = 4  # f_t, video frames per latent frame (the VAE's temporal stride)
    tokens_per_latent_frame: int = 4  # A
    out_dim: int = 512  # D, token width (the DiT's width)

    def __post_init__(self) -> None:
        if self.feature_preset not in FEATURE_PRESETS:
            raise ValueError(
                f"AudioEncoderConfig.feature_preset={self.feature_preset!r}: known are {sorted(FEATURE_PRESETS)}"
            )
        feats = FEATURE_PRESETS[self.feature_preset]
        if (self.n_features, self.rows_per_frame) != (feats.n_filters, feats.rows_per_frame):
            raise ValueError(
                f"AudioEncoderConfig: n_features={self.n_features}, rows_per_frame={self.rows_per_frame} do "
                f"not match feature preset {self.feature_preset!r} ({feats.n_filters}, {feats.rows_per_frame})"
            )
        positive = {
            "dim": self.dim, "layers": self.layers, "kernel_size": self.kernel_size,
            "max_dilation": self.max_dilation, "mlp_ratio": self.mlp_ratio,
            "frames_per_token": self.frames_per_token,
            "tokens_per_latent_frame": self.tokens_per_latent_frame, "out_dim": self.out_dim,
        }
        bad = {name: value for name, value in positive.items() if value < 1}
        if bad:
            raise ValueError(f"AudioEncoderConfig: {bad} must be >= 1")
        if self.lookahead_frames < 0:
            raise ValueError(f"AudioEncoderConfig.lookahead_frames={self.lookahead_frames}: must be >= 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"AudioEncoderConfig.dropout={self.dropout}: accepted range is [0, 1)")

    @property
    def feature_config(self) -> FeatureConfig:
        return FEATURE_PRESETS[self.feature_preset]

    def dilation(self, block: int) -> int:
        """Dilation of causal block ``block``: 1, 2, 4, ... up to ``max_dilation``, then again."""
        cycle = self.max_dilation.bit_length()  # number of powers of two <= max_dilation
        return 2 ** (block % cycle)


AUDIO_ENCODER_PRESETS: dict[str, AudioEncoderConfig] = {
    # tests and smoke runs
    "tiny": AudioEncoderConfig(dim=32, layers=2, max_dilation=2, mlp_ratio=2, lookahead_frames=2,
                               frames_per_token=4, tokens_per_latent_frame=2, out_dim=24),
    # CPU-friendly default next to a small DiT
    "small": AudioEncoderConfig(dim=192, layers=4, out_dim=384),
    # paper-scale setting
    "base": AudioEncoderConfig(dim=384, layers=8, out_dim=1024),
}


class CausalBlock(nn.Module):
    """Residual block over frames: depthwise causal dilated conv, LayerNorm, MLP. ``(B, T, C)``."""

    def __init__(self, dim: int, kernel_size: int, dilation: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        self.context = (kernel_size - 1) * dilation  # past frames the conv needs
        self.conv = nn.Conv1d(dim, dim, kernel_size, dilation=dilation, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp_ratio * dim)
        self.fc2 = nn.Linear(mlp_ratio * dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, history: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``x (B, T, C)`` new frames, ``history (B, context, C)`` the previous inputs (zeros at start).

        Returns ``(y (B, T, C), new_history (B, context, C))``.
        """
        if history is None:
            history = x.new_zeros(x.shape[0], self.context, x.shape[2])  # (B, ctx, C)
        full = torch.cat((history, x), dim=1)  # (B, ctx + T, C)
        h = self.conv(full.transpose(1, 2)).transpose(1, 2)  # (B, T, C)
        h = self.fc2(self.drop(F.gelu(self.fc1(self.norm(h)))))  # (B, T, C)
        return x + h, full[:, full.shape[1] - self.context:]


class AudioEncoder(nn.Module):
    """Filterbank rows ``(B, N, F)`` -> audio tokens ``(B, T_lat, A, D)`` (see the module doc)."""

    def __init__(self, config: AudioEncoderConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or AudioEncoderConfig()
        self.frame_in = nn.Linear(cfg.rows_per_frame * cfg.n_features, cfg.dim)
        # Past context (kernel_size - 1) + the frame itself + L future frames, in one conv.
        self.lookahead_conv = nn.Conv1d(cfg.dim, cfg.dim, cfg.kernel_size + cfg.lookahead_frames)
        self.blocks = nn.ModuleList(
            CausalBlock(cfg.dim, cfg.kernel_size, cfg.dilation(i), cfg.mlp_ratio, cfg.dropout)
            for i in range(cfg.layers)
        )
        self.start_frames = nn.Parameter(torch.zeros(cfg.frames_per_token - 1, cfg.dim))  # (f_t - 1, C)
        self.head_norm = nn.LayerNorm(cfg.frames_per_token * cfg.dim)
        self.head = nn.Linear(cfg.frames_per_token * cfg.dim, cfg.tokens_per_latent_frame * cfg.out_dim)
        self.null_embedding = nn.Parameter(torch.zeros(cfg.tokens_per_latent_frame, cfg.out_dim))  # (A, D)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            nn.init.zeros_(block.fc2.weight)  # every residual block starts as the identity
        nn.init.normal_(self.start_frames, std=0.02)
        nn.init.normal_(self.null_embedding, std=0.02)

    # ------------------------------------------------------------------ time bookkeeping
    @property
    def lookahead_ms(self) -> float:
        """Future audio each token waits for, beyond the end of its own frames (ms)."""
        return 1000.0 * self.config.lookahead_frames / FPS

    def num_latent_frames(self, n_frames: int) -> int:
        """Latent frames fully covered by ``n_frames`` video frames: ``1 + (T - 1) // f_t`` (0 if T = 0)."""
        return 0 if n_frames <= 0 else 1 + (n_frames - 1) // self.config.frames_per_token

    def rows_needed(self, n_latent: int) -> int:
        """Feature rows that must have arrived before latent frames ``0 .. n_latent - 1`` are emitted."""
        cfg = self.config
        if n_latent <= 0:
            return 0
        last_frame = (n_latent - 1) * cfg.frames_per_token + cfg.lookahead_frames  # 0-based video frame
        return cfg.rows_per_frame * (last_frame + 1)

    # ------------------------------------------------------------------ offline
    def forward(self, features: Tensor) -> Tensor:
        """``features (B, N, F)`` with ``N = R T`` -> ``tokens (B, 1 + (T - 1) // f_t, A, D)``."""
        cfg = self.config
        if features.dim() != 3 or features.shape[2] != cfg.n_features:
            raise ValueError(
                f"audio features: expected (B, N, {cfg.n_features}), got shape {tuple(features.shape)}"
            )
        batch, n_rows, _ = features.shape
        if n_rows == 0 or n_rows % cfg.rows_per_frame:
            raise ValueError(
                f"audio features: {n_rows} rows is not a positive multiple of rows_per_frame="
                f"{cfg.rows_per_frame} (one video frame)"
            )
        n_frames = n_rows // cfg.rows_per_frame
        x = self._embed_frames(features)  # (B, T, C)
        pad = (cfg.kernel_size - 1, cfg.lookahead_frames)
        x = F.pad(x.transpose(1, 2), pad)  # (B, C, k - 1 + T + L)
        x = self.lookahead_conv(x).transpose(1, 2)  # (B, T, C)
        for block in self.blocks:
            x, _ = block(x)  # (B, T, C)
        start = self.start_frames.unsqueeze(0).expand(batch, -1, -1)  # (B, f_t - 1, C)
        x = torch.cat((start, x), dim=1)  # (B, f_t - 1 + T, C)
        n_latent = self.num_latent_frames(n_frames)
        return self._head(x[:, : n_latent * cfg.frames_per_token])  # (B, T_lat, A, D)

    def _embed_frames(self, rows: Tensor) -> Tensor:
        cfg = self.config
        batch, n_rows, _ = rows.shape
        frames = rows.reshape(batch, n_rows // cfg.rows_per_frame, cfg.rows_per_frame * cfg.n_features)  # (B, T, R F)
        return self.frame_in(frames)  # (B, T, C)

    def _head(self, grouped: Tensor) -> Tensor:
        """``(B, n f_t, C)`` frame embeddings -> ``(B, n, A, D)`` tokens."""
        cfg = self.config
        batch, length, _ = grouped.shape
        n = length // cfg.frames_per_token
        x = grouped.reshape(batch, n, cfg.frames_per_token * cfg.dim)  # (B, n, f_t C)
        x = self.head(self.head_norm(x))  # (B, n, A D)
        return x.reshape(batch, n, cfg.tokens_per_latent_frame, cfg.out_dim)  # (B, n, A, D)

    # ------------------------------------------------------------------ streaming
    def start(self) -> "AudioEncoderStream":
        """A fresh streaming state over this encoder (use the encoder in ``eval()`` mode)."""
        return AudioEncoderStream(self)

    # ------------------------------------------------------------------ classifier-free guidance
    def null_tokens(self, batch: int, n_latent: int) -> Tensor:
        """The learned "no audio" tokens, ``(B, T_lat, A, D)``."""
        return self.null_embedding.expand(batch, n_latent, -1, -1)  # (B, T_lat, A, D)

    @staticmethod
    def drop_mask(batch: int, p: float, generator: torch.Generator | None = None,
                  device: torch.device | str | None = None) -> Tensor:
        """Bool ``(B,)``, True where a sample's audio is dropped (probability ``p``)."""
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"audio drop probability p={p}: accepted range is [0, 1]")
        return torch.rand(batch, generator=generator, device=device) < p

    def mask_with_null(self, tokens: Tensor, drop: Tensor) -> Tensor:
        """Replace the tokens of dropped entries by the null embedding.

        ``tokens (B, T_lat, A, D)``; ``drop`` bool ``(B,)`` (whole samples) or ``(B, T_lat)``.
        """
        if drop.dim() == 1:
            drop = drop[:, None].expand(tokens.shape[0], tokens.shape[1])  # (B, T_lat)
        if drop.shape != tokens.shape[:2]:
            raise ValueError(f"drop mask: shape {tuple(drop.shape)} must be (B,) or (B, T_lat) = {tuple(tokens.shape[:2])}")
        null = self.null_embedding.to(tokens.dtype)  # (A, D)
        return torch.where(drop[:, :, None, None], null, tokens)  # (B, T_lat, A, D)

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        from hub.checkpoint import save_pretrained

        save_pretrained(self, self.config, directory, kind="audio_encoder")

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> "AudioEncoder":
        from hub.checkpoint import config_from_dict, load_state, read_config

        payload = read_config(directory, kind="audio_encoder")
        model = cls(config_from_dict(AudioEncoderConfig, payload["config"]))
        load_state(directory, model)
        return model.eval()


class AudioEncoderStream:
    """Streaming state of an :class:`AudioEncoder`: push feature rows, get finished latent frames.

    ``push(rows (B, n, F)) -> tokens (B, k, A, D)`` returns the latent frames whose audio and
    look-ahead are now complete (``k`` may be 0); ``flush()`` treats the missing look-ahead as zero
    (end of audio) and returns the rest. The concatenation equals ``AudioEncoder.forward`` on all
    rows. Memory is bounded: each convolution keeps only its receptive field.
    """

    def __init__(self, encoder: AudioEncoder) -> None:
        self.encoder = encoder
        self.config = encoder.config
        self.batch: int | None = None
        self.rows_received = 0
        self.frames_received = 0
        self.latent_emitted = 0
        self._finished = False
        self._rows: Tensor | None = None  # (B, r < R, F) rows of an unfinished video frame
        self._look: Tensor | None = None  # (B, <= k - 1 + L, C) lookahead conv input window
        self._histories: list[Tensor | None] = [None] * len(encoder.blocks)
        self._grouped: Tensor | None = None  # (B, < f_t, C) frame embeddings awaiting a latent frame

    def _init_state(self, like: Tensor) -> None:
        cfg, batch = self.config, like.shape[0]
        self.batch = batch
        self._rows = like.new_zeros(batch, 0, cfg.n_features)
        self._look = like.new_zeros(batch, cfg.kernel_size - 1, cfg.dim)  # left zero padding
        self._grouped = self.encoder.start_frames.to(like.dtype).unsqueeze(0).expand(batch, -1, -1)

    @torch.no_grad()
    def push(self, rows: Tensor) -> Tensor:
        """Add feature rows ``(B, n, F)`` (any ``n >= 0``); return new tokens ``(B, k, A, D)``."""
        cfg = self.config
        if self._finished:
            raise ValueError("AudioEncoderStream.push after flush: call encoder.start() for a new stream")
        if rows.dim() != 3 or rows.shape[2] != cfg.n_features:
            raise ValueError(f"audio features: expected (B, n, {cfg.n_features}), got shape {tuple(rows.shape)}")
        if self.batch is None:
            self._init_state(rows)
        elif rows.shape[0] != self.batch:
            raise ValueError(f"audio features: batch {rows.shape[0]} differs from this stream's batch {self.batch}")
        assert self._rows is not None and self._look is not None
        self.rows_received += rows.shape[1]
        pending = torch.cat((self._rows, rows.to(self._rows.dtype)), dim=1)  # (B, r + n, F)
        n_frames = pending.shape[1] // cfg.rows_per_frame
        cut = n_frames * cfg.rows_per_frame
        self._rows = pending[:, cut:]
        if n_frames == 0:
            return self._empty()
        self.frames_received += n_frames
        return self._advance(self.encoder._embed_frames(pending[:, :cut]))  # (B, k, A, D)

    @torch.no_grad()
    def flush(self) -> Tensor:
        """End of audio: zero look-ahead for the last frames; return their finished latent frames.

        Rows of an unfinished video frame are dropped (as ``forward`` refuses them).
        """
        if self._finished:
            raise ValueError("AudioEncoderStream.flush called twice: call encoder.start() for a new stream")
        self._finished = True
        if self.batch is None or self.frames_received == 0:
            return self._empty()
        assert self._look is not None
        zeros = self._look.new_zeros(self.batch, self.config.lookahead_frames, self.config.dim)  # (B, L, C)
        return self._advance(zeros)

    def _advance(self, embedded: Tensor) -> Tensor:
        """Feed frame embeddings ``(B, n, C)`` through the look-ahead conv, blocks and head."""
        cfg, enc = self.config, self.encoder
        assert self._look is not None and self._grouped is not None
        window = torch.cat((self._look, embedded), dim=1)  # (B, w, C)
        receptive = cfg.kernel_size + cfg.lookahead_frames
        n_out = window.shape[1] - receptive + 1
        if n_out <= 0:
            self._look = window
            return self._empty()
        x = enc.lookahead_conv(window.transpose(1, 2)).transpose(1, 2)  # (B, n_out, C)
        self._look = window[:, n_out:]  # (B, receptive - 1, C)
        for i, block in enumerate(enc.blocks):
            x, self._histories[i] = block(x, self._histories[i])  # (B, n_out, C)
        grouped = torch.cat((self._grouped, x), dim=1)  # (B, g + n_out, C)
        n_latent = grouped.shape[1] // cfg.frames_per_token
        cut = n_latent * cfg.frames_per_token
        self._grouped = grouped[:, cut:]
        if n_latent == 0:
            return self._empty()
        self.latent_emitted += n_latent
        return enc._head(grouped[:, :cut])  # (B, n_latent, A, D)

    def _empty(self) -> Tensor:
        cfg = self.config
        ref = self.encoder.null_embedding
        batch = self.batch or 0
        return ref.new_zeros(batch, 0, cfg.tokens_per_latent_frame, cfg.out_dim)
