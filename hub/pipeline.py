"""Sampling with a :class:`~hub.models.rest.RestModel`: reference and audio conditioning, the
teacher's whole-clip generator (bidirectional windows, rolled with clean overlap) and the
student's few-step chunk sampler over the ID-Context Cache.

Pure torch plus the feature extractor; no file I/O (see :mod:`hub.generate` for the CLI) and no
Gradio (see :mod:`hub.engine` for streaming).

Stream time layout: the reference image stands in for video frame 0 (latent frame 0). The
audio of a stream therefore starts at video frame 1: one frame of silence is put in front of it,
so that generated latent frame ``k >= 1`` (video frames ``1 + (k - 1) f_t .. k f_t``) lines up
with stream audio samples ``[(k - 1) f_t 640, k f_t 640)`` and output frame ``i`` (0-based) with
audio ``[640 i, 640 (i + 1))``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from hub import SAMPLES_PER_FRAME
from hub.audio import FEATURE_PRESETS, features_for
from hub.diffusion import SAMPLERS, sample
from hub.models.dit import A2VDiT
from hub.models.kv_cache import IDContextCache
from hub.models.rest import RestModel


def image_to_tensor(image: np.ndarray) -> Tensor:
    """``uint8 (H, W, 3)`` -> ``float (1, 3, H, W)`` in [-1, 1]."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 (H, W, 3) RGB, got {image.dtype} {image.shape}")
    return torch.from_numpy(image).permute(2, 0, 1)[None].float().div(127.5).sub(1.0)  # (1, 3, H, W)


def video_to_uint8(video: Tensor) -> np.ndarray:
    """``float (B=1, 3, T, H, W)`` in [-1, 1] -> ``uint8 (T, H, W, 3)``."""
    frames = video[0].permute(1, 2, 3, 0).float().clamp(-1, 1).add(1).mul(127.5).round()  # (T, H, W, 3)
    return frames.to(torch.uint8).cpu().numpy()


@torch.no_grad()
def encode_reference(model: RestModel, face_crop: np.ndarray) -> Tensor:
    """Clean, normalised ID latent ``(1, C, 1, h, w)`` of a square face crop at the model's size."""
    size = model.config.image_size
    if face_crop.shape[:2] != (size, size):
        raise ValueError(f"reference crop must be {size}x{size}, got {face_crop.shape[1]}x{face_crop.shape[0]}")
    image = image_to_tensor(face_crop).to(model.device)  # (1, 3, H, W)
    return model.vae.normalize(model.vae.encode_image(image))  # (1, C, 1, h, w)


def stream_features(model: RestModel, audio: np.ndarray) -> np.ndarray:
    """Offline filterbank rows of a stream: one silent frame (the reference's slot), then ``audio``.

    Returns ``float32 (4 (1 + ceil(N / 640)), F)``; audio is zero-padded to whole frames.
    """
    cfg = FEATURE_PRESETS[model.config.audio.feature_preset]
    frames = -(-len(audio) // SAMPLES_PER_FRAME)
    padded = np.zeros((1 + frames) * SAMPLES_PER_FRAME, np.float32)
    padded[SAMPLES_PER_FRAME: SAMPLES_PER_FRAME + len(audio)] = audio
    return features_for(padded, cfg)  # (R (1 + frames), F)


@torch.no_grad()
def stream_audio_tokens(model: RestModel, audio: np.ndarray) -> Tensor:
    """Audio tokens of generated latent frames 1.. for a whole stream: ``(1, n, A, D)``.

    ``n = ceil(frames / f_t)`` chunks' worth of latent frames cover all of the audio (the last
    one padded with silence). Equals what the streaming engine computes incrementally.
    """
    f_t = model.config.vae.temporal_factor
    frames = -(-len(audio) // SAMPLES_PER_FRAME)
    n_latent = -(-frames // f_t)
    total = n_latent * f_t * SAMPLES_PER_FRAME + model.config.audio.lookahead_frames * SAMPLES_PER_FRAME
    padded = np.zeros(total, np.float32)
    padded[: len(audio)] = audio
    rows = torch.from_numpy(stream_features(model, padded)).to(model.device)[None]  # (1, N, F)
    tokens = model.audio_encoder(rows)  # (1, 1 + n', A, D)
    return tokens[:, 1: 1 + n_latent]  # (1, n, A, D)


def _check_steps(steps: int, sampler: str) -> None:
    if steps < 1:
        raise ValueError(f"steps={steps}; must be >= 1")
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r}; accepted: {sorted(SAMPLERS)}")


@torch.no_grad()
def generate_teacher_latents(model: RestModel, ref: Tensor, audio_tokens: Tensor, *, steps: int = 20,
                             guidance: float = 1.0, shift: float = 1.0, sampler: str = "euler",
                             window: int | None = None, overlap: int = 2,
                             generator: torch.Generator | None = None) -> Tensor:
    """Whole-clip generation with the bidirectional teacher, window by window.

    Windows of ``window`` chunks (default ``dit.max_chunks``); after the first, each window starts
    with the last ``overlap`` chunks already generated, held clean (``t = 0``) while the rest are
    denoised (the asynchronous schedule the teacher was trained on: clean past, noisy present).

    Args:
        ref: (1, C, 1, h, w) normalised ID latent.
        audio_tokens: (1, n, A, D) tokens of latent frames 1..n.
    Returns:
        (1, C, n, h, w) normalised clean latents.
    """
    _check_steps(steps, sampler)
    dit: A2VDiT = model.dit
    cfg = dit.config
    fc = cfg.chunk_latent_frames
    window = window or cfg.max_chunks
    if not 0 <= overlap < window:
        raise ValueError(f"overlap={overlap} must be in [0, window={window})")
    n = audio_tokens.shape[1]
    n_chunks = -(-n // fc)
    pad = n_chunks * fc - n
    if pad:
        audio_tokens = torch.cat([audio_tokens, audio_tokens[:, -1:].expand(-1, pad, -1, -1)], dim=1)
    null = model.audio_encoder.null_tokens(1, n_chunks * fc)  # (1, T, A, D)
    chunk_shape = (1, cfg.latent_channels, fc, cfg.latent_size, cfg.latent_size)
    # Drawn chunk by chunk, so a clip's first chunks get the same noise whatever its length.
    noise = torch.cat([torch.randn(chunk_shape, generator=generator) for _ in range(n_chunks)],
                      dim=2).to(ref.device, ref.dtype)  # (1, C, T, h, w)
    out = torch.zeros_like(noise)
    start = 0  # first chunk of the current window
    done = 0  # chunks generated so far
    while done < n_chunks:
        stop = min(start + window, n_chunks)
        held = done - start  # clean chunks at the front of this window
        sl = slice(start * fc, stop * fc)
        clean = torch.zeros(stop - start, dtype=torch.bool, device=ref.device)
        clean[:held] = True
        x = torch.where(_frames_mask(clean, fc), out[:, :, sl], noise[:, :, sl])  # (1, C, Tw, h, w)

        def velocity(x_t: Tensor, t: Tensor, tokens: Tensor) -> Tensor:
            t_chunks = torch.where(clean[None], torch.zeros_like(t[:, None]), t[:, None])  # (1, n_w)
            x_in = torch.where(_frames_mask(clean, fc), out[:, :, sl], x_t)
            v = dit(x_in, t_chunks, tokens, ref, mode="bidirectional")  # (1, C, Tw, h, w)
            return torch.where(_frames_mask(clean, fc), torch.zeros_like(v), v)

        tokens_w, null_w = audio_tokens[:, sl], null[:, sl]
        x = sample(lambda x_t, t: velocity(x_t, t, tokens_w), x, steps, sampler, shift, guidance,
                   uncond_fn=(lambda x_t, t: velocity(x_t, t, null_w)) if guidance != 1.0 else None)
        out[:, :, sl] = x
        done = stop
        start = max(stop - overlap, start + 1) if stop < n_chunks else stop
    return out[:, :, :n]


def _frames_mask(chunk_mask: Tensor, fc: int) -> Tensor:
    """Per-chunk bool ``(n,)`` -> broadcastable per-latent-frame mask ``(1, 1, n fc, 1, 1)``."""
    return chunk_mask.repeat_interleave(fc)[None, None, :, None, None]


def sample_chunk(dit: A2VDiT, cache: IDContextCache, noise: Tensor, audio: Tensor, null_audio: Tensor | None,
                 *, steps: int, guidance: float = 1.0, shift: float = 1.0, sampler: str = "euler") -> Tensor:
    """Few-step sampling of one chunk against the ID-Context Cache (the cache is only read).

    Args:
        noise: (B, C, Fc, h, w) at t = 1; audio / null_audio: (B, Fc, A, D).
    Returns:
        (B, C, Fc, h, w) the clean chunk. Call :func:`write_context` next.
    """
    _check_steps(steps, sampler)

    def cond(x: Tensor, t: Tensor) -> Tensor:
        return dit.forward_chunk(x, t[:, None], audio, cache)

    def uncond(x: Tensor, t: Tensor) -> Tensor:
        return dit.forward_chunk(x, t[:, None], null_audio, cache)

    if guidance != 1.0 and null_audio is None:
        raise ValueError("guidance != 1 needs null_audio tokens")
    return sample(cond, noise, steps, sampler, shift, guidance, uncond_fn=uncond if guidance != 1.0 else None)


def write_context(dit: A2VDiT, cache: IDContextCache, x0: Tensor, audio: Tensor, context_noise: float = 0.0,
                  generator: torch.Generator | None = None) -> None:
    """Append a generated chunk to the Context-Cache, at noise level ``t_c = context_noise``.

    ``t_c = 0`` writes the clean chunk at ``t = 0``. Otherwise the chunk is re-noised once,
    ``x_c = (1 - t_c) x0 + t_c eps`` with ``eps`` drawn from ``generator`` (on the CPU, like the
    chunk noise, so streams are reproducible across devices), and written with the label ``t_c``.

    Args:
        x0: (B, C, Fc, h, w) the clean chunk from :func:`sample_chunk`; audio: (B, Fc, A, D).
    """
    if not 0.0 <= context_noise < 1.0:
        raise ValueError(f"context_noise={context_noise}; accepted: 0 <= t < 1")
    if context_noise > 0.0:
        eps = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)  # (B, C, Fc, h, w)
        x0 = (1.0 - context_noise) * x0 + context_noise * eps
    t = torch.full((x0.shape[0], 1), float(context_noise), device=x0.device)  # (B, 1)
    dit.write_chunk(cache, x0, t, audio)


@torch.no_grad()
def generate_student_latents(model: RestModel, ref: Tensor | None, audio_tokens: Tensor, *, steps: int = 4,
                             guidance: float = 1.0, shift: float = 1.0, sampler: str = "euler",
                             window: int | None = None, context_noise: float = 0.0,
                             generator: torch.Generator | None = None) -> Tensor:
    """Offline rollout of the streaming student chunk by chunk (what the engine does live).

    Args:
        ref: (1, C, 1, h, w) normalised ID latent, or None for a model without ID-Sink.
        audio_tokens: (1, n, A, D) with ``n`` a multiple of ``chunk_latent_frames``.
    Returns:
        (1, C, n, h, w) normalised clean latents.
    """
    dit: A2VDiT = model.dit
    cfg = dit.config
    fc = cfg.chunk_latent_frames
    n = audio_tokens.shape[1]
    if n % fc:
        raise ValueError(f"{n} latent frames is not a multiple of chunk_latent_frames={fc}")
    cache = dit.new_cache(1, window=window)
    if cfg.use_id_sink:
        dit.prefill_sink(cache, ref)
    null = model.audio_encoder.null_tokens(1, fc)
    chunks = []
    for k in range(n // fc):
        shape = (1, cfg.latent_channels, fc, cfg.latent_size, cfg.latent_size)
        noise = torch.randn(shape, generator=generator).to(model.device)
        audio = audio_tokens[:, k * fc:(k + 1) * fc]
        x0 = sample_chunk(dit, cache, noise, audio, null, steps=steps, guidance=guidance, shift=shift,
                          sampler=sampler)
        write_context(dit, cache, x0, audio, context_noise, generator)
        chunks.append(x0)
    return torch.cat(chunks, dim=2)  # (1, C, n, h, w)


@torch.no_grad()
def decode_stream(model: RestModel, ref: Tensor, latents: Tensor) -> Tensor:
    """Decode generated latents after the reference: ``(1, C, n, h, w)`` -> ``(1, 3, n f_t, H, W)``.

    The causal decoder is primed with the reference latent (video frame 0), whose own decoded
    frame is dropped, exactly as the streaming engine does.
    """
    vae = model.vae
    full = torch.cat([ref, latents], dim=2)  # (1, C, 1 + n, h, w)
    video = vae.decode(vae.denormalize(full))  # (1, 3, 1 + n f_t, H, W)
    return video[:, :, 1:]
