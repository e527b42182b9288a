"""Set-level distribution metrics: FID (Inception pool3) and FVD (I3D), via the Fréchet distance.

Two phases, so that clips can be processed one at a time:
1. ``extract`` per clip -> features (N, D) (every frame for FID, every 16-frame clip for FVD);
2. the registered score on all generated features against all reference features.

FVD has two registered variants: ``fvd`` (StyleGAN-V detector, the default) and ``fvd_videogpt``
(VideoGPT's I3D and preprocessing); their numbers do not compare with each other.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from eval.metrics.registry import EvalSample, register_metric
from eval.weights import FID_INCEPTION, I3D_STYLEGAN_V, I3D_VIDEOGPT, resolve_weight

FVD_CLIP_FRAMES = 16
FRECHET_EPS = 1e-6

_MODEL_CACHE: dict[str, Any] = {}


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of (N, D) features, N >= 2, in float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need at least 2 feature vectors (N, D) for a covariance, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = FRECHET_EPS) -> float:
    """‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2·sqrtm(Σ1Σ2)), as pytorch-fid computes it.

    ``eps`` is added to both diagonals only when the matrix square root is not finite; a tiny
    imaginary part (numerical) is dropped, a large one is an error.
    """
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"mismatched statistics: mu {mu1.shape} vs {mu2.shape}, "
                         f"sigma {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(mu1)) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm has a large imaginary component {np.max(np.abs(covmean.imag)):.3g}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def frechet_of_features(generated: np.ndarray | Sequence[np.ndarray],
                        reference: np.ndarray | Sequence[np.ndarray]) -> float:
    """Fréchet distance between two sets of features (arrays (N, D) or lists of per-clip arrays)."""
    gen = np.concatenate(list(generated)) if not isinstance(generated, np.ndarray) else generated
    ref = np.concatenate(list(reference)) if not isinstance(reference, np.ndarray) else reference
    return frechet_distance(*feature_statistics(gen), *feature_statistics(ref))


# --- FID -------------------------------------------------------------------------------------

def _cached_net(spec: Any, loader: Any, weights_path: str | os.PathLike | None) -> Any:
    """The network of ``spec``'s resolved weight file, loaded once per process."""
    path = resolve_weight(spec, weights_path)
    if str(path) not in _MODEL_CACHE:
        _MODEL_CACHE[str(path)] = loader(path)
    return _MODEL_CACHE[str(path)]


def _fid_model(weights_path: str | os.PathLike | None) -> Any:
    from eval.nets.inception_fid import load_fid_inception

    return _cached_net(FID_INCEPTION, load_fid_inception, weights_path)


def fid_features(sample: EvalSample, model: Any = None, weights_path: str | None = None,
                 batch: int = 16) -> np.ndarray:
    """pool3 features of every frame of ``sample.frames``: float64 (T, 2048).

    Frames are scaled to [-1, 1] and resized bilinearly to 299x299 inside the network (pytorch-fid
    preprocessing).
    """
    import torch

    net = model if model is not None else _fid_model(weights_path)
    out = []
    with torch.no_grad():
        for start in range(0, len(sample.frames), batch):
            x = torch.from_numpy(sample.frames[start:start + batch]).permute(0, 3, 1, 2).float()  # (B, 3, H, W)
            out.append(net(x / 127.5 - 1.0).double().numpy())                                     # (B, 2048)
    return np.concatenate(out)


@register_metric(name="fid", kind="quality", higher_is_better=False, needs_reference_video=True,
                 level="set", extract=fid_features, weights=[FID_INCEPTION], requires=["torchvision", "scipy"],
                 variant="pytorch-fid Inception-v3 (TF 2015-12-05) pool3 2048-d; bilinear 299, [-1, 1]; "
                         "all frames of all clips",
                 description="Fréchet Inception distance between generated and real frames.")
def fid(generated: np.ndarray | Sequence[np.ndarray], reference: np.ndarray | Sequence[np.ndarray]) -> float:
    """FID from :func:`fid_features` of the generated and of the real clips."""
    return frechet_of_features(generated, reference)


# --- FVD -------------------------------------------------------------------------------------

def _i3d_model(weights_path: str | os.PathLike | None) -> Any:
    from eval.nets.i3d import load_i3d_torchscript

    return _cached_net(I3D_STYLEGAN_V, load_i3d_torchscript, weights_path)


def video_clips(frames: np.ndarray, clip_frames: int = FVD_CLIP_FRAMES) -> np.ndarray:
    """Non-overlapping consecutive clips: uint8 (floor(T / clip_frames), clip_frames, H, W, 3)."""
    n = len(frames) // clip_frames
    if n == 0:
        raise ValueError(f"clip has {len(frames)} frames; FVD needs at least {clip_frames}")
    return frames[: n * clip_frames].reshape(n, clip_frames, *frames.shape[1:])


def fvd_features(sample: EvalSample, detector: Any = None, weights_path: str | None = None,
                 clip_frames: int = FVD_CLIP_FRAMES) -> np.ndarray:
    """I3D features of every non-overlapping 16-frame clip of ``sample.frames``: float64 (N, 400)."""
    from eval.nets.i3d import i3d_features

    net = detector if detector is not None else _i3d_model(weights_path)
    return i3d_features(net, video_clips(sample.frames, clip_frames))


@register_metric(name="fvd", kind="quality", higher_is_better=False, needs_reference_video=True,
                 level="set", extract=fvd_features, weights=[I3D_STYLEGAN_V], requires=["scipy"],
                 variant="StyleGAN-V i3d_torchscript (rescale [-1, 1], bilinear 224x224 inside); "
                         "all non-overlapping 16-frame clips; 400-d logits",
                 description="Fréchet video distance between generated and real 16-frame clips.")
def fvd(generated: np.ndarray | Sequence[np.ndarray], reference: np.ndarray | Sequence[np.ndarray]) -> float:
    """FVD from :func:`fvd_features` of the generated and of the real clips."""
    return frechet_of_features(generated, reference)


# --- FVD, VideoGPT variant ------------------------------------------------------------------

def _i3d_videogpt_model(weights_path: str | os.PathLike | None) -> Any:
    from eval.nets.i3d_videogpt import load_i3d_videogpt

    return _cached_net(I3D_VIDEOGPT, load_i3d_videogpt, weights_path)


def fvd_videogpt_features(sample: EvalSample, detector: Any = None, weights_path: str | None = None,
                          clip_frames: int = FVD_CLIP_FRAMES) -> np.ndarray:
    """VideoGPT I3D logits of every non-overlapping 16-frame clip of ``sample.frames``: float64 (N, 400)."""
    from eval.nets.i3d_videogpt import i3d_videogpt_features

    net = detector if detector is not None else _i3d_videogpt_model(weights_path)
    return i3d_videogpt_features(net, video_clips(sample.frames, clip_frames))


@register_metric(name="fvd_videogpt", kind="quality", higher_is_better=False, needs_reference_video=True,
                 level="set", extract=fvd_videogpt_features, weights=[I3D_VIDEOGPT], requires=["scipy"],
                 variant="VideoGPT i3d_pretrained_400 InceptionI3d; per frame /255, bilinear resize "
                         "(align_corners=False, no antialias) of the short side to 224 (long side "
                         "ceil), centre crop 224x224, -0.5 -> [-0.5, 0.5]; all non-overlapping "
                         "16-frame clips; 400-d logits averaged over time",
                 description="Fréchet video distance (VideoGPT variant) between generated and real 16-frame clips.")
def fvd_videogpt(generated: np.ndarray | Sequence[np.ndarray],
                 reference: np.ndarray | Sequence[np.ndarray]) -> float:
    """FVD from :func:`fvd_videogpt_features` of the generated and of the real clips."""
    return frechet_of_features(generated, reference)
