"""LSE-D / LSE-C: the SyncNet evaluation of joonson/syncnet_python ``SyncNetInstance.evaluate``.

Steps (exactly as the reference, see /work/shared/notes/metrics.md):
1. face crops at 224x224, BGR 0..255: either the face-track crop of ``run_pipeline`` (box per frame,
   median-filtered over 13 frames, rows cy - s .. cy + 1.8 s, columns cx - 1.4 s .. cx + 1.4 s with
   crop scale 0.4, padding value 110) or a plain resize of an already cropped face (Wav2Lip's path);
2. MFCC with ``python_speech_features.mfcc`` defaults (25 ms window, 10 ms hop, 13 coefficients) on
   the audio scaled to int16;
3. n = min(frames, floor(samples / 640)); windows i = 0 .. n - 6: frames i .. i + 4 for the lips,
   MFCC columns 4i .. 4i + 19 for the audio;
4. audio embeddings padded with 15 zero vectors at both ends, L2 distances (with the +1e-6 of
   ``pairwise_distance``) for offsets -15 .. +15, mean over windows = mdist;
5. LSE-D = min(mdist), offset = 15 - argmin(mdist), LSE-C = median(mdist) - min(mdist).

Offset sign: positive means the audio leads the video by that many frames.
Face detection differs from the reference (YuNet here, S3FD there): recorded in the variant.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from eval.metrics.faces import cached_yunet, nan_interpolate
from eval.metrics.registry import EvalSample, register_metric
from eval.weights import SYNCNET_V2, YUNET, resolve_weight
from hub import SAMPLE_RATE, SAMPLES_PER_FRAME

CROP_SIZE = 224
CROP_SCALE = 0.4
CROP_PAD_VALUE = 110
MEDIAN_KERNEL = 13
VSHIFT = 15
MFCC_PER_FRAME = 4  # 100 Hz MFCC / 25 fps
MFCC_WINDOW = 20  # 0.2 s of MFCC per window
LIP_WINDOW = 5

_MODEL_CACHE: dict[str, Any] = {}


def mfcc_int16(audio: np.ndarray) -> np.ndarray:
    """13 MFCCs at 100 Hz of float audio in [-1, 1] scaled to int16, as the reference reads a wav.

    Returns:
        float64 (13, M).
    """
    import python_speech_features

    pcm = np.clip(np.round(np.asarray(audio, np.float64) * 32768.0), -32768, 32767).astype(np.int16)
    return python_speech_features.mfcc(pcm, SAMPLE_RATE).T  # (13, M)


def track_crops(frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """The syncnet_python face-track crop of every frame.

    Args:
        frames: uint8 (T, H, W, 3) RGB.
        boxes: (T, 4) x, y, w, h per frame (NaN where no face; interpolated).

    Returns:
        uint8 (T, 224, 224, 3) BGR crops.
    """
    import cv2
    from scipy.signal import medfilt

    if not np.isfinite(boxes).any():
        raise ValueError("no face found in any frame: the face-track crop needs a detectable face")
    boxes = nan_interpolate(boxes)
    # scipy's medfilt zero-pads like the reference; clips shorter than the kernel use the largest
    # odd kernel that fits (the reference drops tracks under 100 frames instead)
    kernel = min(MEDIAN_KERNEL, len(boxes) - (1 - len(boxes) % 2))
    cx = medfilt(boxes[:, 0] + boxes[:, 2] / 2, kernel)  # (T,)
    cy = medfilt(boxes[:, 1] + boxes[:, 3] / 2, kernel)  # (T,)
    s = medfilt(np.maximum(boxes[:, 2], boxes[:, 3]) / 2, kernel)  # (T,)
    out = np.empty((len(frames), CROP_SIZE, CROP_SIZE, 3), np.uint8)
    for t, frame in enumerate(frames):
        bs = s[t]
        bsi = int(bs * (1 + 2 * CROP_SCALE))
        padded = np.pad(frame[..., ::-1], ((bsi, bsi), (bsi, bsi), (0, 0)), constant_values=CROP_PAD_VALUE)
        my, mx = cy[t] + bsi, cx[t] + bsi
        face = padded[int(my - bs):int(my + bs * (1 + 2 * CROP_SCALE)),
                      int(mx - bs * (1 + CROP_SCALE)):int(mx + bs * (1 + CROP_SCALE))]
        out[t] = cv2.resize(face, (CROP_SIZE, CROP_SIZE))
    return out


def resize_crops(frames: np.ndarray) -> np.ndarray:
    """Plain 224x224 resize of already cropped faces; uint8 (T, 224, 224, 3) BGR."""
    import cv2

    return np.stack([cv2.resize(np.ascontiguousarray(f[..., ::-1]), (CROP_SIZE, CROP_SIZE)) for f in frames])


@torch.no_grad()
def syncnet_embeddings(model: torch.nn.Module, crops_bgr: np.ndarray, audio: np.ndarray,
                       batch_windows: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Lip and audio embeddings of every evaluation window.

    Args:
        model: a :class:`eval.nets.syncnet.SyncNet` in eval mode.
        crops_bgr: uint8 (T, 224, 224, 3) BGR face crops at 25 fps.
        audio: float (S,) 16 kHz.
        batch_windows: windows per lip forward pass (memory bound, not a result parameter).

    Returns:
        lip (N, D) and audio (N, D) float32 embeddings, N = min(T, S // 640) - 5.
    """
    n = min(len(crops_bgr), len(audio) // SAMPLES_PER_FRAME)
    num_windows = n - LIP_WINDOW
    if num_windows < 1:
        raise ValueError(f"clip too short for SyncNet: {n} usable frames, need at least {LIP_WINDOW + 1}")
    mfcc = torch.from_numpy(mfcc_int16(audio)).float()                       # (13, M)
    need = MFCC_PER_FRAME * (num_windows - 1) + MFCC_WINDOW
    if mfcc.shape[1] < need:
        raise ValueError(f"audio too short: {mfcc.shape[1]} MFCC steps, need {need}")
    windows = mfcc.unfold(1, MFCC_WINDOW, MFCC_PER_FRAME)[:, :num_windows]   # (13, N, 20)
    windows = windows.permute(1, 0, 2).unsqueeze(1).contiguous()             # (N, 1, 13, 20)
    audio_emb = model.forward_audio(windows)                                 # (N, D)

    video = torch.from_numpy(crops_bgr[: num_windows + LIP_WINDOW - 1])      # (N + 4, 224, 224, 3)
    lip_chunks = []
    for start in range(0, num_windows, batch_windows):
        stop = min(num_windows, start + batch_windows)
        clip = video[start: stop + LIP_WINDOW - 1]                           # (B + 4, 224, 224, 3)
        clip = clip.permute(3, 0, 1, 2).unsqueeze(0).float()                 # (1, 3, B + 4, 224, 224)
        lip_chunks.append(model.forward_lip_sequence(clip))                   # (B, D)
    return torch.cat(lip_chunks), audio_emb


def offset_distances(lip: torch.Tensor, aud: torch.Tensor, vshift: int = VSHIFT) -> torch.Tensor:
    """L2 distance of every lip window to the audio windows shifted by -vshift .. +vshift.

    Args:
        lip: (N, D) lip embeddings.
        aud: (N, D) audio embeddings.

    Returns:
        (N, 2 * vshift + 1) distances; column j compares lip window i with audio window
        i + j - vshift (zero vectors outside the clip), as ``calc_pdist`` in syncnet_python.
    """
    n = lip.shape[0]
    padded = torch.nn.functional.pad(aud, (0, 0, vshift, vshift))             # (N + 2v, D)
    index = torch.arange(n)[:, None] + torch.arange(2 * vshift + 1)[None]      # (N, 2v + 1)
    diff = lip[:, None, :] - padded[index] + 1e-6                              # (N, 2v + 1, D)
    return diff.norm(dim=-1)                                                   # (N, 2v + 1)


def lse_from_distances(dists: torch.Tensor, vshift: int = VSHIFT) -> dict[str, float]:
    """LSE-D, LSE-C and the offset from the (N, 2v + 1) window distances."""
    mdist = dists.mean(dim=0)                                                  # (2v + 1,)
    minval, minidx = torch.min(mdist, 0)
    return {"lse_d": float(minval), "lse_c": float(torch.median(mdist) - minval),
            "lse_offset": float(vshift - int(minidx))}


def _syncnet(weights_path: str | os.PathLike | None) -> torch.nn.Module:
    from eval.nets.syncnet import load_syncnet

    path = resolve_weight(SYNCNET_V2, weights_path)
    key = str(path)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = load_syncnet(path)
    return _MODEL_CACHE[key]


def lse_scores(sample: EvalSample, crop: str = "track", model: torch.nn.Module | None = None,
               weights_path: str | os.PathLike | None = None, batch_windows: int = 32) -> dict[str, float]:
    """LSE-D / LSE-C / offset of one sample (see the module docstring).

    Args:
        sample: frames at 25 fps and 16 kHz audio.
        crop: ``track`` (face detection + syncnet_python crop) or ``resize`` (plain 224 resize).
        model: a loaded SyncNet (tests pass stand-ins); default: ``syncnet_v2.model`` via the resolver.
        weights_path: explicit path of ``syncnet_v2.model``.
    """
    if sample.audio is None:
        raise ValueError("LSE needs the driving audio")
    if crop == "track":
        crops = track_crops(sample.frames, cached_yunet(sample)[:, :4])
    elif crop == "resize":
        crops = resize_crops(sample.frames)
    else:
        raise ValueError(f"crop must be 'track' or 'resize', got {crop!r}")
    net = model if model is not None else _syncnet(weights_path)
    lip, aud = syncnet_embeddings(net, crops, sample.audio, batch_windows)
    scores = lse_from_distances(offset_distances(lip, aud))
    scores["lse_windows"] = float(lip.shape[0])
    return scores


_OUTPUTS = ["lse_d", "lse_c", "lse_offset", "lse_windows"]
_DIRECTIONS = {"lse_d": False, "lse_c": True, "lse_offset": None, "lse_windows": None}


@register_metric(
    name="lse", kind="sync", higher_is_better=True, needs_audio=True,
    weights=[SYNCNET_V2, YUNET], requires=["python_speech_features", "cv2", "scipy"],
    outputs=_OUTPUTS, directions=_DIRECTIONS,
    variant="syncnet_v2; face track (YuNet boxes, medfilt 13, crop scale 0.4, pad 110) -> 224; "
            "MFCC int16; 31 offsets",
    description="SyncNet LSE-C (confidence, higher better) and LSE-D (distance, lower better) on "
                "face-track crops, as syncnet_python run_pipeline + evaluate; offset in frames "
                "(positive: audio leads).")
def lse(sample: EvalSample, **params: Any) -> dict[str, float]:
    """Registered LSE on face-track crops; ``lse_d`` is lower-is-better, ``lse_c`` higher-is-better."""
    return lse_scores(sample, crop="track", **params)


@register_metric(
    name="lse_resize", kind="sync", higher_is_better=True, needs_audio=True,
    weights=[SYNCNET_V2], requires=["python_speech_features", "cv2"],
    outputs=_OUTPUTS, directions=_DIRECTIONS,
    variant="syncnet_v2; plain 224x224 resize of the (already face-cropped) frames; MFCC int16; 31 offsets",
    description="SyncNet LSE-C / LSE-D with the frames resized to 224 (Wav2Lip LRS path); only "
                "meaningful for tightly face-cropped output.")
def lse_resize(sample: EvalSample, **params: Any) -> dict[str, float]:
    """Registered LSE on plainly resized frames."""
    return lse_scores(sample, crop="resize", **params)
