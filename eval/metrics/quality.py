"""Full-reference frame quality: PSNR, SSIM (scikit-image) and LPIPS (``lpips`` package).

All three compare generated frames with ground-truth frames of the same shape, frame by frame, and
average over frames. They need ``sample.ground_truth``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from eval.metrics.registry import EvalSample, register_metric
from eval.weights import ALEXNET_LPIPS, resolve_weight
from hub import FPS

_LPIPS_CACHE: dict[str, Any] = {}


def _paired(sample: EvalSample) -> tuple[np.ndarray, np.ndarray]:
    if sample.ground_truth is None:
        raise ValueError(f"sample {sample.clip_id!r} has no ground-truth frames for a full-reference metric")
    gen, gt = sample.frames, sample.ground_truth
    if gen.shape != gt.shape:
        raise ValueError(f"frames {gen.shape} and ground_truth {gt.shape} differ; full-reference metrics "
                         "need the same frame count and size (resize/trim before evaluating)")
    return gen, gt


def psnr_frames(generated: np.ndarray, ground_truth: np.ndarray) -> np.ndarray:
    """Per-frame PSNR in dB (data range 255) of uint8 (T, H, W, 3) arrays; (T,) float64."""
    from skimage.metrics import peak_signal_noise_ratio

    return np.array([peak_signal_noise_ratio(g, p, data_range=255) for g, p in zip(ground_truth, generated)])


def ssim_frames(generated: np.ndarray, ground_truth: np.ndarray) -> np.ndarray:
    """Per-frame SSIM (scikit-image defaults: 7x7 uniform window, RGB channels averaged); (T,)."""
    from skimage.metrics import structural_similarity

    return np.array([structural_similarity(g, p, channel_axis=2, data_range=255)
                     for g, p in zip(ground_truth, generated)])


@register_metric(name="psnr", kind="quality", higher_is_better=True, needs_reference_video=True,
                 requires=["skimage"], unit="dB",
                 variant="skimage peak_signal_noise_ratio, data_range 255, RGB, mean over frames",
                 description="Peak signal-to-noise ratio against ground-truth frames.")
def psnr(sample: EvalSample) -> float:
    """Mean per-frame PSNR (dB) against the ground truth."""
    return float(np.mean(psnr_frames(*_paired(sample))))


@register_metric(name="ssim", kind="quality", higher_is_better=True, needs_reference_video=True,
                 requires=["skimage"],
                 variant="skimage structural_similarity, 7x7 uniform window, channel_axis=2, data_range 255",
                 description="Structural similarity against ground-truth frames, mean over frames.")
def ssim(sample: EvalSample) -> float:
    """Mean per-frame SSIM against the ground truth."""
    return float(np.mean(ssim_frames(*_paired(sample))))


def load_lpips(backbone_path: str | os.PathLike | None = None) -> Any:
    """LPIPS v0.1 (AlexNet) with the torchvision ImageNet backbone read through the resolver.

    The linear heads ship inside the ``lpips`` wheel; the backbone file
    ``alexnet-owt-7be5be79.pth`` is looked up by :func:`eval.weights.resolve_weight` (torch hub
    cache included) and loaded explicitly, so a missing backbone is an error, never random weights.
    """
    import warnings

    import torch

    path = resolve_weight(ALEXNET_LPIPS, backbone_path)
    if str(path) in _LPIPS_CACHE:
        return _LPIPS_CACHE[str(path)]
    import lpips

    with warnings.catch_warnings():  # lpips calls torchvision with the deprecated `pretrained`
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False)
    state = torch.load(path, map_location="cpu", weights_only=True)
    features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    loaded = 0
    for slice_name, block in model.net.named_children():
        for index, layer in block.named_children():
            for param_name, param in layer.named_parameters(recurse=False):
                param.data.copy_(features[f"{index}.{param_name}"])
                loaded += 1
    if loaded != 10:  # 5 convolutions x (weight, bias)
        raise ValueError(f"{path}: expected 5 AlexNet conv layers for LPIPS, loaded {loaded // 2}")
    model.eval()
    _LPIPS_CACHE[str(path)] = model
    return model


def lpips_frames(generated: np.ndarray, ground_truth: np.ndarray, model: Any, batch: int = 16) -> np.ndarray:
    """Per-frame LPIPS distance of uint8 (T, H, W, 3) arrays; (T,) float64."""
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, len(generated), batch):
            a = torch.from_numpy(generated[start:start + batch]).permute(0, 3, 1, 2).float() / 127.5 - 1  # (B, 3, H, W)
            b = torch.from_numpy(ground_truth[start:start + batch]).permute(0, 3, 1, 2).float() / 127.5 - 1
            out.append(model(a, b).flatten().double().numpy())  # (B,)
    return np.concatenate(out)


@register_metric(name="lpips", kind="quality", higher_is_better=False, needs_reference_video=True,
                 weights=[ALEXNET_LPIPS], requires=["lpips", "torchvision"],
                 variant="lpips 0.1, AlexNet backbone (torchvision ImageNet), inputs in [-1, 1], full frame",
                 description="Learned perceptual distance to ground-truth frames, mean over frames.")
def lpips_distance(sample: EvalSample, model: Any = None, backbone_path: str | None = None) -> float:
    """Mean per-frame LPIPS (AlexNet) against the ground truth."""
    net = model if model is not None else load_lpips(backbone_path)
    return float(np.mean(lpips_frames(*_paired(sample), model=net)))


# ------------------------------------------------------------------------------------------------
# Grid tiling: the failure mode of an autoregressive student whose Context-Cache drifts (the face
# turns into a grid of repeated small faces, one per token of the latent grid).

TILING_GRID = 4  # the tiny model's token grid (8x8 latents in 2x2 patches)
TILING_LAST_SECONDS = 1.0


def tiling_frames(frames: np.ndarray, grid: int = TILING_GRID) -> np.ndarray:
    """Per-frame mean Pearson correlation between the ``grid x grid`` blocks of the luma; (T,).

    Blocks of a real face are unlike each other (about 0 on real clips); a frame made of
    repeated tiles scores near 1. Frames are cropped to a multiple of ``grid`` first.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got shape {frames.shape}")
    T, H, W = frames.shape[:3]
    bh, bw = H // grid, W // grid
    if bh < 2 or bw < 2:
        raise ValueError(f"frames of {H}x{W} are too small for a {grid}x{grid} tiling grid")
    luma = frames[:, : bh * grid, : bw * grid].astype(np.float32) @ np.float32([0.299, 0.587, 0.114])  # (T, H', W')
    blocks = luma.reshape(T, grid, bh, grid, bw).transpose(0, 1, 3, 2, 4).reshape(T, grid * grid, bh * bw)
    blocks = blocks - blocks.mean(-1, keepdims=True)  # (T, G, P)
    blocks = blocks / (np.linalg.norm(blocks, axis=-1, keepdims=True) + 1e-6)
    corr = np.einsum("tip,tjp->tij", blocks, blocks)  # (T, G, G)
    upper = np.triu_indices(grid * grid, 1)
    return corr[:, upper[0], upper[1]].mean(axis=1).astype(np.float64)  # (T,)


@register_metric(name="tiling", kind="quality", higher_is_better=False, outputs=["tiling", "tiling_last_1s"],
                 variant=f"mean pairwise Pearson correlation of the {TILING_GRID}x{TILING_GRID} luma blocks "
                         f"(BT.601), per frame; mean over frames and over the last {TILING_LAST_SECONDS:g} s",
                 description="Grid-tiling artefact: how alike the blocks of the token grid are (a face "
                             "collapsed into repeated tiles scores near 1; real faces about 0).")
def tiling(sample: EvalSample) -> dict[str, float]:
    """Mean tiling score over all frames and over the last second."""
    per_frame = tiling_frames(sample.frames)
    last = per_frame[-max(1, int(round(TILING_LAST_SECONDS * FPS))):]
    return {"tiling": float(per_frame.mean()), "tiling_last_1s": float(last.mean())}
