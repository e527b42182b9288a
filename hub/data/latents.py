"""Latent corpus for generator training (teacher and student stages).

The frozen video autoencoder encodes every training clip once (whole clip, causally, so each
latent frame carries the same causal history it has at inference); the corpus keeps, per clip:

- ``latents``: normalised ``float (C, 1 + M, h, w)``; latent frame ``k >= 1`` covers video frames
  ``1 + (k - 1) f_t .. k f_t`` of the clip;
- ``refs``: normalised ``float (K, C, 1, h, w)`` ID latents of ``K`` frames drawn from the clip;
- ``features``: filterbank rows ``float32 (R T, F)`` of the clip's audio (causal framing, row
  ``R v .. R v + R - 1`` belong to video frame ``v``).

:class:`LatentWindowDataset` cuts windows of ``n`` latent frames at clip latent indices
``j .. j + n - 1`` (``j >= 1``) together with the feature rows the causal audio encoder needs for
them: video frames ``(j - 1 - c) f_t .. (j + n - 1) f_t + L`` (``c`` latent frames of audio
context, ``L`` look-ahead frames; rows outside the clip are silence). The encoder's latent frame
``1 + c + i`` then lines up with clip latent frame ``j + i`` -- the same layout a stream has,
whose first audio frame is the reference's silent slot (see :mod:`hub.pipeline`).

The corpus is cached in a safetensors file keyed by the autoencoder's weights and the clip list,
so re-runs skip the encoding.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hub import SAMPLES_PER_FRAME
from hub.audio import FeatureConfig, features_for
from hub.io_utils import atomic_path
from hub.models.vae import CausalVideoVAE


@dataclass
class ClipLatents:
    clip_id: str
    latents: torch.Tensor  # (C, 1 + M, h, w) normalised
    refs: torch.Tensor  # (K, C, 1, h, w) normalised
    features: torch.Tensor  # (R T, F) float32


def _frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (1, 3, T, H, W) in [-1, 1]."""
    return torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float().div(127.5).sub(1.0)


@torch.no_grad()
def encode_clip(vae: CausalVideoVAE, frames: np.ndarray, audio: np.ndarray, feature_config: FeatureConfig,
                n_refs: int, seed: int, chunk_latents: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Encode one clip: normalised latents (C, 1 + M, h, w), refs (K, C, 1, h, w), features (R T, F)."""
    f_t = vae.config.temporal_factor
    usable = 1 + (len(frames) - 1) // f_t * f_t  # 1 + M f_t frames
    device = next(vae.parameters()).device
    encoder = vae.start_encode()
    bounds = [0, min(usable, 1 + chunk_latents * f_t)]  # frame 0 alone, then whole groups of f_t
    while bounds[-1] < usable:
        bounds.append(min(usable, bounds[-1] + chunk_latents * f_t))
    pieces = [encoder.encode(_frames_to_tensor(frames[a:b]).to(device))  # (1, C, k, h, w)
              for a, b in zip(bounds[:-1], bounds[1:])]
    latents = vae.normalize(torch.cat(pieces, dim=2))[0].cpu()  # (C, 1 + M, h, w)
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(len(frames), size=min(n_refs, len(frames)), replace=False))
    images = _frames_to_tensor(frames[picks])[0].permute(1, 0, 2, 3).to(device)  # (K, 3, H, W)
    refs = vae.normalize(vae.encode_image(images)).cpu()  # (K, C, 1, h, w)
    samples = np.zeros(len(frames) * SAMPLES_PER_FRAME, np.float32)
    samples[: min(len(audio), len(samples))] = audio[: len(samples)]
    features = torch.from_numpy(features_for(samples, feature_config))  # (R T, F)
    return latents, refs, features


def corpus_key(vae: CausalVideoVAE, clip_ids: list[str], feature_config: FeatureConfig, n_refs: int) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(vae.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(json.dumps([clip_ids, repr(feature_config), n_refs,
                              vae.config.latent_mean, vae.config.latent_std]).encode())
    return digest.hexdigest()[:16]


def save_corpus(corpus: list[ClipLatents], path: Path) -> None:
    from safetensors.torch import save_file

    tensors, ids = {}, []
    for i, clip in enumerate(corpus):
        ids.append(clip.clip_id)
        tensors[f"{i}.latents"] = clip.latents.contiguous()
        tensors[f"{i}.refs"] = clip.refs.contiguous()
        tensors[f"{i}.features"] = clip.features.contiguous()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"ids": json.dumps(ids)})


def load_corpus(path: Path) -> list[ClipLatents]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as handle:
        ids = json.loads(handle.metadata()["ids"])
    tensors = load_file(str(path))
    return [ClipLatents(clip_id, tensors[f"{i}.latents"], tensors[f"{i}.refs"], tensors[f"{i}.features"])
            for i, clip_id in enumerate(ids)]


class LatentWindowDataset(torch.utils.data.Dataset):
    """Random windows of ``n_latents`` latent frames with their audio rows and an ID latent.

    Items: ``latents (C, n, h, w)``, ``ref (C, 1, h, w)``, ``features (R ((n + c) f_t + L + 1), F)``.
    Window positions are a pure function of ``(seed, epoch, index)``.
    """

    def __init__(self, corpus: list[ClipLatents], n_latents: int, frames_per_latent: int, rows_per_frame: int,
                 context_latents: int, lookahead_frames: int, silence_row: torch.Tensor, seed: int = 0,
                 samples_per_epoch: int | None = None) -> None:
        if lookahead_frames >= frames_per_latent:
            raise ValueError(f"lookahead_frames={lookahead_frames} must be < frames per latent frame "
                             f"{frames_per_latent}")
        self.clips = [c for c in corpus if c.latents.shape[1] - 1 >= n_latents]
        if not self.clips:
            longest = max((c.latents.shape[1] - 1 for c in corpus), default=0)
            raise ValueError(f"no clip has {n_latents} latent frames after the first (longest has {longest})")
        self.n = n_latents
        self.f_t = frames_per_latent
        self.rows = rows_per_frame
        self.context = context_latents
        self.lookahead = lookahead_frames
        self.silence_row = silence_row.float()  # (F,)
        self.seed = seed
        self.epoch = 0
        # Sample clips in proportion to their length; an epoch sees about every latent frame once.
        lengths = np.array([c.latents.shape[1] - 1 for c in self.clips], dtype=np.float64)
        self.weights = lengths / lengths.sum()
        self.length = samples_per_epoch or max(1, int(lengths.sum() // n_latents))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    @property
    def frames_in_window(self) -> int:
        return (self.n + self.context) * self.f_t + self.lookahead + 1

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        clip = self.clips[int(rng.choice(len(self.clips), p=self.weights))]
        m = clip.latents.shape[1] - 1
        j = int(rng.integers(1, m - self.n + 2))  # first latent frame, 1 <= j <= m - n + 1
        latents = clip.latents[:, j: j + self.n]  # (C, n, h, w)
        ref = clip.refs[int(rng.integers(len(clip.refs)))]  # (C, 1, h, w)
        first_frame = (j - 1 - self.context) * self.f_t
        frames = self.frames_in_window
        total_frames = clip.features.shape[0] // self.rows
        rows = self.silence_row.expand(frames * self.rows, -1).clone()  # (R Tw, F)
        lo, hi = max(first_frame, 0), min(first_frame + frames, total_frames)
        if hi > lo:
            rows[(lo - first_frame) * self.rows: (hi - first_frame) * self.rows] = \
                clip.features[lo * self.rows: hi * self.rows]
        return {"latents": latents, "ref": ref, "features": rows}


def silence_row(feature_config: FeatureConfig) -> torch.Tensor:
    """The filterbank row of digital silence (what rows outside a clip are filled with)."""
    rows = features_for(np.zeros(feature_config.win_samples * 4, np.float32), feature_config)
    return torch.from_numpy(rows[-1])  # (F,)
